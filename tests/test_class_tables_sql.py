"""Class tables from the kept SQL sums equal the tables computed from every face row in Python."""

from __future__ import annotations

import math

import numpy as np
import pytest

from db import classroom
from db.classroom import WHOLE, _inside, _periods, figures, frame_durations
from tests.test_db_classes import _by_index, _ingest


def _reference(store, study="class"):
    """The tables as computed before the SQL sums: every face row of the study in Python (the old algorithm)."""
    rows = store.recordings.faces(study)
    classes: list[str] = []
    for r in rows:
        for k in r.model_probs or {}:
            if k not in classes:
                classes.append(k)
    for r in rows:
        if r.label and r.label not in classes:
            classes.append(r.label)
    minutes_t, segments_t, overall_t = [], [], []
    for m in [m for m in store.recordings.media(study) if m.kind == "video"]:
        faces = [r for r in rows if r.media_id == m.id]
        persons = store.classroom.persons(m.id)
        if not persons:
            continue
        of_track = {t: p for p in persons for t in p.track_ids}
        by_person = {p.person_id: [] for p in persons}
        for f in faces:
            p = of_track.get(f.track_id) if f.track_id is not None else None
            if p is not None:
                by_person[p.person_id].append(f)
        times = [f.time_s for f in faces if f.time_s is not None]
        duration = float(m.duration_s or (max(times) if times else 0.0)) or 1.0
        step = frame_durations(times)
        minutes, seg_periods = _periods(duration, store.classroom.segments(study, m.id))
        base = {"media_id": m.id, "filename": m.filename}

        def cols(p):
            return {"person": p.key, "participant": p.participant, "person_index": p.person_index}

        for minute, a, b in minutes:
            for p in persons:
                fs = [f for f in by_person[p.person_id] if _inside(f, a, b, b >= duration)]
                fig = figures(fs, classes, b - a, step)
                minutes_t.append({**base, **cols(p), "minute": minute, "start_s": a, "end_s": b, **fig})
        for name, a, b in [*seg_periods, (WHOLE, 0.0, duration)]:
            pooled, shares, seconds = [], [], []
            for p in persons:
                fs = [f for f in by_person[p.person_id] if _inside(f, a, b, b >= duration)]
                fig = figures(fs, classes, b - a, step)
                shares.append(fig["visible_share"])
                seconds.append(fig["visible_s"])
                pooled += fs
                if name != WHOLE:
                    segments_t.append({**base, **cols(p), "segment": name, "start_s": a, "end_s": b, **fig})
            fig = figures(pooled, classes, b - a, step)
            fig["visible_share"] = round(float(np.mean(shares)), classroom.DECIMALS) if shares else 0.0
            fig["visible_s"] = round(float(np.mean(seconds)), classroom.SECONDS_DECIMALS) if seconds else 0.0
            n_persons = sum(1 for p in persons if any(_inside(f, a, b, b >= duration) for f in by_person[p.person_id]))
            overall_t.append({**base, "segment": name, "start_s": a, "end_s": b, "n_persons": n_persons, **fig})
    return minutes_t, segments_t, overall_t, tuple(classes)


def _same(a, b):
    assert len(a) == len(b)
    for x, y in zip(a, b, strict=True):
        assert list(x) == list(y)
        for k in x:
            if isinstance(x[k], float) and isinstance(y[k], float):
                assert math.isclose(x[k], y[k], rel_tol=1e-12, abs_tol=1e-12), (k, x, y)
            else:
                assert x[k] == y[k], (k, x[k], y[k])


def _check(store):
    got = store.classroom.class_tables("class")
    ref = _reference(store)
    assert got.classes == ref[3]
    _same(got.minutes, ref[0])
    _same(got.segments, ref[1])
    _same(got.overall, ref[2])
    return got


