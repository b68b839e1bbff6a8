"""Upkeep of the database file: online backup, integrity check and WAL checkpoint.

These run outside the store's transactions, on the engine or the SQLite file itself; :class:`db.services.LabelStore`
exposes them as ``backup``, ``integrity_check`` and (after a privacy deletion) a checkpoint.
"""

from __future__ import annotations

import logging
import os
import sqlite3
from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy import Engine, text
from sqlalchemy.exc import DBAPIError

from db import media_files
from db.engine import make_private, safe_url, sqlite_path
from db.errors import BackupUnsupportedError, NotFoundError, StoreError

log = logging.getLogger(__name__)


def default_backup_path(data_dir: Path) -> Path:
    """``data_dir/backups/affectlab-YYYYmmdd-HHMMSS.sqlite3`` (UTC now)."""
    stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
    return data_dir / "backups" / f"affectlab-{stamp}.sqlite3"


def backup(url: str, out: Path) -> Path:
    """Copies a SQLite database with SQLite's online backup API (safe while the app runs).

    The target is created owner-only (0600) before any byte is written, in a folder made owner-only when new.

    Args:
        url: The database's SQLAlchemy URL.
        out: Target file; it must not exist.

    Returns:
        ``out``, after ``PRAGMA integrity_check`` passed on it.

    Raises:
        BackupUnsupportedError: For a database that is not a SQLite file (back PostgreSQL up with ``pg_dump``).
        NotFoundError: When the database file does not exist.
        StoreError: When ``out`` exists, or the copy fails its integrity check (nothing is kept then).
    """
    src_path = sqlite_path(url)
    if src_path is None:
        raise BackupUnsupportedError(safe_url(url))
    out = Path(out)
    if out.exists():
        raise StoreError(f"{out}: exists already; choose a new backup file name")
    media_files.make_private_dir(out.parent)
    if not src_path.exists():
        raise NotFoundError("database file", str(src_path))
    os.close(os.open(out, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))  # owner-only before any byte
    src = sqlite3.connect(src_path, timeout=30)
    dst = sqlite3.connect(out)
    try:
        src.backup(dst, pages=1024)
        status = dst.execute("PRAGMA integrity_check").fetchone()[0]
    finally:
        dst.close()
        src.close()
    make_private(out)
    if status != "ok":
        out.unlink(missing_ok=True)
        raise StoreError(f"the backup failed its integrity check ({status}); nothing was kept, try again")
    return out


def integrity_check(engine: Engine) -> str:
    """``ok`` when the database is consistent, else what is wrong.

    On SQLite: ``PRAGMA integrity_check`` and ``PRAGMA foreign_key_check``. On PostgreSQL, which keeps its own
    consistency, only that the server answers.
    """
    if engine.dialect.name != "sqlite":
        with engine.connect() as conn:
            conn.execute(text("SELECT 1"))
        return "ok"
    with engine.connect() as conn:
        status = conn.exec_driver_sql("PRAGMA integrity_check").scalar()
        fk = conn.exec_driver_sql("PRAGMA foreign_key_check").fetchall()
    if status != "ok":
        return str(status)
    return "ok" if not fk else f"{len(fk)} foreign key violations"


def _raw_pragma(engine: Engine, sql: str) -> tuple[object, ...] | None:
    """Runs one statement on a pooled connection's own sqlite3 connection, outside any transaction.

    The engine's ``begin`` hook opens every SQLAlchemy transaction with ``BEGIN IMMEDIATE``; ``wal_checkpoint`` and
    ``VACUUM`` fail inside one ("database table is locked"), so they bypass SQLAlchemy's autobegin.
    """
    with engine.connect() as conn:
        raw = conn.connection.driver_connection
        assert raw is not None
        row = raw.execute(sql).fetchone()
    return tuple(row) if row is not None else None


def checkpoint(engine: Engine) -> bool:
    """On SQLite, moves the WAL into the database file and truncates it (``secure_delete`` zeroes deleted content).

    Returns:
        True when the whole WAL was checkpointed (then no deleted byte is left in it); False when readers kept part
        of it (logged as a warning: SQLite's next checkpoint finishes it) or on another database.
    """
    if engine.dialect.name != "sqlite":
        return False
    try:
        row = _raw_pragma(engine, "PRAGMA wal_checkpoint(TRUNCATE)")
    except (DBAPIError, sqlite3.Error) as e:
        log.warning("checkpoint after delete failed: %s", getattr(e, "orig", e))
        return False
    busy = bool(row and row[0])
    if busy:
        log.warning("checkpoint after delete incomplete (readers busy): the WAL keeps deleted pages until the next")
    return not busy


def vacuum(engine: Engine) -> int:
    """On SQLite, rebuilds the database file without free pages (``VACUUM``) after a checkpoint.

    Deleted rows are zeroed by ``secure_delete`` already; VACUUM also returns the space and leaves no page of them.

    Returns:
        Bytes the file shrank by (0 on another database).

    Raises:
        StoreError: When SQLite refuses (e.g. another connection holds a transaction open).
    """
    path = sqlite_path(str(engine.url))
    if engine.dialect.name != "sqlite" or path is None:
        return 0
    before = path.stat().st_size if path.exists() else 0
    try:
        checkpoint(engine)
        _raw_pragma(engine, "VACUUM")
        checkpoint(engine)
    except (DBAPIError, sqlite3.Error) as e:
        raise StoreError(f"VACUUM failed: {getattr(e, 'orig', e)}; stop the app and try again") from e
    return max(0, before - (path.stat().st_size if path.exists() else 0))
