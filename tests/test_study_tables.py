"""Study-level tables: per participant per recording, per segment type across recordings, wide; files and codebook."""

from __future__ import annotations

import pandas as pd
import pytest

from db import classroom
from db.ingest import MediaInfo
from db.recording_info import RecordingInfoError
from db.study_tables import Participants, ReasonRow
from tests.pg import fake_results, png_bytes, tracks_of

STUDY = "course"


def _recording(store, name: str, seed: int, spans: dict[int, tuple[int, int]], label: str = "Happiness") -> int:
    """A 100 s recording at 1 fps: person p (track p) seen every second of ``spans[p]`` (inclusive)."""
    boxes, frames, tracks = [], [], []
    for p, (a, b) in spans.items():
        for sec in range(a, b + 1):
            boxes.append((10 + 60 * p, 10, 50 + 60 * p, 60))
            frames.append(sec)
            tracks.append(p)
    labels = [label] * len(boxes)
    results = fake_results(name, boxes, labels, frames=frames, tracks=tracks, fps=1.0, seed=seed, crops=False)
    eng = {"score": 0.8, "label": "Engaged", "windows": [{"start_s": 0.0, "end_s": 100.0, "p_engaged": 0.8}]}
    tj = [{"track": p, "n_faces": b - a + 1, "person": p, "engagement": eng} for p, (a, b) in spans.items()]
    info = MediaInfo(kind="video", width=320, height=240, duration_s=100.0, fps=1.0)
    rep = store.ingest.ingest_results(STUDY, png_bytes(seed), name, results, tracks_of(tj), media_info=info)
    return rep.media_ids[0]


def _course(store, tmp_path):
    """Two lectures with a quiz each; persons renamed S01/S02 in both (one participant per id)."""
    classroom.clear_cache()
    m1 = _recording(store, "week1.mp4", 1, {0: (0, 99), 1: (0, 39)})
    m2 = _recording(store, "week2.mp4", 2, {0: (0, 49), 1: (20, 99)})
    segs = tmp_path / "segments.csv"
    segs.write_text(
        f"media,name,start_s,end_s\n{m1},lecture,0,80\n{m1},quiz,80,100\n{m2},lecture,0,60\n{m2},quiz,60,100\n"
    )
    store.classroom.import_segments(STUDY, segs)
    for m in (m1, m2):
        for p in store.classroom.persons(m):
            store.classroom.rename_person(p.person_id, f"S0{p.person_index + 1}", "owner", owner=True)
    meta = tmp_path / "recordings.csv"
    meta.write_text(f"media,course,recording,date\nweek1.mp4,PSY101,Lecture 1,2026-10-05\n{m2},PSY101,,2026-10-12\n")
    assert len(store.classroom.import_recording_info(STUDY, meta)) == 2
    return m1, m2


def test_tables_pool_recordings_and_segment_types(store, tmp_path):
    m1, m2 = _course(store, tmp_path)
    st = store.classroom.study_tables(STUDY)
    rec = {(r["participant"], r["media_id"]): r for r in st.table("participant-recordings").rows}
    assert set(rec) == {("S01", m1), ("S02", m1), ("S01", m2), ("S02", m2)}
    r = rec[("S02", m1)]
    assert (r["course"], r["recording"], r["date"], r["reason"]) == ("PSY101", "Lecture 1", "2026-10-05", "visible")
    assert rec[("S01", m2)]["recording"] == "week2.mp4"  # no name given: the file name
    assert r["visible_s"] == 40.0 and r["visible_share"] == 0.4 and r["n_faces"] == 40
    # per segment type across recordings: visible seconds over the segments' seconds, pooled
    seg = {(r["participant"], r["segment"]): r for r in st.table("participant-segments").rows}
    # S02 in the quizzes: week1 80-100 none, week2 60-100 all 40 s: 40 of 60 s
    assert seg[("S02", "quiz")]["visible_share"] == round(40 / 60, 4)
    assert seg[("S02", "quiz")]["n_recordings"] == 2 and seg[("S02", "quiz")]["period_s"] == 60.0
    # S01 in the lectures: week1 80 of 80 s, week2 50 of 60 s
    assert seg[("S01", "lecture")]["visible_share"] == round(130 / 140, 4)
    assert seg[("S01", "lecture")]["engagement_p"] == 0.8
    wide = {r["participant"]: r for r in st.table("participants").rows}
    assert wide["S02"]["vis_quiz"] == seg[("S02", "quiz")]["visible_share"]
    assert wide["S02"]["visible_share"] == round((40 + 80) / 200, 4)
    assert wide["S01"]["n_recordings"] == 2
    assert wide["S01"]["share_happiness"] == 1.0


