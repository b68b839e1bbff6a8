"""Phone exports: LiteRT and ExecuTorch files run in their own runtimes like the PyTorch model; int8 is measured.

The files are run again here, outside the exporter, by a separate side-environment process, and compared with
``EmotionRecognizer`` in this process: the test does not rely on the exporter's own check.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from models import mobile_export
from models.export import ExportError
from models.recognizer import EmotionRecognizer, preprocess_array
from models.registry import get_spec
from models.versions import head_tensors, save_version
from tests.checkpoints import install_random_weights
from tests.test_keras_mobilenet import side_python

ROOT = Path(__file__).resolve().parents[1]
MODEL = "mobilenet_7"
VERSION = f"{MODEL}@test-head"

RUN_FILES = """
import json, sys
import numpy as np
x = np.load(sys.argv[1]); out = {}
from ai_edge_litert.interpreter import Interpreter
it = Interpreter(model_path=sys.argv[2]); run = it.get_signature_runner()
name = it.get_signature_list()["serving_default"]["inputs"][0]
out["litert"] = [run(**{name: r[None]})["output_0"][0].tolist() for r in x]
import torch
from executorch.runtime import Runtime
prog = Runtime.get().load_program(sys.argv[3])
m = prog.load_method("forward")
out["executorch"] = [m.execute([torch.from_numpy(r[None])])[0][0].tolist() for r in x]
out["executorch_meta"] = json.loads(prog.load_method("affectlab_metadata").execute([])[0])
print(json.dumps(out))
"""


@pytest.fixture(scope="module")
def wdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("mobile-weights")
    install_random_weights([MODEL], d, seed=5)
    spec = get_spec(MODEL)
    rng = np.random.default_rng(2)
    w = rng.normal(0, 0.05, (spec.num_outputs, spec.feature_dim)).astype(np.float32)
    b = rng.normal(0, 0.1, spec.num_outputs).astype(np.float32)
    base = EmotionRecognizer.load(MODEL, d).weights_hash
    save_version(VERSION, MODEL, base, "head", "emotion", head_tensors(w, b), "0" * 64, {}, "2026-01-01T00:00:00Z", d)
    return d


@pytest.fixture(scope="module")
def crops(face_crops: list[np.ndarray]) -> list[np.ndarray]:
    return face_crops[:3]


def _probs(logits: np.ndarray, k: int) -> np.ndarray:
    z = np.asarray(logits)[:, :k]
    e = np.exp(z - z.max(1, keepdims=True))
    out: np.ndarray = e / e.sum(1, keepdims=True)
    return out


def test_litert_and_executorch_round_trip(wdir: Path, crops: list[np.ndarray], tmp_path: Path) -> None:
    """A fine-tuned version exported to both formats; each file, run in its own runtime, gives PyTorch's numbers."""
    py = side_python("litert")
    side_python("executorch")
    rec = EmotionRecognizer.load(VERSION, wdir)
    reps = {
        fmt: mobile_export.export_mobile(VERSION, fmt, tmp_path / f"v{fmt}", wdir, crops=crops, python=py)  # type: ignore[arg-type]
        for fmt in ("litert", "executorch")
    }
    for fmt, rep in reps.items():
        assert rep.path.is_file() and rep.size_bytes == rep.path.stat().st_size > 1_000_000
        assert rep.max_prob_diff <= mobile_export.PROB_TOLERANCE and rep.n_crops == len(crops)
        meta = rep.metadata
        assert json.loads(meta["labels"]) == list(rec.spec.labels) and meta["weights_hash"] == rec.weights_hash
        assert meta["preprocessing"] == "caffe" and meta["channel_order"] == "BGR" and meta["format"] == fmt
        assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no temporary file left
    np.save(tmp_path / "x.npy", preprocess_array(crops, rec.spec))
    proc = subprocess.run(
        [str(py), "-c", RUN_FILES, str(tmp_path / "x.npy"), str(reps["litert"].path), str(reps["executorch"].path)],
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"},
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    got = json.loads(proc.stdout.strip().splitlines()[-1])
    want = np.stack([p.probs for p in rec.predict(crops)])
    k = len(rec.spec.labels)
    for fmt in ("litert", "executorch"):
        assert np.abs(_probs(np.asarray(got[fmt]), k) - want).max() <= mobile_export.PROB_TOLERANCE, fmt
    assert got["executorch_meta"]["name"] == VERSION


def test_int8_onnx_and_litert_are_measured_not_equal(wdir: Path, crops: list[np.ndarray], tmp_path: Path) -> None:
    """int8 files: smaller, calibrated on the given crops, with agreement and speed in the report and the file."""
    calib = [np.ascontiguousarray(np.rot90(c, k)) for c in crops for k in range(4)]
    onnx_rep = mobile_export.export_onnx_int8(MODEL, tmp_path / "m-int8.onnx", wdir, crops=crops, calibration=calib)
    assert onnx_rep.size_bytes < 0.5 * onnx_rep.fp32_size_bytes and onnx_rep.n_calibration == len(calib)
    assert 0.0 <= onnx_rep.top1_agreement <= 1.0 and onnx_rep.ms_per_face > 0 and onnx_rep.fp32_ms_per_face > 0
    meta = onnx_rep.metadata
    assert meta["quantize"] == "int8" and float(meta["int8_top1_agreement_vs_fp32"]) == round(
        onnx_rep.top1_agreement, 4
    )
    assert float(meta["int8_max_prob_diff_vs_fp32"]) == pytest.approx(onnx_rep.max_prob_diff, abs=1e-6)
    text = "\n".join(onnx_rep.lines())
    assert "int8 vs fp32" in text and "not the same model" in text
    import onnxruntime as ort

    sess = ort.InferenceSession(str(onnx_rep.path), providers=["CPUExecutionProvider"])
    x = preprocess_array(crops, get_spec(MODEL))
    assert sess.run(["logits"], {"input": x})[0].shape == (len(crops), 7)  # dynamic batch kept

    py = side_python("litert")
    lite = mobile_export.export_mobile(
        MODEL, "litert", tmp_path / "m-int8.tflite", wdir, crops=crops, quantize="int8", calibration=calib, python=py
    )
    assert lite.quantize == "int8" and lite.size_bytes < 0.5 * lite.fp32_size_bytes
    assert lite.metadata["quantize"] == "int8" and "int8_top1_agreement_vs_fp32" in lite.metadata
    assert float(lite.metadata["int8_max_prob_diff_vs_fp32"]) == pytest.approx(lite.max_prob_diff, abs=1e-6)


def _cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "models", "export", *args],
        capture_output=True,
        text=True,
        timeout=900,
        cwd=ROOT,
        env={**os.environ, **(env or {})},
    )


