"""The roster: participants, expected lists, person assignments (app, CSV, remembered), reasons, and who may change."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError

from db import roster_services as rs
from db.errors import NotAllowedError
from db.ingest import MediaInfo
from db.roster import RecordingRoster, RosterError, reason_in
from tests.pg import fake_results, png_bytes, tracks_of

# track -> (person from the analysis, first second, last second, box, identity of the face)
PLAN = {
    0: (0, 0, 29, (10, 10, 50, 60), 0),
    1: (1, 0, 59, (100, 10, 140, 60), 1),
    2: (0, 40, 59, (11, 10, 51, 60), 0),
    3: (2, 30, 34, (200, 10, 240, 60), 2),
}
IDENTITIES = np.random.default_rng(42).standard_normal((4, 16)).astype(np.float32)


def _ingest(store, study="class", plan=PLAN, seed=7, name="lecture.mp4"):
    boxes, frames, tracks, who = [], [], [], []
    for t, (_, a, b, box, ident) in plan.items():
        for sec in range(a, b + 1):
            boxes.append(box)
            frames.append(sec)
            tracks.append(t)
            who.append(ident)
    results = fake_results(name, boxes, ["Neutral"] * len(boxes), frames=frames, tracks=tracks, fps=1.0, seed=seed)
    rng = np.random.default_rng(seed)
    results = [
        dataclasses.replace(
            r,
            prediction=dataclasses.replace(r.prediction, features=IDENTITIES[k] + 0.05 * rng.standard_normal(16)),
        )
        for r, k in zip(results, who, strict=True)
    ]
    tj = [
        {"track": t, "n_faces": b - a + 1, "start_s": float(a), "end_s": float(b), "person": p, "engagement": None}
        for t, (p, a, b, *_rest) in plan.items()
    ]
    info = MediaInfo(kind="video", width=320, height=240, duration_s=60.0, fps=1.0)
    return store.ingest.ingest_results(study, png_bytes(seed), name, results, tracks_of(tj), media_info=info).media_ids[
        0
    ]


def _csv(tmp_path: Path, name: str, text_: str) -> Path:
    path = tmp_path / name
    path.write_text(text_, encoding="utf-8")
    return path


def _roster(store, tmp_path):
    body = "participant,name,group\nS01,Ann,A\nS02,Bob,A\nS03,Cy,B\nS04,Di,\n"
    assert rs.import_roster(store, "class", _csv(tmp_path, "roster.csv", body), owner=True) == 4


def test_roster_import_and_bad_rows_refused_whole(store, tmp_path):
    _ingest(store)
    _roster(store, tmp_path)
    assert [(p.code, p.name, p.group) for p in rs.participants(store, "class")] == [
        ("S01", "Ann", "A"),
        ("S02", "Bob", "A"),
        ("S03", "Cy", "B"),
        ("S04", "Di", None),
    ]
    bad = _csv(tmp_path, "bad.csv", "participant,name\nS01,Anna\nS05,Eve\nS05,Eve again\n,nobody\n")
    with pytest.raises(RosterError) as e:
        rs.import_roster(store, "class", bad, owner=True)
    assert "line 4" in str(e.value) and "line 5" in str(e.value) and "line 2" not in str(e.value)
    assert next(p.name for p in rs.participants(store, "class")) == "Ann"  # nothing changed
    assert len(rs.participants(store, "class")) == 4


def test_assignment_csv_reasons_and_the_tables_mapping(store, tmp_path):
    mid = _ingest(store)
    _roster(store, tmp_path)
    persons = {p.person_index: p for p in store.classroom.persons(mid)}
    good = _csv(tmp_path, "a.csv", f"recording,person,participant\n{mid},P0,S01\nlecture.mp4,1,S02\n")
    assert rs.import_assignments(store, "class", good, "alice", owner=True) == 2
    expected = _csv(tmp_path, "e.csv", f"recording,participant\n{mid},S01\n{mid},S02\n{mid},S03\n")
    assert rs.import_expected(store, "class", expected, owner=True) == 3
    r = rs.recording_roster(store, "class", mid)
    assert isinstance(r, RecordingRoster) and r.n_expected == 3
    assert r.persons == {persons[0].person_id: "S01", persons[1].person_id: "S02"}
    reasons = {row.participant: row.reason for row in r.rows}
    assert reasons == {"S01": "visible", "S02": "visible", "S03": "not detected", "S04": "absent"}
    s01 = next(row for row in r.rows if row.participant == "S01")
    assert s01.spans == ((0.0, 29.0), (40.0, 59.0))
    assert reason_in(s01, 30, 40) == "camera-off or away"  # seen before and after, not within
    assert reason_in(s01, 20, 35) == "visible"
    s03 = next(row for row in r.rows if row.participant == "S03")
    assert reason_in(s03, 0, 10) == "not detected"
    # every kind of bad line is named with its number, and nothing is assigned
    bad = _csv(
        tmp_path,
        "bad.csv",
        "recording,person,participant\n"
        f"{mid},P2,S01\n"  # fine alone: P2 (30-34 s) never overlaps P0
        "nosuch.mp4,P0,S01\n"
        f"{mid},P9,S03\n"
        f"{mid},P2,S07\n"
        f"{mid},P2,S04\n"
        f"{mid},P1,S03\n",
    )
    with pytest.raises(RosterError) as e:
        rs.import_assignments(store, "class", bad, "alice", owner=True)
    msg = str(e.value)
    for line in (3, 4, 5, 6):
        assert f"line {line}:" in msg, msg
    assert "line 2:" not in msg and "line 7:" not in msg
    clash = _csv(tmp_path, "clash.csv", f"recording,person,participant\n{mid},P2,S02\n")
    with pytest.raises(RosterError, match="line 2: 'S02' is given to two persons seen at the same time"):
        rs.import_assignments(store, "class", clash, "alice", owner=True)
    assert len(rs.assignment_history(store, "class", mid)) == 2
    # one view for a whole recording: several persons at once, appended with who
    rs.assign(store, "class", mid, {persons[2].person_id: "S01"}, "bob", owner=True)
    hist = rs.assignment_history(store, "class", mid)
    assert [(h.participant, h.source, h.annotator) for h in hist][-1] == ("S01", "app", "bob")
    row = next(x for x in rs.recording_roster(store, "class", mid).rows if x.participant == "S01")
    assert len(row.person_ids) == 2


def test_assignments_are_append_only(store, tmp_path):
    mid = _ingest(store)
    _roster(store, tmp_path)
    p0 = store.classroom.persons(mid)[0].person_id
    rs.assign(store, "class", mid, {p0: "S01"}, "alice", owner=True)
    rs.assign(store, "class", mid, {p0: None}, "alice", owner=True)
    assert rs.recording_roster(store, "class", mid).persons == {}
    assert [h.participant for h in rs.assignment_history(store, "class", mid)] == ["S01", None]
    with pytest.raises(DBAPIError), store.engine.begin() as conn:
        conn.execute(text("UPDATE person_assignments SET participant_id = NULL"))


def test_remembered_where_tile_and_appearance_match(store, tmp_path):
    first = _ingest(store)
    _roster(store, tmp_path)
    by_index = {p.person_index: p.person_id for p in store.classroom.persons(first)}
    rs.assign(store, "class", first, {by_index[0]: "S01", by_index[1]: "S02", by_index[2]: "S03"}, "alice", owner=True)
    # next lecture: S01 in the same tile with the same face; S02's tile holds another face (identity 3);
    # S03's face sits in another tile
    plan = {
        0: (0, 0, 59, (12, 11, 52, 61), 0),
        1: (1, 0, 59, (100, 10, 140, 60), 3),
        2: (2, 0, 59, (260, 150, 300, 200), 2),
    }
    second = _ingest(store, plan=plan, seed=8, name="lecture2.mp4")
    assert rs.remember(store, "class", second, "alice", owner=True) == 1
    r = rs.recording_roster(store, "class", second)
    assert sorted(r.persons.values()) == ["S01"]
    assert rs.assignment_history(store, "class", second)[0].source == "remembered"
    assert rs.remember(store, "class", second, "alice", owner=True) == 0  # nothing new the second time


def test_person_changes_are_for_owners_on_every_path(store, tmp_path):
    """Rename, merge, split, assignments and imports: refused for an annotator (nothing changes) unless the study
    lets annotators change persons."""
    mid = _ingest(store)
    _roster(store, tmp_path)
    ps = {p.person_index: p for p in store.classroom.persons(mid)}
    t2 = ps[0].track_ids[1]
    a_csv = _csv(tmp_path, "a.csv", f"recording,person,participant\n{mid},P0,S01\n")
    attempts = [
        lambda owner: store.classroom.rename_person(ps[1].person_id, "X", "eve", owner=owner),
        lambda owner: store.classroom.merge_persons(ps[0].person_id, ps[2].person_id, "eve", owner=owner),
        lambda owner: store.classroom.split_track(t2, "eve", owner=owner),
        lambda owner: rs.assign(store, "class", mid, {ps[1].person_id: "S02"}, "eve", owner=owner),
        lambda owner: rs.import_assignments(store, "class", a_csv, "eve", owner=owner),
        lambda owner: rs.import_roster(store, "class", _csv(tmp_path, "r.csv", "participant\nS09\n"), owner=owner),
        lambda owner: rs.remember(store, "class", mid, "eve", owner=owner),
        lambda owner: rs.set_expected(store, "class", mid, ["S01"], owner=owner),
    ]
    for attempt in attempts:
        with pytest.raises(NotAllowedError, match="for study owners only"):
            attempt(False)
    assert store.classroom.person_history(mid) == [] and rs.assignment_history(store, "class", mid) == []
    assert len(rs.participants(store, "class")) == 4
    with pytest.raises(NotAllowedError):
        rs.set_persons_by_annotators(store, "class", True, owner=False)
    assert rs.set_persons_by_annotators(store, "class", True, owner=True)
    for attempt in attempts:
        attempt(False)
    kinds = [h.kind for h in store.classroom.person_history(mid)]
    assert kinds == ["rename", "merge", "split"] and all(
        h.annotator == "eve" for h in store.classroom.person_history(mid)
    )


def test_split_a_track_at_a_time(store):
    """A track that went on with another student's face is cut at a time: the rest becomes a new person, recorded
    with who and when; the class tables follow; a time outside the track is refused and changes nothing."""
    from db.persons import PersonChangeError

    mid = _ingest(store)
    ps = {p.person_index: p for p in store.classroom.persons(mid)}
    long_track = ps[1].track_ids[0]  # 0-59 s
    with pytest.raises(PersonChangeError, match="no face after"):
        store.classroom.split_track_at(long_track, 99.0, "alice", owner=True)
    with pytest.raises(NotAllowedError):
        store.classroom.split_track_at(long_track, 30.0, "eve", owner=False)
    assert store.classroom.person_history(mid) == []
    store.classroom.split_track_at(long_track, 30.0, "alice", owner=True)
    after = store.classroom.persons(mid)
    assert len(after) == 4
    old = next(p for p in after if p.person_id == ps[1].person_id)
    new = next(p for p in after if p.person_id not in {q.person_id for q in ps.values()})
    assert (old.start_s, old.end_s, old.n_faces) == (0.0, 29.0, 30)
    assert (new.start_s, new.end_s, new.n_faces) == (30.0, 59.0, 30)
    (h,) = store.classroom.person_history(mid)
    assert (h.kind, h.annotator, h.person_id) == ("split", "alice", new.person_id) and "at 30 s" in h.note
    tables = store.classroom.class_tables("class")
    assert {r["person"] for r in tables.minutes if r["media_id"] == mid} >= {old.key, new.key}


def test_command_line_roster_and_person_changes(migrated_url, tmp_path, monkeypatch, capsys):
    from db.cli import main
    from db.services import LabelStore

    monkeypatch.setenv("AFFECTLAB_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("DATABASE_URL", migrated_url)
    store = LabelStore(migrated_url, data_dir=tmp_path / "data")
    try:
        mid = _ingest(store)
        ps = {p.person_index: p for p in store.classroom.persons(mid)}
    finally:
        store.close()
    roster_csv = _csv(tmp_path, "r.csv", "participant,name\nS01,Ann\nS02,Bob\n")
    assert main(["roster", "import", "class", str(roster_csv)]) == 0
    bad = _csv(tmp_path, "bad.csv", f"recording,person,participant\n{mid},P0,S01\n{mid},P0,S02\n{mid},P7,S09\n")
    assert main(["roster", "assign", "class", str(bad), "--who", "alice"]) == 1
    err = capsys.readouterr().err
    assert "line 3:" in err and "line 4:" in err and "nothing changed" in err
    good = _csv(tmp_path, "a.csv", f"recording,person,participant\n{mid},P0,S01\n")
    assert main(["roster", "assign", "class", str(good)]) == 1  # no --who: refused
    assert main(["roster", "assign", "class", str(good), "--who", "alice"]) == 0
    assert main(["roster", "show", "class", str(mid)]) == 0
    out = capsys.readouterr().out
    assert "S01\tAnn\t\tvisible" in out and "S02\tBob\t\tnot detected" in out
    assert main(["persons", "rename", str(ps[1].person_id), "S-9", "--who", "bob"]) == 0
    assert main(["persons", "split", str(ps[1].track_ids[0]), "--at", "20", "--who", "bob"]) == 0
    assert main(["persons", "merge", str(ps[0].person_id), str(ps[1].person_id), "--who", "bob"]) == 1  # overlap
    store = LabelStore(migrated_url, data_dir=tmp_path / "data")
    try:
        assert [(h.kind, h.annotator) for h in store.classroom.person_history(mid)] == [
            ("rename", "bob"),
            ("split", "bob"),
        ]
    finally:
        store.close()
