"""The class sums kept per track and time bucket equal the sums recomputed from the faces after every write path.

One helper (:func:`_kept_equal_recomputed`) compares, for every video of the study, the kept rows with
:func:`db.class_sums.recompute` (the faces summed now); it runs after ingest, resume, a vote, an undo, a track
correction, a bulk label import, rename, merge, split, a split at a time, segments added and removed, deleting a
track or a recording, and compacting. The tables a view builds from the kept sums equal the face-by-face ones
(``_check`` of :mod:`tests.test_class_tables_sql`).
"""

from __future__ import annotations

import math

from sqlalchemy import func, select

from db import class_sums
from db.ingest import MediaInfo
from db.migrate import downgrade, upgrade
from db.schema import ClassSum, ClassSumMedia, Media
from tests.pg import fake_results, png_bytes, tracks_of
from tests.test_class_tables_sql import _check
from tests.test_db_classes import _by_index, _ingest


def _fields(a: class_sums.Sums) -> dict[str, object]:
    return {
        "n": a.n,
        "n_human": a.n_human,
        "visible": a.visible,
        "eng_sum": a.eng_sum,
        "eng_n": a.eng_n,
        "val_sum": a.val_sum,
        "val_n": a.val_n,
        "aro_sum": a.aro_sum,
        "aro_n": a.aro_n,
        "labels": {k: v for k, v in a.labels.items() if v},
        "firsts": a.firsts,
    }


def _kept_equal_recomputed(store, study: str = "class") -> int:
    """Asserts that every video's kept sums equal its sums recomputed from the faces; returns the rows compared."""

    def read(s):
        videos = list(s.scalars(select(Media.id).where(Media.kind == "video")))
        kept = class_sums.kept(s, videos)
        return {m: (kept.get(m, (None, {}))[1], class_sums.recompute(s, m)) for m in videos}

    n = 0
    for m, (kept, fresh) in store.transaction(read, write=False).items():
        assert sorted(kept) == sorted(fresh), m
        for key, agg in fresh.items():
            got, want = _fields(kept[key]), _fields(agg)
            for k, v in want.items():
                if isinstance(v, float):
                    assert math.isclose(got[k], v, rel_tol=1e-9, abs_tol=1e-9), (m, key, k, got[k], v)
                else:
                    assert got[k] == v, (m, key, k, got[k], v)
            n += 1
    return n


def _count(store, model) -> int:
    return store.transaction(lambda s: s.scalar(select(func.count()).select_from(model)), write=False)


def test_ingest_votes_undo_and_person_changes_keep_the_sums(store):
    mid = _ingest(store)
    assert _kept_equal_recomputed(store) > 0
    faces = store.recordings.faces("class")
    by_track: dict[int, list] = {}
    for f in faces:
        by_track.setdefault(f.track_id, []).append(f)
    t0, t1, t2, _t3 = sorted(by_track)
    store.review.correct_face(by_track[t0][3].face_id, "alice", label="Anger", valence=0.9, engagement=0)
    _kept_equal_recomputed(store)  # vote
    store.review.undo("alice", face_id=by_track[t0][3].face_id)
    _kept_equal_recomputed(store)  # undo
    store.review.correct_track(t1, "bob", label="Fear", engagement=1)
    _kept_equal_recomputed(store)  # track correction
    store.review.undo("bob", track_id=t1)
    _kept_equal_recomputed(store)
    persons = _by_index(store, mid)
    store.classroom.rename_person(persons[1].person_id, "S01", "alice", owner=True)
    _kept_equal_recomputed(store)  # rename
    store.classroom.merge_persons(persons[0].person_id, persons[2].person_id, "alice", owner=True)
    _kept_equal_recomputed(store)  # merge
    store.classroom.split_track(t2, "alice", owner=True)
    _kept_equal_recomputed(store)  # split
    store.classroom.split_track_at(t0, 30.0, "alice", owner=True)
    _kept_equal_recomputed(store)  # split at a time: faces move to a new track
    _check(store)


