"""The gallery stride (``VideoConfig.gallery_every``): still gallery tiles detected on every 4th sampled frame, a
webcam or a moving face detected as at ``detect_every``, and the same faces either way."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from models.video import VideoConfig
from tests.videos import Placement, analyze_counting, four_tiles, gallery_patches, random_recognizer

SIZE = 64
MODEL = "mbf_va_mtl"  # 112 px input: the fastest model
N = 33

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def recognizer():
    return random_recognizer(MODEL, seed=0)


@pytest.fixture(scope="module")
def patches(detector):
    return gallery_patches(detector, SIZE)


def _gallery(tmp_path, patches, walker_from: int | None):
    """Four students in fixed tiles of a 320x240 gallery; from frame ``walker_from`` on the fourth walks 6 px a
    frame (too fast to interpolate over 4 frames)."""

    def fourth(i):
        return Placement(3, 20 if walker_from is None or i < walker_from else 20 + 6 * (i - walker_from), 160)

    return four_tiles(tmp_path / "gallery.mp4", patches, fourth, N)


def _run(path, detector, recognizer, config):
    return analyze_counting(path, detector, "detect_batch", detector, recognizer, config)


def _same_faces(one, other, tol):
    """The same number of faces in every frame, each face of ``one`` with a face of ``other`` within ``tol`` px
    (faces of equal size may come in another order)."""
    by_frame: dict[int, list] = {}
    for f in other.faces:
        by_frame.setdefault(f.frame, []).append(np.array(f.face.box))
    assert sorted({f.frame for f in one.faces}) == sorted(by_frame)
    for f in one.faces:
        dist = [np.abs(np.array(f.face.box) - b).max() for b in by_frame[f.frame]]
        assert min(dist) <= tol, (f.frame, f.face.box)
    assert len(one.faces) == len(other.faces)


def test_still_gallery_is_detected_every_fourth_frame(tmp_path, patches, detector, recognizer):
    path = _gallery(tmp_path, patches, walker_from=None)
    dense = VideoConfig(detect_every=2, gallery_every=2, chunk_frames=6)
    gallery = dataclasses.replace(dense, gallery_every=4)
    assert (dense.detect_period, gallery.detect_period) == (2, 4)
    a, calls_dense = _run(path, detector, recognizer, dense)
    b, calls_gallery = _run(path, detector, recognizer, gallery)
    assert len(a.faces) == 4 * N
    assert calls_dense == 17  # samples 0, 2, ..., 32
    assert calls_gallery == 9  # samples 0, 4, ..., 32: the tiles agree, nothing between is detected
    _same_faces(a, b, tol=2.0)
    assert [t.frames for t in a.tracks] == [t.frames for t in b.tracks]


def test_a_moving_student_is_detected_as_without_the_stride(tmp_path, patches, detector, recognizer):
    path = _gallery(tmp_path, patches, walker_from=16)
    dense = VideoConfig(detect_every=2, gallery_every=2, chunk_frames=6)
    a, calls_dense = _run(path, detector, recognizer, dense)
    b, calls_gallery = _run(path, detector, recognizer, dataclasses.replace(dense, gallery_every=4))
    assert calls_dense > calls_gallery > 9  # the still half every 4th frame, the walk as densely as before
    _same_faces(a, b, tol=2.0)


def test_one_face_is_detected_as_without_the_stride(pyfeat, detector, recognizer):
    """A webcam (one face) never has a gallery's faces: every ``detect_every``-th frame is detected as before."""
    path = pyfeat("single_face.mp4")
    dense = VideoConfig(detect_every=2, gallery_every=2)
    a, calls_dense = _run(path, detector, recognizer, dense)
    b, calls_gallery = _run(path, detector, recognizer, dataclasses.replace(dense, gallery_every=4))
    assert calls_dense == calls_gallery > 0
    _same_faces(a, b, tol=0.0)


def test_the_stride_applies_only_to_a_larger_multiple():
    assert VideoConfig(detect_every=1, gallery_every=4).detect_period == 1  # the exact path stays exact
    assert VideoConfig(detect_every=3, gallery_every=4).detect_period == 3
    assert VideoConfig(detect_every=4, gallery_every=4).detect_period == 4
    assert VideoConfig(detect_every=2, gallery_every=8).detect_period == 8
