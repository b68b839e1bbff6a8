"""The published pickle formats: files pickled by timm 0.9.7 (most checkpoints) and timm 0.6 (``enet_b0_7``).

The slow tests install the old timm releases with ``pip install --no-deps --target tests/.data/timm-<version>``
(cached), build and randomise a model in a subprocess where the old timm shadows the installed one (same torch),
``torch.save`` it whole as the authors did, and check that ``import_checkpoint`` rebuilds a model giving the old
timm's outputs. The fast tests check the module remapping on crafted pickles that name the old module paths.
"""

from __future__ import annotations

import io
import json
import os
import re
import shutil
import subprocess
import sys
import textwrap
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

from models import convert, download, unpickle, weights
from models.backbones import build_model, split_head
from models.errors import CheckpointFormatError, UnsafeCheckpointError
from models.registry import get_spec
from tests.checkpoints import random_published_module, save_published

REPO = Path(__file__).resolve().parent.parent
DATA = REPO / "tests" / ".data"


# --------------------------------------------------------------------------------------------------- crafted pickles


def _global_pickle(module: str, name: str) -> bytes:
    """A protocol-2 pickle that is just ``GLOBAL module name`` (what a pickled class reference looks like)."""
    return b"\x80\x02c" + module.encode() + b"\n" + name.encode() + b"\n."


def _unpickle(data: bytes) -> object:
    return unpickle.RemappingUnpickler(io.BytesIO(data)).load()


@pytest.mark.parametrize(
    ("old", "name", "new"),
    [
        ("timm.models.layers.conv2d_same", "Conv2dSame", "timm.layers.conv2d_same"),
        ("timm.models.layers.norm_act", "BatchNormAct2d", "timm.layers.norm_act"),
        ("timm.models.layers.adaptive_avgmax_pool", "SelectAdaptivePool2d", "timm.layers.adaptive_avgmax_pool"),
        ("timm.models.layers.activations", "Swish", "timm.layers.activations"),
        ("timm.models.efficientnet_blocks", "SqueezeExcite", "timm.models._efficientnet_blocks"),
        ("timm.models.efficientnet_blocks", "InvertedResidual", "timm.models._efficientnet_blocks"),
        ("timm.models.efficientnet_builder", "round_channels", "timm.models._efficientnet_builder"),
        ("timm.models.efficientnet", "EfficientNet", "timm.models.efficientnet"),
        ("mobilefacenet", "MobileFaceNet", "models.mobilefacenet"),
        ("mobilefacenet", "DepthWise", "models.mobilefacenet"),
    ],
)
def test_remapping_unpickler_finds_old_paths(old: str, name: str, new: str) -> None:
    import importlib

    assert unpickle.remap_module(old) == new
    assert _unpickle(_global_pickle(old, name)) is getattr(importlib.import_module(new), name)


@pytest.mark.parametrize(
    ("module", "name"),
    [
        ("timm.models.helpers", "load_state_dict"),  # a timm function that reads another file: not a model class
        ("timm.models._hub", "download_url_to_file"),
        ("torch", "load"),
        ("builtins", "getattr"),
        ("__builtin__", "eval"),
        ("os", "system"),
        ("posix", "system"),
        ("subprocess", "Popen"),
        ("torch.nn.modules.module", "register_module_forward_hook"),
    ],
)
def test_remapping_unpickler_refuses_what_is_not_allowed(module: str, name: str) -> None:
    with pytest.raises(UnsafeCheckpointError, match=re.escape(f".{name}")) as info:
        _unpickle(_global_pickle(module, name))
    assert info.value.global_name.endswith(f".{name}")


def test_remapping_unpickler_names_what_is_missing() -> None:
    with pytest.raises(CheckpointFormatError, match=r"timm\.models\.layers\.nothing_here\.Gone"):
        _unpickle(_global_pickle("timm.models.layers.nothing_here", "Gone"))
    with pytest.raises(CheckpointFormatError, match=r"no_such_module\.X"):
        _unpickle(_global_pickle("no_such_module", "X"))


def _rewrite_data_pkl(src: Path, dst: Path, replacements: list[tuple[bytes, bytes]]) -> bytes:
    """Copies a ``torch.save`` zip, applying byte replacements to its ``data.pkl`` (protocol 2: GLOBAL opcodes are
    newline-terminated text, so module names can be swapped without re-pickling)."""
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w", zipfile.ZIP_STORED) as zout:
        for info in zin.infolist():
            data = zin.read(info.filename)
            if info.filename.endswith("/data.pkl"):
                for old, new in replacements:
                    assert old in data, old
                    data = data.replace(old, new)
                pkl = data
            zout.writestr(info, data)
    return pkl


