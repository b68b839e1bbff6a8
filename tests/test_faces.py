"""Face detection on real faces, with the reference's settings, and box clipping."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from models.faces import DetectorConfig, FaceDetector, clip_box, crop_face
from models.images import load_image


def test_multi_face_has_five(detector: FaceDetector, multi_face_jpg: Path) -> None:
    img = load_image(multi_face_jpg)
    faces = detector.detect(img)
    assert len(faces) == 5
    areas = [f.width * f.height for f in faces]
    assert areas == sorted(areas, reverse=True), "largest first, as facenet-pytorch returns them"
    for f in faces:
        assert f.det_score > 0.9
        x1, y1, x2, y2 = f.box
        assert 0 <= x1 < x2 <= img.shape[1] and 0 <= y1 < y2 <= img.shape[0]
        assert f.landmarks is not None and len(f.landmarks) == 5
    # No two detections are the same face.
    centers = np.array([((f.box[0] + f.box[2]) / 2, (f.box[1] + f.box[3]) / 2) for f in faces])
    dists = np.linalg.norm(centers[:, None] - centers[None], axis=2) + np.eye(5) * 1e9
    assert dists.min() > 30


def test_astronaut_has_one(detector: FaceDetector, astronaut_png: Path) -> None:
    faces = detector.detect(load_image(astronaut_png))
    assert len(faces) == 1
    x1, y1, x2, y2 = faces[0].box
    # The astronaut's face is in the upper middle of the 512x512 picture.
    assert 150 < (x1 + x2) / 2 < 300 and 50 < (y1 + y2) / 2 < 200


def test_landscape_has_none(detector: FaceDetector, landscape_jpg: Path) -> None:
    assert detector.detect(load_image(landscape_jpg)) == []


@pytest.mark.parametrize("size", [(1, 1), (10, 300), (39, 39), (300, 20)])
def test_tiny_images_give_no_face_not_an_exception(detector: FaceDetector, size: tuple[int, int]) -> None:
    assert detector.detect(np.full((*size, 3), 128, dtype=np.uint8)) == []


def test_keep_prob_is_configurable(multi_face_jpg: Path) -> None:
    img = load_image(multi_face_jpg)
    strict = FaceDetector(DetectorConfig(keep_prob=0.99999999)).detect(img)
    loose = FaceDetector().detect(img)
    assert all(f.det_score > 0.99999999 for f in strict)
    assert len(strict) <= len(loose)


def test_batch_equals_single(
    detector: FaceDetector, multi_face_jpg: Path, astronaut_png: Path, landscape_jpg: Path
) -> None:
    imgs = [
        load_image(multi_face_jpg),
        load_image(astronaut_png),
        load_image(multi_face_jpg)[::-1].copy(),
        load_image(landscape_jpg),
    ]
    batched = detector.detect_batch(imgs)
    for img, faces in zip(imgs, batched, strict=True):
        single = detector.detect(img)
        assert len(single) == len(faces)
        for a, b in zip(single, faces, strict=True):
            assert np.allclose(a.box, b.box, atol=1e-3)


def test_downscaled_detection_maps_boxes_back(detector: FaceDetector, multi_face_jpg: Path) -> None:
    img = load_image(multi_face_jpg)
    full = detector.detect(img)
    small = FaceDetector(DetectorConfig(max_side=640)).detect(img)
    assert len(small) == len(full) == 5
    for f in full:  # every full-resolution face has a downscaled twin at the same place
        c = np.array([(f.box[0] + f.box[2]) / 2, (f.box[1] + f.box[3]) / 2])
        d = min(np.linalg.norm(c - np.array([(g.box[0] + g.box[2]) / 2, (g.box[1] + g.box[3]) / 2])) for g in small)
        assert d < 0.15 * f.width


def test_boxes_are_clipped_to_the_image() -> None:
    img = np.arange(20 * 30 * 3, dtype=np.uint8).reshape(20, 30, 3)
    assert clip_box((-5.7, -3.2, 10.9, 12.1), 30, 20) == (0, 0, 10, 12)
    assert crop_face(img, (-5.7, -3.2, 10.9, 12.1)).shape == (12, 10, 3)
    assert crop_face(img, (25.5, 15.5, 40.0, 30.0)).shape == (5, 5, 3)
    assert crop_face(img, (35.0, 25.0, 40.0, 30.0)).size == 0
    # Inside the image, the crop is exactly the reference's frame[int(y1):int(y2), int(x1):int(x2)].
    box = (3.9, 2.2, 17.6, 11.8)
    assert np.array_equal(crop_face(img, box), img[2:11, 3:17])


def _facenet_mtcnn():
    from facenet_pytorch import MTCNN

    return MTCNN(keep_all=False, post_process=False, min_face_size=40, device="cpu").eval()


@pytest.mark.parametrize("name", ["multi_face", "astronaut", "single_face", "landscape"])
def test_same_detections_as_facenet_pytorch(
    detector: FaceDetector,
    multi_face_jpg: Path,
    astronaut_png: Path,
    single_face_jpg: Path,
    landscape_jpg: Path,
    name: str,
) -> None:
    path = {
        "multi_face": multi_face_jpg,
        "astronaut": astronaut_png,
        "single_face": single_face_jpg,
        "landscape": landscape_jpg,
    }[name]
    img = load_image(path)
    boxes, probs, points = _facenet_mtcnn().detect(img, landmarks=True)
    ours = FaceDetector(DetectorConfig(keep_prob=0.0)).detect(img)
    if boxes is None:
        assert ours == []
        return
    assert len(ours) == len(boxes)
    for face, box, prob, pts in zip(ours, boxes, probs, points, strict=True):
        assert np.abs(np.array(face.box) - box).max() < 1e-3
        assert abs(face.det_score - prob) < 1e-5
        assert np.abs(np.array(face.landmarks) - pts).max() < 1e-3


@pytest.fixture(scope="module")
def onnx_detector(tmp_path_factory: pytest.TempPathFactory) -> FaceDetector:
    """The torch-free detector: the nets exported to ONNX in a fresh weights folder, NumPy glue."""
    return FaceDetector(DetectorConfig(keep_prob=0.0), backend="onnx", weights_dir=tmp_path_factory.mktemp("w"))


@pytest.mark.parametrize("name", ["multi_face", "astronaut", "single_face", "landscape"])
def test_onnx_detector_same_detections_as_facenet_pytorch(
    onnx_detector: FaceDetector,
    multi_face_jpg: Path,
    astronaut_png: Path,
    single_face_jpg: Path,
    landscape_jpg: Path,
    name: str,
) -> None:
    path = {
        "multi_face": multi_face_jpg,
        "astronaut": astronaut_png,
        "single_face": single_face_jpg,
        "landscape": landscape_jpg,
    }[name]
    img = load_image(path)
    boxes, probs, points = _facenet_mtcnn().detect(img, landmarks=True)
    ours = onnx_detector.detect(img)
    if boxes is None:
        assert ours == []
        return
    assert len(ours) == len(boxes)
    for face, box, prob, pts in zip(ours, boxes, probs, points, strict=True):
        assert np.abs(np.array(face.box) - box).max() < 1e-3
        assert abs(face.det_score - prob) < 1e-5
        assert np.abs(np.array(face.landmarks) - pts).max() < 1e-3


def test_onnx_detector_batch_equals_single(onnx_detector: FaceDetector, multi_face_jpg: Path) -> None:
    img = load_image(multi_face_jpg)
    imgs = [img, img[::-1].copy(), img]
    for im, faces in zip(imgs, onnx_detector.detect_batch(imgs), strict=True):
        single = onnx_detector.detect(im)
        assert len(single) == len(faces) > 0
        assert np.abs(np.array([f.box for f in single]) - np.array([f.box for f in faces])).max() < 1e-3


@pytest.mark.parametrize("size", [(1, 1), (39, 39), (300, 20)])
def test_onnx_detector_tiny_images(onnx_detector: FaceDetector, size: tuple[int, int]) -> None:
    assert onnx_detector.detect(np.full((*size, 3), 128, dtype=np.uint8)) == []


def _random_images(b: int, h: int, w: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (b, h, w, 3), dtype=np.uint8)


@pytest.mark.parametrize(
    ("h", "w", "out"),
    [(667, 1000, (201, 301)), (97, 83, (30, 26)), (13, 30, (24, 24)), (5, 7, (12, 17)), (48, 200, (48, 200))],
)
def test_integral_resize_is_bit_exact(h: int, w: int, out: tuple[int, int]) -> None:
    """The pyramid levels equal facenet-pytorch's imresample (interpolate, mode="area") bit for bit."""
    import torch
    from facenet_pytorch.models.utils.detect_face import imresample

    from models.mtcnn import IntegralImage

    imgs = _random_images(2, h, w, seed=h + w)
    ref = imresample(torch.from_numpy(imgs).permute(0, 3, 1, 2).float(), out).permute(0, 2, 3, 1).numpy()
    ours = IntegralImage(imgs).resize(*out)
    assert ours.dtype == np.float32 and ours.shape == ref.shape
    assert np.array_equal(ours, ref)


@pytest.mark.parametrize("size", [24, 48])
def test_integral_crops_are_bit_exact(size: int) -> None:
    """Candidate crops equal facenet-pytorch's per-box imresample bit for bit, for any box inside any image."""
    import torch
    from facenet_pytorch.models.utils.detect_face import imresample

    from models.mtcnn import IntegralImage

    imgs = _random_images(3, 150, 211, seed=size)
    rng = np.random.default_rng(size + 1)
    y0 = rng.integers(0, 149, 40)
    x0 = rng.integers(0, 210, 40)
    y1 = np.minimum(150, y0 + rng.integers(1, 120, 40))
    x1 = np.minimum(211, x0 + rng.integers(1, 120, 40))
    inds = rng.integers(0, 3, 40)
    ours = IntegralImage(imgs).crops(inds, y0, y1, x0, x1, size)
    t = torch.from_numpy(imgs).permute(0, 3, 1, 2).float()
    for k in range(40):
        region = t[inds[k] : inds[k] + 1, :, y0[k] : y1[k], x0[k] : x1[k]]
        ref = imresample(region, (size, size))[0].permute(1, 2, 0).numpy()
        assert np.array_equal(ours[k], ref), k
