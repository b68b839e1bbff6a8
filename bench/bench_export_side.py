"""Two source trees' streamed exports of one study, side by side: wall, CPU, peak RSS and load, alternately.

    python bench/bench_export_side.py --db STUDY.sqlite3 --old DIR --new . [--formats csv,parquet,features]
        [--repeat 3] [--out DIR]

Each export runs in a fresh process of the tree it times (``PYTHONPATH=tree``, e.g. ``git archive main | tar -x -C
DIR`` for the old one), through :func:`db.exports.export_stream` with its defaults (the CSV's writer processes
included: CPU and peak RSS count them); the trees alternate run by run and the load average is printed beside each
run. The outputs of the two trees are compared (CSV byte for byte, Parquet as DataFrames, features array by array).
The study is only read.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

CHILD = r"""
import json, resource, sys, time
from pathlib import Path
from db import exports
from db.services import LabelStore
db, fmt, out = sys.argv[1:4]
store = LabelStore(f"sqlite:///{db}", data_dir=Path(db).parent / (Path(db).stem + "-data"))
study = store.recordings.studies()[0].name
t0, c0 = time.perf_counter(), time.process_time()
rep = store.transaction(lambda s: exports.export_stream(s, study, fmt, Path(out)), write=False)
wall, cpu = time.perf_counter() - t0, time.process_time() - c0
kids = resource.getrusage(resource.RUSAGE_CHILDREN)
hwm = next(int(x.split()[1]) for x in open("/proc/self/status") if x.startswith("VmHWM:")) / 1024
# ru_maxrss carries over fork and exec: the writer processes' figure is an upper bound, this process's is VmHWM.
rss = max(hwm, kids.ru_maxrss / 1024) if kids.ru_maxrss else hwm
print(json.dumps({"wall": wall, "cpu": cpu + kids.ru_utime + kids.ru_stime, "rss": rss, "faces": rep.n_faces}))
"""

SUFFIX = {"csv": ".csv", "parquet": ".parquet", "features": ".npz"}


def _same(fmt: str, a: Path, b: Path) -> bool:
    if fmt == "csv":
        return a.read_bytes() == b.read_bytes()
    if fmt == "parquet":
        import pandas as pd

        return bool(pd.read_parquet(a).equals(pd.read_parquet(b)))
    import numpy as np

    x, y = np.load(a), np.load(b)
    return sorted(x.files) == sorted(y.files) and all(
        np.array_equal(x[k], y[k], equal_nan=x[k].dtype.kind == "f") for k in x.files
    )


def main() -> int:
    """Runs the bench."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--db", type=Path, required=True)
    ap.add_argument("--old", type=Path, required=True)
    ap.add_argument("--new", type=Path, default=Path("."))
    ap.add_argument("--formats", default="csv")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--out", type=Path, help="folder for the exported files (default: a temporary one)")
    args = ap.parse_args()
    out = args.out or Path(tempfile.mkdtemp(prefix="bench-export-side-"))
    out.mkdir(parents=True, exist_ok=True)
    trees = {"old": args.old.resolve(), "new": args.new.resolve()}
    print(f"{'export':<9}{'tree':<5}{'run':>4}{'wall s':>9}{'CPU s':>9}{'faces/s':>10}{'RSS MB':>8}  load (1/5 min)")
    for fmt in args.formats.split(","):
        got: dict[str, list[dict[str, float]]] = {"old": [], "new": []}
        for k in range(args.repeat):
            for name, tree in trees.items():
                path = out / f"{name}{SUFFIX[fmt]}"
                env = {**os.environ, "PYTHONPATH": str(tree)}
                res = subprocess.run(
                    [sys.executable, "-c", CHILD, str(args.db.resolve()), fmt, str(path)],
                    cwd=tree,
                    env=env,
                    capture_output=True,
                    text=True,
                    check=False,
                )
                if res.returncode:
                    print(res.stderr[-2000:])
                    return 1
                r = json.loads(res.stdout.strip().splitlines()[-1])
                got[name].append(r)
                load = os.getloadavg()
                print(
                    f"{fmt:<9}{name:<5}{k + 1:>4}{r['wall']:>9.2f}{r['cpu']:>9.2f}{r['faces'] / r['wall']:>10.0f}"
                    f"{r['rss']:>8.0f}  {load[0]:.1f} / {load[1]:.1f}"
                )
        med = {n: statistics.median(x["wall"] for x in runs) for n, runs in got.items()}
        same = _same(fmt, out / f"old{SUFFIX[fmt]}", out / f"new{SUFFIX[fmt]}")
        print(f"{fmt:<9}median wall old {med['old']:.2f} s, new {med['new']:.2f} s: x{med['old'] / med['new']:.2f};")
        print(f"{fmt:<9}outputs equal: {same}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
