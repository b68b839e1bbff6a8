"""Phone exports: LiteRT and ExecuTorch files run in their own runtimes like the PyTorch model; int8 is measured.

The files are run again here, outside the exporter, by a separate side-environment process, and compared with
``EmotionRecognizer`` in this process: the test does not rely on the exporter's own check.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import models.export as export_mod
from models import cli, mobile_export, onnx_int8
from models.export import ExportCheckError
from models.recognizer import EmotionRecognizer, preprocess_array
from models.registry import get_spec
from models.versions import head_tensors, save_version
from tests.checkpoints import install_random_weights
from tests.test_keras_mobilenet import side_python

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


@pytest.fixture(scope="module")
def calib(crops: list[np.ndarray]) -> list[np.ndarray]:
    """int8 calibration crops: not the check crops (rotated copies), so the report counts what it was given."""
    return [np.ascontiguousarray(np.rot90(c, k)) for c in crops[:2] for k in (1, 2)]


@pytest.fixture(scope="module")
def exports(
    wdir: Path, crops: list[np.ndarray], calib: list[np.ndarray], tmp_path_factory: pytest.TempPathFactory
) -> dict[str, mobile_export.MobileExportReport]:
    """One real conversion per format, shared by the tests below.

    LiteRT and ExecuTorch of a fine-tuned version; int8 LiteRT and ONNX of the base model, calibrated on ``calib``.
    Two at a time: the LiteRT files in one side process (the converter imported once), ExecuTorch then ONNX int8.
    """
    py = side_python("litert")
    side_python("executorch")
    out = tmp_path_factory.mktemp("phone")
    litert_jobs = [
        mobile_export.MobileJob(VERSION, "litert", out / "v.tflite"),
        mobile_export.MobileJob(MODEL, "litert", out / "m-int8.tflite", quantize="int8", calibration=calib),
    ]

    def litert() -> dict[str, mobile_export.MobileExportReport]:
        fp32, int8 = mobile_export.export_mobile_many(litert_jobs, wdir, crops=crops, python=py)
        return {"litert": fp32, "litert-int8": int8}

    def others() -> dict[str, mobile_export.MobileExportReport]:
        return {
            "executorch": mobile_export.export_mobile(
                VERSION, "executorch", out / "v.pte", wdir, crops=crops, python=py
            ),
            "onnx-int8": onnx_int8.export_onnx_int8(MODEL, out / "m-int8.onnx", wdir, crops=crops, calibration=calib),
        }

    with ThreadPoolExecutor(2) as pool:  # each side process keeps one core busy
        futures = [pool.submit(litert), pool.submit(others)]
        reports = {key: rep for f in futures for key, rep in f.result().items()}
    assert [p.name for p in out.iterdir() if p.name.startswith(".")] == []  # no temporary file left
    return reports


def _probs(logits: np.ndarray, k: int) -> np.ndarray:
    z = np.asarray(logits)[:, :k]
    e = np.exp(z - z.max(1, keepdims=True))
    out: np.ndarray = e / e.sum(1, keepdims=True)
    return out


def test_litert_and_executorch_round_trip(
    wdir: Path, crops: list[np.ndarray], exports: dict[str, mobile_export.MobileExportReport], tmp_path: Path
) -> None:
    """A fine-tuned version exported to both formats; each file, run in its own runtime, gives PyTorch's numbers."""
    py = side_python("litert")
    rec = EmotionRecognizer.load(VERSION, wdir)
    reps = {fmt: exports[fmt] for fmt in ("litert", "executorch")}
    for fmt, rep in reps.items():
        assert rep.path.is_file() and rep.size_bytes == rep.path.stat().st_size > 1_000_000
        assert rep.max_prob_diff <= mobile_export.PROB_TOLERANCE and rep.n_crops == len(crops)
        meta = rep.metadata
        assert json.loads(meta["labels"]) == list(rec.spec.labels) and meta["weights_hash"] == rec.weights_hash
        assert meta["preprocessing"] == "caffe" and meta["channel_order"] == "BGR" and meta["format"] == fmt
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