def test_crafted_timm06_module_paths_convert(tmp_path: Path) -> None:
    """A whole-module pickle whose classes are named by their timm 0.6 paths (which timm 1.0 lacks) converts."""
    spec = get_spec("enet_b0_7")
    module = random_published_module(spec, seed=21)
    fresh = save_published(module, tmp_path / "fresh.pt")
    old = tmp_path / "enet_b0_7.pt"
    pkl = _rewrite_data_pkl(
        fresh,
        old,
        [
            (b"ctimm.layers.", b"ctimm.models.layers."),
            (b"ctimm.models._efficientnet_blocks\n", b"ctimm.models.efficientnet_blocks\n"),
        ],
    )
    assert b"timm.models.layers.conv2d_same\nConv2dSame" in pkl and b"ctimm.layers." not in pkl
    with pytest.raises(ModuleNotFoundError):  # what users of the reference hit with timm >= 0.9
        torch.load(old, weights_only=False, map_location="cpu")
    convert.import_checkpoint(old, "enet_b0_7", tmp_path / "w", trust_unverified=True)
    state, _ = weights.load_weights("enet_b0_7", tmp_path / "w")
    rebuilt = build_model(spec)
    rebuilt.load_state_dict(state, strict=True)
    x = torch.randn(2, 3, 224, 224, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert torch.equal(rebuilt(x), module(x))


# --------------------------------------------------------------------------------------------------- real old timm

_MAKE_OLD = textwrap.dedent(
    """
    import json, sys
    from pathlib import Path
    import numpy as np
    import timm
    import torch
    from torch import nn
    from tests.checkpoints import randomize_

    version, arch, k, size, out = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), Path(sys.argv[5])
    assert timm.__version__ == version, (timm.__version__, timm.__file__)
    torch.manual_seed(0)
    m = timm.create_model(arch, pretrained=False, num_classes=k)
    if hasattr(m, "classifier"):
        m.classifier = nn.Sequential(nn.Linear(m.num_features, k))  # the published head
    gen = torch.Generator().manual_seed(2)
    randomize_(m, seed=1, calibration=torch.randn(8, 3, size, size, generator=gen))
    x = torch.randn(3, 3, size, size, generator=gen)
    with torch.no_grad():
        y = m(x)
    torch.save(m, out / "model.pt")
    np.save(out / "x.npy", x.numpy())
    np.save(out / "y.npy", y.numpy())
    info = {"timm": timm.__version__, "timm_file": timm.__file__, "torch": torch.__version__}
    (out / "info.json").write_text(json.dumps(info))
    """
)


def old_timm(version: str) -> Path:
    """``tests/.data/timm-<version>``: that timm release installed with ``pip --target`` (no dependencies), cached."""
    target = DATA / f"timm-{version}"
    if (target / f"timm-{version}.dist-info").is_dir() and (target / "timm" / "__init__.py").is_file():
        return target
    tmp = DATA / f".timm-{version}.{os.getpid()}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    DATA.mkdir(parents=True, exist_ok=True)
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "-q",
            "--no-deps",
            "--no-compile",
            "--target",
            str(tmp),
            f"timm=={version}",
        ],
        check=True,
    )
    shutil.rmtree(target, ignore_errors=True)
    try:
        os.replace(tmp, target)
    except OSError:  # another test run installed it meanwhile
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def _make_with_old_timm(version: str, arch: str, k: int, size: int, out: Path) -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(old_timm(version)), str(REPO)])
    env["PYTHONWARNINGS"] = "ignore"
    proc = subprocess.run(
        [sys.executable, "-c", _MAKE_OLD, version, arch, str(k), str(size), str(out)],
        env=env,
        cwd=out,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    return json.loads((out / "info.json").read_text())


@pytest.mark.slow
@pytest.mark.parametrize(
    ("version", "name"),
    [
        ("0.9.7", "enet_b0_8_best_vgaf"),
        ("0.9.7", "mobilevit_va_mtl"),
        ("0.6.13", "enet_b0_7"),
    ],
)
def test_old_timm_pickle_parity(version: str, name: str, tmp_path: Path) -> None:
    spec = get_spec(name)
    info = _make_with_old_timm(version, spec.arch, spec.num_outputs, spec.input_size, tmp_path)
    assert info["timm"] == version and str(DATA) in info["timm_file"]
    convert.import_checkpoint(tmp_path / "model.pt", name, tmp_path / "w", trust_unverified=True)
    state, meta = weights.load_weights(name, tmp_path / "w")
    assert meta["source_sha1"] == download.git_blob_sha1(tmp_path / "model.pt")
    model = build_model(spec)
    model.load_state_dict(state, strict=True)
    x = torch.from_numpy(np.load(tmp_path / "x.npy"))
    expected = np.load(tmp_path / "y.npy")
    with torch.no_grad():
        ours = model(x).numpy()
        backbone, head = split_head(model, spec)
        via_head = head(backbone(x)).numpy()
    diff = float(np.abs(ours - expected).max())
    print(f"{name} pickled by timm {version}: max |diff| = {diff:.3g} (outputs up to {np.abs(expected).max():.3g})")
    assert diff <= 1e-5
    assert float(np.abs(via_head - expected).max()) <= 1e-5
    assert float(np.ptp(expected, axis=0).max()) > 1e-3  # outputs depend on the input
