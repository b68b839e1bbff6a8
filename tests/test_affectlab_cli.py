"""`python -m affectlab analyze` in a subprocess: faces stored with crops and features, skips, bad files."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from db.services import LabelStore

ROOT = Path(__file__).resolve().parents[1]
MODEL = "enet_b0_8_best_vgaf"


def run_affectlab(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    full = {**os.environ, "PYTHONPATH": str(ROOT), **env}
    if "AFFECTLAB_STORE_CROPS" not in env:
        full.pop("AFFECTLAB_STORE_CROPS", None)
    return subprocess.run(
        [sys.executable, "-m", "affectlab", *args], capture_output=True, text=True, env=full, cwd=ROOT, timeout=600
    )


@pytest.fixture
def setup(tmp_path: Path, random_weights_dir: Path) -> tuple[dict[str, str], str]:
    """The environment of a fresh SQLite store (migrated) and the random weights; the store's URL."""
    url = f"sqlite:///{tmp_path / 'data' / 'affectlab.sqlite3'}"
    (tmp_path / "data").mkdir()
    LabelStore(url).upgrade()
    env = {
        "AFFECTLAB_WEIGHTS_DIR": str(random_weights_dir),
        "AFFECTLAB_DATA_DIR": str(tmp_path / "data"),
        "DATABASE_URL": url,
    }
    return env, url


def test_analyze_stores_faces_with_crops_and_features_then_skips(setup, multi_face_jpg: Path) -> None:
    env, url = setup
    proc = run_affectlab("analyze", str(multi_face_jpg), "--study", "pilot", env=env)
    assert proc.returncode == 0, proc.stderr
    assert f"{multi_face_jpg}: 5 faces; study 'pilot': media 1 new" in proc.stdout
    assert "5 crops, 5 features" in proc.stdout
    assert "1 files: 1 stored (5 faces, 5 crops, 5 features), 0 skipped" in proc.stdout
    store = LabelStore(url)
    try:
        faces = store.recordings.faces("pilot")
        assert len(faces) == 5 and all(f.has_crop and f.feature_model == MODEL for f in faces)
        assert all(store.recordings.face_features(f.face_id).shape == (1280,) for f in faces)
        assert [p["model"] for p in store.recordings.predictions(faces[0].face_id)] == [MODEL]
        (media,) = store.recordings.media("pilot")
        assert (media.kind, media.filename, media.n_faces) == ("image", multi_face_jpg.name, 5)  # never a path
        # Kept like the web app does (thumbnails and boxes), in the data folder, owner-only.
        kept = LabelStore(url, data_dir=Path(env["AFFECTLAB_DATA_DIR"])).recordings.media_path(media.id)
        assert kept is not None and kept.read_bytes() == multi_face_jpg.read_bytes()
        assert kept.parent.parent == Path(env["AFFECTLAB_DATA_DIR"]) / "media"
        assert kept.stat().st_mode & 0o777 == 0o600
    finally:
        store.close()

    again = run_affectlab("analyze", str(multi_face_jpg), "--study", "pilot", "--json", env=env)
    assert again.returncode == 0, again.stderr
    doc = json.loads(again.stdout)
    assert doc["summary"] == {"files": 1, "stored": 0, "skipped": 1, "failed": 0, "faces": 0, "crops": 0, "features": 0}
    assert doc["files"][0]["status"] == "skipped" and doc["files"][0]["media_id"] == media.id
    store = LabelStore(url)
    try:
        assert len(store.recordings.faces("pilot")) == 5 and len(store.recordings.predictions(faces[0].face_id)) == 1
    finally:
        store.close()


