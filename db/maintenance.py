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


def checkpoint(engine: Engine) -> None:
    """On SQLite, moves the WAL into the database file (``secure_delete`` then zeroes deleted content there).

    A busy checkpoint is skipped (logged): SQLite's next automatic one does it. Other databases: nothing to do.
    """
    if engine.dialect.name != "sqlite":
        return
    try:
        with engine.connect() as conn:
            conn.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)")
    except DBAPIError as e:
        log.info("checkpoint after delete skipped: %s", e.orig)


def vacuum(engine: Engine) -> None:
    """Gives the freed pages of a SQLite database back to the file system (``VACUUM``; PostgreSQL: nothing to do).

    Needs free disk about the database's size while it runs, and blocks writers meanwhile.
    """
    if engine.dialect.name != "sqlite":
        return
    raw = engine.raw_connection()  # outside SQLAlchemy's transaction (the engine's "begin" hook would open one)
    try:
        raw.driver_connection.execute("VACUUM")  # type: ignore[union-attr]
    finally:
        raw.close()
