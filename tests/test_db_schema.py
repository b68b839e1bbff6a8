"""Schema, migrations and privacy deletes of the label store, on SQLite and PostgreSQL."""

from __future__ import annotations

import pytest
from sqlalchemy import func, select, text
from sqlalchemy.exc import DBAPIError, IntegrityError

from db.engine import make_engine
from db.errors import SchemaOutdatedError
from db.migrate import current_revision, downgrade, head_revision, schema_differences, upgrade
from db.schema import Annotation, EngagementWindow, Face, Media, Prediction, Track
from db.services import LabelStore
from tests.pg import fake_results, png_bytes, tracks_of


def test_upgrade_empty_database_then_autogenerate_finds_no_difference(store_url):
    engine = make_engine(store_url)
    try:
        assert current_revision(engine) is None
        assert upgrade(engine) == head_revision()
        assert schema_differences(engine) == []
        assert downgrade(engine, "base") is None
        assert upgrade(engine) == head_revision()
        assert schema_differences(engine) == []
    finally:
        engine.dispose()


def test_store_refuses_an_unmigrated_database(store_url):
    store = LabelStore(store_url)
    try:
        with pytest.raises(SchemaOutdatedError, match="python -m db upgrade"):
            store.recordings.studies()
    finally:
        store.close()


def test_sqlite_connection_pragmas(tmp_path):
    engine = make_engine(f"sqlite:///{tmp_path / 'x' / 'a.sqlite3'}")
    with engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        assert conn.exec_driver_sql("PRAGMA busy_timeout").scalar() >= 1000
    engine.dispose()


def _ingest_video(store, study="s", seed=1):
    results = fake_results(
        "clip.mp4",
        [(10, 10, 50, 60), (100, 10, 140, 60), (12, 11, 52, 61), (101, 10, 141, 60)],
        ["Happiness", "Neutral", "Happiness", "Sadness"],
        frames=[0, 0, 5, 5],
        tracks=[1, 2, 1, 2],
        seed=seed,
    )
    tracks = [
        {
            "track": 1,
            "n_faces": 2,
            "start_s": 0.0,
            "end_s": 0.5,
            "engagement": {
                "score": 0.8,
                "label": "Engaged",
                "windows": [{"start_s": 0, "end_s": 0.5, "p_engaged": 0.8}],
            },
        },
        {"track": 2, "n_faces": 2, "start_s": 0.0, "end_s": 0.5, "engagement": None},
    ]
    return store.ingest.ingest_results(study, png_bytes(seed), "clip.mp4", results, tracks_of(tracks))


def _count(store, model):
    with store.engine.connect() as conn:
        return conn.execute(select(func.count()).select_from(model)).scalar()


def test_delete_media_removes_everything_derived(store):
    rep = _ingest_video(store)
    other = store.ingest.ingest_results(
        "s", png_bytes(99), "other.png", fake_results("other.png", [(1, 1, 30, 30)], ["Fear"])
    )
    face_ids = [f.face_id for f in store.recordings.faces("s") if f.media_id == rep.media_ids[0]]
    track_id = store.recordings.faces("s")[0].track_id
    store.review.correct_face(face_ids[0], "ann", label="Anger")
    store.review.correct_track(track_id, "ann", engagement=0.66)
    undo = store.review.correct_face(face_ids[1], "ann", label="Fear")
    store.review.undo("ann", annotation_id=undo.id)
    assert _count(store, EngagementWindow) == 1

    removed = store.upkeep.delete_media(rep.media_ids[0])
    assert removed["faces"] == 4
    for model in (Track, EngagementWindow):
        assert _count(store, model) == 0
    assert _count(store, Face) == 1 and _count(store, Prediction) == 1 and _count(store, Annotation) == 0
    assert [m.id for m in store.recordings.media("s")] == list(other.media_ids)
    assert store.upkeep.integrity_check() == "ok"


