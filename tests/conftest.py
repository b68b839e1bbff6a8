"""Shared fixtures: real test media (fetched and sha256-checked) and random-weight checkpoints; no silent skips.

A skipped test is a failed test unless ``AFFECTLAB_ALLOW_SKIPS=1`` is set: every skip here stands for a missing part of
the machine (PostgreSQL, Chromium, a test-only package), and ``make test`` installs all of them, so a skip means the
set-up is broken, never that the feature is fine. ``.ci/run`` never sets the variable; a quick local run may.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests import testdata

pytest_plugins = ["tests.pg"]

ALLOW_SKIPS = os.environ.get("AFFECTLAB_ALLOW_SKIPS", "") == "1"


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    """Turns a skip into a failure that says how to get what was missing (unless ``AFFECTLAB_ALLOW_SKIPS=1``)."""
    outcome = yield
    report = outcome.get_result()  # type: ignore[attr-defined]
    if ALLOW_SKIPS or not report.skipped or hasattr(report, "wasxfail"):
        return
    reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
    report.outcome = "failed"
    report.longrepr = (
        f"{item.nodeid} was skipped: {reason}\n"
        "make test needs every part of the machine (make system-deps installs PostgreSQL and Chromium, make install "
        "the Python packages); set AFFECTLAB_ALLOW_SKIPS=1 only for a quick local run."
    )


@pytest.hookimpl(trylast=True)
def pytest_runtest_teardown(item: pytest.Item) -> None:
    """No test leaves a process-wide guard installed: every later in-process app run would be judged by it.

    (Importing ``webapp.serve`` installs one; tests build guard states with ``webapp.guard_config`` instead.)
    """
    import sys

    guard = sys.modules.get("webapp.guard")
    if guard is not None and guard.active() is not None:
        guard.install(None)
        raise AssertionError(f"{item.nodeid} left a process-wide guard installed (it imported webapp.serve?)")


@pytest.fixture(scope="session")
def multi_face_jpg() -> Path:
    return testdata.pyfeat_file("multi_face.jpg")


@pytest.fixture(scope="session")
def single_face_jpg() -> Path:
    return testdata.pyfeat_file("single_face.jpg")


@pytest.fixture(scope="session")
def landscape_jpg() -> Path:
    return testdata.pyfeat_file("free-mountain-vector-01.jpg")


@pytest.fixture(scope="session")
def astronaut_png() -> Path:
    return testdata.astronaut()


@pytest.fixture(scope="session")
def pyfeat():
    """The ``pyfeat_file(name)`` function, for the videos and other files."""
    return testdata.pyfeat_file


@pytest.fixture(scope="session")
def random_weights_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A weights folder holding random-weight checkpoints of the default 8-class model and a V/A model."""
    from tests.checkpoints import install_random_weights

    wdir = tmp_path_factory.mktemp("weights")
    install_random_weights(["enet_b0_8_best_vgaf", "enet_b0_8_va_mtl"], wdir, seed=3)
    return wdir


@pytest.fixture(scope="session")
def exported_weights(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Random weights of the default model with the ONNX exports made, as ``python -m models fetch`` makes them."""
    from models.cli import _export_for_onnx_runtime
    from tests.checkpoints import install_random_weights

    wdir = tmp_path_factory.mktemp("exported-weights")
    install_random_weights(["enet_b0_8_best_vgaf"], wdir, seed=3)
    _export_for_onnx_runtime(["enet_b0_8_best_vgaf"], wdir)
    return wdir


@pytest.fixture(scope="module")
def one_torch_thread():
    """One intra-op torch thread for a module: on a shared 2-core machine more threads spin against each other."""
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="session")
def detector():
    """The face detector with the reference's settings (stateless, shared)."""
    from models.faces import FaceDetector

    return FaceDetector()


@pytest.fixture(scope="session")
def face_crops(multi_face_jpg: Path, astronaut_png: Path, detector) -> list:
    """The 6 real face crops of multi_face.jpg (5) and astronaut.png (1), as the pipeline cuts them."""
    from models.faces import crop_face
    from models.images import load_image

    out = []
    for path in (multi_face_jpg, astronaut_png):
        img = load_image(path)
        out += [crop_face(img, f.box) for f in detector.detect(img)]
    assert len(out) == 6
    return out


@pytest.fixture(scope="session")
def analysed_multi_face(
    tmp_path_factory: pytest.TempPathFactory, random_weights_dir: Path, multi_face_jpg: Path
) -> Path:
    """A data folder whose study ``default`` holds multi_face.jpg analysed by the app (copy it before changing it)."""
    from tests.apphelpers import analyze_into

    data = tmp_path_factory.mktemp("multi-face-template")
    analyze_into(data, random_weights_dir, [multi_face_jpg])
    return data


@pytest.fixture
def multi_face_app_dir(
    analysed_multi_face: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, random_weights_dir: Path
) -> Path:
    """A fresh copy of :func:`analysed_multi_face` with the app pointed at it and at the random weights."""
    from tests.apphelpers import fresh_data_dir

    return fresh_data_dir(analysed_multi_face, tmp_path, monkeypatch, random_weights_dir)
