"""Alembic environment of the label store; run through :mod:`db.migrate` (no alembic.ini).

Revisions change the schema and move stored data with Core table snapshots of their own revision (``sa.table``,
reflection through ``op.get_bind()``); none imports ``db`` (tests/test_migrations.py checks it), so that today's ORM
classes never meet an older schema. Derived data (the review read model of 0008, the statistics' tallies of 0019,
the class sums of 0028) is no data step: once an upgrade that applied revisions ends at head, :func:`_fill_derived`
rebuilds it with today's rules for the studies that lack it, whatever revision the store came from.
"""

from __future__ import annotations

from alembic import context
from sqlalchemy import Connection, exists, or_, select
from sqlalchemy.orm import Session

from db.engine import make_engine
from db.errors import StoreError
from db.schema import Base

config = context.config
target_metadata = Base.metadata


def _run(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        render_as_batch=True,
        compare_type=True,
    )
    migration = context.get_context()
    start = set(migration.get_current_heads())
    heads = set(context.script.get_heads())
    with context.begin_transaction():
        # no check, no fill when no revision runs (every start of the app upgrades); older dangling rows are not ours
        before = _dangling(connection) if start != heads else set()
        context.run_migrations()
        end = set(migration.get_current_heads())
        if end != start:
            if end == heads:
                _fill_derived(connection)
            _check_foreign_keys(connection, before)


def _fill_derived(connection: Connection) -> None:
    """Fills the derived tables of every study that lacks them, at head (today's schema and rules).

    A study whose faces have no read-model row (or that has no study row there) is rebuilt whole (``status.rebuild``);
    one with votes but no statistics' tallies gets those (``status.rebuild_tallies``); a complete video without class
    sums gets them (``class_sums.fill_missing``); a finished video's features move to its file when the store's media
    root is known (``feature_store.move_finished``, revision 0029). Run in the upgrade's
    transaction: an upgrade that fails here leaves the store at its old revision.
    """
    from db import class_sums, feature_store, status
    from db.schema import Annotation, Face, FaceStatus, Media, Study, StudyStatus, StudyTally, Track

    session = Session(bind=connection)
    for sid in list(session.scalars(select(Study.id).order_by(Study.id))):
        of_study = select(Media.id).where(Media.study_id == sid)
        unfilled = select(Face.id).where(Face.media_id.in_(of_study), ~exists().where(FaceStatus.face_id == Face.id))
        no_row = ~exists().where(StudyStatus.study_id == sid)
        if session.scalar(select(or_(exists(unfilled), no_row))):
            status.rebuild(session, sid)
            continue
        voted = select(Annotation.id).where(
            or_(
                Annotation.face_id.in_(select(Face.id).where(Face.media_id.in_(of_study))),
                Annotation.track_id.in_(select(Track.id).where(Track.media_id.in_(of_study))),
            )
        )
        if session.scalar(select(exists(voted) & ~exists().where(StudyTally.study_id == sid))):
            status.rebuild_tallies(session, sid)
    class_sums.fill_missing(session)
    # the finished videos' features into their files beside the media files (revision 0029), where the root is known
    feature_store.bind(session, context.config.attributes.get("media_root"))
    feature_store.move_finished(session)
    session.flush()


def run_migrations_offline() -> None:
    context.configure(
        url=config.get_main_option("sqlalchemy.url"),
        target_metadata=target_metadata,
        literal_binds=True,
        render_as_batch=True,
    )
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    engine = config.attributes.get("engine")
    if engine is None:
        url = config.get_main_option("sqlalchemy.url")
        if url is None:
            raise StoreError("no database URL for the migrations: run them with `python -m db upgrade` (db.migrate)")
        engine = make_engine(url)
    with engine.connect() as connection:
        sqlite = connection.dialect.name == "sqlite"
        if sqlite:
            _foreign_keys(connection, on=False)
        try:
            _run(connection)
            connection.commit()
        finally:
            if sqlite:
                connection.rollback()
                _foreign_keys(connection, on=True)


def _foreign_keys(connection: Connection, *, on: bool) -> None:
    """Switches SQLite's foreign keys for the whole upgrade (outside a transaction, where the pragma takes effect).

    A batch operation moves and copies a table (new table, copy, drop the old one, rename): with foreign keys on, the
    drop would cascade to every row that refers to the table (``ON DELETE CASCADE``: a study's media, their faces...)
    and an upgrade would empty an older store. :func:`_check_foreign_keys` checks the result before the commit.
    """
    raw = connection.connection.driver_connection
    assert raw is not None
    raw.execute(f"PRAGMA foreign_keys = {'ON' if on else 'OFF'}")


def _dangling(connection: Connection) -> set[tuple[object, ...]]:
    """SQLite's rows that refer to missing ones (``PRAGMA foreign_key_check``: table, rowid, parent, key); none
    elsewhere (PostgreSQL keeps its foreign keys on through an upgrade)."""
    if connection.dialect.name != "sqlite":
        return set()
    return {tuple(r) for r in connection.exec_driver_sql("PRAGMA foreign_key_check").fetchall()}


def _check_foreign_keys(connection: Connection, before: set[tuple[object, ...]]) -> None:
    """Refuses to commit an upgrade that left new rows pointing nowhere (SQLite, whose foreign keys were off)."""
    bad = sorted(_dangling(connection) - before, key=str)
    if bad:
        raise StoreError(f"the upgrade left rows that refer to missing ones ({bad[:5]}); nothing was changed")


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
