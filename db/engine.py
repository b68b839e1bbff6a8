"""Engines and sessions for SQLite (default) and PostgreSQL (``DATABASE_URL=postgresql+psycopg://...``).

SQLite connections get ``PRAGMA foreign_keys=ON`` (the ``ON DELETE CASCADE`` of the privacy deletes depends on it),
WAL journaling (readers never block the writer), a busy timeout, ``synchronous=NORMAL`` (safe with WAL: a crash can
lose the last commits, never corrupt the file) and ``secure_delete`` (deleted faces are overwritten, not left in free
pages). Write transactions start with ``BEGIN IMMEDIATE`` so that two writers queue on the busy timeout instead of
failing when a read lock would have to be upgraded; read-only sessions use a plain deferred ``BEGIN``.

The SQLite file is created owner-only (0600, its folder 0700 when created here) before SQLite opens it, so its
``-wal`` and ``-shm`` files, which SQLite creates with the database file's permissions, are owner-only too; each new
connection makes an existing file and its ``-wal``/``-shm`` owner-only as well (:func:`make_private`). A new file
is made a SQLite database at once, so an empty (0-byte) file found at the database path is never anyone's new store:
it is refused (:func:`check_sqlite_file`), never upgraded over; SQLite itself refuses any other foreign file.

PostgreSQL connections give up after :data:`PG_CONNECT_TIMEOUT_S` (a server that accepts and never answers fails
in seconds, not minutes) and carry a server-side ``statement_timeout`` (:data:`PG_STATEMENT_TIMEOUT_S`); both can be
set in the URL's query (``?connect_timeout=30&options=-c%20statement_timeout%3D0``).

:func:`explain_error` is the one place a database error becomes a one-line message that fits its cause (a setting
that is not a URL, a silent or refusing server, a full disk, a read-only file or folder, a corrupt file, a file
that is no database), used by every command line and the workers.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import stat
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

from sqlalchemy import Connection, Engine, create_engine, event
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError, DBAPIError
from sqlalchemy.orm import Session, sessionmaker

from db.errors import StoreOpenError

SQLITE_BUSY_TIMEOUT_MS = 10_000
"""How long a SQLite connection waits for another writer's lock before failing with 'database is locked'."""

_BEGIN_OPTION = "affectlab_sqlite_begin"

LOCK_MESSAGES = ("database is locked", "database table is locked", "database schema is locked")
"""SQLite's messages for a lock held by another connection."""
RETRY_SQLSTATES = frozenset({"40001", "40P01", "55P03"})
"""PostgreSQL serialization_failure, deadlock_detected, lock_not_available."""


SQLITE_PAGE_SIZE = 16384
"""Page size of new SQLite databases (existing ones keep theirs until ``VACUUM``)."""

PG_CONNECT_TIMEOUT_S = 10
"""Seconds a PostgreSQL connection may take to be established (libpq ``connect_timeout``)."""
PG_STATEMENT_TIMEOUT_S = 900
"""Seconds one PostgreSQL statement may run on the server (``statement_timeout``); the longest, a study's export
page or a migration of millions of rows, take well under a minute."""
SQLITE_HEADER = b"SQLite format 3\x00"
"""The first bytes of every SQLite database file."""


def parse_url(url: str | URL) -> URL:
    """``url`` parsed.

    Raises:
        StoreOpenError: It is not a database URL (the message says what one looks like).
    """
    try:
        return make_url(url)
    except (ArgumentError, ValueError, TypeError):
        raise StoreOpenError(
            f"DATABASE_URL {str(url)[:80]!r} is not a database URL: set it like sqlite:////path/affectlab.sqlite3 "
            "or postgresql+psycopg://user@host:5432/dbname, or unset it for the default SQLite file"
        ) from None


def is_sqlite(url: str | URL) -> bool:
    """Whether ``url`` names a SQLite database."""
    return parse_url(url).get_backend_name() == "sqlite"