def test_segments_deletes_and_compact_keep_the_sums(store, tmp_path):
    mid = _ingest(store)
    other = _ingest(store, study="class")  # the same file again: nothing new
    assert other == mid
    seg = store.classroom.add_segment(mid, "talk", 12.5, 70.0)
    _kept_equal_recomputed(store)  # a segment cuts the buckets again
    _check(store)
    store.classroom.delete_segment(seg.id)
    _kept_equal_recomputed(store)
    track = sorted({f.track_id for f in store.recordings.faces("class")})[-1]
    store.upkeep.delete_track(track)
    _kept_equal_recomputed(store)  # delete track
    _check(store)
    store.upkeep.compact("class", drop_features=True)
    _kept_equal_recomputed(store)  # compact
    store.upkeep.delete_media(mid)
    assert _kept_equal_recomputed(store) == 0  # delete media: its rows went with it
    assert _count(store, ClassSum) == 0 and _count(store, ClassSumMedia) == 0


def test_a_bulk_label_import_keeps_the_sums(store, tmp_path):
    _ingest(store)
    faces = store.recordings.faces("class")
    lines = "face_id,label,valence\n" + "".join(f"{f.face_id},Fear,-0.5\n" for f in faces[::7])
    (tmp_path / "labels.csv").write_text(lines, encoding="utf-8")
    rep = store.review.import_labels("class", tmp_path / "labels.csv", "dora")
    assert rep.annotations_added > 0
    _kept_equal_recomputed(store)
    _check(store)


def _chunk(frames: list[int]) -> list[object]:
    boxes = [(10.0 + f, 10.0, 50.0 + f, 60.0) for f in frames] + [(200.0, 10.0, 240.0, 60.0) for _ in frames]
    labels = ["Happiness"] * len(frames) + ["Sadness"] * len(frames)
    return fake_results("lecture.mp4", boxes, labels, frames=frames + frames, tracks=[None] * len(boxes))


def test_a_resumed_video_gets_its_sums_when_finished(store):
    info = MediaInfo(kind="video", width=320, height=240, duration_s=4.0, fps=10.0)
    state = store.ingest.begin_video("class", png_bytes(3), "lecture.mp4", info)
    store.ingest.store_chunk(state.media_id, _chunk([0, 1, 2]), until_s=0.2, until_frame=2, samples=3)
    assert _kept_equal_recomputed(store) == 0  # partial: no tracks, no sums
    again = store.ingest.begin_video("class", png_bytes(3), "lecture.mp4", info)  # resume
    assert not again.created
    store.ingest.store_chunk(state.media_id, _chunk([3, 5, 6]), until_s=0.6, until_frame=6, samples=7)
    frames = store.ingest.stored_frames(state.media_id, -1)
    face_tracks = {fid: i % 2 for f in frames for i, fid in enumerate(f.face_ids)}
    tracks = [
        {
            "track": t,
            "n_faces": 6,
            "start_s": 0.0,
            "end_s": 0.6,
            "person": t,
            "engagement": {
                "score": 0.8,
                "label": "Engaged",
                "windows": [{"start_s": 0.0, "end_s": 0.7, "p_engaged": 0.8}],
            },
        }
        for t in (0, 1)
    ]
    store.ingest.finish_video(
        state.media_id, face_tracks, tracks_of(tracks), duration_s=0.7, fps=10.0, width=320, height=240
    )
    assert _kept_equal_recomputed(store) > 0
    _check(store)


