"""The classifier's stride (``VideoConfig.classify_every``): a still face between classified frames reuses the
prediction of the face it follows; a changed, moved or new face, every face of every N-th sampled frame, and every
face with ``classify_every = 1`` are classified."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from models.classify_reuse import ClassifySchedule, box_shift, thumb_diff, thumbnail
from models.faces import crop_face
from models.video import VideoConfig
from tests.videos import Placement, analyze_counting, four_tiles, gallery_patches, random_recognizer

SIZE = 64
MODEL = "mbf_va_mtl"  # 112 px input, with valence and arousal
N = 33
BOX = (10.0, 10.0, 74.0, 74.0)
FAR = (200.0, 10.0, 264.0, 74.0)


def _face(seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (64, 64, 3), dtype=np.uint8)


def _frame(faces: dict[tuple[float, float, float, float], np.ndarray]) -> np.ndarray:
    image = np.full((100, 300, 3), 128, np.uint8)
    for (x1, y1, _, _), face in faces.items():
        image[int(y1) : int(y1) + 64, int(x1) : int(x1) + 64] = face
    return image


def _classified(schedule: ClassifySchedule, sample: int, faces, boxes=None) -> list[bool]:
    """Which of a frame's faces the schedule classifies: the frame drawn from ``faces`` (box to crop), the faces
    detected at ``boxes`` (default: where they are drawn)."""
    image = _frame(faces)
    boxes = list(faces) if boxes is None else boxes
    plan = schedule.plan([(sample, image, boxes, [crop_face(image, b) for b in boxes])])
    return [not r for r in plan.reused[0]]


# The schedule alone (no model): which faces go to the classifier.


def test_a_still_face_is_classified_every_nth_sample_only():
    s = ClassifySchedule(4, reuse_diff=2.0)
    face = _face(0)
    got = [_classified(s, i, {BOX: face})[0] for i in range(9)]
    assert got == [True, False, False, False, True, False, False, False, True]


def test_the_exact_setting_classifies_every_face():
    s = ClassifySchedule(1, reuse_diff=1e9, reuse_shift=1e9)
    face = _face(0)
    assert all(_classified(s, i, {BOX: face, FAR: face}) == [True, True] for i in range(6))


def test_a_changed_face_is_classified_again():
    s = ClassifySchedule(8, reuse_diff=2.0)
    a, b = _face(0), _face(1)
    assert _classified(s, 0, {BOX: a}) == [True]
    assert _classified(s, 1, {BOX: a}) == [False]
    assert _classified(s, 2, {BOX: b}) == [True]  # another crop at the same place
    assert _classified(s, 3, {BOX: b}) == [False]
    brighter = np.clip(b.astype(np.int16) + 12, 0, 255).astype(np.uint8)
    assert _classified(s, 4, {BOX: brighter}) == [True]
    assert _classified(s, 5, {BOX: brighter}) == [False]
    smile = brighter.copy()
    smile[44:52, 20:44] = 255 - smile[44:52, 20:44]  # a small part changed much, the mean little
    thumbs = thumbnail(brighter), thumbnail(smile)
    assert thumbs[0] is not None and thumbs[1] is not None and thumb_diff(*thumbs) < 2.0
    assert _classified(s, 6, {BOX: smile}) == [True]


def test_drift_is_measured_from_the_crop_last_classified():
    """Small steps that add up: each within the bound of the one before, not of the crop classified."""
    s = ClassifySchedule(100, reuse_diff=2.0)
    base = _face(0).astype(np.int16)
    steps = [np.clip(base + 1.5 * i, 0, 255).astype(np.uint8) for i in range(5)]
    got = [_classified(s, i + 1, {BOX: c})[0] for i, c in enumerate(steps)]
    assert got[0] and not got[1] and got[2]  # 1 from it: reused; 3 from it: classified again


def test_a_moved_or_new_face_is_classified():
    s = ClassifySchedule(8, reuse_diff=2.0, reuse_shift=0.05)
    a = _face(0)
    assert _classified(s, 0, {BOX: a}) == [True]
    assert _classified(s, 1, {BOX: a, FAR: a}) == [False, True]  # the same crop elsewhere: a new face
    assert _classified(s, 2, {FAR: a}) == [False]
    assert _classified(s, 3, {BOX: a}) == [True]  # 190 px away from the face it would follow
    # The picture still, its detected box jittering: reused within 5 % of the side, classified beyond.
    one_px = (BOX[0] + 1, BOX[1], BOX[2] + 1, BOX[3])
    six_px = (BOX[0] + 6, BOX[1], BOX[2] + 6, BOX[3])  # 9 % of the side
    assert _classified(s, 4, {BOX: a}, [one_px]) == [False]
    assert _classified(s, 5, {BOX: a}, [six_px]) == [True]
    # The face moved one pixel with its box: the pixels in the box classified changed.
    assert _classified(s, 6, {one_px: a}) == [True]


def test_reused_predictions_are_resolved_across_stretches():
    s = ClassifySchedule(4, reuse_diff=2.0)
    a = _face(0)
    image = _frame({BOX: a})
    crop = crop_face(image, BOX)
    first, second = s.plan([(0, image, [BOX], [crop])]), s.plan([(1, image, [BOX], [crop])])
    assert (len(first.crops), len(second.crops)) == (1, 0)
    pred = object()
    assert first.resolve([pred])[0][0] is pred  # type: ignore[list-item]
    assert second.resolve([])[0][0] is pred


def test_thumbnail_is_none_for_tiny_crops_and_bounds_noise():
    assert thumbnail(np.zeros((8, 30, 3), np.uint8)) is None
    a = _face(3)
    noisy = np.clip(a.astype(np.int16) + np.random.default_rng(4).integers(-3, 4, a.shape), 0, 255).astype(np.uint8)
    ta, tn = thumbnail(a), thumbnail(noisy)
    assert ta is not None and tn is not None
    assert thumb_diff(ta, tn) < 1.0  # pixel noise averages out over a block
    assert box_shift(BOX, (BOX[0] + 3.2, *BOX[1:])) == pytest.approx(0.05)


def test_ranges_start_where_every_face_is_classified():
    assert VideoConfig(detect_every=2, gallery_every=2, classify_every=4).range_period == 4
    assert VideoConfig(detect_every=2, gallery_every=4, classify_every=3).range_period == 12
    plain = VideoConfig(detect_every=2, classify_every=1)
    assert plain.range_period == plain.detect_period  # as before the classifier's stride


# Whole videos, with a model.


@pytest.fixture(scope="module")
def recognizer():
    return random_recognizer(MODEL, seed=0)


@pytest.fixture(scope="module")
def patches(detector):
    return gallery_patches(detector, SIZE)


def _gallery(tmp_path, patches, swap_at: int | None):
    """Four students in fixed tiles of a 320x240 gallery; from frame ``swap_at`` the fourth tile shows the first
    student's face (a changed crop where nothing moved)."""

    def fourth(i):
        return Placement(0 if swap_at is not None and i >= swap_at else 3, 24, 160)

    return four_tiles(tmp_path / "gallery.mp4", patches, fourth, N)