def safe_url(url: str | URL) -> str:
    """The URL as text with any password masked, for messages (``DATABASE_URL`` when it is no URL)."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except (ArgumentError, ValueError, TypeError):
        return "DATABASE_URL"


def sqlite_path(url: str | URL) -> Path | None:
    """The database file of a SQLite URL, or None for in-memory databases and other engines.

    A URI filename (``sqlite:///file:/path/db?mode=ro&uri=true``) gives its path.
    """
    u = make_url(url)
    if u.get_backend_name() != "sqlite" or not u.database or u.database == ":memory:":
        return None
    if _is_uri(u):
        parts = urlsplit(u.database)
        if "mode=memory" in parts.query or not parts.path:
            return None
        return Path(unquote(parts.path))
    return Path(u.database)


def _is_uri(u: URL) -> bool:
    return str(u.query.get("uri", "")).lower() in ("true", "1") and bool(u.database and u.database.startswith("file:"))


def make_private(path: Path) -> None:
    """Makes a SQLite database file and its ``-wal``, ``-shm`` and ``-journal`` files owner-only (0600).

    Files of another owner (a mounted volume) keep their mode.
    """
    for p in (path, *(path.with_name(path.name + s) for s in ("-wal", "-shm", "-journal"))):
        with contextlib.suppress(OSError):
            if p.exists() and (p.stat().st_mode & 0o777) != 0o600:
                os.chmod(p, 0o600)


def check_sqlite_file(path: Path) -> None:
    """Refuses an empty (0-byte) file or a folder at the database path, which SQLite would take for a new database.

    Only ``stat`` is used: opening and closing the file here would drop the POSIX locks that SQLite connections of
    this process hold on it (closing any descriptor of a file releases them all), which lets another process reset
    the WAL under them and corrupts the store. A non-empty file that is no SQLite database needs no check: SQLite
    refuses it ("file is not a database", explained by :func:`explain_error`) and never writes to it.

    Raises:
        StoreOpenError: Naming the file and what to do (nothing is written to it).
    """
    try:
        st = path.stat()
    except FileNotFoundError:
        return
    except OSError as exc:
        raise StoreOpenError(
            f"the database {path} cannot be read ({exc.strerror or exc}): check its owner and permissions"
        ) from None
    if stat.S_ISDIR(st.st_mode):
        raise StoreOpenError(f"the database path {path} is a folder: point DATABASE_URL at a file")
    if st.st_size == 0:
        raise StoreOpenError(
            f"the database {path} is an empty (0-byte) file; AffectLab never replaces it with a new store. If it "
            "should hold your data, restore it from a backup; to start a new store, move it away or point "
            "DATABASE_URL elsewhere"
        )


def _create_private(path: Path) -> None:
    """Creates the folder (0700) and a new SQLite database file (0600) before the engine opens it, when missing.

    The database is made in a temporary file beside it and linked into place (never over an existing file), so the
    path is at every moment either absent or a whole SQLite database: a 0-byte file is never one of ours
    (:func:`check_sqlite_file`), even when several processes start on a new folder at once.

    Raises:
        StoreOpenError: The folder or file cannot be created (read-only, no permission, disk full).
    """
    if path.exists():
        return
    tmp = path.with_name(f".{path.name}.{os.getpid()}.new")
    try:
        if not path.parent.exists():
            path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
        con = sqlite3.connect(tmp)
        try:
            con.execute(f"PRAGMA page_size = {SQLITE_PAGE_SIZE}")
            con.execute("PRAGMA journal_mode = WAL")
        finally:
            con.close()
        try:
            os.link(tmp, path)
        except FileExistsError:  # another process made it first: theirs stays
            pass
        except OSError:  # a file system without hard links: written in place, never over a file
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "wb") as fh:
                fh.write(tmp.read_bytes())
    except OSError as exc:
        raise StoreOpenError(
            f"cannot create the database {path} ({exc.strerror or exc}): choose a writable folder with "
            "AFFECTLAB_DATA_DIR or DATABASE_URL"
        ) from None
    except sqlite3.Error as exc:
        raise StoreOpenError(f"cannot create the database {path} ({explain_sqlite(str(exc))})") from None
    finally:
        for leftover in (tmp, *(tmp.with_name(tmp.name + s) for s in ("-wal", "-shm", "-journal"))):
            with contextlib.suppress(OSError):
                leftover.unlink()


def _pg_connect_args(u: URL) -> dict[str, Any]:
    """The connect timeout (libpq's) and the server's statement timeout, unless the URL sets them."""
    args: dict[str, Any] = {}
    if "connect_timeout" not in u.query:
        args["connect_timeout"] = PG_CONNECT_TIMEOUT_S
    if "options" not in u.query and u.get_driver_name() in ("psycopg", "psycopg2"):
        args["options"] = f"-c statement_timeout={PG_STATEMENT_TIMEOUT_S * 1000}"
    return args


def make_engine(url: str | URL, *, busy_timeout_ms: int = SQLITE_BUSY_TIMEOUT_MS, echo: bool = False) -> Engine:
    """Creates an engine for ``url`` with AffectLab's connection settings.

    A SQLite file's folder is created when missing (0700), and the file owner-only (0600); a file there that is
    not a SQLite database is refused. PostgreSQL gets connect and statement timeouts.

    Args:
        url: SQLAlchemy URL (``sqlite:///path`` or ``postgresql+psycopg://user@host/db``).
        busy_timeout_ms: SQLite lock wait before 'database is locked' is raised.
        echo: Log every statement (debugging).

    Returns:
        The engine; share one per process (it holds the connection pool).

    Raises:
        StoreOpenError: ``url`` is not a URL, or the SQLite path holds no SQLite database, or cannot be created.
    """
    u = parse_url(url)
    if u.get_backend_name() == "postgresql":
        return create_engine(u, echo=echo, pool_pre_ping=True, future=True, connect_args=_pg_connect_args(u))
    if u.get_backend_name() != "sqlite":
        return create_engine(u, echo=echo, pool_pre_ping=True, future=True)

    path = sqlite_path(u)
    if path is not None:
        check_sqlite_file(path)
        if not (_is_uri(u) and "mode=ro" in str(u.database)):
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


_SQLITE_CAUSES = (
    ("database or disk is full", "the disk under the database is full: free space, then run the same command again"),
    ("disk i/o error", "the disk under the database failed to read or write: check the disk, then retry"),
    (
        "readonly database",
        "the database file or its folder is read-only: make both writable by this user (SQLite writes its -wal and "
        "-shm files next to it)",
    ),
    (
        "unable to open database file",
        "the database file or its folder cannot be opened: check that the folder exists and is writable",
    ),
    (
        "database disk image is malformed",
        "the database file is corrupt: restore it from a backup (`python -m db` commands never repair it)",
    ),
    ("file is not a database", "the file at the database path is not a SQLite database: restore it or point elsewhere"),
)
_PG_CAUSES = (
    (
        "timeout expired",
        f"the server did not answer within {PG_CONNECT_TIMEOUT_S} s: check that PostgreSQL runs at that host and "
        "port (a longer wait: ?connect_timeout=SECONDS in DATABASE_URL)",
    ),
    ("statement timeout", f"a statement ran past the server's {PG_STATEMENT_TIMEOUT_S} s statement_timeout"),
    ("connection refused", "no server listens at that host and port: start PostgreSQL or fix DATABASE_URL"),
    ("password authentication failed", "the user name or password in DATABASE_URL is wrong"),
    ("does not exist", "the database or role in DATABASE_URL does not exist: create it, or fix DATABASE_URL"),
    ("could not translate host name", "the host name in DATABASE_URL is unknown: fix it"),
    ("no space left", "the server's disk is full: free space there, then retry"),
    ("read-only", "the server is read-only (a standby?): point DATABASE_URL at the primary"),
)


def explain_sqlite(detail: str) -> str:
    """What a SQLite error message means for the user, or the message itself."""
    low = detail.lower()
    return next((what for key, what in _SQLITE_CAUSES if key in low), detail)


def explain_error(exc: BaseException, url: str | URL) -> str:
    """A database error as one line that names the database and fits its cause (see the module docstring)."""
    import errno

    where = f"database {safe_url(url)}"
    if isinstance(exc, StoreOpenError):
        return str(exc)
    detail = str(getattr(exc, "orig", None) or exc).strip().splitlines()
    text = detail[0] if detail else type(exc).__name__
    low = " ".join(detail).lower()
    if isinstance(exc, OSError) and exc.errno == errno.ENOSPC:
        return f"{where}: the disk is full: free space, then run the same command again"
    for key, what in (*_SQLITE_CAUSES, *_PG_CAUSES):
        if key in low:
            return f"{where}: {what} ({text})"
    return f"{where}: {text}; check DATABASE_URL, then run `python -m db upgrade`"