def test_sql_tables_equal_the_python_tables_and_follow_every_change(store, tmp_path):
    classroom.clear_cache()
    mid = _ingest(store)
    csv = tmp_path / "segments.csv"
    csv.write_text("media,name,start_s,end_s\nlecture.mp4,intro,0,30\n" + f"{mid},group work,30,100.5\n")
    store.classroom.import_segments("class", csv)
    first = _check(store)
    assert _check(store) == first  # served from the cache, same tables
    faces = store.recordings.faces("class")
    by_track: dict[int, list] = {}
    for f in faces:
        by_track.setdefault(f.track_id, []).append(f)
    t0, t1, t2, t3 = sorted(by_track)
    # votes of several annotators, an undo, a track vote, a class the model never predicts
    store.review.correct_face(by_track[t0][3].face_id, "alice", label="Anger", valence=0.9, engagement=0)
    _check(store)
    store.review.correct_face(by_track[t0][3].face_id, "bob", label="Anger")
    store.review.correct_face(by_track[t1][10].face_id, "bob", label="Contempt", arousal=-0.4)
    _check(store)
    store.review.undo("bob", face_id=by_track[t1][10].face_id)
    store.review.correct_track(t2, "carol", label="Fear", engagement=1)
    store.review.correct_face(by_track[t2][0].face_id, "carol", label="Happiness")
    _check(store)
    # person changes and segments
    persons = _by_index(store, mid)
    store.classroom.merge_persons(persons[0].person_id, persons[2].person_id, "alice", owner=True)
    _check(store)
    store.classroom.rename_person(persons[1].person_id, "S07", "alice", owner=True)
    store.classroom.split_track(t2, "alice", owner=True)
    _check(store)
    seg = store.classroom.add_segment(mid, "end", 100.5, 120.0)
    _check(store)
    store.classroom.delete_segment(seg.id)
    _check(store)
    store.upkeep.delete_track(t3)
    got = _check(store)
    assert {r["person"] for r in got.minutes} >= {"S07"}


def test_a_second_process_writing_is_seen(store, migrated_url, tmp_path):
    """The cache is checked against the database: a vote from another store (another process) shows at once."""
    from db.services import LabelStore

    classroom.clear_cache()
    _ingest(store)
    before = _check(store)
    other = LabelStore(migrated_url, data_dir=tmp_path / "other")
    try:
        face = store.recordings.faces("class")[5]
        other.review.correct_face(face.face_id, "zoe", label="Disgust")
    finally:
        other.close()
    after = _check(store)
    assert after != before


@pytest.mark.parametrize("t", [-1.0, 0.0, 0.5, 59.999, 60.0, 60.5, 119.0, 120.0, 121.0])
def test_buckets_in_python_and_sql_agree(store, t):
    from sqlalchemy import literal, select

    bounds = [0.0, 30.0, 60.0, 100.0, 120.0]
    got = store.transaction(lambda s: s.scalar(select(classroom._bucket_sql(bounds, literal(t)))), write=False)
    assert got == classroom._bucket_of(bounds, t)


def _no_rebuild(monkeypatch, what):
    """Fails when a recording's sums are computed from all its faces: when written (``class_sums.rebuild``) or
    when a view reads them (``classroom._computed``)."""
    from db import class_sums

    def no_rebuild(*args, **kwargs):
        raise AssertionError(f"the recording was recomputed for {what}")

    monkeypatch.setattr(class_sums, "rebuild", no_rebuild)
    monkeypatch.setattr(classroom, "_computed", no_rebuild)


def test_a_vote_updates_the_kept_sums_of_its_track(store, monkeypatch):
    """After a vote only the voted track's sums are written again; a view reads the kept sums, never the faces."""
    _ingest(store)
    _check(store)
    _no_rebuild(monkeypatch, "a vote")
    faces = store.recordings.faces("class")
    store.review.correct_face(faces[7].face_id, "alice", label="Fear", valence=-0.9)
    store.review.correct_track(faces[200].track_id, "bob", engagement=0)
    store.review.undo("alice", face_id=faces[7].face_id)
    store.review.correct_face(faces[9].face_id, "carol", label="Contempt")
    got = _check(store)
    assert "Contempt" in got.classes


def test_a_person_change_regroups_the_kept_track_sums(store, monkeypatch):
    """A rename, merge or split re-reads the persons only (issue 24 item 7: the Classroom page after a change): the
    recording's sums are per track, and the tables still equal the face-by-face ones."""
    classroom.clear_cache()
    mid = _ingest(store)
    store.classroom.add_segment(mid, "talk", 10, 90)
    _check(store)
    _no_rebuild(monkeypatch, "a person change")
    persons = _by_index(store, mid)
    store.classroom.rename_person(persons[1].person_id, "S-02", "alice", owner=True)
    got = _check(store)
    assert "S-02" in {r["person"] for r in got.minutes}
    store.classroom.merge_persons(persons[0].person_id, persons[2].person_id, "alice", owner=True)
    _check(store)
    split = next(p for p in store.classroom.persons(mid) if len(p.track_ids) > 1)
    store.classroom.split_track(split.track_ids[-1], "alice", owner=True)
    store.review.correct_face(store.recordings.faces("class")[3].face_id, "bob", label="Fear")
    _check(store)
