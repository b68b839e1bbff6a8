"""mobilenet_7 without TensorFlow: the PyTorch rebuild against real TensorFlow Keras, and as a model like any other."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from core.settings import Settings
from models import weights
from models.convert import import_checkpoint
from models.errors import CheckpointFormatError
from models.keras_h5 import read_keras_weights
from models.keras_mobilenet import KerasMobileNetV1, keras_state_dict
from models.recognizer import EmotionRecognizer, preprocess_array
from models.registry import get_spec
from tests.checkpoints import calibration_batch, randomize_
from tests.keras_files import keras_layers, write_mobilenet_h5

ROOT = Path(__file__).resolve().parents[1]
SPEC = get_spec("mobilenet_7")
PARITY = 1e-5
FEATURE_PARITY = 2e-5


def side_python(job: str) -> Path:
    """The side environment's interpreter for ``job``; skips (fails under ``make test``) when it is not installed."""
    from models.mobile_env import ConverterMissingError, require

    try:
        return require(job, Settings.from_env().mobile_python)
    except ConverterMissingError as exc:
        if os.environ.get("AFFECTLAB_REQUIRE_MOBILE") == "1":
            pytest.fail(f"make test installs the side environment, but: {exc}")
        pytest.skip(str(exc))


@pytest.fixture(scope="module")
def state() -> dict[str, np.ndarray]:
    """Random weights with realistic activations (BatchNorm statistics measured on photographs, then perturbed)."""
    module = randomize_(KerasMobileNetV1(7), 7, calibration_batch(SPEC, 7))
    return {k: v.numpy() for k, v in module.state_dict().items()}


@pytest.fixture(scope="module")
def crops(face_crops: list[np.ndarray]) -> list[np.ndarray]:
    return face_crops[:4]