def test_bad_input_is_named_exits_2_and_writes_nothing(
    wdir: Path, crops: list[np.ndarray], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "x.tflite"
    proc = _cli("no_such_model", "--format", "litert", "--out", str(out), "--weights-dir", str(wdir))
    assert proc.returncode == 2 and "no_such_model" in proc.stderr
    missing = {"AFFECTLAB_MOBILE_PYTHON": str(tmp_path / "nowhere" / "python")}
    proc = _cli(MODEL, "--format", "executorch", "--out", str(out), "--weights-dir", str(wdir), env=missing)
    assert proc.returncode == 2 and "pip install -r requirements-mobile.txt" in proc.stderr
    proc = _cli(MODEL, "--format", "executorch", "--int8", "--out", str(out), "--weights-dir", str(wdir))
    assert proc.returncode == 2 and "int8" in proc.stderr
    proc = _cli(MODEL, "--int8", "--calibration", str(tmp_path / "none"), "--weights-dir", str(wdir))
    assert proc.returncode == 1 and "none" in proc.stderr  # a bad input file or folder: exit 1, named
    assert list(tmp_path.iterdir()) == []
    # A file whose check fails is not kept, and the error gives the largest difference.
    py = side_python("litert")
    monkeypatch.setattr(mobile_export, "PROB_TOLERANCE", -1.0)
    with pytest.raises(ExportError, match="largest probability difference"):
        mobile_export.export_mobile(MODEL, "litert", out, wdir, crops=crops[:1], python=py)
    assert list(tmp_path.iterdir()) == []


def test_study_crops_are_bounded_and_of_that_study(tmp_path: Path, random_weights_dir: Path) -> None:
    """The int8 calibration of the Models page reads at most N stored crops of the study, in one query."""
    import io

    from PIL import Image

    from db.errors import StudyNotFoundError
    from db.services import LabelStore
    from tests.test_finetune import clustered_study

    store = LabelStore(f"sqlite:///{tmp_path / 'db.sqlite3'}", data_dir=tmp_path)
    store.upgrade()
    try:
        clustered_study(store, random_weights_dir, "a")
        crops = store.study_crops("a", 5)
        assert len(crops) == 5 and all(np.asarray(Image.open(io.BytesIO(c))).shape == (12, 10, 3) for c in crops)
        assert len(store.study_crops("a", 500)) == 48
        with pytest.raises(StudyNotFoundError):
            store.study_crops("b", 5)
    finally:
        store.close()