def test_int8_onnx_and_litert_are_measured_not_equal(
    crops: list[np.ndarray], calib: list[np.ndarray], exports: dict[str, mobile_export.MobileExportReport]
) -> None:
    """int8 files: smaller, calibrated on the given crops, with agreement and speed in the report and the file."""
    onnx_rep = exports["onnx-int8"]
    assert onnx_rep.size_bytes < 0.5 * onnx_rep.fp32_size_bytes and onnx_rep.n_calibration == len(calib)
    assert 0.0 <= onnx_rep.top1_agreement <= 1.0 and onnx_rep.ms_per_face > 0 and onnx_rep.fp32_ms_per_face > 0
    meta = onnx_rep.metadata
    assert meta["quantize"] == "int8" and float(meta["int8_top1_agreement_vs_fp32"]) == round(
        onnx_rep.top1_agreement, 4
    )
    assert float(meta["int8_max_prob_diff_vs_fp32"]) == pytest.approx(onnx_rep.max_prob_diff, abs=1e-6)
    assert meta["int8_calibration_crops"] == str(len(calib)) and meta["int8_check_crops"] == str(len(crops))
    text = "\n".join(onnx_rep.lines())
    assert "int8 vs fp32" in text and "not the same model" in text
    import onnxruntime as ort

    sess = ort.InferenceSession(str(onnx_rep.path), providers=["CPUExecutionProvider"])
    x = preprocess_array(crops, get_spec(MODEL))
    assert sess.run(["logits"], {"input": x})[0].shape == (len(crops), 7)  # dynamic batch kept

    lite = exports["litert-int8"]
    assert lite.quantize == "int8" and lite.size_bytes < 0.5 * lite.fp32_size_bytes
    assert lite.n_calibration == len(calib) and 0.0 <= lite.top1_agreement <= 1.0 and lite.ms_per_face > 0
    assert lite.metadata["quantize"] == "int8" and "int8_top1_agreement_vs_fp32" in lite.metadata
    assert float(lite.metadata["int8_max_prob_diff_vs_fp32"]) == pytest.approx(lite.max_prob_diff, abs=1e-6)
    assert json.loads(lite.metadata["io"])["input:args_0"]["dtype"] == "int8"  # fully integer, as the README says


def _cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str]:
    code = cli.main(["export", *args])
    return code, capsys.readouterr().err