def _run(path, detector, recognizer, config):
    return analyze_counting(path, recognizer, "predict", detector, recognizer, config)


@pytest.mark.usefixtures("one_torch_thread")
def test_a_still_gallery_is_classified_every_nth_frame_and_agrees(tmp_path, patches, detector, recognizer):
    path = _gallery(tmp_path, patches, swap_at=None)
    exact_cfg = VideoConfig(detect_every=2, chunk_frames=6, classify_every=1)
    exact, n_exact = _run(path, detector, recognizer, exact_cfg)
    got, n_got = _run(path, detector, recognizer, dataclasses.replace(exact_cfg, classify_every=4))
    assert n_exact == len(exact.faces) == 4 * N  # the exact setting classifies every face
    assert not any(f.prediction.reused for f in exact.faces)
    assert n_got == 4 * len(range(0, N, 4))  # the still tiles: samples 0, 4, ..., 32 only
    assert [f.face.box for f in got.faces] == [f.face.box for f in exact.faces]
    for a, b in zip(exact.faces, got.faces, strict=True):
        assert a.prediction.label == b.prediction.label
        assert abs(a.prediction.valence - b.prediction.valence) < 0.05
        assert abs(a.prediction.arousal - b.prediction.arousal) < 0.05
        assert b.prediction.reused == (b.frame % 4 != 0)


@pytest.mark.usefixtures("one_torch_thread")
def test_a_face_that_changed_in_place_is_classified_again(tmp_path, patches, detector, recognizer):
    swap = 10  # between two classified frames (8 and 16)
    path = _gallery(tmp_path, patches, swap_at=swap)
    cfg = VideoConfig(detect_every=2, chunk_frames=6, classify_every=8, keep_crops=True)
    exact, _ = _run(path, detector, recognizer, dataclasses.replace(cfg, classify_every=1))
    got, _ = _run(path, detector, recognizer, cfg)
    tile = [f for f in got.faces if f.face.box[1] > 120]
    at_swap = next(f for f in tile if f.frame == swap)
    assert not at_swap.prediction.reused
    own = next(f for f in exact.faces if f.frame == swap and f.face.box[1] > 120)
    np.testing.assert_allclose(at_swap.prediction.logits, own.prediction.logits, atol=1e-5)
    # Every reused prediction is the one of an earlier face, classified, whose box is within the bounds of this one's.
    by_logits: dict[bytes, list] = {}
    for f in got.faces:
        if not f.prediction.reused:
            by_logits.setdefault(f.prediction.logits.tobytes(), []).append(f)
    for f in got.faces:
        if f.prediction.reused:
            sources = by_logits[f.prediction.logits.tobytes()]
            assert any(s.frame < f.frame and box_shift(s.face.box, f.face.box) <= cfg.reuse_shift for s in sources)
