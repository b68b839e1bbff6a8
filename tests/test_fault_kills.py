"""Faults at seeded random points: one worker, the driver, then the whole process group killed mid-run; the store
then equals a straight run's, face for face (frame, box, track), and nothing is left claimed or partial."""

from __future__ import annotations

import os
import random
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest
from sqlalchemy import select

from db.schema import Face, Media, Study, Track
from db.services import LabelStore
from tests.test_analysis_service import ROOT, _alive, _claims, _cli, _env, _workers_of
from tests.test_resumable import class_video  # noqa: F401 - the 12 s recording with three faces (a fixture)

pytestmark = pytest.mark.slow

SEED = 21


def _store_rows(store: LabelStore, study: str) -> list[tuple[str, int | None, tuple[float, ...], int | None]]:
    """(file, frame, box, track number) of every stored face of the study, in a fixed order."""

    def work(s):  # type: ignore[no-untyped-def]
        st = s.scalar(select(Study).where(Study.name == study))
        rows = s.execute(
            select(Media.filename, Face.frame, Face.x1, Face.y1, Face.x2, Face.y2, Track.track_index)
            .join(Media, Media.id == Face.media_id)
            .outerjoin(Track, Track.id == Face.track_id)
            .where(Media.study_id == st.id)
            .order_by(Media.filename, Face.frame, Face.x1, Face.id)
        )
        return [(n, f, (round(a, 2), round(b, 2), round(c, 2), round(d, 2)), t) for n, f, a, b, c, d, t in rows]

    return store.transaction(work, write=False)


def _kill(kind: str, proc: subprocess.Popen[bytes], rng: random.Random) -> None:
    """Kills one worker, the driver, or the whole group of ``proc``, a seeded random moment after a stored stretch."""
    time.sleep(rng.uniform(0.0, 1.5))
    if proc.poll() is not None:
        return  # it ended first: the next round carries on from what it stored
    if kind == "worker":
        workers = _workers_of(proc.pid)
        if workers:
            os.kill(rng.choice(workers), signal.SIGKILL)
        proc.wait(timeout=600)
    elif kind == "driver":
        workers = _workers_of(proc.pid)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=60)
        deadline = time.monotonic() + 20
        while any(_alive(w) for w in workers) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not any(_alive(w) for w in workers), "workers outlived their driver"
    else:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=60)


def test_kills_at_random_points_leave_the_store_equal_to_a_straight_run(
    class_video: Path,  # noqa: F811
    tmp_path: Path,
    exported_weights: Path,
    multi_face_jpg: Path,
    single_face_jpg: Path,
) -> None:
    url = f"sqlite:///{tmp_path / 'store.sqlite3'}"
    LabelStore(url).upgrade()
    env = _env(url, exported_weights, tmp_path / "data")
    folder = tmp_path / "in"
    folder.mkdir()
    second = folder / "class-b.mp4"  # two recordings, so that two workers each hold one when a kill comes
    shutil.copy(class_video, folder / "class.mp4")
    with second.open("wb") as fh:  # other bytes (one more frame's worth of padding at the end): another media item
        fh.write(class_video.read_bytes() + b"\0" * 8)
    for p in (multi_face_jpg, single_face_jpg):
        shutil.copy(p, folder / p.name)

    straight = subprocess.run(
        _cli(str(folder), "--study", "straight", "--workers", "2", fps="5"),
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert straight.returncode == 0, straight.stderr

    rng = random.Random(SEED)
    store = LabelStore(url)
    try:
        for kind in ("worker", "driver", "group"):
            proc = subprocess.Popen(
                _cli(str(folder), "--study", "s", "--workers", "2", fps="5"),
                env=env,
                cwd=ROOT,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                start_new_session=True,  # its own process group, as a terminal's job is
            )
            try:
                stored = [m.analysed_until_s for m in store.recordings.media("s")] if "s" in _studies(store) else []
                _wait_for_chunk_any(store, proc, stored)
                _kill(kind, proc, rng)
            finally:
                if proc.poll() is None:
                    os.killpg(proc.pid, signal.SIGKILL)
                    proc.wait()
        done = subprocess.run(
            _cli(str(folder), "--study", "s", "--workers", "2", fps="5"),
            env=env,
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=900,
        )
        assert done.returncode == 0, done.stderr
        media = [(m.filename, m.sha256[:8], m.analysis_status, m.analysed_until_s) for m in store.recordings.media("s")]
        assert {m[2] for m in media} == {"complete"}, (media, done.stdout)
        assert _claims(store) == 0
        assert _store_rows(store, "s") == _store_rows(store, "straight")
    finally:
        store.close()


def _studies(store: LabelStore) -> set[str]:
    return {s.name for s in store.recordings.studies()}


def _wait_for_chunk_any(store: LabelStore, proc: subprocess.Popen[bytes], before: list[float | None]) -> None:
    """Waits until the run stores a new stretch of some recording (or ends)."""
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and proc.poll() is None:
        now = [m.analysed_until_s for m in store.recordings.media("s")] if "s" in _studies(store) else []
        if any(t is not None for t in now) and now != before:
            return
        time.sleep(0.02)
    if proc.poll() is None:
        raise AssertionError("no stretch stored while the run went on")