def test_bad_input_is_named_exits_2_and_writes_nothing(
    wdir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "x.tflite"
    code, err = _cli(capsys, "no_such_model", "--format", "litert", "--out", str(out), "--weights-dir", str(wdir))
    assert code == 2 and "no_such_model" in err
    with monkeypatch.context() as m:
        m.setenv("AFFECTLAB_MOBILE_PYTHON", str(tmp_path / "nowhere" / "python"))
        code, err = _cli(capsys, MODEL, "--format", "executorch", "--out", str(out), "--weights-dir", str(wdir))
    assert code == 2 and "pip install -r requirements-mobile.txt" in err
    code, err = _cli(capsys, MODEL, "--format", "executorch", "--int8", "--out", str(out), "--weights-dir", str(wdir))
    assert code == 2 and "int8" in err
    code, err = _cli(capsys, MODEL, "--int8", "--calibration", str(tmp_path / "none"), "--weights-dir", str(wdir))
    assert code == 1 and "none" in err  # a bad input file or folder: exit 1, named
    assert list(tmp_path.iterdir()) == []


def fake_converter(monkeypatch: pytest.MonkeyPatch, diff: float) -> list[dict[str, Any]]:
    """Replaces the side process by one whose file, run in its runtime, is ``diff`` away from PyTorch.

    Forces a failed check without a conversion (the real conversions and checks are the ``exports`` fixture's).
    Returns the requests it got, each with whether its temporary file existed when the check ran.
    """
    seen: list[dict[str, Any]] = []

    def run(python: Path, args: list[str], timeout: float) -> subprocess.CompletedProcess[str]:
        req = json.loads(Path(args[-1]).read_text(encoding="utf-8"))
        Path(req["out"]).write_bytes(b"a converted file")
        resp = {
            "ok": True,
            **dict.fromkeys(("max_prob_diff", "max_logit_diff", "max_feature_diff"), diff),
            "top1_agreement": 0.0,
            "n_crops": 1,
            "ms_per_face": 1.0,
            "torch_ms_per_face": 1.0,
            "metadata": req["meta"],
        }
        Path(req["response"]).write_text(json.dumps(resp), encoding="utf-8")
        seen.append(req)
        return subprocess.CompletedProcess([str(python), *args], 0, "", "")

    monkeypatch.setattr(mobile_export.mobile_env, "require", lambda job, python: Path(sys.executable))
    monkeypatch.setattr(mobile_export.mobile_env, "run", run)
    return seen


@pytest.mark.parametrize(("fmt", "int8"), [("litert", False), ("executorch", False), ("litert", True)])
def test_a_failed_phone_check_keeps_nothing_and_exits_2(
    wdir: Path,
    crops: list[np.ndarray],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    fmt: str,
    int8: bool,
) -> None:
    """fp32 over the tolerance, or int8 giving no finite answer: named error with the difference, exit 2, the temporary
    file deleted, an earlier file at the same path untouched."""
    diff = float("nan") if int8 else 0.25
    seen = fake_converter(monkeypatch, diff)
    monkeypatch.setattr(export_mod, "sample_crops", lambda detector=None: crops[:1])
    out = tmp_path / f"m{mobile_export.SUFFIXES[fmt]}"
    out.write_bytes(b"an earlier export")
    code, err = _cli(
        capsys, MODEL, "--format", fmt, *(["--int8"] if int8 else []), "--out", str(out), "--weights-dir", str(wdir)
    )
    assert code == 2, err
    label = f"{fmt} int8" if int8 else fmt
    assert f"the {label} file disagrees" in err and f"probability difference {diff:.3g}" in err and "not kept" in err
    assert (
        Path(seen[0]["out"]).parent == tmp_path and Path(seen[0]["out"]).name != out.name
    )  # checked under a temp name
    assert sorted(p.name for p in tmp_path.iterdir()) == [out.name] and out.read_bytes() == b"an earlier export"
    with pytest.raises(ExportCheckError) as info:
        mobile_export.export_mobile(
            MODEL,
            fmt,
            tmp_path / "new" / out.name,
            wdir,
            crops=crops[:1],
            quantize="int8" if int8 else "none",  # type: ignore[arg-type]
            python=Path(sys.executable),
        )
    assert info.value.format == label and info.value.tolerance == (None if int8 else mobile_export.PROB_TOLERANCE)
    assert list((tmp_path / "new").iterdir()) == []


def test_a_failed_onnx_int8_check_keeps_nothing_and_exits_2(
    wdir: Path,
    crops: list[np.ndarray],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """The int8 ONNX file, run in ONNX Runtime, gives NaN: not kept, exit 2 (the fp32 file it came from passed)."""
    real = onnx_int8._ort_session

    def session(path: Path) -> Any:
        sess = real(path)
        if path.name.endswith(".tmp"):  # the int8 file being checked, not the fp32 one
            run = sess.run
            sess = type("NaNSession", (), {"run": lambda self, names, feed: [a * np.nan for a in run(names, feed)]})()
        return sess

    monkeypatch.setattr(onnx_int8, "_ort_session", session)
    monkeypatch.setattr(export_mod, "sample_crops", lambda detector=None: crops[:1])
    out = tmp_path / "m-int8.onnx"
    code, err = _cli(capsys, MODEL, "--format", "onnx", "--int8", "--out", str(out), "--weights-dir", str(wdir))
    assert code == 2, err
    assert "the onnx int8 file disagrees" in err and "nan" in err and "not kept" in err
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
        crops = store.recordings.study_crops("a", 5)
        assert len(crops) == 5 and all(np.asarray(Image.open(io.BytesIO(c))).shape == (12, 10, 3) for c in crops)
        assert len(store.recordings.study_crops("a", 500)) == 48
        with pytest.raises(StudyNotFoundError):
            store.recordings.study_crops("b", 5)
    finally:
        store.close()
