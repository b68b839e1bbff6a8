"""Database fixtures of the label store's tests: a real PostgreSQL server, and the engine parametrisation.

``pg_server`` (session scope) starts Debian's PostgreSQL (``/usr/lib/postgresql/*/bin``, installed by ``make
system-deps``) in a temporary folder: ``initdb`` as the ``postgres`` user when running as root (the server refuses
root), listening on a free port of 127.0.0.1 with its unix socket in the same folder, with durability off (test data
only). It is stopped and removed at the end of the session. Without the binaries the PostgreSQL cases are skipped
with the reason. ``AFFECTLAB_PG_BIN`` points at another ``bin`` folder.

``store_url`` runs a test once on a fresh SQLite file and once on a fresh PostgreSQL database; ``store`` gives an
upgraded :class:`db.services.LabelStore` on it. ``fake_results`` and ``png_bytes`` make synthetic inference output.
"""

from __future__ import annotations

import glob
import io
import itertools
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

PG_USER = "postgres"
_db_counter = itertools.count(1)


def find_pg_bin() -> Path | None:
    """The newest PostgreSQL server ``bin`` folder, or None."""
    env = os.environ.get("AFFECTLAB_PG_BIN")
    candidates = (
        [Path(env)]
        if env
        else sorted(
            (Path(p) for p in glob.glob("/usr/lib/postgresql/*/bin")),
            key=lambda p: int(p.parent.name) if p.parent.name.isdigit() else 0,
            reverse=True,
        )
    )
    for c in candidates:
        if all((c / tool).is_file() for tool in ("initdb", "pg_ctl", "postgres")):
            return c
    return None


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class PgServer:
    """A throwaway PostgreSQL server."""

    def __init__(self, bindir: Path) -> None:
        self.bindir = bindir
        self.root = Path(tempfile.mkdtemp(prefix="affectlab-pg-"))
        self.data = self.root / "data"
        self.log = self.root / "server.log"
        self.as_root = os.geteuid() == 0
        self.port = 0
        self._migrated_template: str | None = None
        if self.as_root:
            pw = pwd.getpwnam(PG_USER)
            os.chown(self.root, pw.pw_uid, pw.pw_gid)

    def _run(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        cmd = [str(self.bindir / args[0]), *args[1:]]
        if self.as_root:
            cmd = ["runuser", "-u", PG_USER, "--", *cmd]
        return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=self.root)

    def start(self) -> None:
        r = self._run("initdb", "-D", str(self.data), "-U", "postgres", "--auth=trust", "-E", "UTF8", "--no-sync")
        if r.returncode != 0:
            raise RuntimeError(f"initdb failed: {r.stderr.strip()}")
        for _ in range(3):  # the free port can be taken between probing and binding
            self.port = _free_port()
            opts = (
                f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 -c fsync=off "
                "-c synchronous_commit=off -c full_page_writes=off -c max_connections=200"
            )
            r = self._run("pg_ctl", "-D", str(self.data), "-l", str(self.log), "-o", opts, "-w", "-t", "60", "start")
            if r.returncode == 0:
                return
        log = self.log.read_text(errors="replace")[-2000:] if self.log.exists() else ""
        raise RuntimeError(f"pg_ctl start failed: {r.stderr.strip()} {log}")

    def stop(self) -> None:
        if self.data.exists():
            self._run("pg_ctl", "-D", str(self.data), "-m", "immediate", "-w", "stop", timeout=60)
        shutil.rmtree(self.root, ignore_errors=True)

    def url(self, database: str) -> str:
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/{database}"

    def _admin(self, sql: str) -> None:
        import psycopg

        conninfo = {"host": "127.0.0.1", "port": self.port, "user": "postgres", "dbname": "postgres"}
        with psycopg.connect(**conninfo, autocommit=True) as c:
            c.execute(sql)

    def new_database(self, *, migrated: bool = False) -> str:
        """Creates a database (empty, or at the newest schema) and returns its SQLAlchemy URL.

        Migrated databases are file copies of a template migrated once per session (~0.15 s instead of ~0.7 s).
        """
        name = f"t{next(_db_counter)}_{os.getpid()}"
        template = self._template() if migrated else "template1"
        self._admin(f'CREATE DATABASE "{name}" TEMPLATE "{template}" STRATEGY FILE_COPY')
        return self.url(name)

    def _template(self) -> str:
        if self._migrated_template is None:
            from db.engine import make_engine
            from db.migrate import upgrade

            self._admin('CREATE DATABASE "affectlab_template" STRATEGY FILE_COPY')
            engine = make_engine(self.url("affectlab_template"))
            try:
                upgrade(engine)
            finally:
                engine.dispose()
            self._migrated_template = "affectlab_template"
        return self._migrated_template


