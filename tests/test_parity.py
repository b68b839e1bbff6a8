"""Parity with the reference package (emotiefflib 1.1.1) on random-weight checkpoints in the published format.

Weights do not matter for parity (REFERENCE.md §8): each checkpoint is a random-weight model of the published
architecture (BatchNorm statistics randomised too), pickled whole as the published files are, placed where the
reference looks for it ($HOME/.emotiefflib, with HOME pointed at a temp dir so nothing is downloaded) and imported
into AffectLab's weights folder. Both then run on the same real face crops; numbers are compared, not labels.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from models.convert import import_checkpoint
from models.recognizer import EmotionRecognizer
from models.registry import emotion_models, get_spec, onnx_variant
from tests.checkpoints import export_published_onnx, random_published_module, save_published

# EmotiEffLib runs the .pt files; mobilenet_7 (Keras) is checked against TensorFlow in tests/test_keras_mobilenet.py.
TORCH_NAMES = [s.name for s in emotion_models() if s.fmt == "torch_pickle"]
ONNX_NAMES = [n for n in TORCH_NAMES if onnx_variant(n) is not None]


@pytest.fixture(scope="module")
def crops(face_crops: list[np.ndarray]) -> list[np.ndarray]:
    return face_crops


@pytest.fixture()
def ref_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    home = tmp_path / "home"
    (home / ".emotiefflib").mkdir(parents=True)
    monkeypatch.setenv("HOME", str(home))
    return home / ".emotiefflib"


def _reference(engine: str, name: str):
    from emotiefflib.facial_analysis import EmotiEffLibRecognizer

    return EmotiEffLibRecognizer(engine=engine, model_name=name, device="cpu")


def _compare(ref, ours: EmotionRecognizer, crops: list[np.ndarray], tol: float) -> None:
    spec = ours.spec
    k = len(spec.labels)
    ref_feats = ref.extract_features(crops)
    _, ref_logits = ref.classify_emotions(ref_feats, logits=True)
    _, ref_scores = ref.classify_emotions(ref_feats, logits=False)
    feats = ours.extract_features(crops)
    preds = ours.classify(feats)
    assert feats.shape == ref_feats.shape == (len(crops), spec.feature_dim)
    assert np.abs(feats - ref_feats).max() <= tol
    logits = np.stack([p.logits for p in preds])
    assert np.abs(logits - ref_logits[:, :k]).max() <= tol
    assert np.abs(np.stack([p.probs for p in preds]) - ref_scores[:, :k]).max() <= tol
    # Random weights must still give crop-dependent outputs, or the comparison proves nothing.
    assert np.ptp(feats, axis=0).max() > 1e-3
    if spec.has_va:
        va = np.array([[p.valence, p.arousal] for p in preds])
        assert np.abs(va - np.clip(ref_logits[:, k:], -1, 1)).max() <= tol
    else:
        assert all(p.valence is None and p.arousal is None for p in preds)


@pytest.mark.parametrize("name", TORCH_NAMES)
def test_torch_parity(name: str, crops: list[np.ndarray], ref_home: Path, tmp_path: Path) -> None:
    spec = get_spec(name)
    module = random_published_module(spec, seed=7)
    published = ref_home / f"{name}.pt"
    save_published(module, published)
    wdir = tmp_path / "weights"
    import_checkpoint(published, name, wdir, trust_unverified=True)
    ours = EmotionRecognizer.load(name, wdir)
    _compare(_reference("torch", name), ours, crops, tol=1e-5)


@pytest.mark.slow
@pytest.mark.parametrize("name", ONNX_NAMES)
def test_onnx_parity(name: str, crops: list[np.ndarray], ref_home: Path, tmp_path: Path) -> None:
    spec = get_spec(name)
    ospec = onnx_variant(name)
    module = random_published_module(spec, seed=11)
    wdir = tmp_path / "weights"
    pt = tmp_path / f"{name}.pt"
    save_published(module, pt)
    import_checkpoint(pt, name, wdir, trust_unverified=True)
    onnx_file = ref_home / f"{name}.onnx"
    export_published_onnx(module, spec, onnx_file)
    shutil.copy(onnx_file, tmp_path / ospec.filename)
    import_checkpoint(tmp_path / ospec.filename, ospec.name, wdir, trust_unverified=True)
    # Against the reference's ONNX engine, with its cv2 preprocessing.
    _compare(_reference("onnx", name), EmotionRecognizer.load(name, wdir, backend="onnx", resize="cv2"), crops, 1e-4)
    # AffectLab's ONNX backend gives the same numbers as its torch backend.
    torch_rec = EmotionRecognizer.load(name, wdir)
    onnx_rec = EmotionRecognizer.load(name, wdir, backend="onnx")
    a, b = torch_rec.predict(crops), onnx_rec.predict(crops)
    assert np.abs(np.stack([p.features for p in a]) - np.stack([p.features for p in b])).max() <= 1e-4
    assert np.abs(np.stack([p.logits for p in a]) - np.stack([p.logits for p in b])).max() <= 1e-4
