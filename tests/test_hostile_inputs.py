"""No traceback on any input or environment: each case a one-line message that names the file or setting and fits
its cause; memory bounded on every still path; a silent PostgreSQL server fails in seconds."""

from __future__ import annotations

import io
import os
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.exc import SQLAlchemyError

from affectlab.analysis_types import Source, prepare
from db.engine import SQLITE_HEADER, explain_error, make_engine, read_only
from db.errors import StoreOpenError
from db.services import LabelStore
from models.errors import BadInputError
from models.images import MAX_HEADER_BYTES, MAX_IMAGE_BYTES, load_image

ROOT = Path(__file__).resolve().parents[1]
JPEG_START = b"\xff\xd8\xff\xe0\x00\x10JFIF\x00\x01\x01\x00\x00\x01\x00\x01\x00\x00"


def _run(module: str, *args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    full = {**os.environ, "PYTHONPATH": str(ROOT), **env}
    return subprocess.run(
        [sys.executable, "-m", module, *args], capture_output=True, text=True, env=full, cwd=ROOT, timeout=300
    )


def _one_line_error(proc: subprocess.CompletedProcess[str]) -> str:
    assert "Traceback" not in proc.stderr, proc.stderr
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip() and not ln.startswith(("WARNING", "warning"))]
    assert len(lines) >= 1, proc.stderr
    return "\n".join(lines)


# ------------------------------------------------------------------------------------------------ stills


@pytest.fixture
def sparse_jpg(tmp_path: Path) -> Path:
    """A 6 GB ``.jpg`` (sparse: no disk used) that starts like a JPEG."""
    path = tmp_path / "huge.jpg"
    with path.open("wb") as fh:
        fh.write(JPEG_START)
        fh.truncate(6 << 30)
    return path


@pytest.fixture
def padded_jpg() -> bytes:
    """A JPEG start and padding past the header budget: Pillow's lazy open scans such padding byte by byte."""
    return JPEG_START + bytes(MAX_HEADER_BYTES + 1024)


def test_every_still_path_refuses_a_huge_file_before_reading_it(sparse_jpg: Path, padded_jpg: bytes) -> None:
    """The paths a still takes (a path, bytes, a file object, the analysis service's prepare) all check first."""
    assert sparse_jpg.stat().st_size > MAX_IMAGE_BYTES
    started = time.monotonic()
    for attempt in (lambda: load_image(sparse_jpg), lambda: prepare(Source.file(sparse_jpg))):
        with pytest.raises(BadInputError, match=r"larger than any still image .* not analysed") as err:
            attempt()
        assert err.value.file == str(sparse_jpg)
    for attempt in (
        lambda: load_image(padded_jpg, "padded.jpg"),
        lambda: load_image(io.BytesIO(padded_jpg), "padded.jpg"),
    ):
        with pytest.raises(BadInputError, match="its header runs past"):
            attempt()
    assert time.monotonic() - started < 60  # Pillow alone scans the padding for minutes


def test_both_command_lines_refuse_the_huge_still_in_a_line(
    sparse_jpg: Path, tmp_path: Path, random_weights_dir: Path, single_face_jpg: Path
) -> None:
    env = {
        "AFFECTLAB_WEIGHTS_DIR": str(random_weights_dir),
        "AFFECTLAB_DATA_DIR": str(tmp_path / "data"),
        "DATABASE_URL": f"sqlite:///{tmp_path / 'data' / 'db.sqlite3'}",
    }
    LabelStore(env["DATABASE_URL"]).upgrade()
    for module, extra in (("models", ()), ("affectlab", ("--study", "s", "--workers", "1"))):
        proc = _run(module, "analyze", str(sparse_jpg), str(single_face_jpg), *extra, env=env)
        assert proc.returncode == 1, proc.stderr
        line = _one_line_error(proc)
        assert str(sparse_jpg) in line and "larger than any still image" in line


# ------------------------------------------------------------------------------------------------ database


def test_an_empty_or_foreign_file_at_the_database_path_is_refused_never_replaced(tmp_path: Path) -> None:
    for content, said in ((b"", "never replaces it"), (b"name,age\nann,3\n" * 100, "not a SQLite database")):
        path = tmp_path / "affectlab.sqlite3"
        path.write_bytes(content)
        with pytest.raises((StoreOpenError, SQLAlchemyError)) as err:
            LabelStore(f"sqlite:///{path}").upgrade()
        assert said in explain_error(err.value, f"sqlite:///{path}")
        assert path.read_bytes() == content
        proc = _run("db", "upgrade", env={"DATABASE_URL": f"sqlite:///{path}"})
        line = _one_line_error(proc)
        assert proc.returncode != 0 and said in line and str(path) in line, line
        assert path.read_bytes() == content
        path.unlink()
    # A new store is a SQLite file from its first moment: never a 0-byte file that a later run would refuse.
    fresh = tmp_path / "new" / "affectlab.sqlite3"
    make_engine(f"sqlite:///{fresh}").dispose()
    assert fresh.read_bytes()[:16] == SQLITE_HEADER
    assert sorted(p.name for p in fresh.parent.iterdir()) == ["affectlab.sqlite3"]  # no temporary file left


