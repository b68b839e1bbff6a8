"""Mobile/edge export: ONNX and TorchScript files load in their runtimes and agree with the PyTorch model."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from models import cli
from models.export import TOLERANCE, ExportError, ExportReport, export_model, read_torchscript_metadata
from models.recognizer import EmotionRecognizer, preprocess
from models.registry import get_spec
from models.versions import get_version, head_tensors, save_version
from tests.checkpoints import install_random_weights

MODEL = "enet_b0_8_va_mtl"  # 10 outputs: the export must keep V/A


@pytest.fixture(scope="module")
def wdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("export-weights")
    install_random_weights([MODEL], d, seed=5)
    return d


@pytest.fixture(scope="module")
def crops(face_crops: list[np.ndarray]) -> list[np.ndarray]:
    return face_crops[:4]


@pytest.fixture(scope="module")
def head_version(wdir: Path) -> str:
    spec = get_spec(MODEL)
    rng = np.random.default_rng(11)
    w = rng.normal(0, 0.05, (spec.num_outputs, spec.feature_dim)).astype(np.float32)
    b = rng.normal(0, 0.1, spec.num_outputs).astype(np.float32)
    v = save_version(
        f"{MODEL}@test-head",
        MODEL,
        "0" * 40,
        "head",
        "emotion",
        head_tensors(w, b),
        "fp",
        {},
        "2026-01-01T00:00:00",
        wdir,
    )
    return v.name


def _recognizer_outputs(name: str, wdir: Path, crops: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    rec = EmotionRecognizer.load(name, wdir)
    feats = rec.extract_features(crops)
    return rec.logits(feats), feats


def test_onnx_export_runs_in_onnxruntime_and_matches_the_recognizer(wdir, crops, tmp_path):
    import onnx
    import onnxruntime as ort

    rep = export_model(MODEL, "onnx", tmp_path / "m.onnx", wdir, crops=crops)
    assert isinstance(rep, ExportReport) and rep.format == "onnx" and rep.n_crops == len(crops) == 4
    assert rep.path.is_file() and rep.size_bytes == rep.path.stat().st_size > 1_000_000
    assert rep.max_abs_diff <= TOLERANCE and rep.agrees()
    assert not list(tmp_path.glob(".*.tmp"))  # atomic write leaves nothing behind

    model = onnx.load(str(rep.path))
    assert model.opset_import[0].version >= 11
    meta = {p.key: p.value for p in model.metadata_props}
    assert meta["name"] == MODEL and meta["input_size"] == "224" and meta["has_va"] == "true"
    sess = ort.InferenceSession(str(rep.path), providers=["CPUExecutionProvider"])
    assert [i.name for i in sess.get_inputs()] == ["input"]
    assert [o.name for o in sess.get_outputs()] == ["logits", "features"]
    x = preprocess(crops, get_spec(MODEL)).numpy()
    logits, feats = sess.run(None, {"input": x})
    want_logits, want_feats = _recognizer_outputs(MODEL, wdir, crops)
    assert logits.shape == (4, 10) and feats.shape == (4, 1280)
    np.testing.assert_allclose(logits, want_logits, atol=TOLERANCE, rtol=0)
    np.testing.assert_allclose(feats, want_feats, atol=TOLERANCE, rtol=0)
    assert np.ptp(logits, axis=0).max() > 1e-3  # outputs depend on the face: the comparison is not vacuous
    one = sess.run(None, {"input": x[2:3]})[0]  # dynamic batch
    np.testing.assert_allclose(one, want_logits[2:3], atol=TOLERANCE, rtol=0)


@pytest.mark.filterwarnings("ignore:`torch.jit.load` is deprecated:FutureWarning")
def test_torchscript_export_of_a_head_version_loads_with_jit_load_and_matches(wdir, crops, head_version, tmp_path):
    rep = export_model(head_version, "torchscript", tmp_path / "v.pt", wdir, crops=crops)
    assert rep.format == "torchscript" and rep.agrees() and rep.size_bytes > 1_000_000
    module = torch.jit.load(str(rep.path), map_location="cpu")
    x = preprocess(crops, get_spec(MODEL))
    with torch.no_grad():
        logits, feats = module(x)
        one, _ = module(x[:1])
    want_logits, want_feats = _recognizer_outputs(head_version, wdir, crops)
    np.testing.assert_allclose(logits.numpy(), want_logits, atol=TOLERANCE, rtol=0)
    np.testing.assert_allclose(feats.numpy(), want_feats, atol=TOLERANCE, rtol=0)
    np.testing.assert_allclose(one.numpy(), want_logits[:1], atol=TOLERANCE, rtol=0)
    # The version's head, not the base's, is in the file.
    base_logits, _ = _recognizer_outputs(MODEL, wdir, crops)
    assert np.abs(base_logits - want_logits).max() > 1e-2
    meta = read_torchscript_metadata(rep.path)
    assert meta["name"] == head_version and meta["base"] == MODEL
    assert meta["weights_hash"].endswith(get_version(head_version, wdir).weights_hash)


def test_cli_export_prints_the_difference_and_size(wdir, multi_face_jpg, tmp_path, capsys):
    out = tmp_path / "cli.onnx"
    code = cli.main(
        [
            "export",
            MODEL,
            "--format",
            "onnx",
            "--out",
            str(out),
            "--weights-dir",
            str(wdir),
            "--check-images",
            str(multi_face_jpg),
        ]
    )
    text = capsys.readouterr().out
    assert code == 0, text
    assert out.is_file() and "max |diff|" in text and str(out.stat().st_size) in text.replace(",", "")
    diff = float(text.split("max |diff|")[1].split()[0])
    assert diff <= TOLERANCE


def test_cli_export_exits_2_and_keeps_nothing_when_the_file_disagrees(wdir, crops, tmp_path, capsys, monkeypatch):
    """The file's runtime gives wrong outputs: named error with the largest difference, exit 2, no file, no temp."""
    import models.export as export_mod

    real = export_mod._runner

    def wrong_runtime(path, fmt):
        run = real(path, fmt)
        return lambda x: [a + 0.5 for a in run(x)]

    monkeypatch.setattr(export_mod, "_runner", wrong_runtime)
    monkeypatch.setattr(export_mod, "sample_crops", lambda detector=None: crops[:2])
    (tmp_path / "kept.onnx").write_bytes(b"an earlier export")  # what is already there is not touched
    for fmt, name in (("onnx", "kept.onnx"), ("torchscript", "bad.pt")):
        code = cli.main(["export", MODEL, "--format", fmt, "--out", str(tmp_path / name), "--weights-dir", str(wdir)])
        err = capsys.readouterr().err
        assert code == 2, (fmt, err)
        assert f"the {fmt} file disagrees" in err and "not kept" in err and "absolute difference 0.5 > " in err, err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["kept.onnx"]
    assert (tmp_path / "kept.onnx").read_bytes() == b"an earlier export"


def test_export_refuses_unknown_formats_and_non_pytorch_models(wdir, crops, tmp_path):
    with pytest.raises(ExportError, match="format"):
        export_model(MODEL, "tflite", tmp_path / "x", wdir, crops=crops)  # type: ignore[arg-type]
    with pytest.raises(ExportError, match="not a runnable PyTorch"):
        export_model("enet_b0_8_va_mtl.onnx", "onnx", tmp_path / "x", wdir, crops=crops)
    assert cli.main(["export", "no_such_model", "--weights-dir", str(wdir)]) == 2
