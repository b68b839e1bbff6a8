"""The store's plumbing shared by its services: the engine, its sessions and the one transaction rule.

:class:`StoreBase` owns the engine and runs every transaction (:meth:`StoreBase.transaction`): committed when the work
returns, retried when SQLite reports a lock or PostgreSQL a serialisation failure or deadlock
(:func:`db.engine.is_retryable`), so a caller sees either the whole action or nothing (after the retries
:class:`db.errors.StoreBusyError`). A :class:`Service` is one concern of the store (:mod:`db.services` lists them); it
holds the store's plumbing and runs each of its methods in one such transaction.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from sqlalchemy import Engine
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session

from db import codecs, crops, feature_store
from db.engine import is_retryable, make_engine, read_only, session_factory
from db.errors import StoreBusyError
from db.migrate import check_current, upgrade

log = logging.getLogger(__name__)
T = TypeVar("T")


class StoreBase:
    """The engine of one database, its settings, and its transactions.

    Args:
        url: SQLAlchemy URL of the database.
        store_crops: False for the features-only privacy mode: face crops are never stored.
        data_dir: Folder for backups and kept media files (default ``data``).
        retries: Attempts per transaction on lock or serialisation errors.
        engine: An existing engine for ``url`` (tests, the web app's cached one).
        media_dir: Root of the kept media files (default ``<data_dir>/media``, see :mod:`db.media_files`).
        feature_codec: The form new features are stored in (:mod:`db.codecs`; compact by default).
        feature_files: A finished video's features in one file beside its media file (:mod:`db.feature_store`), or
            in the rows; None: files with SQLite, rows with PostgreSQL (whose data folder may not be kept, a Space).

    A video whose file is kept stores no crops: they are re-cut from it (:mod:`db.crops`, with a small LRU cache of
    what is on screen), unless its study sets ``keep_video_crops``.
    """

    def __init__(
        self,
        url: str,
        *,
        store_crops: bool = True,
        data_dir: Path | None = None,
        retries: int = 12,
        engine: Engine | None = None,
        media_dir: Path | None = None,
        feature_codec: str = codecs.FEATURES_U8,
        feature_files: bool | None = None,
    ) -> None:
        self.url = url
        self.feature_codec = feature_codec
        self.crop_cache = crops.CropCache()
        self.store_crops = store_crops
        self.data_dir = Path(data_dir) if data_dir is not None else Path("data")
        self.media_root = Path(media_dir) if media_dir is not None else self.data_dir / "media"
        self.retries = retries
        self.engine = engine if engine is not None else make_engine(url)
        files = feature_files if feature_files is not None else self.engine.dialect.name == "sqlite"
        self.feature_root: Path | None = self.media_root if files else None
        self._write = session_factory(self.engine)
        self._read = session_factory(read_only(self.engine))
        self._schema_checked = False

    def close(self) -> None:
        """Closes the connection pool."""
        self.engine.dispose()

    def upgrade(self) -> str | None:
        """Migrates the database to the newest schema; returns the revision."""
        rev = upgrade(self.engine, media_root=self.feature_root)
        self._schema_checked = True
        return rev

    def transaction(self, fn: Callable[[Session], T], *, write: bool = True) -> T:
        """Runs ``fn(session)`` in one transaction, committed when it returns, retried on lock errors.

        Args:
            fn: The work; it may run several times, so it must not have effects outside the session.
            write: False for read-only work (SQLite then does not take the write lock up front).

        Raises:
            StoreBusyError: When the database stayed locked through every attempt.
            SchemaOutdatedError: When the database is not at the newest schema (run ``python -m db upgrade``).
        """
        delay = 0.02
        for attempt in range(1, self.retries + 1):
            session = (self._write if write else self._read)()
            feature_store.bind(session, self.feature_root)
            try:
                if not self._schema_checked:
                    check_current(read_only(self.engine))
                    self._schema_checked = True
                with session.begin():
                    return fn(session)
            except DBAPIError as e:
                if not is_retryable(e):
                    raise
                if attempt == self.retries:
                    raise StoreBusyError(attempt, str(e.orig).strip().splitlines()[0]) from e
                log.info("database busy (attempt %d/%d): %s", attempt, self.retries, e.orig)
                time.sleep(delay * (0.5 + random.random()))
                delay = min(delay * 2, 1.0)
            finally:
                session.close()
        raise AssertionError("unreachable")


class Service:
    """One concern of the store: its methods each run one transaction of :attr:`base`."""

    def __init__(self, base: StoreBase) -> None:
        self.base = base

    def _tx(self, fn: Callable[[Session], T], *, write: bool = True) -> T:
        """Runs ``fn(session)`` in one transaction of the store (:meth:`StoreBase.transaction`)."""
        return self.base.transaction(fn, write=write)
