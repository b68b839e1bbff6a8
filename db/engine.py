"""Engines and sessions for SQLite (default) and PostgreSQL (``DATABASE_URL=postgresql+psycopg://...``).

SQLite connections get ``PRAGMA foreign_keys=ON`` (the ``ON DELETE CASCADE`` of the privacy deletes depends on it),
WAL journaling (readers never block the writer), a busy timeout, ``synchronous=NORMAL`` (safe with WAL: a crash can
lose the last commits, never corrupt the file) and ``secure_delete`` (deleted faces are overwritten, not left in free
pages). Write transactions start with ``BEGIN IMMEDIATE`` so that two writers queue on the busy timeout instead of
failing when a read lock would have to be upgraded; read-only sessions use a plain deferred ``BEGIN``.

The SQLite file is created owner-only (0600, its folder 0700 when created here) before SQLite opens it, so its
``-wal`` and ``-shm`` files, which SQLite creates with the database file's permissions, are owner-only too; each new
connection makes an existing file and its ``-wal``/``-shm`` owner-only as well (:func:`make_private`).
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Engine, create_engine, event
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session, sessionmaker

SQLITE_BUSY_TIMEOUT_MS = 10_000
"""How long a SQLite connection waits for another writer's lock before failing with 'database is locked'."""

_BEGIN_OPTION = "affectlab_sqlite_begin"

LOCK_MESSAGES = ("database is locked", "database table is locked", "database schema is locked")
"""SQLite's messages for a lock held by another connection."""
RETRY_SQLSTATES = frozenset({"40001", "40P01", "55P03"})
"""PostgreSQL serialization_failure, deadlock_detected, lock_not_available."""


SQLITE_PAGE_SIZE = 16384
"""Page size of new SQLite databases (existing ones keep theirs until ``VACUUM``)."""


def safe_url(url: str | URL) -> str:
    """The URL as text with any password masked, for messages."""
    return make_url(url).render_as_string(hide_password=True)


def sqlite_path(url: str | URL) -> Path | None:
    """The database file of a SQLite URL, or None for in-memory databases and other engines."""
    u = make_url(url)
    if u.get_backend_name() != "sqlite" or not u.database or u.database == ":memory:":
        return None
    return Path(u.database)


def make_private(path: Path) -> None:
    """Makes a SQLite database file and its ``-wal``, ``-shm`` and ``-journal`` files owner-only (0600).

    Files of another owner (a mounted volume) keep their mode.
    """
    for p in (path, *(path.with_name(path.name + s) for s in ("-wal", "-shm", "-journal"))):
        with contextlib.suppress(OSError):
            if p.exists() and (p.stat().st_mode & 0o777) != 0o600:
                os.chmod(p, 0o600)


def _create_private(path: Path) -> None:
    """Creates the folder (0700) and an empty database file (0600) before SQLite does, when missing."""
    if not path.parent.exists():
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    with contextlib.suppress(FileExistsError):
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))


def make_engine(url: str | URL, *, busy_timeout_ms: int = SQLITE_BUSY_TIMEOUT_MS, echo: bool = False) -> Engine:
    """Creates an engine for ``url`` with AffectLab's connection settings.

    A SQLite file's folder is created when missing (0700), and the file owner-only (0600).

    Args:
        url: SQLAlchemy URL (``sqlite:///path`` or ``postgresql+psycopg://user@host/db``).
        busy_timeout_ms: SQLite lock wait before 'database is locked' is raised.
        echo: Log every statement (debugging).

    Returns:
        The engine; share one per process (it holds the connection pool).
    """
    u = make_url(url)
    if u.get_backend_name() != "sqlite":
        return create_engine(u, echo=echo, pool_pre_ping=True, future=True)

    path = sqlite_path(u)
    if path is not None:
        _create_private(path)
    engine = create_engine(u, echo=echo, connect_args={"timeout": busy_timeout_ms / 1000})

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Take transaction control from pysqlite: SQLAlchemy's "begin" event below emits BEGIN itself.
        dbapi_connection.isolation_level = None
        cur = dbapi_connection.cursor()
        try:
            cur.execute(f"PRAGMA busy_timeout = {int(busy_timeout_ms)}")
            cur.execute("PRAGMA foreign_keys = ON")
            if path is not None:
                mode = cur.execute("PRAGMA journal_mode").fetchone()[0]
                if str(mode).lower() != "wal":
                    # A new file only (SQLite ignores it once the database has content): a face row with its
                    # compact features is ~1.4 KB, of which a 4 KB page holds 2 (2 KB per face), a 16 KB page 11.
                    cur.execute(f"PRAGMA page_size = {SQLITE_PAGE_SIZE}")
                    cur.execute("PRAGMA journal_mode = WAL")
            cur.execute("PRAGMA synchronous = NORMAL")
            cur.execute("PRAGMA secure_delete = ON")
        finally:
            cur.close()
        if path is not None:
            make_private(path)

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Connection) -> None:
        mode = conn.get_execution_options().get(_BEGIN_OPTION, "IMMEDIATE")
        conn.exec_driver_sql("BEGIN" if mode == "DEFERRED" else "BEGIN IMMEDIATE")

    return engine


def read_only(engine: Engine) -> Engine:
    """A view of ``engine`` whose transactions do not take SQLite's write lock up front (same pool)."""
    if engine.dialect.name != "sqlite":
        return engine
    return engine.execution_options(**{_BEGIN_OPTION: "DEFERRED"})


def session_factory(engine: Engine) -> sessionmaker[Session]:
    """A session factory whose sessions keep loaded attributes after commit (rows are returned to callers)."""
    return sessionmaker(bind=engine, expire_on_commit=False, future=True)


def is_retryable(exc: BaseException) -> bool:
    """Whether a database error is a lock or serialisation failure worth retrying (the transaction may succeed)."""
    if not isinstance(exc, DBAPIError):
        return False
    orig = exc.orig
    if isinstance(orig, sqlite3.OperationalError) and any(m in str(orig).lower() for m in LOCK_MESSAGES):
        return True
    return getattr(orig, "sqlstate", None) in RETRY_SQLSTATES
