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
    return subprocess.run([sys.executable, "-m", "models", *args], capture_output=True, text=True, env=env,
                          cwd=ROOT, timeout=600)


@pytest.fixture(scope="module")
def analyzed(random_weights_dir: Path, multi_face_jpg: Path, astronaut_png: Path, landscape_jpg: Path,
             tmp_path_factory: pytest.TempPathFactory) -> tuple[subprocess.CompletedProcess[str], dict[str, Path]]:
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
    proc = run_cli("analyze", *map(str, files.values()), "--json", "--model", "enet_b0_8_va_mtl",
                   weights_dir=random_weights_dir)
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


def test_json_matches_in_process_recognizer(analyzed: tuple[subprocess.CompletedProcess[str], dict[str, Path]],
                                            random_weights_dir: Path) -> None:
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
