"""Reliability: concurrent writer processes, writers killed mid-transaction, on SQLite and PostgreSQL.

Writers are forked from the test process (separate processes with their own engines and connections, without an
interpreter start-up each); the parent's pool is disposed before forking so that no connection crosses the fork.
"""

from __future__ import annotations

import json
import logging
import multiprocessing as mp
import os
import signal
import sqlite3
import time
import traceback
from pathlib import Path

import pytest
from sqlalchemy import func, select

from db import repo
from db.engine import make_engine
from db.errors import StoreBusyError
from db.schema import Annotation
from db.services import LabelStore
from tests.pg import fake_results, png_bytes

N_PROCS, N_EACH = 8, 200
LABELS = ["Anger", "Contempt", "Disgust", "Fear", "Happiness", "Neutral", "Sadness", "Surprise"]
FORK = mp.get_context("fork")


def _child(fn, *args) -> None:
    """Runs ``fn`` in a forked child and leaves with os._exit (no inherited finalizers run)."""
    code = 0
    try:
        fn(*args)
    except BaseException:
        traceback.print_exc()
        code = 1
    finally:
        os._exit(code)


def _writer(url: str, idx: int, face_ids: list[int], ready: Path, go: Path, out: Path) -> None:
    busy = []

    class Count(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            busy.append(record.getMessage())

    log = logging.getLogger("db.service_base")
    log.setLevel(logging.INFO)
    log.addHandler(Count())
    store = LabelStore(url)
    store.recordings.studies()  # connect and check the schema before the start line
    ready.touch()
    _await_start(go)
    t0 = time.perf_counter()
    for k in range(N_EACH):
        fid = face_ids[(idx * 7 + k) % len(face_ids)]
        store.review.correct_face(
            fid, f"writer{idx % 4}", label=LABELS[k % 8], valence=round((k % 21) / 10 - 1, 1), note=f"{idx}:{k}"
        )
    out.write_text(json.dumps({"elapsed": time.perf_counter() - t0, "retries": len(busy)}))


def _await_start(go: Path, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not go.exists():
        if time.monotonic() > deadline:
            raise TimeoutError(f"no start signal {go} within {timeout} s")
        time.sleep(0.002)


def _open_transaction(url: str, face_id: int, flag: Path) -> None:
    def work(s) -> None:
        who = repo.get_or_create_annotator(s, "doomed")
        for k in range(500):
            repo.add_annotation(s, annotator=who, face_id=face_id, label="Fear", note=f"doomed {k}")
        s.flush()
        flag.touch()
        time.sleep(120)

    LabelStore(url).transaction(work)


def _steady(url: str, face_id: int, conn) -> None:
    store = LabelStore(url)
    for k in range(100000):
        store.review.correct_face(face_id, "steady", label="Anger", note=f"steady {k}")
        conn.send(k)


def _faces(store: LabelStore, n_images: int = 4) -> list[int]:
    boxes = [(10.0, 10.0, 50.0, 60.0), (60.0, 10.0, 100.0, 60.0)]
    for i in range(n_images):
        store.ingest.ingest_results("s", png_bytes(i), f"{i}.png", fake_results(f"{i}.png", boxes, ["Fear", "Neutral"]))
    ids = [f.face_id for f in store.recordings.faces("s")]
    store.engine.dispose()  # nothing open across the fork
    return ids


def _count(store: LabelStore) -> int:
    with store.engine.connect() as conn:
        return conn.execute(select(func.count(Annotation.id))).scalar()


def _wait_for(paths: list[Path], procs: list, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not all(p.exists() for p in paths):
        assert time.monotonic() < deadline, "the writers did not get ready"
        assert all(p.exitcode is None for p in procs), "a writer died before starting"
        time.sleep(0.01)


@pytest.mark.slow
def test_concurrent_writers_lose_nothing(store, migrated_url, tmp_path, engine_kind):
    face_ids = _faces(store)
    go = tmp_path / "go"
    procs = []
    for i in range(N_PROCS):
        args = (migrated_url, i, face_ids, tmp_path / f"ready{i}", go, tmp_path / f"out{i}.json")
        procs.append(FORK.Process(target=_child, args=(_writer, *args)))
        procs[-1].start()
    _wait_for([tmp_path / f"ready{i}" for i in range(N_PROCS)], procs)
    t0 = time.perf_counter()
    go.touch()
    for p in procs:
        p.join(timeout=180)
    wall = time.perf_counter() - t0
    # A lock error reaching the caller would end a writer with a traceback and exit code 1.
    assert [p.exitcode for p in procs] == [0] * N_PROCS
    results = [json.loads((tmp_path / f"out{i}.json").read_text()) for i in range(N_PROCS)]
    total = N_PROCS * N_EACH
    assert _count(store) == total
    notes = [h.note for fid in face_ids for h in store.recordings.history(face_id=fid)]
    assert sorted(notes) == sorted(f"{i}:{k}" for i in range(N_PROCS) for k in range(N_EACH))
    assert sorted(j.annotator for j in store.recordings.face(face_ids[0]).judgements) == [
        f"writer{i}" for i in range(4)
    ]
    assert store.upkeep.integrity_check() == "ok"
    retries = sum(r["retries"] for r in results)
    per_writer = sorted(round(r["elapsed"], 1) for r in results)
    print(
        f"\n{engine_kind}: {total} corrections by {N_PROCS} processes in {wall:.2f} s ({total / wall:.0f}/s), "
        f"{retries} retries after a lock; seconds per writer {per_writer}"
    )


@pytest.mark.slow
def test_writer_killed_mid_transaction_leaves_a_consistent_database(store, migrated_url, tmp_path):
    face_ids = _faces(store, n_images=1)
    store.review.correct_face(face_ids[0], "before", label="Happiness")
    store.engine.dispose()
    flag = tmp_path / "inside"
    p = FORK.Process(target=_child, args=(_open_transaction, migrated_url, face_ids[0], flag))
    p.start()
    _wait_for([flag], [p])
    os.kill(p.pid, signal.SIGKILL)
    p.join(timeout=10)
    assert p.exitcode == -signal.SIGKILL
    # None of the uncommitted rows, the committed one intact, the lock gone: a new write goes through at once.
    assert _count(store) == 1
    assert store.upkeep.integrity_check() == "ok"
    t0 = time.perf_counter()
    store.review.correct_face(face_ids[0], "after", label="Fear")
    assert time.perf_counter() - t0 < 5
    assert [h.annotator for h in store.recordings.history(face_id=face_ids[0])] == ["before", "after"]


@pytest.mark.slow
def test_writer_killed_between_commits_keeps_every_acknowledged_commit(store, migrated_url):
    face_ids = _faces(store, n_images=1)
    parent, child = FORK.Pipe(duplex=False)
    p = FORK.Process(target=_child, args=(_steady, migrated_url, face_ids[0], child))
    p.start()
    child.close()
    acked = -1
    while acked < 60:
        assert parent.poll(30), "the writer stopped acknowledging"
        acked = parent.recv()
    os.kill(p.pid, signal.SIGKILL)
    p.join(timeout=10)
    while parent.poll(0.2):
        try:
            acked = parent.recv()
        except EOFError:
            break
    n = _count(store)
    assert acked + 1 <= n <= acked + 2  # every acknowledged commit, plus at most the one in flight
    assert store.upkeep.integrity_check() == "ok"
    store.review.correct_face(face_ids[0], "after", label="Fear")


def _impatient_writer(url: str, idx: int, face_ids: list[int], ready: Path, go: Path, out: Path) -> None:
    """Like _writer, with SQLite's busy timeout off: every lock surfaces and the service's retry handles it."""
    busy = []

    class Count(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            busy.append(record.getMessage())

    logging.getLogger("db.service_base").setLevel(logging.INFO)
    logging.getLogger("db.service_base").addHandler(Count())
    store = LabelStore(url, engine=make_engine(url, busy_timeout_ms=0), retries=50)
    store.recordings.studies()
    ready.touch()
    _await_start(go)
    for k in range(100):
        store.review.correct_face(face_ids[k % len(face_ids)], f"w{idx}", label="Fear", note=f"{idx}:{k}")
    out.write_text(json.dumps({"retries": len(busy)}))


@pytest.mark.slow
def test_sqlite_lock_errors_are_retried_not_raised(tmp_path):
    url = f"sqlite:///{tmp_path / 'x.sqlite3'}"
    store = LabelStore(url)
    store.upgrade()
    face_ids = _faces(store, n_images=2)
    go = tmp_path / "go"
    procs = []
    for i in range(4):
        args = (url, i, face_ids, tmp_path / f"ready{i}", go, tmp_path / f"out{i}.json")
        procs.append(FORK.Process(target=_child, args=(_impatient_writer, *args)))
        procs[-1].start()
    _wait_for([tmp_path / f"ready{i}" for i in range(4)], procs)
    go.touch()
    for p in procs:
        p.join(timeout=120)
    assert [p.exitcode for p in procs] == [0] * 4
    retries = sum(json.loads((tmp_path / f"out{i}.json").read_text())["retries"] for i in range(4))
    assert _count(store) == 400
    assert retries > 0, "expected lock errors to be hit and retried with the busy timeout off"
    print(f"\nsqlite, busy timeout 0: 400 corrections by 4 processes, {retries} lock errors retried")


def test_a_lock_held_too_long_gives_a_busy_error_saying_what_to_do(tmp_path):
    url = f"sqlite:///{tmp_path / 'x.sqlite3'}"
    store = LabelStore(url)
    store.upgrade()
    face_ids = _faces(store, n_images=1)
    impatient = LabelStore(url, engine=make_engine(url, busy_timeout_ms=0), retries=3)
    holder = sqlite3.connect(tmp_path / "x.sqlite3", isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")
    try:
        with pytest.raises(StoreBusyError, match="try again in a moment") as err:
            impatient.review.correct_face(face_ids[0], "a", label="Fear")
        assert err.value.attempts == 3
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    impatient.review.correct_face(face_ids[0], "a", label="Fear")
    assert _count(store) == 1