def test_the_migration_fills_the_sums_of_a_study_made_today(store, migrated_url):
    from db.engine import make_engine

    mid = _ingest(store)
    store.classroom.add_segment(mid, "talk", 10.0, 50.0)
    store.review.correct_face(store.recordings.faces("class")[4].face_id, "alice", label="Anger")
    want = store.classroom.class_tables("class")
    engine = make_engine(migrated_url)
    try:
        assert downgrade(engine, "0027", media_root=store.feature_root) == "0027"
        upgrade(engine, media_root=store.feature_root)
    finally:
        engine.dispose()
    assert _count(store, ClassSumMedia) == 1
    assert _kept_equal_recomputed(store) > 0
    assert store.classroom.class_tables("class") == want


def test_a_view_reads_no_face(store, monkeypatch):
    """With the sums kept, the tables are built without computing any recording from its faces."""
    from db import class_compute, classroom

    _ingest(store)
    want = store.classroom.class_tables("class")

    def no_faces(*args, **kwargs):
        raise AssertionError("a view read the faces")

    monkeypatch.setattr(classroom, "compute", no_faces)
    monkeypatch.setattr(class_compute, "compute", no_faces)
    assert store.classroom.class_tables("class") == want


def test_a_face_vote_reads_its_tracks_one_bucket_and_a_track_vote_the_whole_track(store, monkeypatch):
    from db.class_buckets import bucket_of

    _ingest(store)
    faces = store.recordings.faces("class")
    track, face = next(
        (f.track_id, f) for f in faces if f.time_s is not None and f.time_s > 60 and f.track_id is not None
    )
    bounds = store.transaction(lambda s: list(s.get(ClassSumMedia, face.media_id).bounds), write=False)
    assert len({bucket_of(bounds, f.time_s or 0.0) for f in faces if f.track_id == track}) > 1, "a long track"
    calls = []
    real = class_sums.compute

    def spy(session, media_id, study_id, primary, bounds, step, tracks=None, buckets=None):
        calls.append((None if tracks is None else sorted(tracks), None if buckets is None else sorted(buckets)))
        return real(session, media_id, study_id, primary, bounds, step, tracks, buckets)

    monkeypatch.setattr(class_sums, "compute", spy)
    store.review.correct_face(face.face_id, "alice", label="Anger", valence=0.9)
    assert calls == [([track], [bucket_of(bounds, face.time_s)])]
    _kept_equal_recomputed(store)
    calls.clear()
    store.review.correct_track(track, "bob", label="Fear")
    assert calls == [([track], None)]
    _kept_equal_recomputed(store)


def test_an_import_over_the_whole_recording_writes_its_sums_in_one_pass(store, tmp_path, monkeypatch):
    """Votes in most buckets of a recording (an import) rebuild it once instead of one rewrite per bucket; the
    sums are the same as recomputed from the faces."""
    from db.class_buckets import bucket_of

    _ingest(store)
    faces = [f for f in store.recordings.faces("class") if f.track_id is not None]
    voted = faces[::3]
    media_id = voted[0].media_id
    bounds = store.transaction(lambda s: list(s.get(ClassSumMedia, media_id).bounds), write=False)
    buckets = {bucket_of(bounds, f.time_s or 0.0) for f in voted if f.media_id == media_id}
    assert len(buckets) >= class_sums.MANY_BUCKETS and 3 * len(buckets) >= len(bounds), (buckets, bounds)
    calls = []
    real = class_sums.compute

    def spy(session, media_id, study_id, primary, bounds, step, tracks=None, buckets=None):
        calls.append((media_id, tracks, buckets))
        return real(session, media_id, study_id, primary, bounds, step, tracks, buckets)

    monkeypatch.setattr(class_sums, "compute", spy)
    lines = "face_id,label\n" + "".join(f"{f.face_id},Fear\n" for f in voted)
    (tmp_path / "labels.csv").write_text(lines, encoding="utf-8")
    assert store.review.import_labels("class", tmp_path / "labels.csv", "erin").annotations_added == len(voted)
    assert (media_id, None, None) in calls and all(t is None for m, t, _ in calls if m == media_id), calls
    assert _kept_equal_recomputed(store) > 0
