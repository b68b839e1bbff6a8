"""The analysis service, one for the app and the CLI: the app resumes a partial recording; concurrent runs of one
file (two CLIs, one with two copies over two workers, and the app's path) store every face once; a file that
changes while it is read is left partial and resumed; workers that die or cannot start."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from affectlab.analysis import AnalysisService, Options, Source
from db.schema import AnalysisClaim, Face, Media
from db.services import LabelStore
from tests.test_resumable import class_video  # noqa: F401 - the 12 s recording with three faces (a fixture)

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
MODEL = "enet_b0_8_best_vgaf"


class Stopped(BaseException):
    """What stops an analysis midway, as a closed page or a Ctrl-C does."""


def _faces(store: LabelStore, study: str) -> list[tuple[int, tuple[float, ...], int | None]]:
    """(frame, box, track id) of every stored face of the study's one media item."""

    def work(s):
        from db.schema import Study

        st = s.scalar(select(Study).where(Study.name == study))
        rows = s.execute(
            select(Face.frame, Face.x1, Face.y1, Face.x2, Face.y2, Face.track_id)
            .join(Media, Media.id == Face.media_id)
            .where(Media.study_id == st.id)
            .order_by(Face.frame, Face.id)
        )
        return [(f, (round(a, 2), round(b, 2), round(c, 2), round(d, 2)), t) for f, a, b, c, d, t in rows]

    return store.transaction(work, write=False)


def _media(store: LabelStore, study: str) -> list:
    return store.recordings.media(study) if study in {s.name for s in store.recordings.studies()} else []


def _video(store: LabelStore, study: str) -> Any:
    """The study's one video's row, or None before it is stored."""
    return next((m for m in _media(store, study) if m.kind == "video"), None)


def _claims(store: LabelStore) -> int:
    return len(store.transaction(lambda s: list(s.scalars(select(AnalysisClaim))), write=False))


def test_the_app_resumes_a_partial_recording_and_stores_nothing_twice(
    class_video: Path,  # noqa: F811
    tmp_path: Path,
    random_weights_dir: Path,
) -> None:
    from models.analysis import AnalysisSession
    from webapp.services.analysis import Upload, analyze_files

    store = LabelStore(f"sqlite:///{tmp_path / 'store.sqlite3'}", data_dir=tmp_path)
    store.upgrade()
    session = AnalysisSession.open(MODEL, random_weights_dir)
    upload = Upload("class.mp4", class_video.read_bytes())

    def analyse(study: str):
        return analyze_files(
            [upload],
            study=study,
            store=store,
            load_session=lambda: session,
            media_dir=tmp_path / "media",
            commit_every_s=2.0,
            fps=2.0,
        )

    straight = analyse("straight")
    assert [o.status for o in straight.analysed] == ["stored"] and straight.analysed[0].resumed_from_s is None

    # The page is closed after the first stored stretch (16 sampled frames: 8 s of video at 2 fps): the media item
    # stays partial, its claim is given back.
    original = store.ingest.store_chunk

    def stop_after_one(*a, **k):
        original(*a, **k)
        raise Stopped

    store.ingest.store_chunk = stop_after_one  # type: ignore[method-assign]
    with pytest.raises(Stopped):
        analyse("app")
    store.ingest.store_chunk = original  # type: ignore[method-assign]
    (media,) = store.recordings.media("app")
    assert media.analysis_status == "partial" and media.analysed_until_s is not None
    partial_faces = _faces(store, "app")
    assert 0 < len(partial_faces) < len(_faces(store, "straight")) and _claims(store) == 0

    # The same file uploaded again: not shown as stored, but resumed after its last stored frame.
    run = analyse("app")
    assert run.stored == () and len(run.analysed) == 1
    out = run.analysed[0]
    assert out.status == "stored" and out.media_id == media.id and not out.new
    assert out.resumed_from_s == pytest.approx(media.analysed_until_s)
    assert out.warnings[0].startswith("resumed a stopped analysis after")
    assert 0 < out.faces_new < out.n_faces
    assert store.recordings.media("app")[0].analysis_status == "complete"
    got, want = _faces(store, "app"), _faces(store, "straight")
    assert [(f, b) for f, b, _ in got] == [(f, b) for f, b, _ in want], "the rest analysed, nothing duplicated"
    assert all(t is not None for _, _, t in got)
    assert [(p.n_faces, p.track_indexes) for p in store.classroom.persons(media.id)] == [
        (p.n_faces, p.track_indexes) for p in store.classroom.persons(straight.analysed[0].media_id)
    ]
    again = analyse("app")
    assert [o.status for o in again.stored] == ["skipped"] and again.analysed == ()
    store.close()


def _env(url: str, weights: Path, data: Path) -> dict[str, str]:
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "DATABASE_URL": url,
        "AFFECTLAB_WEIGHTS_DIR": str(weights),
        "AFFECTLAB_DATA_DIR": str(data),
    }
    for key in ("AFFECTLAB_BACKEND", "AFFECTLAB_DEVICE", "AFFECTLAB_STORE_CROPS", "AFFECTLAB_DETECT_EVERY"):
        env.pop(key, None)
    return env


