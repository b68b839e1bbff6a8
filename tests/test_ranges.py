"""One video cut into time ranges (models/ranges.py) gives the analysis one process gives: faces, boxes, persons."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from models.faces import FaceDetector
from models.ranges import analyze_video_ranges, frame_times, plan_ranges, range_chunks, sampled_frames
from models.video import VideoAnalysis, VideoConfig, analyze_video
from tests import testdata
from tests.videos import Placement, face_patches, random_recognizer, render

SIZE = 64
MODEL = "mbf_va_mtl"  # 112 px input: the fastest model

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def open_models():
    """The detector and random-weight model a worker process loads (the same weights as the test's)."""
    return FaceDetector(), random_recognizer(MODEL, seed=0)


@pytest.fixture(scope="module")
def recognizer():
    return random_recognizer(MODEL, seed=0)


@pytest.fixture(scope="module")
def gallery(tmp_path_factory, detector):
    """A 4 s 320x240 gallery at 10 fps: three students sit in their tiles, a fourth walks along the bottom row
    (3 px a frame over the whole recording, so across every seam, slowly enough to be interpolated)."""
    pats = face_patches(detector, testdata.pyfeat_file("multi_face.jpg"), size=SIZE, margin=0.15)[:3]
    pats += face_patches(detector, testdata.astronaut(), size=SIZE, margin=0.15)

    def scene(i):
        return [Placement(0, 24, 20), Placement(1, 128, 20), Placement(2, 232, 20), Placement(3, 20 + 3 * i, 160)]

    path, _ = render(tmp_path_factory.mktemp("ranges") / "gallery.mp4", pats, scene, 40, size=(320, 240), fps=10)
    return path


@pytest.fixture(scope="module")
def one_process(gallery, detector, recognizer):
    """The gallery analysed in one process: every frame, detection on every other one (interpolated between)."""
    return analyze_video(gallery, "g.mp4", detector, recognizer, None, config=VideoConfig(detect_every=2))


def same_analysis(one: VideoAnalysis, cut: VideoAnalysis) -> None:
    assert len(cut.faces) == len(one.faces) > 0
    for a, b in zip(one.faces, cut.faces, strict=True):
        assert (a.frame, a.index, a.track) == (b.frame, b.index, b.track)
        assert np.abs(np.subtract(a.face.box, b.face.box)).max() <= 1.0
        # detected where one process detected, interpolated where it interpolated (no landmarks)
        assert (a.face.landmarks is None) == (b.face.landmarks is None)
        assert a.face.det_score == pytest.approx(b.face.det_score, abs=1e-4)
        assert a.prediction.label == b.prediction.label
        np.testing.assert_allclose(a.prediction.logits, b.prediction.logits, atol=1e-4)
    assert cut.persons == one.persons
    assert [t.frames for t in cut.tracks] == [t.frames for t in one.tracks]
    assert (cut.frames_sampled, cut.frames_analyzed, cut.frames_decoded) == (
        one.frames_sampled,
        one.frames_analyzed,
        one.frames_decoded,
    )
    assert (cut.width, cut.height, cut.duration) == (one.width, one.height, one.duration)


def test_ranges_line_up_with_the_sampling(gallery):
    times = frame_times(gallery)
    assert len(times) == 40 and times == sorted(times)
    for fps, k in ((None, 1), (5.0, 2), (3.0, 3)):
        ranges = plan_ranges(gallery, fps, 4, detect_every=k, min_range_s=0.5)
        assert len(ranges) == 4
        sampled = sampled_frames(times, fps)
        for r, nxt in itertools.pairwise(ranges):
            assert r.stop_index == (nxt.start.index + 1 if nxt.start else 0)
            assert r.stop_index in sampled and sampled.index(r.stop_index) % k == 0  # starts on a detected sample
            assert nxt.start is not None and nxt.start.sample == sampled.index(r.stop_index) - 1
    assert len(plan_ranges(gallery, 5.0, 4)) == 1  # 4 s is too short for 8 s ranges
    assert len(plan_ranges(gallery, 5.0, 1, min_range_s=0.1)) == 1


@pytest.mark.parametrize("seams", [2, 3])
def test_cut_at_seams_equals_one_process(gallery, one_process, seams):
    config = VideoConfig(detect_every=2)
    one = one_process
    cut = analyze_video_ranges(
        gallery, "g.mp4", open_models, None, workers=seams + 1, config=config, in_process=True, min_range_s=0.5
    )
    assert cut is not None
    same_analysis(one, cut)
    ranges = plan_ranges(gallery, None, seams + 1, detect_every=2, min_range_s=0.5)
    assert len(ranges) == seams + 1
    walker = [t for t in one.tracks if t.boxes[0][1] > 120]  # the student crossing the bottom row
    assert len(walker) == 1
    seam_times = [r.start_s for r in ranges[1:]]
    assert all(walker[0].start_s < s < walker[0].end_s for s in seam_times)  # the walk crosses every seam


def test_worker_processes_give_the_same_analysis(gallery, one_process):
    config = VideoConfig(detect_every=2)
    cut = analyze_video_ranges(gallery, "g.mp4", open_models, None, workers=2, config=config, min_range_s=0.5)
    assert cut is not None
    same_analysis(one_process, cut)


def test_too_short_or_adaptive_is_left_to_one_process(gallery):
    from models.adaptive import AdaptiveConfig

    assert analyze_video_ranges(gallery, "g.mp4", open_models, 5.0, workers=2) is None
    adaptive = VideoConfig(adaptive=AdaptiveConfig())
    assert analyze_video_ranges(gallery, "g.mp4", open_models, 5.0, workers=2, config=adaptive, min_range_s=0.5) is None


def test_a_joined_ts_is_never_cut(tmp_path):
    """Times jump back in a joined MPEG-TS: a range that seeks by time would land elsewhere, so it stays whole."""
    from tests.hostile import joined_ts, real_frames

    ts = joined_ts(tmp_path / "joined.ts", real_frames(40), parts=2)
    mp4_like = plan_ranges(ts, 5.0, 2, min_range_s=0.5, times=[i / 10 for i in range(40)])
    assert [r.start for r in mp4_like] == [None] and len(mp4_like) == 1


def test_a_range_resumes_on_its_own(gallery, detector, recognizer, one_process):
    config = VideoConfig(detect_every=2, chunk_frames=4)  # stretches of 4 frames: several in a range
    middle = plan_ranges(gallery, None, 3, detect_every=2, min_range_s=0.5)[1]
    assert middle.start is not None and middle.stop_index is not None
    chunks = list(range_chunks(gallery, "g.mp4", detector, recognizer, None, middle, config=config, commit_every_s=0.5))
    assert len(chunks) >= 2 and chunks[-1].done
    stopped = chunks[0].until  # a run stopped after storing its first stretch
    assert stopped is not None
    resumed = list(range_chunks(gallery, "g.mp4", detector, recognizer, None, middle, config=config, resume=stopped))
    rest = [f for c in resumed for f in c.faces]
    expected = [f for f in one_process.faces if stopped.index < (f.frame or 0) < middle.stop_index]
    assert [(f.frame, f.index) for f in rest] == [(f.frame, f.index) for f in expected] != []
    for a, b in zip(expected, rest, strict=True):
        assert np.abs(np.subtract(a.face.box, b.face.box)).max() <= 1.0


def test_the_classifier_stride_cut_at_seams_equals_one_process(gallery, detector, recognizer):
    """With ``classify_every`` (still tiles reuse their predictions), ranges start where every face is classified,
    so the cut recording gets the predictions, reused or not, of one run."""
    config = VideoConfig(detect_every=2, classify_every=8)  # ranges on multiples of 8, not of the stride's 4
    one = analyze_video(gallery, "g.mp4", detector, recognizer, None, config=config)
    assert any(f.prediction.reused for f in one.faces)
    cut = analyze_video_ranges(
        gallery, "g.mp4", open_models, None, workers=3, config=config, in_process=True, min_range_s=0.5
    )
    assert cut is not None
    same_analysis(one, cut)
    assert [f.prediction.reused for f in cut.faces] == [f.prediction.reused for f in one.faces]
