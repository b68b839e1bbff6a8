"""A face's engagement window found by the track's index (``face_table.windows_at``) is the one the rules give.

The Review panel and the single-face views look each face's window up in SQL instead of reading every window of
its track (issue 19: a key press read ~8,500 window rows for a page of faces); the whole-study paths keep reading
the windows once per track. Both must give every face the same value: the first window by id that holds the face's
time, else the track's score, none for a track without one; also for windows not in time order, and for faces at a
window's very edges.
"""

from __future__ import annotations

from sqlalchemy import select, update

from db import face_pages, face_table, labels
from db.schema import Face, Prediction, Track
from models.engagement import EngagementResult
from models.engagement import EngagementWindow as Window
from models.types import TrackResult
from tests.pg import fake_results, png_bytes

N = 30  # 10 frames x 3 faces: tracks 0, 1 and 2


def _study(store) -> None:
    res = fake_results(
        "v.mp4",
        [(10.0, 10.0, 50.0, 60.0), (60.0, 10.0, 100.0, 60.0), (110.0, 10.0, 150.0, 60.0)] * (N // 3),
        ["Neutral"] * N,
        frames=[f * 7 for f in range(N // 3) for _ in range(3)],
        tracks=[0, 1, 2] * (N // 3),
        seed=5,
    )

    def result(t: int) -> TrackResult:
        # track 1's windows are stored out of time order (later windows first), and overlap
        ks = list(range(8)) if t != 1 else [7, 2, 5, 0, 3, 6, 1, 4]
        wins = tuple(
            Window(start=k, end=k + 3, start_s=k * 0.7, end_s=k * 0.7 + 1.4, p_engaged=0.1 * k + t / 10) for k in ks
        )
        return TrackResult(
            track=t,
            n_faces=N // 3,
            start_s=0.0,
            end_s=6.3,
            engagement=EngagementResult(score=0.5, label="Engaged", windows=wins, n_features=N // 3, window=3),
        )

    store.ingest.ingest_results("s", png_bytes(5), "v.mp4", res, [result(t) for t in (0, 1, 2)])

    def edges(s) -> None:
        t2 = s.scalar(select(Track.id).where(Track.track_index == 2))
        s.execute(update(Track).where(Track.id == t2).values(engagement_score=None))  # a track without a score
        # a face whose time falls on no window of its track: the track's score
        s.execute(update(Face).where(Face.id == s.scalar(select(Face.id).order_by(Face.id.desc()))).values(time_s=99.0))

    store.transaction(edges)


def test_each_faces_window_by_the_index_equals_the_windows_read_whole(store) -> None:
    _study(store)

    def work(s):
        faces = list(s.execute(select(Face.id, Face.track_id, Face.time_s).order_by(Face.id)))
        whole = face_table.track_windows(s, {t for _, t, _ in faces})
        expected = {f: face_table.window_engagement(whole.get(t), ts) for f, t, ts in faces}
        return expected, face_table.windows_at(s, [tuple(f) for f in faces])

    expected, got = store.transaction(work, write=False)
    assert len(got) == 20, "the faces of the two tracks with a score"
    assert {f: got.get(f) for f in expected} == expected
    # the cases the rule has: a window of the out-of-order track, the track's score, and none
    values = set(expected.values())
    assert None in values and 0.5 in values and len(values) > 5


def test_single_face_views_give_the_values_of_the_whole_study(tmp_path) -> None:
    """A video stored chunk by chunk (the scale bench's product path): its predictions carry no engagement."""
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
    import scale_fill

    from db.schema import Media
    from db.services import LabelStore

    store = LabelStore(f"sqlite:///{tmp_path / 's.sqlite3'}", data_dir=tmp_path / "data")
    store.upgrade()
    shape = scale_fill.Shape(faces=1200, students=3, minutes=2.0, feature_dim=4, crop=0)
    scale_fill.fill(store, shape, path="product")

    def work(s):
        study_id = s.scalar(select(Media.study_id).limit(1))
        assert s.scalar(select(Prediction.id).where(Prediction.engagement.is_not(None))) is None
        whole, primary = labels.face_labels(s, study_id)
        ids = [r.face_id for r in whole]
        by_ids, _ = labels.face_labels(s, study_id, face_ids=ids)
        paged = face_pages.faces_by_id(s, study_id, ids, primary)
        return whole, by_ids, paged

    whole, by_ids, paged = store.transaction(work, write=False)
    store.close()
    eng = {r.face_id: r.engagement for r in whole}
    assert {r.face_id: r.engagement for r in by_ids} == eng
    assert {r.face_id: r.engagement for r in paged} == eng
    assert len(set(eng.values())) > 5
