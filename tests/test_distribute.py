"""``affectlab analyze --workers N`` and ``--ray ADDRESS``: many workers, one store, resumable, bad files named."""

from __future__ import annotations

import fcntl
import os
import pty
import shutil
import struct
import subprocess
import sys
import termios
import threading
from pathlib import Path

import pytest
from sqlalchemy import func, select

from db.services import LabelStore

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def inputs(tmp_path: Path, multi_face_jpg: Path, single_face_jpg: Path, astronaut_png: Path) -> Path:
    """A folder of three images with faces and one damaged file."""
    folder = tmp_path / "in"
    folder.mkdir()
    for p in (multi_face_jpg, single_face_jpg, astronaut_png):
        shutil.copy(p, folder / p.name)
    (folder / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    return folder


def _analyze(folder: Path, url: str, weights: Path, data: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    """The CLI run with stderr on a pseudo-terminal, as in a shell (the progress bar shows on terminals only)."""
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "DATABASE_URL": url,
        "AFFECTLAB_WEIGHTS_DIR": str(weights),
        "AFFECTLAB_DATA_DIR": str(data),
    }
    for key in ("AFFECTLAB_BACKEND", "AFFECTLAB_DEVICE", "AFFECTLAB_STORE_CROPS"):
        env.pop(key, None)
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 160, 0, 0))  # a terminal of 160 columns
    chunks: list[bytes] = []

    def drain() -> None:
        while True:
            try:
                data = os.read(master, 65536)
            except OSError:  # EIO: every writer closed the terminal
                return
            if not data:
                return
            chunks.append(data)

    reader = threading.Thread(target=drain, daemon=True)
    reader.start()
    try:
        proc = subprocess.run(
            [sys.executable, "-m", "affectlab", "analyze", str(folder), "--study", "big", *extra],
            stdout=subprocess.PIPE,
            stderr=slave,
            text=True,
            env=env,
            cwd=ROOT,
            timeout=900,
        )
    finally:
        os.close(slave)
        reader.join(timeout=30)
        os.close(master)
    stderr = b"".join(chunks).decode("utf-8", "replace").replace("\r\n", "\n")
    return subprocess.CompletedProcess(proc.args, proc.returncode, proc.stdout, stderr)


def _faces(url: str) -> int:
    from db.schema import Face

    store = LabelStore(url)
    try:
        return store.transaction(lambda s: s.scalar(select(func.count()).select_from(Face)))
    finally:
        store.close()


def _check_run_and_rerun(folder: Path, url: str, weights: Path, data: Path, *extra: str) -> None:
    first = _analyze(folder, url, weights, data, *extra)
    assert first.returncode == 1, first.stderr  # the damaged file fails; the others are stored
    assert "broken.jpg" in first.stderr
    assert "4 files: 3 stored (7 faces" in first.stdout, first.stdout
    assert "faces/s" in first.stderr  # the progress bar
    assert _faces(url) == 7
    again = _analyze(folder, url, weights, data, *extra)
    assert "4 files: 0 stored (0 faces, 0 crops, 0 features), 3 skipped" in again.stdout, again.stdout
    assert _faces(url) == 7


def test_local_workers_sqlite_resumable(inputs: Path, exported_weights: Path, tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'store.sqlite3'}"
    LabelStore(url).upgrade()
    _check_run_and_rerun(inputs, url, exported_weights, tmp_path / "data", "--workers", "2")


@pytest.mark.postgres
def test_ray_local_cluster_postgres_resumable(inputs: Path, exported_weights: Path, tmp_path: Path, pg_server) -> None:
    pytest.importorskip("ray")
    url = pg_server.new_database(migrated=True)
    _check_run_and_rerun(inputs, url, exported_weights, tmp_path / "data", "--ray", "local", "--workers", "2")


def test_files_are_dispatched_largest_first(tmp_path: Path) -> None:
    from affectlab.distribute import largest_first

    sizes = {"a.jpg": 10, "b.mp4": 5000, "c.png": 300, "d.mp4": 5000}
    for name, n in sizes.items():
        (tmp_path / name).write_bytes(b"x" * n)
    files = [tmp_path / n for n in sizes] + [tmp_path / "missing.jpg"]
    order = largest_first(files)
    assert [p.name for p in order] == ["b.mp4", "d.mp4", "c.png", "a.jpg", "missing.jpg"]