def test_a_roster_mapping_and_reasons_plug_in(store, tmp_path):
    m1, m2 = _course(store, tmp_path)
    p1 = {p.person_index: p for p in store.classroom.persons(m1)}
    who = Participants(
        of_person={p1[1].person_id: "anna"},
        reasons=(ReasonRow(m2, "ben", "not detected"), ReasonRow(m1, "ben", "absent")),
        groups={"anna": "A"},
    )
    st = store.classroom.study_tables(STUDY, who)
    rec = {(r["participant"], r["media_id"]): r for r in st.table("participant-recordings").rows}
    assert rec[("anna", m1)]["group"] == "A" and rec[("anna", m1)]["visible_s"] == 40.0
    assert rec[("ben", m2)]["reason"] == "not detected" and rec[("ben", m2)]["visible_share"] == 0.0
    assert rec[("ben", m1)]["reason"] == "absent"
    wide = {r["participant"]: r for r in st.table("participants").rows}
    assert wide["ben"]["n_recordings"] == 1  # the absent lecture is not in his time
    assert wide["ben"]["period_s"] == 100.0 and wide["ben"]["visible_share"] == 0.0


@pytest.mark.parametrize("fmt", ["csv", "parquet", "sav", "dta"])
def test_every_format_has_typed_labelled_columns_and_a_codebook(store, tmp_path, fmt):
    _course(store, tmp_path)
    out = tmp_path / f"tables-{fmt}"
    paths = store.exports.export_study_tables(STUDY, fmt, out)
    tables = [f"participant-recordings.{fmt}", f"participant-segments.{fmt}", f"participants.{fmt}"]
    assert sorted(p.name for p in paths) == sorted([*tables, "codebook.md", "codebook.csv"])
    book = (out / "codebook.md").read_text()
    for needle in ("enet_b0_8_best_vgaf", "7219cfb037209b253ea8b81cf969e60a00e9181c", "128", "16 faces", "4 decimals"):
        assert needle in book, needle
    assert "| 1.000 |" in book  # the analysed frames per second of the 1 fps recordings
    table = out / f"participant-recordings.{fmt}"
    if fmt == "csv":
        df = pd.read_csv(table)
        want = store.classroom.study_tables(STUDY).table("participant-recordings")
        assert list(df.columns) == [c.name for c in want.columns]
        assert df["visible_share"].tolist() == [r["visible_share"] for r in want.rows]
    elif fmt == "parquet":
        import pyarrow.parquet as pq

        schema = pq.read_schema(table)
        assert str(schema.field("participant").type) in ("string", "large_string")
        assert str(schema.field("n_faces").type) == "int64"
        assert str(schema.field("visible_share").type) == "double"
    else:
        import pyreadstat

        read = pyreadstat.read_sav if fmt == "sav" else pyreadstat.read_dta
        df, meta = read(str(table))
        labels = dict(zip(meta.column_names, meta.column_labels, strict=True))
        assert labels["visible_share"] == "share of time visible in the recording"
        assert meta.variable_value_labels["reason"] == {
            1: "visible",
            2: "camera-off or away",
            3: "not detected",
            4: "absent",
        }
        assert set(df["reason"]) == {1}
        assert sorted(df["participant"]) == ["S01", "S01", "S02", "S02"]
        wide, _ = read(str(out / f"participants.{fmt}"))
        assert "vis_quiz" in wide.columns
    with pytest.raises(Exception, match="not an empty folder"):
        store.exports.export_study_tables(STUDY, fmt, out)


def test_recording_metadata_csv_is_refused_whole_with_line_numbers(store, tmp_path):
    m1, m2 = _course(store, tmp_path)
    before = store.classroom.recording_infos(STUDY)
    bad = tmp_path / "bad.csv"
    bad.write_text(f"media,course,date\n{m1},X,2026-13-01\nnope.mp4,X,\n{m2},Y,2026-10-01\n{m2},Z,\n")
    with pytest.raises(RecordingInfoError) as err:
        store.classroom.import_recording_info(STUDY, bad)
    msg = str(err.value)
    assert "line 2: date '2026-13-01'" in msg and "line 3: no video 'nope.mp4'" in msg and "line 5:" in msg
    assert store.classroom.recording_infos(STUDY) == before
    got = store.classroom.set_recording_info(m2, course="PSY102", recording="Quiz week", day="")
    assert (got.course, got.recording, got.date) == ("PSY102", "Quiz week", None)