def torch_outputs(path: Path, crops: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    model = KerasMobileNetV1(7)
    model.load_state_dict(keras_state_dict(path, 7), strict=True)
    model.eval()
    head = model.classifier
    model.classifier = torch.nn.Identity()
    with torch.no_grad():
        features = model(torch.from_numpy(preprocess_array(crops, SPEC)))
        return features.numpy(), head(features).numpy()


def exact_outputs(path: Path, crops: list[np.ndarray]) -> np.ndarray:
    """The pooled features computed in float64 (the exact result both float32 implementations approximate)."""
    model = KerasMobileNetV1(7)
    model.load_state_dict(keras_state_dict(path, 7), strict=True)
    model = model.double().eval()
    model.classifier = torch.nn.Identity()
    with torch.no_grad():
        out: np.ndarray = model(torch.from_numpy(preprocess_array(crops, SPEC)).double()).numpy()
    return out


def test_tf_keras_parity(tmp_path: Path, state: dict[str, np.ndarray], crops: list[np.ndarray]) -> None:
    """Features and logits within 1e-5 of TensorFlow's own Keras MobileNet on the same file and the same crops.

    TensorFlow writes the file itself (``model.save(".h5")``, the published format) from random weights; a second
    model reads the file this test suite's writer made with Keras's own ``load_weights``.
    """
    py = side_python("tensorflow")
    ours = write_mobilenet_h5(state, tmp_path / "h5py_written.h5")
    x_nchw = preprocess_array(crops, SPEC)
    inputs: dict[str, object] = {"x": x_nchw.transpose(0, 2, 3, 1).copy(), "h5py_file": np.asarray(str(ours))}
    weighted = [w for _, w in keras_layers(state) if w]
    for i, layer in enumerate(weighted):
        for j, (_, value) in enumerate(layer):
            inputs[f"L{i}_{j}"] = np.ascontiguousarray(value)
    np.savez(tmp_path / "in.npz", **inputs)  # type: ignore[arg-type]
    side = subprocess.Popen(  # TensorFlow runs while this process computes the port's outputs
        [str(py), str(ROOT / "tests" / "tf_mobilenet.py"), str(tmp_path / "in.npz"), str(tmp_path)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "CUDA_VISIBLE_DEVICES": ""},
    )
    try:
        # On this suite's file, which holds the same weights as TensorFlow's (checked below, tensor by tensor).
        features, logits = torch_outputs(ours, crops)
        exact = exact_outputs(ours, crops)
        _, stderr = side.communicate(timeout=600)
    finally:
        side.kill()
    assert side.returncode == 0, stderr[-3000:]
    tf = np.load(tmp_path / "tf_out.npz")
    assert str(tf["tf_version"]).startswith("2.")
    # TensorFlow's file, read by AffectLab (h5py, no TensorFlow): the same weights as this suite's file.
    tf_file = tmp_path / "tf_written.h5"
    assert len(read_keras_weights(tf_file)) == 55
    theirs, mine = keras_state_dict(tf_file, 7), keras_state_dict(ours, 7)
    assert theirs.keys() == mine.keys() and all(torch.equal(theirs[k], mine[k]) for k in theirs)
    assert np.abs(tf["features_a"]).max() > 0.1 and tf["probs_a"].std(axis=0).max() > 1e-3  # not a constant net
    probs = np.exp(logits - logits.max(1, keepdims=True))
    probs /= probs.sum(1, keepdims=True)
    diffs = {
        "features": float(np.abs(features - tf["features_a"]).max()),
        "logits": float(np.abs(logits - tf["logits_a"]).max()),
        "probs": float(np.abs(probs - tf["probs_a"]).max()),
    }
    # Logits and probabilities: 1e-5. Features: float32 through 28 layers leaves TensorFlow itself ~2e-5 from the
    # exact (float64) result on features up to ~1.5, a few of 4096 values a little over 1e-5 from this port's; so the
    # features get 2e-5, and this port must be as close to the exact result as TensorFlow is.
    ours_err = float(np.abs(features - exact).max())
    tf_err = float(np.abs(tf["features_a"] - exact).max())
    print(f"mobilenet_7 vs TensorFlow {tf['tf_version']}: {diffs}; vs float64: ours {ours_err:.3g}, TF {tf_err:.3g}")
    assert diffs["logits"] <= PARITY and diffs["probs"] <= PARITY
    assert diffs["features"] <= FEATURE_PARITY
    assert ours_err <= 1.5 * tf_err + 1e-6
    # This suite's writer makes files Keras reads to the same network.
    assert np.array_equal(tf["features_b"], tf["features_a"]) and np.array_equal(tf["logits_b"], tf["logits_a"])


@pytest.mark.parametrize("layout", ["keras2_model", "keras2_weights", "keras3_model"])
def test_layouts_read_to_the_same_weights(tmp_path: Path, state: dict[str, np.ndarray], layout: str) -> None:
    path = write_mobilenet_h5(
        state, tmp_path / "m.h5", whole_model=layout != "keras2_weights", keras3=layout == "keras3_model"
    )
    got = keras_state_dict(path, 7)
    for key, value in state.items():
        assert np.array_equal(got[key].numpy(), value) or key.endswith("num_batches_tracked"), key


def test_other_architecture_is_refused_and_nothing_stored(tmp_path: Path, state: dict[str, np.ndarray]) -> None:
    import h5py

    path = write_mobilenet_h5(state, tmp_path / "bad.h5")
    with h5py.File(path, "a") as f:  # a block without its depthwise weights: 54 weighted layers
        f["model_weights"]["conv_dw_13"].attrs["weight_names"] = np.asarray([])
    with pytest.raises(CheckpointFormatError, match="55 weighted layers"):
        keras_state_dict(path, 7)
    eight = write_mobilenet_h5(
        {**state, "classifier.weight": np.zeros((8, 1024), np.float32), "classifier.bias": np.zeros(8, np.float32)},
        tmp_path / "eight.h5",
    )
    with pytest.raises(CheckpointFormatError, match=r"layer 'dense': kernel has shape \(1024, 8\)"):
        keras_state_dict(eight, 7)
    wdir = tmp_path / "w"
    with pytest.raises(CheckpointFormatError):
        import_checkpoint(path, "mobilenet_7", wdir, trust_unverified=True)
    assert not weights.weights_path("mobilenet_7", wdir).exists()
    assert [p.name for p in (wdir / "downloads").iterdir()] == []
    (tmp_path / "not.h5").write_bytes(b"PK\x03\x04 not hdf5")
    args = ["import-checkpoint", str(tmp_path / "not.h5"), "--name", "mobilenet_7", "--trust-unverified"]
    proc = subprocess.run(
        [sys.executable, "-m", "models", *args, "--weights-dir", str(wdir)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=300,
    )
    assert proc.returncode == 2 and "not.h5" in proc.stderr and "HDF5" in proc.stderr
    assert not weights.weights_path("mobilenet_7", wdir).exists()


def test_runs_like_every_other_model(tmp_path: Path, state: dict[str, np.ndarray], crops: list[np.ndarray]) -> None:
    """Imported to safetensors; torch and ONNX Runtime paths agree; a fine-tuned head version loads and predicts."""
    from models.versions import head_tensors, save_version

    src = write_mobilenet_h5(state, tmp_path / "mobilenet_7.h5")
    stored = import_checkpoint(src, "mobilenet_7", tmp_path, trust_unverified=True)
    assert stored.suffix == ".safetensors" and weights.read_metadata("mobilenet_7", tmp_path)["verified"] == "false"
    rows = {r["name"]: r for r in weights.list_models(tmp_path)}
    assert rows["mobilenet_7"]["runnable"] and rows["mobilenet_7"]["present"]
    rec = EmotionRecognizer.load("mobilenet_7", tmp_path)
    preds = rec.predict(crops)
    want_features, want_logits = torch_outputs(src, crops)
    assert np.abs(np.stack([p.features for p in preds]) - want_features).max() <= PARITY
    assert np.abs(np.stack([p.logits for p in preds]) - want_logits).max() <= PARITY
    assert preds[0].labels == SPEC.labels and preds[0].valence is None
    fast = EmotionRecognizer.load("mobilenet_7", tmp_path, backend="onnx").predict(crops)
    assert max(np.abs(a.logits - b.logits).max() for a, b in zip(fast, preds, strict=True)) <= 1e-4
    rng = np.random.default_rng(3)
    w = rng.normal(0, 0.05, (7, 1024)).astype(np.float32)
    b = rng.normal(0, 0.1, 7).astype(np.float32)
    save_version(
        "mobilenet_7@test-head",
        "mobilenet_7",
        rec.weights_hash,
        "head",
        "emotion",
        head_tensors(w, b),
        "0" * 64,
        {},
        "2026-01-01T00:00:00Z",
        tmp_path,
    )
    tuned = EmotionRecognizer.load("mobilenet_7@test-head", tmp_path).predict(crops)
    assert np.allclose(np.stack([p.logits for p in tuned]), want_features @ w.T + b, atol=1e-4)
    meta = json.loads(json.dumps(weights.read_metadata("mobilenet_7", tmp_path)))
    assert meta["arch"] == "keras_mobilenet_v1" and meta["num_outputs"] == "7"
    from webapp.services.weights import present_models

    assert {"mobilenet_7", "mobilenet_7@test-head"} <= set(present_models(tmp_path))  # offered on the Analyze page


def test_cli_analyze(
    tmp_path: Path,
    state: dict[str, np.ndarray],
    astronaut_png: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    from models import cli

    import_checkpoint(write_mobilenet_h5(state, tmp_path / "m.h5"), "mobilenet_7", tmp_path, trust_unverified=True)
    monkeypatch.setenv("AFFECTLAB_WEIGHTS_DIR", str(tmp_path))
    code = cli.main(["analyze", str(astronaut_png), "--json", "--model", "mobilenet_7"])
    out, err = capsys.readouterr()
    assert code == 0, err[-2000:]
    doc = json.loads(out)
    assert doc["model"] == "mobilenet_7" and doc["labels"] == list(SPEC.labels) and doc["faces"]
    assert set(doc["faces"][0]["probs"]) == set(SPEC.labels) and doc["faces"][0]["valence"] is None


def test_caffe_preprocessing_is_bgr_minus_mean(crops: list[np.ndarray]) -> None:
    x = preprocess_array(crops[:1], SPEC, resize="cv2")
    import cv2

    bgr = cv2.resize(crops[0], (224, 224))[..., ::-1].astype(np.float32)
    want = bgr - np.asarray([103.939, 116.779, 123.68], np.float32)
    assert np.array_equal(x[0].transpose(1, 2, 0), want)
