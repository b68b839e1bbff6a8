"""Shared plumbing of the review read model: session switches, chunked ids, the dialect's upsert, Core tables."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from sqlalchemy import Table, select
from sqlalchemy.orm import Session

from db.schema import Base, StudyStatus

OFF = "affectlab_status_off"
"""``session.info`` key: set to True on a session that writes a database without the read model (migrations)."""
TALLIES_OFF = "affectlab_tallies_off"
"""``session.info`` key: set to True on a session that refreshes the read model of a database without the statistics'
tallies yet (migration 0008, which runs before the revision creating them)."""
CHUNK = 500


def chunks(ids: Iterable[int]) -> Iterable[list[int]]:
    """The ids sorted, in chunks of :data:`CHUNK` (the bound parameters of one ``IN``)."""
    items = sorted(ids)
    for i in range(0, len(items), CHUNK):
        yield items[i : i + CHUNK]


def upsert(session: Session) -> Any:
    """The dialect's ``INSERT`` (``ON CONFLICT`` clauses)."""
    if session.get_bind().dialect.name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert as pg_insert

        return pg_insert
    from sqlalchemy.dialects.sqlite import insert as sqlite_insert

    return sqlite_insert


def locked_study(session: Session, study_id: int) -> StudyStatus:
    """A study's :class:`StudyStatus` row, read afresh and locked until the transaction ends (PostgreSQL)."""
    stmt = select(StudyStatus).where(StudyStatus.study_id == study_id).with_for_update(key_share=True)
    kept = session.scalars(stmt.execution_options(populate_existing=True)).one()
    return kept


def core_table(model: type[Base]) -> Table:
    """The Core table of a model (a plain ``executemany`` insert, without the ORM's bulk machinery)."""
    return Base.metadata.tables[model.__tablename__]