def test_opening_the_store_again_keeps_other_connections_locks(tmp_path: Path) -> None:
    """A second store on the same file in one process never opens and closes the file itself (that would drop the
    POSIX locks of the first store's connections): a writer in another process then cannot reset the WAL under it."""
    url = f"sqlite:///{tmp_path / 'db.sqlite3'}"
    first = make_engine(url)
    with first.begin() as conn:
        conn.exec_driver_sql("CREATE TABLE t (x)")
        conn.exec_driver_sql("INSERT INTO t VALUES (1)")
    writer = "import sqlite3,sys; c=sqlite3.connect(sys.argv[1]); c.execute('INSERT INTO t VALUES (2)'); c.commit()"
    with read_only(first).connect() as held:
        assert held.exec_driver_sql("SELECT count(*) FROM t").scalar() == 1
        held.commit()
        for _ in range(3):
            make_engine(url).dispose()
        subprocess.run([sys.executable, "-c", writer, str(tmp_path / "db.sqlite3")], check=True, timeout=60)
        assert held.exec_driver_sql("SELECT count(*) FROM t").scalar() == 2
        held.commit()
        subprocess.run([sys.executable, "-c", writer, str(tmp_path / "db.sqlite3")], check=True, timeout=60)
        assert held.exec_driver_sql("PRAGMA integrity_check").scalar() == "ok"
        assert held.exec_driver_sql("SELECT count(*) FROM t").scalar() == 3
    first.dispose()


def test_a_database_url_that_is_no_url_is_one_line_in_every_command(
    tmp_path: Path, single_face_jpg: Path, random_weights_dir: Path
) -> None:
    env = {
        "DATABASE_URL": "this is not a url",
        "AFFECTLAB_DATA_DIR": str(tmp_path),
        "AFFECTLAB_WEIGHTS_DIR": str(random_weights_dir),
    }
    for module, args in (("db", ("upgrade",)), ("affectlab", ("analyze", str(single_face_jpg), "--study", "s"))):
        proc = _run(module, *args, env=env)
        assert proc.returncode in (1, 2), proc.stderr
        line = _one_line_error(proc)
        assert "is not a database URL" in line and "DATABASE_URL" in line


def _sqlite_error(url: str, statement: str, prepare_sql: tuple[str, ...] = ()) -> SQLAlchemyError:
    engine = make_engine(url)
    try:
        with engine.begin() as conn:
            for sql in prepare_sql:
                conn.exec_driver_sql(sql)
        with engine.begin() as conn:
            conn.exec_driver_sql(statement)
    except SQLAlchemyError as exc:
        return exc
    finally:
        engine.dispose()
    raise AssertionError(f"{statement} did not fail")


def test_messages_fit_their_cause(tmp_path: Path) -> None:
    """Real SQLite failures (full, read-only, corrupt): the message says the cause, not "run upgrade"."""
    full = tmp_path / "full.sqlite3"
    exc = _sqlite_error(
        f"sqlite:///{full}",
        "INSERT INTO t SELECT randomblob(4096) FROM (WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x+1 FROM c "
        "WHERE x < 500) SELECT x FROM c)",
        ("CREATE TABLE t (b BLOB)", "PRAGMA max_page_count = 8"),
    )
    said = explain_error(exc, f"sqlite:///{full}")
    assert "disk under the database is full" in said and "upgrade" not in said

    ro = tmp_path / "ro.sqlite3"
    con = sqlite3.connect(ro)
    con.execute("CREATE TABLE t (x)")
    con.close()
    url = f"sqlite:///file:{ro}?mode=ro&uri=true"
    said = explain_error(_sqlite_error(url, "INSERT INTO t VALUES (1)"), url)
    assert "read-only" in said and "upgrade" not in said

    bad = tmp_path / "corrupt.sqlite3"
    con = sqlite3.connect(bad)
    con.execute("CREATE TABLE t (x)")
    con.executemany("INSERT INTO t VALUES (?)", [(b"x" * 3000,)] * 50)
    con.commit()
    con.close()
    data = bytearray(bad.read_bytes())
    data[100:4096] = bytes(range(256)) * 15 + bytes(range(256))[: 3996 - 3840]
    bad.write_bytes(bytes(data))
    said = explain_error(_sqlite_error(f"sqlite:///{bad}", "SELECT count(*) FROM t"), f"sqlite:///{bad}")
    assert "corrupt" in said or "not a SQLite database" in said, said
    assert "upgrade" not in said


