"""Migrations move data with snapshots of their own revision, and a store made at any older revision upgrades to head.

Every revision of ``db/migrations/versions`` is picked up (those added later too): a store is made at it with rows
written through the tables as that revision has them (reflection, never today's ORM), upgraded to head, and then read
through today's ORM and rules: nothing lost, the derived tables (review read model, statistics' tallies) equal a
rebuild from scratch.
"""

from __future__ import annotations

import ast
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from alembic.script import ScriptDirectory
from sqlalchemy.orm import Session

from db import labels, status
from db.engine import make_engine
from db.migrate import alembic_config, head_revision, schema_differences, upgrade

VERSIONS = Path(__file__).resolve().parents[1] / "db" / "migrations" / "versions"
SCRIPT = ScriptDirectory.from_config(alembic_config())
OLDER = sorted(r.revision for r in SCRIPT.walk_revisions() if r.revision not in SCRIPT.get_heads())
CLASSES = ["Anger", "Happiness", "Neutral", "Sadness"]


def _imports(tree: ast.AST) -> list[str]:
    names = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            names.append("." * node.level + (node.module or ""))
    return names


@pytest.mark.parametrize("path", sorted(VERSIONS.glob("*.py")), ids=lambda p: p.stem)
def test_revisions_never_use_the_orm_or_the_application(path):
    """A revision that imports ``db`` (today's ORM classes, its rules) or an ORM session reads an older schema through
    today's classes: it breaks once a later revision adds a column to a table it touches."""
    bad = [
        name
        for name in _imports(ast.parse(path.read_text(encoding="utf-8")))
        if name == "db" or name.startswith(("db.", ".")) or name.startswith("sqlalchemy.orm")
    ]
    assert bad == [], f"{path.name} imports {bad}: use sa.table/sa.column snapshots or reflection (op.get_bind())"


def _row(table: sa.Table, **values: Any) -> dict[str, Any]:
    """The values a table has columns for, with a value for every other NOT NULL column without a server default."""
    out = {k: v for k, v in values.items() if k in table.c}
    for col in table.columns:
        if col.name in out or col.nullable or col.primary_key or col.server_default is not None:
            continue
        t = col.type
        if isinstance(t, sa.DateTime):
            out[col.name] = datetime(2026, 1, 2, tzinfo=UTC)
        elif isinstance(t, sa.Boolean):
            out[col.name] = False
        elif isinstance(t, sa.Integer | sa.Float | sa.Numeric):
            out[col.name] = 0
        elif isinstance(t, sa.JSON):
            out[col.name] = {}
        else:
            out[col.name] = ""
    return out


def _insert(conn: sa.Connection, meta: sa.MetaData, table_name: str, **values: Any) -> int:
    table = meta.tables[table_name]
    return int(conn.execute(table.insert().values(_row(table, **values))).inserted_primary_key[0])


def _fill_old_store(conn: sa.Connection) -> sa.MetaData:
    """A study with an image (three faces), a video (a track of two faces), votes of two annotators on a face and on
    the track, and a skip, written through the tables as the store's revision has them."""
    meta = sa.MetaData()
    meta.reflect(conn)
    now = datetime(2026, 1, 2, tzinfo=UTC)
    study = _insert(conn, meta, "studies", name="old", double_share=0.5, created_at=now)
    common = {"study_id": study, "size_bytes": 10, "width": 64, "height": 48, "created_at": now}
    image = _insert(conn, meta, "media", sha256="a" * 64, filename="img.png", kind="image", **common)
    video = _insert(conn, meta, "media", sha256="b" * 64, filename="v.mp4", kind="video", fps=10.0, **common)
    track = _insert(conn, meta, "tracks", media_id=video, track_index=0, n_faces=2, start_s=0.0, end_s=1.0)
    faces = []
    spots = [(image, None, i, None) for i in range(3)] + [(video, track, 0, f) for f in (0, 10)]
    for n, (media, tr, index, frame) in enumerate(spots):
        box = {"x1": 1.0 + n, "y1": 2.0, "x2": 30.0 + n, "y2": 40.0, "det_score": 0.9}
        face = _insert(conn, meta, "faces", media_id=media, track_id=tr, face_index=index, frame=frame, **box)
        faces.append(face)
        probs = {c: (0.7 if i == n % len(CLASSES) else 0.1) for i, c in enumerate(CLASSES)}
        pred = {"model": "m", "weights_hash": "h", "label": CLASSES[n % len(CLASSES)], "confidence": 0.7}
        _insert(conn, meta, "predictions", face_id=face, probs=probs, valence=0.1 * n, created_at=now, **pred)
    who = {n: _insert(conn, meta, "annotators", name=n, key=n.lower(), created_at=now) for n in ("Alice", "Bob")}
    votes = [
        {"face_id": faces[0], "annotator_id": who["Alice"], "label": "Happiness"},
        {"face_id": faces[0], "annotator_id": who["Bob"], "label": "Sadness", "valence": 0.5},
        {"track_id": track, "annotator_id": who["Bob"], "label": "Anger"},
    ]
    for vote in votes:
        _insert(conn, meta, "annotations", kind="set", source="t", created_at=now, **vote)
    if "review_skips" in meta.tables:
        _insert(conn, meta, "review_skips", face_id=faces[1], annotator_id=who["Alice"], created_at=now)
    return meta


