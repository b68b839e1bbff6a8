"""``python -m models analyze VIDEO --json``: peak memory of the process tree, this checkout against another.

The two run alternating as whole processes (their JSON written to files, compared byte for byte at the end), with
wall time, CPU seconds and the machine's load printed beside each run (``run_tree`` of bench_gallery_speed.py).

Usage: python bench/bench_json_memory.py VIDEO --compare DIR [--workers 1] [--rounds 1] [--weights DIR] [--home DIR]
(``DIR``: e.g. ``git archive`` of an earlier commit; ``--weights``/``--home``: a ``bench_gallery_speed.py --cache``
folder's ``weights`` and ``home``.)

Measured (60 s 720p gallery of bench_gallery_speed.py, ``--workers 1``, one round, 2 shared cores at load 10-15):
before the streamed document 837 MB, 427.8 s, 93.6 CPU s; streamed 819 MB, 369.8 s, 94.1 CPU s; the same 3.19 MB
document. ``--workers 2`` (two ranges), load 8-9: 1,510 MB, 193.7 s, 83.7 CPU s; with ONNX Runtime's CPU arena off on
every session 1,493 MB, 238.6 s, 91.8 CPU s (not kept).
"""

from __future__ import annotations

import argparse
import filecmp
import os
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))

from bench_gallery_speed import load, run_tree  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("video")
    ap.add_argument("--compare", required=True, help="another checkout of AffectLab (the run before)")
    ap.add_argument("--workers", default="1")
    ap.add_argument("--rounds", type=int, default=1)
    ap.add_argument("--weights", help="the weights folder (default: AFFECTLAB_WEIGHTS_DIR)")
    ap.add_argument("--home", help="HOME for the runs (default: this one's)")
    args = ap.parse_args()
    env = {k: v for k, v in os.environ.items() if not k.startswith("AFFECTLAB_")}
    if args.weights or os.environ.get("AFFECTLAB_WEIGHTS_DIR"):
        env["AFFECTLAB_WEIGHTS_DIR"] = args.weights or os.environ["AFFECTLAB_WEIGHTS_DIR"]
    if args.home:
        env["HOME"] = args.home
    trees = {"before": Path(args.compare).resolve(), "this checkout": ROOT}
    out = Path(tempfile.mkdtemp(prefix="affectlab-json-"))
    print(f"load before: {load()}", flush=True)
    for _ in range(args.rounds):
        for name, root in trees.items():
            cmd = [sys.executable, "-m", "models", "analyze", args.video, "--json", "--workers", args.workers]
            target = out / f"{name.replace(' ', '-')}.json"
            t, cpu, peak = run_tree(cmd, {**env, "PYTHONPATH": str(root)}, root, stdout=target)
            print(f"  {name}: {t:.1f} s, {cpu:.1f} CPU s, peak tree {peak:.0f} MB (load {load()})", flush=True)
    a, b = (out / f"{n.replace(' ', '-')}.json" for n in trees)
    print(f"documents byte-equal: {filecmp.cmp(a, b, shallow=False)} ({a.stat().st_size:,} bytes)")


if __name__ == "__main__":
    main()