def _cli(*args: str, fps: str = "2") -> list[str]:
    """``affectlab analyze``, storing every second of video (at least 16 sampled frames: 8 s at 2 fps, 3.2 s at 5)."""
    return [sys.executable, "-m", "affectlab", "analyze", *args, "--fps", fps, "--commit-every", "1", "--no-progress"]


WEB = """
import json, sys
from pathlib import Path
from db.services import LabelStore
from models.analysis import AnalysisSession
from webapp.services.analysis import Upload, analyze_files
url, weights, video, data = sys.argv[1:]
store = LabelStore(url, data_dir=Path(data))
run = analyze_files(
    [Upload("upload.mp4", Path(video).read_bytes())], study="s", store=store,
    load_session=lambda: AnalysisSession.open("enet_b0_8_best_vgaf", weights, backend="onnx"),
    media_dir=Path(data) / "media", commit_every_s=1.0, fps=2.0,
)
print(json.dumps([[o.status, o.error] for o in (*run.stored, *run.analysed)]))
"""


@pytest.mark.parametrize("engine_kind", ["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def test_two_clis_and_the_app_at_once_store_every_face_once(
    class_video: Path,  # noqa: F811
    tmp_path: Path,
    exported_weights: Path,
    migrated_url: str,
) -> None:
    folder = tmp_path / "copies"
    folder.mkdir()
    shutil.copy(class_video, folder / "a.mp4")
    shutil.copy(class_video, folder / "b.mp4")  # the same bytes twice in one run, over two workers
    env = _env(migrated_url, exported_weights, tmp_path / "data")
    runs = [
        subprocess.Popen(
            _cli(str(folder), "--study", "s", "--workers", "2"), env=env, cwd=ROOT, stdout=subprocess.PIPE, text=True
        ),
        subprocess.Popen(
            _cli(str(class_video), "--study", "s", "--workers", "1"),
            env=env,
            cwd=ROOT,
            stdout=subprocess.PIPE,
            text=True,
        ),
        subprocess.Popen(
            [sys.executable, "-c", WEB, migrated_url, str(exported_weights), str(class_video), str(tmp_path / "data")],
            env=env,
            cwd=ROOT,
            stdout=subprocess.PIPE,
            text=True,
        ),
    ]
    outs = [p.communicate(timeout=900)[0] for p in runs]
    assert [p.returncode for p in runs] == [0, 0, 0], outs
    assert "2 files:" in outs[0] and "0 failed" in outs[0], outs[0]
    (web,) = json.loads(outs[2].strip().splitlines()[-1])
    assert web[0] in ("stored", "skipped", "busy"), web
    store = LabelStore(migrated_url)
    try:
        (media,) = store.recordings.media("s")
        assert media.analysis_status == "complete" and _claims(store) == 0
        faces = _faces(store, "s")
        assert len(faces) > 24
        twice = [k for k, n in Counter((f, b) for f, b, _ in faces).items() if n > 1]
        assert twice == [], f"faces stored twice: {twice[:5]}"
        assert all(t is not None for _, _, t in faces), "every face in a track"
        analysed = outs[0].count("frames analysed") + outs[1].count("frames analysed") + (web[0] == "stored")
        assert analysed == 1, ("one run analysed the file, the others waited or were told it was busy", outs)
    finally:
        store.close()


def _wait_for_chunk(store: LabelStore, study: str, proc: subprocess.Popen, after: float | None = None) -> None:
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and proc.poll() is None:
        video = _video(store, study)  # the video's row, whichever file's row came first (workers race)
        if video is not None and video.analysed_until_s is not None and video.analysed_until_s != after:
            return
        time.sleep(0.02)
    raise AssertionError(f"no stretch stored while the run went on (exit code {proc.poll()})")


def test_a_file_truncated_mid_run_is_left_partial_then_resumed(
    class_video: Path,  # noqa: F811
    tmp_path: Path,
    exported_weights: Path,
) -> None:
    url = f"sqlite:///{tmp_path / 'store.sqlite3'}"
    LabelStore(url).upgrade()
    env = _env(url, exported_weights, tmp_path / "data")
    # 5 fps: four stretches, so that the cut comes while the run goes on
    straight = subprocess.run(
        _cli(str(class_video), "--study", "straight", fps="5"), env=env, cwd=ROOT, capture_output=True
    )
    assert straight.returncode == 0, straight.stderr
    video = tmp_path / "copying.mp4"
    whole = class_video.read_bytes()
    video.write_bytes(whole)
    store = LabelStore(url)
    try:
        proc = subprocess.Popen(
            _cli(str(video), "--study", "s", fps="5"),
            env=env,
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        _wait_for_chunk(store, "s", proc)
        with open(video, "r+b") as fh:  # cut to 40 %, as a copy still in progress
            fh.truncate(len(whole) * 4 // 10)
        out, err = proc.communicate(timeout=600)
        assert proc.returncode == 1, (out, err)
        assert f"{video}: changed while it was analysed (was {len(whole)} bytes, now {len(whole) * 4 // 10})" in err
        (media,) = store.recordings.media("s")
        assert media.analysis_status == "partial", "never complete under the whole file's hash"
        assert _claims(store) == 0

        video.write_bytes(whole)  # the copy finished: the same bytes resume
        again = subprocess.run(
            _cli(str(video), "--study", "s", fps="5"), env=env, cwd=ROOT, capture_output=True, text=True
        )
        assert again.returncode == 0, again.stderr
        assert "resumed after" in again.stdout
        assert store.recordings.media("s")[0].analysis_status == "complete"
        assert [(f, b) for f, b, _ in _faces(store, "s")] == [(f, b) for f, b, _ in _faces(store, "straight")]
    finally:
        store.close()


def _workers_of(pid: int) -> list[int]:
    """The worker processes a driver spawned (its children running multiprocessing's spawn_main)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            cmd = (entry / "cmdline").read_bytes().decode(errors="replace")
        except (OSError, IndexError, ValueError):
            continue
        if ppid == pid and "spawn_main" in cmd:
            found.append(int(entry.name))
    return found


def _alive(pid: int) -> bool:
    try:
        state = (Path("/proc") / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def test_killed_workers_and_driver(
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
    for p in (class_video, multi_face_jpg, single_face_jpg):
        shutil.copy(p, folder / p.name)
    args = _cli(str(folder), "--study", "s", "--workers", "2", fps="5")  # four stretches: time to kill between
    store = LabelStore(url)
    try:
        # A worker killed (as the OOM killer does) mid-video: its file fails with the reason, the others are stored.
        proc = subprocess.Popen(args, env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        _wait_for_chunk(store, "s", proc)
        workers = _workers_of(proc.pid)
        assert workers, "no worker process found"
        for w in workers:
            os.kill(w, signal.SIGKILL)
        out, err = proc.communicate(timeout=600)
        assert proc.returncode == 1, (out, err)
        assert f"{folder / 'class.mp4'}: the worker analysing it died (SIGKILL: perhaps out of memory)" in err, err
        assert "3 files: 2 stored" in out and "1 failed" in out, out
        assert {m.filename: m.analysis_status for m in store.recordings.media("s")}["class.mp4"] == "partial"

        # The driver killed: its workers do not stay behind.
        proc = subprocess.Popen(args, env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        _wait_for_chunk(store, "s", proc, after=_video(store, "s").analysed_until_s)
        workers = _workers_of(proc.pid)
        assert workers
        os.kill(proc.pid, signal.SIGKILL)
        proc.communicate(timeout=60)
        deadline = time.monotonic() + 20
        while any(_alive(w) for w in workers) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not any(_alive(w) for w in workers), "workers outlived their driver"

        done = subprocess.run(args, env=env, cwd=ROOT, capture_output=True, text=True)
        assert done.returncode == 0, done.stderr
        assert "resumed after" in done.stdout and "2 skipped" in done.stdout, done.stdout
    finally:
        store.close()


def test_a_setup_problem_exits_2_alone_and_with_workers(tmp_path: Path, multi_face_jpg: Path, single_face_jpg: Path):
    url = f"sqlite:///{tmp_path / 'store.sqlite3'}"
    LabelStore(url).upgrade()
    results = []
    for workers in ("1", "2"):
        env = _env(url, tmp_path / "no-weights", tmp_path / "data")
        proc = subprocess.run(
            _cli(str(multi_face_jpg), str(single_face_jpg), "--study", "s", "--workers", workers),
            env=env,
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=300,
        )
        errors = [ln for ln in proc.stderr.splitlines() if ln.startswith("error:")]
        results.append((proc.returncode, errors))
        assert "Traceback" not in proc.stderr, proc.stderr
    assert results[0] == results[1] and results[0][0] == 2 and len(results[0][1]) == 1, results
    assert f"python -m models fetch {MODEL}" in results[0][1][0]


def test_the_service_hands_back_a_busy_file_and_waits_for_it_when_asked(tmp_path: Path, multi_face_jpg: Path):
    """No model runs for a busy file; waiting ends when the other run completes it."""
    import threading

    from db.claims import Claimant
    from db.codecs import sha256_bytes

    store = LabelStore(f"sqlite:///{tmp_path / 'store.sqlite3'}", data_dir=tmp_path)
    store.upgrade()
    other = Claimant.here()
    data = multi_face_jpg.read_bytes()
    assert store.ingest.claim("s", sha256_bytes(data), other) is None

    def no_model():
        raise AssertionError("a model was loaded for a file another run holds")

    service = AnalysisService(store, "s", no_model, Options(poll_s=0.05))
    src = Source.file(multi_face_jpg)
    out = service.analyze(src)
    assert out.status == "busy" and "being analysed by another run" in (out.error or "")

    finished = threading.Timer(0.5, lambda: store.ingest.ingest_results("s", data, "x.jpg", [], claimant=other))
    finished.start()
    out = service.analyze(src, wait=True)
    finished.join()
    assert out.status == "skipped" and out.media_id == store.recordings.media("s")[0].id
    store.close()