def test_bad_file_among_good_ones_exit_1(
    setup, tmp_path: Path, single_face_jpg: Path, astronaut_png: Path, landscape_jpg: Path
) -> None:
    env, url = setup
    folder = tmp_path / "media"
    (folder / "sub").mkdir(parents=True)
    shutil.copy(single_face_jpg, folder / "single.jpg")
    shutil.copy(astronaut_png, folder / "sub" / "astronaut.png")
    (folder / "notes.txt").write_text("not media: left out of the walk")
    (folder / "broken.jpg").write_text("not an image")
    (folder / ".hidden.jpg").write_text("hidden: left out of the walk")
    proc = run_affectlab(
        "analyze", str(folder), str(landscape_jpg), str(tmp_path / "missing.png"), "--study", "s", env=env
    )
    assert proc.returncode == 1
    errors = [ln for ln in proc.stderr.splitlines() if ln.strip() and not ln.startswith("WARNING")]
    assert len(errors) == 2, proc.stderr
    # Files run in parallel (one process per core by default): each bad file is named once, in the order they end.
    broken = [e for e in errors if e.startswith(f"{folder / 'broken.jpg'}: ")]
    assert len(broken) == 1 and "not an image" in broken[0]
    assert f"{tmp_path / 'missing.png'}: no such file" in errors
    summary = proc.stdout.strip().splitlines()[-1]
    assert summary == "5 files: 3 stored (2 faces, 2 crops, 2 features), 0 skipped (already in study 's'), 2 failed"
    store = LabelStore(url)
    try:
        stored = {m.filename: m.n_faces for m in store.recordings.media("s")}
        assert stored == {"single.jpg": 1, "astronaut.png": 1, landscape_jpg.name: 0}, "base names, never paths"
        assert all(store.recordings.face_features(f.face_id) is not None for f in store.recordings.faces("s"))
    finally:
        store.close()


def test_features_only_mode_and_video(setup, pyfeat) -> None:
    env, url = setup
    video = pyfeat("single_face.mp4")
    proc = run_affectlab("analyze", str(video), "--study", "v", "--fps", "2", env={**env, "AFFECTLAB_STORE_CROPS": "0"})
    assert proc.returncode == 0, proc.stderr
    assert f"warning: {video}: engagement: no engagement weights" in proc.stderr  # as the web app says it
    store = LabelStore(url, data_dir=Path(env["AFFECTLAB_DATA_DIR"]))  # its features file is in the data folder
    try:
        faces = store.recordings.faces("v")
        assert faces and all(not f.has_crop and f.frame is not None for f in faces)
        assert all(store.recordings.face_features(f.face_id) is not None for f in faces)
        (media,) = store.recordings.media("v")
        assert media.kind == "video" and len(store.recordings.tracks(media.id)) >= 1
        feats = np.stack([store.recordings.face_features(f.face_id) for f in faces])
        assert feats.shape == (len(faces), 1280) and np.isfinite(feats).all()
    finally:
        store.close()


def test_setup_problems_exit_2(setup, tmp_path: Path, single_face_jpg: Path) -> None:
    env, _ = setup
    proc = run_affectlab(
        "analyze", str(single_face_jpg), "--study", "s", env={**env, "AFFECTLAB_WEIGHTS_DIR": str(tmp_path / "none")}
    )
    assert proc.returncode == 2 and f"python -m models fetch {MODEL}" in proc.stderr
    proc = run_affectlab(
        "analyze",
        str(single_face_jpg),
        "--study",
        "s",
        env={**env, "DATABASE_URL": f"sqlite:///{tmp_path / 'empty.sqlite3'}"},
    )
    assert proc.returncode == 2 and "python -m db upgrade" in proc.stderr


def test_console_script_and_packages_declared() -> None:
    import importlib
    import tomllib

    meta = tomllib.loads((ROOT / "pyproject.toml").read_text())
    module, func = meta["project"]["scripts"]["affectlab"].split(":")
    assert callable(getattr(importlib.import_module(module), func))
    include = meta["tool"]["setuptools"]["packages"]["find"]["include"]
    packages = {d.name for d in ROOT.iterdir() if (d / "__init__.py").is_file() and d.name != "tests"}
    assert {p.split(".")[0] for p in include} == packages
    assert {"core", "affectlab", "models", "db", "webapp"} <= packages


@pytest.mark.parametrize("package", ["affectlab", "models"])
def test_a_bad_setting_is_named_with_exit_2_before_anything_runs(tmp_path: Path, package: str) -> None:
    """The CLIs read the settings once at the top: a setting that is no number or no backend stops the run, named."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "AFFECTLAB_DATA_DIR": str(tmp_path / "data")}
    study = ["--study", "s"] if package == "affectlab" else []
    for name, value in (("AFFECTLAB_BACKEND", "tensorflow"), ("AFFECTLAB_DETECT_EVERY", "two")):
        proc = subprocess.run(
            [sys.executable, "-m", package, "analyze", str(tmp_path / "none.jpg"), *study],
            capture_output=True,
            text=True,
            env={**env, name: value},
            cwd=ROOT,
            timeout=600,
        )
        assert proc.returncode == 2 and name in proc.stderr and value in proc.stderr, proc.stderr
        assert "Traceback" not in proc.stderr and not (tmp_path / "data").exists()
