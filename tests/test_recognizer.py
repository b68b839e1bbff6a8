"""Recognizer details: exact preprocessing, backends, precision, versions, empty input."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from models.faces import FaceDetector, crop_face
from models.images import load_image
from models.recognizer import EmotionRecognizer, preprocess
from models.registry import get_spec


@pytest.fixture(scope="module")
def crops(multi_face_jpg: Path) -> list[np.ndarray]:
    img = load_image(multi_face_jpg)
    return [crop_face(img, f.box) for f in FaceDetector().detect(img)]


@pytest.mark.parametrize("name", ["enet_b0_8_best_vgaf", "enet_b2_8", "mbf_va_mtl"])
def test_preprocess_is_torchvisions_exactly(crops: list[np.ndarray], name: str) -> None:
    from PIL import Image
    from torchvision import transforms

    spec = get_spec(name)
    t = transforms.Compose(
        [
            transforms.Resize((spec.input_size, spec.input_size)),
            transforms.ToTensor(),
            transforms.Normalize(mean=spec.mean, std=spec.std),
        ]
    )
    ref = torch.stack([t(Image.fromarray(c)) for c in crops])
    assert torch.equal(preprocess(crops, spec), ref)


def test_onnx_runtime_without_published_file(random_weights_dir: Path, crops: list[np.ndarray]) -> None:
    torch_rec = EmotionRecognizer.load("enet_b0_8_va_mtl", random_weights_dir)
    ort_rec = EmotionRecognizer.load("enet_b0_8_va_mtl", random_weights_dir, backend="onnx")
    assert ort_rec.backend == "onnx" and torch_rec.backend == "torch"
    assert ort_rec.weights_hash == torch_rec.weights_hash
    a, b = torch_rec.predict(crops), ort_rec.predict(crops)
    assert max(np.abs(x.features - y.features).max() for x, y in zip(a, b, strict=True)) < 1e-4
    assert max(abs(x.valence - y.valence) for x, y in zip(a, b, strict=True)) < 1e-4
    assert any((random_weights_dir / "onnx-export").iterdir())


@pytest.mark.parametrize("batch_size", [2, 32])
def test_onnx_workers_give_the_serial_result(
    random_weights_dir: Path, crops: list[np.ndarray], batch_size: int
) -> None:
    """Chunks run side by side on single-threaded sessions come back in order, with the same numbers."""
    rec = EmotionRecognizer.load("enet_b0_8_best_vgaf", random_weights_dir, backend="onnx", batch_size=batch_size)
    rec.onnx_workers = 3
    parallel = rec.extract_features(crops)
    rec.onnx_workers = 1
    serial = rec.extract_features(crops)
    assert parallel.shape == serial.shape == (len(crops), 1280)
    assert np.abs(parallel - serial).max() <= 1e-6 * max(1.0, float(np.abs(serial).max()))
    # Not a constant output: the crops differ, so must their features.
    assert np.abs(serial[0] - serial[1]).max() > 1e-3


def test_bf16_is_opt_in_and_close(random_weights_dir: Path, crops: list[np.ndarray]) -> None:
    fp32 = EmotionRecognizer.load("enet_b0_8_best_vgaf", random_weights_dir).predict(crops)
    bf16 = EmotionRecognizer.load("enet_b0_8_best_vgaf", random_weights_dir, precision="bf16").predict(crops)
    diff = max(np.abs(x.probs - y.probs).max() for x, y in zip(fp32, bf16, strict=True))
    assert 0 < diff < 0.1  # not reference-exact, but close


def test_empty_input(random_weights_dir: Path) -> None:
    rec = EmotionRecognizer.load("enet_b0_8_best_vgaf", random_weights_dir)
    assert rec.predict([]) == []
    assert rec.extract_features([]).shape == (0, 1280)


def test_no_autograd_is_recorded(random_weights_dir: Path, crops: list[np.ndarray]) -> None:
    rec = EmotionRecognizer.load("enet_b0_8_best_vgaf", random_weights_dir)
    assert all(not p.requires_grad for p in rec.backbone.parameters())
    seen = []
    handle = rec.backbone.register_forward_hook(lambda m, i, o: seen.append(o.requires_grad or o.grad_fn is not None))
    try:
        rec.predict(crops[:2])
    finally:
        handle.remove()
    assert seen == [False]


def test_head_version_changes_only_its_rows(random_weights_dir: Path, tmp_path: Path, crops: list[np.ndarray]) -> None:
    import shutil

    from models.versions import head_tensors, save_version

    wdir = tmp_path / "w"
    shutil.copytree(random_weights_dir, wdir)
    base = EmotionRecognizer.load("enet_b0_8_va_mtl", wdir)
    w, b = base.head.weight.copy(), base.head.bias.copy()
    b[:8] += np.arange(8, dtype=np.float32)  # a different emotion head; V/A rows unchanged
    v = save_version(
        "enet_b0_8_va_mtl@t-emotion-1",
        "enet_b0_8_va_mtl",
        "abc",
        "head",
        "emotion",
        head_tensors(w, b),
        "f" * 64,
        {},
        "2026-11-28T00:00:00",
        wdir,
    )
    rec = EmotionRecognizer.load(v.name, wdir)
    for x, y in zip(base.predict(crops), rec.predict(crops), strict=True):
        assert np.allclose(x.features, y.features)
        assert np.allclose(y.logits - x.logits, np.arange(8), atol=1e-4)
        assert y.valence == pytest.approx(x.valence, abs=1e-6)
        assert y.model == v.name and x.model == "enet_b0_8_va_mtl"
    ort = EmotionRecognizer.load(v.name, wdir, backend="onnx")
    assert np.allclose(ort.predict(crops[:1])[0].logits, rec.predict(crops[:1])[0].logits, atol=1e-4)