@pytest.fixture
def silent_server() -> Iterator[int]:
    """A TCP port that accepts connections and never sends a byte."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(16)
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        server.settimeout(0.2)
        while not stop.is_set():
            try:
                held.append(server.accept()[0])
            except OSError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield server.getsockname()[1]
    stop.set()
    thread.join()
    for s in held:
        s.close()
    server.close()


def test_a_silent_postgresql_server_fails_in_seconds_and_says_so(silent_server: int, tmp_path: Path) -> None:
    url = f"postgresql+psycopg://user:secret@127.0.0.1:{silent_server}/affectlab"
    engine = make_engine(url)
    started = time.monotonic()
    with pytest.raises(SQLAlchemyError) as err, engine.connect() as conn:
        conn.execute(text("SELECT 1"))
    took = time.monotonic() - started
    engine.dispose()
    assert took < 15, took
    said = explain_error(err.value, url)
    assert "did not answer within" in said and "secret" not in said
    started = time.monotonic()
    proc = _run("db", "upgrade", env={"DATABASE_URL": url, "AFFECTLAB_DATA_DIR": str(tmp_path)})
    assert time.monotonic() - started < 40  # interpreter start, imports and one connect timeout
    assert proc.returncode != 0 and "did not answer within" in _one_line_error(proc)


# ------------------------------------------------------------------------------------------------ command line


@pytest.mark.parametrize("fps", ["inf", "1e308", "nan", "-1", "fast"])
def test_a_bad_rate_is_one_line_exit_2(fps: str, tmp_path: Path) -> None:
    proc = _run("affectlab", "analyze", str(tmp_path), "--study", "s", "--fps", fps, env={})
    assert proc.returncode == 2
    assert "argument --fps" in _one_line_error(proc).splitlines()[-1]


def test_odd_names_and_links_fail_alone_and_the_batch_goes_on(
    tmp_path: Path, random_weights_dir: Path, single_face_jpg: Path
) -> None:
    """A name that is no UTF-8 is analysed and printed; a symlink loop is one line; the other files are stored."""
    media = tmp_path / "media"
    media.mkdir()
    odd = os.fsdecode(bytes(media) + b"/caf\xe9-\xff.jpg")
    Path(odd).write_bytes(single_face_jpg.read_bytes())
    loop = media / "loop.jpg"
    loop.symlink_to(loop)
    env = {
        "AFFECTLAB_WEIGHTS_DIR": str(random_weights_dir),
        "AFFECTLAB_DATA_DIR": str(tmp_path / "data"),
        "DATABASE_URL": f"sqlite:///{tmp_path / 'data' / 'db.sqlite3'}",
    }
    LabelStore(env["DATABASE_URL"]).upgrade()
    proc = _run("affectlab", "analyze", odd, str(loop), "--study", "s", "--workers", "1", env=env)
    assert proc.returncode == 1, proc.stderr
    line = _one_line_error(proc)
    assert "loop.jpg" in line and "symbolic link" in line
    assert "1 stored" in proc.stdout and "1 failed" in proc.stdout, proc.stdout
    store = LabelStore(env["DATABASE_URL"])
    try:
        (item,) = store.recordings.media("s")
        assert item.filename == "caf\ufffd-\ufffd.jpg"
    finally:
        store.close()


def test_a_data_folder_that_cannot_keep_files_fails_each_file_in_a_line(
    tmp_path: Path, random_weights_dir: Path, single_face_jpg: Path, pyfeat
) -> None:
    """Keeping the recording fails (here the media folder is a file; a full disk or a read-only folder alike): each
    file fails with one line naming the path, the batch goes on, exit 1, no traceback."""
    data = tmp_path / "data"
    data.mkdir()
    (data / "media").write_text("not a folder")
    env = {
        "AFFECTLAB_WEIGHTS_DIR": str(random_weights_dir),
        "AFFECTLAB_DATA_DIR": str(data),
        "DATABASE_URL": f"sqlite:///{data / 'db.sqlite3'}",
    }
    LabelStore(env["DATABASE_URL"]).upgrade()
    video = pyfeat("single_face.mp4")
    proc = _run("affectlab", "analyze", str(single_face_jpg), str(video), "--study", "s", "--workers", "1", env=env)
    assert proc.returncode == 1, proc.stderr
    lines = _one_line_error(proc).splitlines()
    assert len(lines) == 2 and all(str(data / "media") in ln and "AFFECTLAB_DATA_DIR" in ln for ln in lines), lines
    assert "2 failed" in proc.stdout