DERIVED = (
    "face_status",
    "face_judges",
    "queue_counts",
    "media_totals",
    "study_status",
    "face_tallies",
    "study_tallies",
)


def _derived(session: Session) -> dict[str, list[str]]:
    meta = sa.MetaData()
    meta.reflect(session.connection(), only=DERIVED)
    out = {}
    for name in DERIVED:
        t = meta.tables[name]
        cols = [c for c in t.columns if c.name != "id"]
        rows = session.execute(sa.select(*cols)).all()
        out[name] = sorted(
            json.dumps([round(v, 6) if isinstance(v, float) else v for v in r], default=str) for r in rows
        )
    return out


@pytest.mark.parametrize("revision", OLDER)
def test_store_made_at_an_older_revision_upgrades_to_head(store_url, revision):
    engine = make_engine(store_url)
    try:
        upgrade(engine, revision)
        with engine.begin() as conn:
            old = _fill_old_store(conn)
        share = 0.5 if "double_share" in old.tables["studies"].c else 0.0
        assert upgrade(engine) == head_revision()
        assert schema_differences(engine) == []
        with Session(engine) as s, s.begin():
            from db.schema import Annotation, Face, Media, Study

            study = s.scalars(sa.select(Study).where(Study.name == "old")).one()
            assert (study.double_share, study.persons_by_annotators) == (share, False)
            media = s.scalars(sa.select(Media).order_by(Media.id)).all()
            assert [(m.filename, m.course, m.analysis_status) for m in media] == [
                ("img.png", None, "complete"),
                ("v.mp4", None, "complete"),
            ]
            assert s.scalar(sa.select(sa.func.count()).select_from(Face)) == 5
            assert s.scalar(sa.select(sa.func.count()).select_from(Annotation)) == 3
            rows, _ = labels.face_labels(s, study.id)
            human = sorted(r.human_label for r in rows if r.human_label)
            assert len(rows) == 5 and len(human) >= 3 and "Anger" in human
            filled = _derived(s)
            assert len(filled["face_status"]) == 5 and filled["study_tallies"], "the derived tables were not filled"
            status.rebuild(s)
            s.flush()
            assert _derived(s) == filled, "the read model filled by the upgrade differs from a rebuild at head"
    finally:
        engine.dispose()


def test_rows_dangling_before_an_upgrade_do_not_block_it(tmp_path):
    """SQLite runs the upgrade with foreign keys off and refuses rows it left pointing nowhere; rows that already
    pointed nowhere (a store written without foreign keys) are not the upgrade's doing and keep it going."""
    engine = make_engine(f"sqlite:///{tmp_path / 'store.sqlite3'}")
    try:
        upgrade(engine, OLDER[-1])
        with engine.connect() as conn:
            conn.connection.driver_connection.execute("PRAGMA foreign_keys = OFF")
            with conn.begin():
                meta = sa.MetaData()
                meta.reflect(conn, only=["faces"])
                _insert(conn, meta, "faces", media_id=999, x1=0.0, y1=0.0, x2=1.0, y2=1.0, det_score=0.9)
            conn.connection.driver_connection.execute("PRAGMA foreign_keys = ON")
        assert upgrade(engine) == head_revision()
        with engine.connect() as conn:
            assert len(conn.exec_driver_sql("PRAGMA foreign_key_check").fetchall()) == 1
    finally:
        engine.dispose()
