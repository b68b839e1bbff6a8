"""Online-class storage: persons with append-only corrections, lecture segments, class tables and their exports."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError

from db.ingest import MediaInfo
from db.persons import PersonChangeError
from db.segments import SegmentsError
from tests.pg import fake_results, png_bytes, tracks_of

# track -> (person from the analysis, first second, last second, box, label, valence)
PLAN = {
    0: (0, 0, 59, (10, 10, 50, 60), "Happiness", 0.5),
    1: (1, 0, 119, (100, 10, 140, 60), "Neutral", -0.2),
    2: (0, 70, 119, (11, 10, 51, 60), "Sadness", -0.5),
    3: (2, 60, 65, (200, 10, 240, 60), "Surprise", 0.1),
}


def _ingest(store, study="class"):
    boxes, labels, frames, tracks, vals = [], [], [], [], []
    for t, (_, a, b, box, label, v) in PLAN.items():
        for sec in range(a, b + 1):
            boxes.append(box)
            labels.append(label)
            frames.append(sec)
            tracks.append(t)
            vals.append(v)
    results = fake_results("lecture.mp4", boxes, labels, frames=frames, tracks=tracks, fps=1.0, valence=vals)
    tj = [
        {
            "track": t,
            "n_faces": b - a + 1,
            "start_s": float(a),
            "end_s": float(b),
            "person": p,
            "engagement": {
                "score": 0.7,
                "label": "Engaged",
                "windows": [{"start_s": float(a), "end_s": float(b) + 1, "p_engaged": 0.7 if t != 1 else 0.3}],
            },
        }
        for t, (p, a, b, *_rest) in PLAN.items()
    ]
    info = MediaInfo(kind="video", width=320, height=240, duration_s=120.0, fps=1.0)
    rep = store.ingest.ingest_results(study, png_bytes(7), "lecture.mp4", results, tracks_of(tj), media_info=info)
    return rep.media_ids[0]


def _by_index(store, media_id):
    return {p.person_index: p for p in store.classroom.persons(media_id)}


def test_analysis_persons_are_stored_and_overlapping_merge_is_refused(store):
    mid = _ingest(store)
    persons = _by_index(store, mid)
    assert sorted(persons) == [0, 1, 2]
    assert persons[0].track_indexes == (0, 2)
    with pytest.raises(PersonChangeError, match="same time"):
        store.classroom.merge_persons(persons[0].person_id, persons[1].person_id, "alice", owner=True)
    store.classroom.merge_persons(persons[0].person_id, persons[2].person_id, "alice", owner=True)
    merged = _by_index(store, mid)
    assert merged[0].track_indexes == (0, 3, 2) and 2 not in merged
    store.classroom.rename_person(merged[0].person_id, "S01", "bob", owner=True)
    with pytest.raises(PersonChangeError, match="merge"):
        store.classroom.rename_person(merged[1].person_id, "S01", "bob", owner=True)
    track2 = store.recordings.tracks(mid)
    tid2 = next(t.id for t in track2 if t.track_index == 2)
    store.classroom.split_track(tid2, "alice", owner=True)
    after = store.classroom.persons(mid)
    assert {p.label for p in after} == {"S01", "P1", "P3"}
    hist = store.classroom.person_history(mid)
    assert [(h.kind, h.annotator) for h in hist] == [("merge", "alice"), ("rename", "bob"), ("split", "alice")]
    with pytest.raises(DBAPIError), store.engine.begin() as conn:  # append-only in the database itself
        conn.execute(text("UPDATE person_corrections SET participant = 'x'"))


ROUNDED = 0.5e-4
"""The tables' figures are rounded to 4 decimals (db.classroom.DECIMALS)."""


def _expected(faces, tracks, a, b, period, step=1.0):
    fs = [f for f in faces if f.track_index in tracks and a <= f.time_s < b]
    labels = [f.label for f in fs]
    return {
        "n_faces": len(fs),
        "visible_share": min(1.0, len({f.frame for f in fs}) * step / period),
        "engagement_p": float(np.mean([f.engagement for f in fs])) if fs else None,
        "dominant_emotion": max(set(labels), key=labels.count) if fs else None,
        "valence": float(np.mean([f.valence for f in fs])) if fs else None,
    }


