"""``python -m models analyze`` end to end in a subprocess: table, JSON, bad files, missing weights."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from models.registry import EMOTIONS_8

ROOT = Path(__file__).resolve().parents[1]


def run_cli(*args: str, weights_dir: Path | None = None) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    if weights_dir is not None:
        env["AFFECTLAB_WEIGHTS_DIR"] = str(weights_dir)
    return subprocess.run(
        [sys.executable, "-m", "models", *args], capture_output=True, text=True, env=env, cwd=ROOT, timeout=600
    )


@pytest.fixture(scope="module")
def analyzed(
    random_weights_dir: Path,
    multi_face_jpg: Path,
    astronaut_png: Path,
    landscape_jpg: Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> tuple[subprocess.CompletedProcess[str], dict[str, Path]]:
    bad = tmp_path_factory.mktemp("bad")
    files = {
        "multi": multi_face_jpg,
        "text": bad / "notes.jpg",
        "astronaut": astronaut_png,
        "empty": bad / "empty.png",
        "landscape": landscape_jpg,
    }
    files["text"].write_text("not an image")
    files["empty"].write_bytes(b"")
    proc = run_cli(
        "analyze", *map(str, files.values()), "--json", "--model", "enet_b0_8_va_mtl", weights_dir=random_weights_dir
    )
    return proc, files


def test_json_document(analyzed: tuple[subprocess.CompletedProcess[str], dict[str, Path]]) -> None:
    proc, files = analyzed
    assert proc.returncode == 1, proc.stderr  # two bad files
    doc = json.loads(proc.stdout)
    by_file: dict[str, list[dict]] = {}
    for face in doc["faces"]:
        by_file.setdefault(face["file"], []).append(face)
    assert len(by_file[str(files["multi"])]) == 5
    assert len(by_file[str(files["astronaut"])]) == 1
    assert str(files["landscape"]) not in by_file
    for face in doc["faces"]:
        assert set(face) >= {"file", "box", "det_score", "label", "probs", "valence", "arousal"}
        x1, y1, x2, y2 = face["box"]
        assert x1 < x2 and y1 < y2
        assert list(face["probs"]) == list(EMOTIONS_8)
        assert abs(sum(face["probs"].values()) - 1) < 1e-4
        assert face["label"] == max(face["probs"], key=face["probs"].get)
        assert -1 <= face["valence"] <= 1 and -1 <= face["arousal"] <= 1
    errors = {f["file"]: f["error"] for f in doc["files"] if f["error"]}
    assert set(errors) == {str(files["text"]), str(files["empty"])}


def test_bad_files_one_line_each_on_stderr(analyzed: tuple[subprocess.CompletedProcess[str], dict[str, Path]]) -> None:
    proc, files = analyzed
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip() and not ln.startswith("WARNING")]
    assert len(lines) == 2, proc.stderr
    assert str(files["text"]) in lines[0] and "not an image" in lines[0]
    assert str(files["empty"]) in lines[1] and "empty" in lines[1]


def test_json_matches_in_process_recognizer(
    analyzed: tuple[subprocess.CompletedProcess[str], dict[str, Path]], random_weights_dir: Path
) -> None:
    from models.faces import FaceDetector, crop_face
    from models.images import load_image
    from models.recognizer import EmotionRecognizer

    proc, files = analyzed
    doc = json.loads(proc.stdout)
    img = load_image(files["astronaut"])
    face = FaceDetector().detect(img)[0]
    pred = EmotionRecognizer.load("enet_b0_8_va_mtl", random_weights_dir).predict([crop_face(img, face.box)])[0]
    item = next(f for f in doc["faces"] if f["file"] == str(files["astronaut"]))
    assert np.allclose(item["box"], face.box, atol=0.01)
    assert np.allclose(list(item["probs"].values()), pred.probs, atol=1e-5)
    assert item["valence"] == pytest.approx(pred.valence, abs=1e-5)


def test_table_and_success_exit_code(random_weights_dir: Path, multi_face_jpg: Path, landscape_jpg: Path) -> None:
    proc = run_cli("analyze", str(multi_face_jpg), str(landscape_jpg), weights_dir=random_weights_dir)
    assert proc.returncode == 0, proc.stderr
    rows = [ln for ln in proc.stdout.splitlines() if ln.startswith(str(multi_face_jpg)[-32:])]
    assert len(rows) == 5
    assert "no face" in proc.stdout


def test_missing_weights_exit_2(tmp_path: Path, single_face_jpg: Path) -> None:
    proc = run_cli("analyze", str(single_face_jpg), "--weights-dir", str(tmp_path / "none"))
    assert proc.returncode == 2
    assert "python -m models fetch enet_b0_8_best_vgaf" in proc.stderr
    assert "import-checkpoint" in proc.stderr


def test_unknown_model_and_missing_cuda_exit_2(random_weights_dir: Path, single_face_jpg: Path) -> None:
    proc = run_cli("analyze", str(single_face_jpg), "--model", "nope", weights_dir=random_weights_dir)
    assert proc.returncode == 2 and "unknown model 'nope'" in proc.stderr
    import torch

    if not torch.cuda.is_available():
        proc = run_cli("analyze", str(single_face_jpg), "--device", "cuda", weights_dir=random_weights_dir)
        assert proc.returncode == 2 and "CUDA is not available" in proc.stderr


def test_onnx_backend_same_results(random_weights_dir: Path, tmp_path: Path, single_face_jpg: Path) -> None:
    from tests.checkpoints import install_random_weights

    install_random_weights(["enet_b0_8_best_vgaf", "enet_b0_8_best_vgaf.onnx"], tmp_path, seed=5)
    docs = []
    for backend in ("torch", "onnx"):
        proc = run_cli("analyze", str(single_face_jpg), "--json", "--backend", backend, "--weights-dir", str(tmp_path))
        assert proc.returncode == 0, proc.stderr
        docs.append(json.loads(proc.stdout))
    a, b = (d["faces"][0]["probs"] for d in docs)
    assert max(abs(a[k] - b[k]) for k in a) < 1e-4


@pytest.mark.slow
def test_video_with_tracks_and_engagement(random_weights_dir: Path, tmp_path: Path, pyfeat) -> None:
    import shutil

    from tests.test_engagement import random_keras_weights, write_keras_h5

    wdir = tmp_path / "weights"
    shutil.copytree(random_weights_dir, wdir)
    h5 = write_keras_h5(tmp_path / "engagement_single_attention.h5", random_keras_weights(seed=4))
    imp = run_cli(
        "import-checkpoint", str(h5), "--name", "engagement_single_attention", "--trust-unverified", weights_dir=wdir
    )
    assert imp.returncode == 0, imp.stderr
    video = pyfeat("single_face.mp4")
    bad = tmp_path / "broken.mp4"
    bad.write_bytes(b"\x00\x00\x00 ftypisom garbage")
    proc = run_cli("analyze", str(video), str(bad), "--json", "--fps", "10", weights_dir=wdir)
    assert proc.returncode == 1
    assert str(bad) in proc.stderr and "video" in proc.stderr
    doc = json.loads(proc.stdout)
    faces = [f for f in doc["faces"] if f["file"] == str(video)]
    assert faces and all(f["frame"] is not None and f["time_s"] is not None and f["track"] is not None for f in faces)
    times = [f["time_s"] for f in faces]
    assert times == sorted(times) and np.allclose(np.diff(times), 0.1, atol=0.04)  # 10 fps sampling
    assert len(faces) >= 16  # enough for an engagement score (a short track is scored from 16 faces on)
    tracks = [t for t in doc["tracks"] if t["file"] == str(video)]
    assert len(tracks) == 1 and tracks[0]["n_faces"] == len(faces)
    eng = tracks[0]["engagement"]
    assert eng is not None and eng["label"] in ("Distracted", "Engaged") and 0 <= eng["score"] <= 1
    assert eng["windows"] and all(w["start_s"] <= w["end_s"] for w in eng["windows"])
    entry = next(f for f in doc["files"] if f["file"] == str(video))
    assert entry["kind"] == "video" and entry["engagement_status"] == "ok"


def test_truncated_video_warning_on_stderr_and_in_json(
    random_weights_dir: Path, tmp_path: Path, single_face_jpg: Path
) -> None:
    from PIL import Image

    from tests.videos import write_video

    img = np.asarray(Image.open(single_face_jpg).convert("RGB").resize((320, 240)))
    rng = np.random.default_rng(0)
    frames = [np.clip(img.astype(int) + rng.integers(-40, 40, img.shape), 0, 255).astype(np.uint8) for _ in range(20)]
    full = write_video(tmp_path / "t.mp4", frames, fps=10, container_options={"movflags": "faststart"})
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(full.read_bytes()[: full.stat().st_size // 2])
    proc = run_cli("analyze", str(cut), "--json", "--fps", "0", weights_dir=random_weights_dir)
    assert proc.returncode == 0, proc.stderr
    warnings = json.loads(proc.stdout)["files"][0]["warnings"]
    assert any("truncated" in w for w in warnings)
    assert f"warning: {cut}: " in proc.stderr and "truncated" in proc.stderr


def test_streamed_json_is_the_document_text(
    random_weights_dir: Path, multi_face_jpg: Path, landscape_jpg: Path, tmp_path: Path, pyfeat
) -> None:
    """``--json`` streams the document (faces spooled per file); the text is ``json.dumps(doc, indent=2)``'s."""
    import io

    from models.analysis import AnalysisSession

    bad = tmp_path / "notes.jpg"
    bad.write_text("not an image")
    paths = [multi_face_jpg, bad, pyfeat("single_face.mp4"), landscape_jpg]
    session = AnalysisSession.open("enet_b0_8_best_vgaf", random_weights_dir, backend="onnx", workers=1)
    doc, failed = session.analyze_paths(paths, fps=2.0)
    out = io.StringIO()
    assert session.write_document(paths, out, fps=2.0) == failed is True
    assert len(doc["faces"]) > 5 and doc["tracks"]
    assert out.getvalue() == json.dumps(doc, indent=2, ensure_ascii=False)
    none = io.StringIO()  # no face anywhere: an empty list
    assert session.write_document([landscape_jpg], none) is False
    assert json.loads(none.getvalue())["faces"] == []
    assert none.getvalue() == json.dumps(session.analyze_paths([landscape_jpg])[0], indent=2, ensure_ascii=False)