def test_delete_track_removes_its_faces_only(store):
    _ingest_video(store)
    faces = store.recordings.faces("s")
    t1 = next(f.track_id for f in faces if f.track_index == 1)
    store.review.correct_track(t1, "ann", label="Surprise")
    removed = store.upkeep.delete_track(t1)
    assert removed == {"track": 1, "faces": 2, "face_annotations": 0}
    left = store.recordings.faces("s")
    assert {f.track_index for f in left} == {2} and len(left) == 2
    assert _count(store, Annotation) == 0 and _count(store, EngagementWindow) == 0


def test_annotations_and_predictions_are_append_only_in_the_database(store):
    _ingest_video(store)
    face = store.recordings.faces("s")[0]
    store.review.correct_face(face.face_id, "ann", label="Anger")
    with store.engine.connect() as conn:
        for stmt in ("UPDATE annotations SET label = 'Fear'", "UPDATE predictions SET label = 'Fear'"):
            with pytest.raises(DBAPIError, match="append-only"):
                conn.execute(text(stmt))
            conn.rollback()
        # The check constraints hold too: an engagement off EngageWild's levels, and a row with two targets.
        with pytest.raises(IntegrityError):
            conn.execute(
                text(
                    "INSERT INTO annotations (face_id, annotator_id, kind, engagement, created_at) "
                    "VALUES (:f, 1, 'set', 0.5, CURRENT_TIMESTAMP)"
                ),
                {"f": face.face_id},
            )
        conn.rollback()
        with pytest.raises(IntegrityError):
            conn.execute(
                text(
                    "INSERT INTO annotations (face_id, track_id, annotator_id, kind, created_at) "
                    "VALUES (:f, :t, 1, 'set', CURRENT_TIMESTAMP)"
                ),
                {"f": face.face_id, "t": face.track_id},
            )
        conn.rollback()


def test_direct_deletes_of_annotations_and_predictions_are_refused(store):
    rep = _ingest_video(store)
    faces = store.recordings.faces("s")
    face_ann = store.review.correct_face(faces[0].face_id, "ann", label="Anger")
    track_ann = store.review.correct_track(faces[0].track_id, "ann", engagement=0.66)
    store.review.undo("ann", annotation_id=face_ann.id)
    statements = [
        ("DELETE FROM annotations WHERE id = :i", {"i": face_ann.id}),
        ("DELETE FROM annotations WHERE id = :i", {"i": track_ann.id}),
        ("DELETE FROM annotations", {}),
        ("DELETE FROM predictions WHERE face_id = :f", {"f": faces[0].face_id}),
        ("DELETE FROM predictions", {}),
    ]
    with store.engine.connect() as conn:
        for stmt, params in statements:
            with pytest.raises(DBAPIError, match=r"append-only.*delete-media"):
                conn.execute(text(stmt), params)
            conn.rollback()
    assert _count(store, Annotation) == 3 and _count(store, Prediction) == 4
    # The privacy deletions still remove everything derived, through the cascades.
    assert store.upkeep.delete_track(faces[0].track_id)["faces"] == 2
    assert _count(store, Annotation) == 0 and _count(store, Prediction) == 2
    left = store.recordings.faces("s")
    store.review.correct_face(left[0].face_id, "ann", label="Fear")
    store.review.correct_track(left[0].track_id, "bob", label="Sadness")
    store.upkeep.delete_media(rep.media_ids[0])
    assert _count(store, Annotation) == 0 and _count(store, Prediction) == 0 and _count(store, Face) == 0
    assert store.upkeep.integrity_check() == "ok"


def test_append_only_delete_triggers_downgrade_and_upgrade(store_url):
    engine = make_engine(store_url)
    try:
        upgrade(engine)
        assert downgrade(engine, "0002") == "0002"
        with engine.begin() as conn:  # without 0003 a direct delete goes through (nothing to delete here)
            conn.execute(text("DELETE FROM annotations"))
        assert upgrade(engine) == head_revision()
        assert schema_differences(engine) == []
    finally:
        engine.dispose()


HOSTILE = (
    "<img src=x onerror=alert('x')><b>'; DROP TABLE media; -- \"quoted\", ..%2F..%2Fetc%2Fpasswd\n=cmd|' C calc'!A0.jpg"
)
"""Stored verbatim: a media name holds no path separator (``/`` or ``\\``), the store keeps base names only."""