def test_cli_writes_the_tables_and_refuses_bad_metadata(store, migrated_url, tmp_path, monkeypatch, capsys):
    from db.cli import main

    m1, _ = _course(store, tmp_path)
    monkeypatch.setenv("AFFECTLAB_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("DATABASE_URL", migrated_url)
    meta = tmp_path / "more.csv"
    meta.write_text(f"media,recording\n{m1},Intro lecture\n")
    assert main(["import-recordings", str(meta), "--study", STUDY]) == 0
    assert main(["study-tables", "--study", STUDY, "--format", "dta", "--out", str(tmp_path / "dta")]) == 0
    assert "participants.dta" in capsys.readouterr().out
    assert "Intro lecture" in (tmp_path / "dta" / "codebook.md").read_text()
    bad = tmp_path / "bad.csv"
    bad.write_text("media,room\n1,A\n")
    assert main(["import-recordings", str(bad), "--study", STUDY]) == 1
    assert "line 1" in capsys.readouterr().err
    assert main(["study-tables", "--study", STUDY, "--format", "sav", "--out", str(tmp_path / "dta")]) == 1
    assert "not an empty folder" in capsys.readouterr().err


def test_the_class_table_card_states_the_method(store, tmp_path):
    _course(store, tmp_path)
    store.exports.export(STUDY, "class-segments", tmp_path / "seg.csv")
    card = (tmp_path / "seg.README.md").read_text()
    for needle in ("enet_b0_8_best_vgaf", "7219cfb037209b253ea8b81cf969e60a00e9181c", "windows of 128", "16 faces"):
        assert needle in card, needle
    assert "visible_s" in pd.read_csv(tmp_path / "seg.csv").columns


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        (b"", "line 1: the header"),
        (b"media,course\n\xff\xfe,x\n", "not UTF-8"),
        (b"media,course,course\n1,a,b\n", "line 1: the header"),
        (b"media,course\n1,a,b\n", "line 2: 3 fields"),
        (b"media,course\n1," + b"x" * 201 + b"\n", "line 2: course is longer than 200"),
    ],
)
def test_bad_recording_files_change_nothing(store, tmp_path, content, reason):
    _course(store, tmp_path)
    before = store.classroom.recording_infos(STUDY)
    bad = tmp_path / "bad.csv"
    bad.write_bytes(content)
    with pytest.raises(RecordingInfoError, match=reason):
        store.classroom.import_recording_info(STUDY, bad)
    assert store.classroom.recording_infos(STUDY) == before


def test_study_csv_goes_through_the_one_writer(store, tmp_path):
    m1, _ = _course(store, tmp_path)
    person = store.classroom.persons(m1)[0]
    store.classroom.rename_person(person.person_id, "=HYPERLINK(1)", "owner", owner=True)
    store.exports.export_study_tables(STUDY, "csv", tmp_path / "csv")
    text = (tmp_path / "csv" / "participant-recordings.csv").read_bytes()
    assert b"'=HYPERLINK(1)" in text and b"\r\n" in text
    assert pd.read_parquet(_parquet(store, tmp_path))["participant"].tolist().count("=HYPERLINK(1)") == 1


def _parquet(store, tmp_path):
    store.exports.export_study_tables(STUDY, "parquet", tmp_path / "pq")
    return tmp_path / "pq" / "participant-recordings.parquet"


def test_the_codebook_names_the_detection_settings_stored_with_each_recording(store, tmp_path):
    from db.detection import DetectionSettings, record

    m1, _m2 = _course(store, tmp_path)
    stored = DetectionSettings("gallery", "auto", 24, None, 16)
    store.transaction(lambda s: record(s, m1, stored))
    out = tmp_path / "tables"
    store.exports.export_study_tables(STUDY, "csv", out)
    lines = {ln.split("|")[1].strip(): ln for ln in (out / "codebook.md").read_text().splitlines() if ln.count("|") > 3}
    week1 = next(v for k, v in lines.items() if "week1" in v or "Lecture 1" in v)
    week2 = next(v for k, v in lines.items() if "week2" in v)
    assert f"min face px {stored.min_face_size}" in week1 and "preset gallery" in week1 and "asked auto" in week1
    assert "not stored (defaults)" in week2


def test_a_study_with_a_roster_gives_every_participant_a_row_with_its_reason(store, tmp_path):
    from db import roster_services

    m1, m2 = _course(store, tmp_path)
    roster = tmp_path / "roster.csv"
    roster.write_text("participant,name,group\nP1,Ada,A\nP2,Ben,B\nP3,Cy,A\n")
    assert roster_services.import_roster(store, STUDY, roster, owner=True) == 3
    persons = {m: {p.label: p.person_id for p in store.classroom.persons(m)} for m in (m1, m2)}
    roster_services.assign(store, STUDY, m1, {persons[m1]["S01"]: "P1", persons[m1]["S02"]: "P2"}, "owner", owner=True)
    roster_services.assign(store, STUDY, m2, {persons[m2]["S01"]: "P1"}, "owner", owner=True)
    table = store.classroom.study_tables(STUDY).table("participant-recordings")
    rows = {(r["participant"], r["media_id"]): r for r in table.rows}
    assert rows[("P1", m1)]["reason"] == rows[("P2", m1)]["reason"] == "visible"
    assert rows[("P3", m1)]["reason"] == rows[("P3", m2)]["reason"] == "not detected"
    assert rows[("P1", m2)]["visible_share"] > 0 and ("S02", m2) in rows  # an unassigned person keeps their own row
    assert rows[("P3", m1)]["visible_share"] in (0, 0.0, None)
