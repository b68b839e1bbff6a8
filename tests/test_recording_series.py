"""A recording's per-track summaries and binned series, computed in SQL, equal the same computation over its rows.

On SQLite and PostgreSQL (``store`` runs each test on both): the class counts per track, the buckets' face counts,
mean probabilities, valence/arousal, model and annotators' classes (corrections of a face and of a whole track
included), the engagement windows per bucket, and the key frames' boxes. The study's model run is the video's own
in one case and another run in the other (the video's faces then follow their latest prediction of any run).
"""

from __future__ import annotations

import math
from collections import Counter, defaultdict

import pytest

from db.recording import bucket_width, with_counts
from models.engagement import EngagementResult, EngagementWindow
from models.types import TrackResult
from tests.pg import fake_results, png_bytes

BOXES = [(10.0, 10.0, 50.0, 60.0), (60.0, 10.0, 100.0, 60.0), (110.0, 10.0, 150.0, 60.0)]
CLASSES = ["Neutral", "Sadness", "Happiness", "Fear"]
N = 30  # faces of the video: 10 frames x 3 faces (tracks 0 and 1, and a face without a track)


def _video(store, study: str) -> int:
    frames = [f * 7 for f in range(N // 3) for _ in range(3)]
    res = fake_results(
        "v.mp4",
        BOXES * (N // 3),
        [CLASSES[(i * 7) % len(CLASSES)] for i in range(N)],
        frames=frames,
        tracks=[0, 1, None] * (N // 3),
        confidence=[0.3 + 0.06 * (i % 10) for i in range(N)],
        valence=[None if i % 4 == 0 else (i % 5) / 5 - 0.4 for i in range(N)],
        seed=3,
    )
    tracks = [
        TrackResult(
            track=t,
            n_faces=N // 3,
            start_s=0.0,
            end_s=6.3,
            engagement=EngagementResult(
                score=0.5,
                label="Engaged",
                windows=tuple(
                    EngagementWindow(
                        start=k, end=k + 3, start_s=k * 0.7, end_s=k * 0.7 + 1.4, p_engaged=0.1 * k + t / 10
                    )
                    for k in range(8)
                ),
                n_features=N // 3,
                window=3,
            ),
        )
        for t in (0, 1)
    ]
    store.ingest.ingest_results(study, png_bytes(5), "v.mp4", res, tracks)
    (video,) = [m for m in store.recordings.media(study) if m.kind == "video"]
    return video.id


def _fill(store, other_wins: bool) -> int:
    media_id = _video(store, "s")
    n_other = N + 5 if other_wins else 3
    store.ingest.ingest_results(
        "s",
        png_bytes(9),
        "img.png",
        fake_results(
            "img.png",
            [(float(i), 0.0, i + 9.0, 9.0) for i in range(n_other)],
            ["Fear"] * n_other,
            model="other",
            weights_hash="x",
        ),
    )
    faces = sorted(store.recordings.faces("s", media_id=media_id), key=lambda f: f.face_id)
    store.review.correct_face(faces[0].face_id, "alice", label="Happiness")
    store.review.correct_face(faces[0].face_id, "bob", label="Happiness")
    store.review.correct_face(faces[4].face_id, "alice", label="Anger")
    store.review.correct_face(faces[4].face_id, "bob", label="Fear")
    store.review.correct_face(faces[2].face_id, "bob", label="Surprise")  # a face without a track
    store.review.correct_track(faces[1].track_id, "carol", label="Sadness")  # every face of track 1
    return media_id


def _expected(rows, width: float):
    buckets: dict[tuple[int | None, int], list] = defaultdict(list)
    for r in rows:
        buckets[(r.track_id, math.floor((r.time_s or 0.0) / width))].append(r)
    out = {}
    for key, faces in buckets.items():
        pred = [f for f in faces if f.model_probs is not None]
        classes = sorted({c for f in pred for c in f.model_probs or {}})
        vs = [f.model_valence for f in pred if f.model_valence is not None]
        as_ = [f.model_arousal for f in pred if f.model_arousal is not None]
        out[key] = (
            len(faces),
            len(pred),
            {c: sum((f.model_probs or {}).get(c, 0.0) for f in pred) / len(pred) for c in classes},
            sum(vs) / len(vs) if vs else None,
            sum(as_) / len(as_) if as_ else None,
            Counter(f.model_label for f in faces if f.model_label is not None),
            Counter(f.human_label for f in faces if f.human_label is not None),
        )
    return out


@pytest.mark.parametrize("other_wins", [False, True], ids=["own-run", "other-run"])
def test_series_and_summaries_equal_the_computation_over_the_rows(store, other_wins: bool) -> None:
    media_id = _fill(store, other_wins)
    rows = store.recordings.faces("s", media_id=media_id)
    assert {r.model for r in rows} == {"enet_b0_8_best_vgaf"}
    assert any(r.human_label for r in rows) and any(r.track_id is None for r in rows)
    listed = store.recordings.recording_tracks("s", media_id)
    assert [t.track_index for t in listed] == [0, 1, None]
    series = store.recordings.recording_series("s", media_id, [t.track_id for t in listed], 1.0)
    summaries = [with_counts(t, series[t.track_id]) for t in listed]
    for t, bare in zip(summaries, listed, strict=True):
        mine = [r for r in rows if r.track_id == t.track_id]
        assert t.n_faces == bare.n_faces == len(mine) > 0
        assert dict(t.model_counts) == Counter(r.model_label for r in mine if r.model_label)
        assert dict(t.human_counts) == Counter(r.human_label for r in mine if r.human_label)
    assert all(v == "Sadness" for v in summaries[1].human_counts) and summaries[1].human_counts["Sadness"] == N // 3

    for width in (0.5, 1.0, 5.0):
        got = store.recordings.recording_series("s", media_id, [t.track_id for t in summaries], width)
        want = _expected(rows, width)
        assert set(got) == {t.track_id for t in summaries}
        keys = {(tid, round(b.start_s / width)) for tid, s in got.items() for b in s.buckets}
        assert keys == set(want)
        for tid, series in got.items():
            assert [b.start_s for b in series.buckets] == sorted(b.start_s for b in series.buckets)
            for b in series.buckets:
                n, npred, probs, v, a, mc, hc = want[(tid, round(b.start_s / width))]
                assert (b.n_faces, b.n_predicted, dict(b.model_counts), dict(b.human_counts)) == (n, npred, mc, hc)
                assert dict(b.probs) == pytest.approx(probs, abs=1e-9)
                assert b.valence == pytest.approx(v, abs=1e-9) and b.arousal == pytest.approx(a, abs=1e-9)
            track = next((t for t in store.recordings.tracks(media_id) if t.id == tid), None)
            windows: dict[int, list[float]] = defaultdict(list)
            for s, e, p in track.windows if track else ():
                windows[math.floor((s + e) / 2 / width)].append(p)
            assert [(round(s / width), p) for s, p in series.engagement] == [
                (k, pytest.approx(sum(ps) / len(ps), abs=1e-9)) for k, ps in sorted(windows.items())
            ]


def test_a_page_of_tracks_and_hidden_values(store) -> None:
    media_id = _fill(store, False)
    only = store.recordings.recording_series("s", media_id, [None], 1.0, model=False, human=True)
    assert list(only) == [None]
    assert all(not b.model_counts and not b.probs and b.valence is None for b in only[None].buckets)
    assert sum(b.n_faces for b in only[None].buckets) == N // 3 and not only[None].engagement
    assert any(b.human_counts for b in only[None].buckets)
    blind = store.recordings.recording_series("s", media_id, [None], 1.0, human=False)
    assert all(not b.human_counts for b in blind[None].buckets) and any(b.probs for b in blind[None].buckets)
    assert store.recordings.recording_series("other", media_id, [None], 1.0) == {}
    assert store.recordings.recording_tracks("other", media_id) == []


def test_key_frames_show_the_faces_on_their_frames(store) -> None:
    media_id = _fill(store, False)
    rows = store.recordings.faces("s", media_id=media_id)
    frames, boxes = store.recordings.key_frame_boxes("s", media_id, 4)
    with_faces = sorted({r.frame for r in rows})
    assert frames[0] == with_faces[0] and frames[-1] == with_faces[-1] and len(frames) == 4
    assert set(frames) <= set(with_faces)
    want = sorted((r.frame, r.track_index or 0, r.box) for r in rows if r.frame in frames)
    assert sorted(boxes) == want
    assert store.recordings.key_frame_boxes("other", media_id) == ((), ())


def test_bucket_width_keeps_a_series_short() -> None:
    for span in (0.0, 3.0, 59.0, 600.0, 3600.0, 5400.0, 10 * 3600.0):
        w = bucket_width(span)
        assert span / w < 300
        assert w == min(x for x in (0.2, 0.5, 1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 1800, 3600) if span / x < 300)
