"""Growth per decade of the scale bench's actions, measured fairly on a loaded machine (issue 19).

``bench_scale.py`` times each size after the other, so a machine whose load changes during the run (a shared 2-core
box) skews the growth factor. This times the same actions on several studies kept by ``bench_scale.py --keep DIR``
in one process, in turn (10^4, 10^5, 10^6, 10^4, ...), warm (one untimed run first), ``--rounds`` times, and prints
the median per study and the growth per decade: the load falls on every size alike. Writes (``key_press``,
``vote``, ``undo``) change the studies as in the bench.

Usage::

    python bench/scale_interleave.py DIR/size-10000.sqlite3 DIR/size-1000000.sqlite3 [--actions ...] [--rounds 3]
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
for p in (str(ROOT), str(ROOT / "bench")):
    if p not in sys.path:
        sys.path.insert(0, p)

import bench_scale  # noqa: E402
import scale_plans  # noqa: E402

DEFAULT = (
    "review_first,review_by_file,review_by_class,review_by_annotator,key_press,my_labels,library,library_open,"
    "classroom,dataset_stats,vote,undo"
)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("dbs", type=Path, nargs="+", help="SQLite studies kept by bench_scale.py --keep, smallest first")
    ap.add_argument("--actions", default=DEFAULT)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args(argv)
    from sqlalchemy import func, select

    from db.schema import Face

    ctxs = [scale_plans.context(db, Path(tempfile.mkdtemp(prefix="affectlab-interleave-"))) for db in args.dbs]
    faces = [
        c.store.transaction(lambda s: int(s.scalar(select(func.count()).select_from(Face))), write=False) for c in ctxs
    ]
    for name in [n.strip() for n in args.actions.split(",") if n.strip()]:
        action = bench_scale.ACTIONS[name]
        runs: list[list[float]] = [[] for _ in ctxs]
        for c in ctxs:
            if action.setup is not None:
                action.setup(c)
            action.fn(c)  # warm: imports, caches, pages
        for _ in range(args.rounds):
            for i, c in enumerate(ctxs):
                t0 = time.perf_counter()
                action.fn(c)
                runs[i].append(time.perf_counter() - t0)
        med = [statistics.median(r) for r in runs]
        decades = math.log10(faces[-1] / faces[0]) if len(ctxs) > 1 and faces[0] else 0.0
        growth = f"x{(med[-1] / med[0]) ** (1 / decades):.2f} per decade" if decades and med[0] else ""
        cells = "  ".join(f"{n:>9,}: {bench_scale.fmt_s(m):>7}" for n, m in zip(faces, med, strict=True))
        print(f"{name:20} {cells}  {growth}", flush=True)
    for c in ctxs:
        c.store.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