def test_segment_and_minute_tables_match_the_stored_rows_and_follow_corrections(store, tmp_path):
    mid = _ingest(store)
    csv = tmp_path / "segments.csv"
    csv.write_text("media,name,start_s,end_s\nlecture.mp4,intro,0,30\n" + f"{mid},group work,30,120\n")
    assert len(store.classroom.import_segments("class", csv)) == 2
    faces = store.recordings.faces("class")
    tables = store.classroom.class_tables("class")
    seg = {(r["person"], r["segment"]): r for r in tables.segments}
    key0 = f"m{mid}-P0"
    for name, a, b in (("intro", 0, 30), ("group work", 30, 120)):
        want = _expected(faces, {0, 2}, a, b, b - a)
        got = seg[(key0, name)]
        for k, v in want.items():
            assert got[k] == pytest.approx(v, abs=ROUNDED), (name, k)
    assert seg[(key0, "group work")]["share_Sadness"] == pytest.approx(50 / 80)
    assert seg[(f"m{mid}-P1", "intro")]["engagement_label"] == "Distracted"
    minute1 = next(r for r in tables.minutes if r["person"] == key0 and r["minute"] == 1)
    assert minute1["n_faces"] == 50 and minute1["visible_share"] == pytest.approx(50 / 60, abs=ROUNDED)
    overall = {r["segment"]: r for r in tables.overall}
    assert overall["intro"]["n_persons"] == 2 and overall["intro"]["n_faces"] == 60
    assert overall["(whole recording)"]["n_faces"] == len(faces)

    # a merge shows in every table; the export follows it and holds no image
    persons = _by_index(store, mid)
    store.classroom.merge_persons(persons[0].person_id, persons[2].person_id, "alice", owner=True)
    store.classroom.rename_person(persons[0].person_id, "S01", "alice", owner=True)
    out = tmp_path / "segments-table.csv"
    rep = store.exports.export("class", "class-segments", out)
    df = pd.read_csv(out)
    assert set(df["person"]) == {"S01", f"m{mid}-P1"}
    row = df[(df.person == "S01") & (df.segment == "group work")].iloc[0]
    assert row.n_faces == _expected(faces, {0, 2, 3}, 30, 120, 90)["n_faces"] == 86
    card = out.with_name(out.stem + ".README.md").read_text()
    assert "no image" in card and "`visible_share`" in card
    assert not rep.crops_available
    store.exports.export("class", "class-overall", tmp_path / "overall.parquet")
    assert len(pd.read_parquet(tmp_path / "overall.parquet")) == 3


def test_segments_csv_refusals_name_the_lines_and_write_nothing(store, tmp_path):
    mid = _ingest(store)
    bad = tmp_path / "bad.csv"
    bad.write_text(
        "media,name,start_s,end_s\n"
        "lecture.mp4,intro,0,30\n"
        "lecture.mp4,overlap,20,40\n"
        "nosuch.mp4,x,0,10\n"
        f"{mid},late,100,500\n"
        f"{mid},nan,nan,10\n"
        f"{mid},backwards,60,50\n"
    )
    with pytest.raises(SegmentsError) as e:
        store.classroom.import_segments("class", bad)
    msg = str(e.value)
    for line, what in ((3, "overlaps"), (4, "no video"), (5, "after the end"), (6, "not a decimal"), (7, "not after")):
        assert f"line {line}: " in msg and what in msg, (line, msg)
    assert "line 2:" not in msg
    assert store.classroom.segments("class") == []
    hdr = tmp_path / "hdr.csv"
    hdr.write_text("media,name,start\nlecture.mp4,a,0\n")
    with pytest.raises(SegmentsError, match="line 1: the header"):
        store.classroom.import_segments("class", hdr)