def test_hostile_filename_is_stored_verbatim_and_neutralised_in_csv(store, tmp_path):
    import zipfile

    import pandas as pd

    store.ingest.ingest_results("s", png_bytes(7), "../../etc/passwd", fake_results("x", [(1, 1, 30, 30)], ["Fear"]))
    assert store.recordings.media("s")[0].filename == "passwd"  # a base name, never a path
    store.upkeep.delete_media(store.recordings.media("s")[0].id)
    store.ingest.ingest_results("s", png_bytes(5), HOSTILE, fake_results(HOSTILE, [(1, 1, 30, 30)], ["Fear"]))
    assert store.recordings.media("s")[0].filename == HOSTILE
    assert _count(store, Media) == 1  # the table is still there
    store.exports.export("s", "csv", tmp_path / "out.csv")
    assert pd.read_csv(tmp_path / "out.csv", keep_default_na=False)["filename"].tolist() == [HOSTILE]
    formula = "=cmd|' C calc'!A0.jpg"
    store.ingest.ingest_results("s", png_bytes(6), formula, fake_results(formula, [(1, 1, 30, 30)], ["Fear"]))
    store.exports.export("s", "csv", tmp_path / "out.csv")
    csv_names = pd.read_csv(tmp_path / "out.csv", keep_default_na=False)["filename"].tolist()
    assert sorted(csv_names) == sorted([HOSTILE, "'" + formula])  # a spreadsheet shows it as text
    store.exports.export("s", "parquet", tmp_path / "out.parquet")
    assert sorted(pd.read_parquet(tmp_path / "out.parquet")["filename"].tolist()) == sorted([HOSTILE, formula])
    store.exports.export("s", "imagefolder", tmp_path / "out.zip")
    with zipfile.ZipFile(tmp_path / "out.zip") as zf:
        names = zf.namelist()
        assert all(".." not in n and "<" not in n for n in names)
        meta = pd.read_csv(zf.open("metadata.csv"), keep_default_na=False)
    assert sorted(meta["filename"].tolist()) == sorted([HOSTILE, "'" + formula])


def test_migration_0006_merges_annotators_that_are_one_person(store_url):
    engine = make_engine(store_url)
    try:
        upgrade(engine)
        store = LabelStore(store_url)
        try:
            name = "img.png"
            boxes = [(10.0, 10.0, 50.0, 60.0), (60.0, 10.0, 100.0, 60.0)]
            store.ingest.ingest_results("s", png_bytes(1), name, fake_results(name, boxes, ["Fear", "Anger"]))
            f1, f2 = (f.face_id for f in store.recordings.faces("s"))
            store.review.correct_face(f1, "alice", label="Happiness")
            store.review.correct_face(f2, "zed", label="Sadness")
            store.review.correct_face(f1, "bob", label="Anger")
            store.review.skip(f2, "alice")
            store.review.skip(f2, "zed")
            store.review.skip(f1, "zed")
        finally:
            store.close()
        assert downgrade(engine, "0005") == "0005"
        with engine.begin() as conn:  # before 0006, "Alice " was another annotator than "alice"
            conn.execute(text("UPDATE annotators SET name = ' ALICE ' WHERE name = 'zed'"))
        assert upgrade(engine) == head_revision()
        assert schema_differences(engine) == []
        with engine.connect() as conn:
            names = dict(conn.execute(text("SELECT name, key FROM annotators")).all())
            skips = conn.execute(text("SELECT face_id FROM review_skips ORDER BY face_id")).scalars().all()
        assert names == {"alice": "alice", "bob": "bob"}, "the oldest name stays, for display"
        assert skips == sorted([f1, f2]), "the skip both had is kept once"
        store = LabelStore(store_url)
        try:
            votes = sorted((j.annotator, j.label) for f in store.recordings.faces("s") for j in f.judgements)
            assert votes == [("alice", "Happiness"), ("alice", "Sadness"), ("bob", "Anger")], "every vote kept"
            with pytest.raises(DBAPIError), engine.begin() as conn:  # the append-only trigger is back
                conn.execute(text("UPDATE annotations SET note = 'x'"))
        finally:
            store.close()
    finally:
        engine.dispose()