@pytest.fixture(scope="session")
def pg_server() -> Iterator[PgServer]:
    bindir = find_pg_bin()
    if bindir is None:
        pytest.skip(
            "no PostgreSQL server binaries under /usr/lib/postgresql/*/bin: install Debian's postgresql package "
            "(`make system-deps`, or apt-get install postgresql) to run the PostgreSQL cases"
        )
    if os.geteuid() == 0:
        try:
            pwd.getpwnam(PG_USER)
        except KeyError:
            pytest.skip(f"running as root and no {PG_USER!r} user to run the PostgreSQL server as")
    server = PgServer(bindir)
    try:
        server.start()
    except (RuntimeError, subprocess.TimeoutExpired) as e:
        server.stop()
        pytest.fail(f"could not start the test PostgreSQL server: {e}")
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def engine_kind(request: pytest.FixtureRequest) -> str:
    """Runs a test once on SQLite and once on PostgreSQL."""
    return request.param


def _url(request: pytest.FixtureRequest, kind: str, path: Path, *, migrated: bool) -> str:
    if kind == "sqlite":
        return f"sqlite:///{path}"
    return request.getfixturevalue("pg_server").new_database(migrated=migrated)


@pytest.fixture
def store_url(request: pytest.FixtureRequest, engine_kind: str, tmp_path: Path) -> str:
    """A fresh, empty database: a SQLite file, or a new database on the test PostgreSQL server."""
    return _url(request, engine_kind, tmp_path / "store.sqlite3", migrated=False)


@pytest.fixture
def migrated_url(request: pytest.FixtureRequest, engine_kind: str, tmp_path: Path) -> str:
    """A fresh database at the newest schema (SQLite file or PostgreSQL database)."""
    url = _url(request, engine_kind, tmp_path / "store.sqlite3", migrated=True)
    if engine_kind == "sqlite":
        from db.engine import make_engine
        from db.migrate import upgrade

        engine = make_engine(url)
        upgrade(engine)
        engine.dispose()
    return url


@pytest.fixture
def store(migrated_url: str, tmp_path: Path) -> Iterator[object]:
    """A :class:`db.services.LabelStore` on ``migrated_url``."""
    from db.services import LabelStore

    s = LabelStore(migrated_url, data_dir=tmp_path / "data")
    s.upgrade()
    try:
        yield s
    finally:
        s.close()


# ---------------------------------------------------------------------------------------------------- fake data


def png_bytes(seed: int, size: tuple[int, int] = (160, 120)) -> bytes:
    """A small random PNG (distinct bytes per seed)."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    arr = rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG")
    return buf.getvalue()


def tracks_of(items: list[dict]) -> list:
    """Typed tracks (``models.types.TrackResult``) of ``tracks`` items of an analysis file."""
    from db.analysis_file import track_result

    return [track_result(t) for t in items]


def fake_results(
    file: str,
    boxes: list[tuple[float, float, float, float]],
    labels: list[str],
    *,
    model: str = "enet_b0_8_best_vgaf",
    weights_hash: str = "7219cfb037209b253ea8b81cf969e60a00e9181c",
    seed: int = 0,
    frames: list[int | None] | None = None,
    tracks: list[int | None] | None = None,
    fps: float = 10.0,
    feature_dim: int = 16,
    valence: list[float | None] | None = None,
    confidence: list[float] | None = None,
    crops: bool = True,
) -> list[object]:
    """FaceResults as the pipeline makes them: one per box, the given top class, random features and crops."""
    from models.registry import EMOTIONS_8
    from models.types import EmotionPrediction, Face, FaceResult

    rng = np.random.default_rng(seed)
    out = []
    for i, (box, label) in enumerate(zip(boxes, labels, strict=True)):
        top = confidence[i] if confidence else 0.6
        probs = np.full(len(EMOTIONS_8), (1 - top) / (len(EMOTIONS_8) - 1), dtype=np.float32)
        probs[EMOTIONS_8.index(label)] = top
        v = valence[i] if valence else None
        pred = EmotionPrediction(
            model=model,
            labels=EMOTIONS_8,
            features=rng.standard_normal(feature_dim).astype(np.float32),
            logits=np.log(probs),
            probs=probs,
            valence=v,
            arousal=None if v is None else 0.1,
            weights_hash=weights_hash,
        )
        frame = frames[i] if frames else None
        out.append(
            FaceResult(
                file=file,
                index=i,
                face=Face(box=box, det_score=0.99),
                prediction=pred,
                frame=frame,
                time_s=None if frame is None else frame / fps,
                track=tracks[i] if tracks else None,
                crop=rng.integers(0, 256, (40, 32, 3), dtype=np.uint8) if crops else None,
            )
        )
    return out
