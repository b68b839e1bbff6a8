"""The Classroom page over a filled study (issue 24 item 7): seconds per render, before and after, side by side.

"before" is what the page's "Class over time" did until issue 24: the class tables, then each of the three tables
exported through ``Exports.export`` (which computed the tables again) for the owner's CSV downloads: four
computations per render. "after" is :func:`webapp.services.classroom.class_over_time` now: the tables once, the CSV
files written only when someone downloads them. Both run in one process, alternately, warm (the per-recording sums
of :mod:`db.classroom` cached) and cold (cache cleared first: a new server process, or a recording whose persons
changed). Then the whole page through Streamlit's AppTest as an owner: first render, next renders.

Usage::

    python bench/scale_fill.py --faces 290000 --path bulk --feature-dim 16 --crop 24 --keep /tmp/scale
    python bench/bench_classroom.py --db /tmp/scale/scale-290000.sqlite3 [--runs 3]

It renames persons in that database (a copy is the thing to bench on).

A 60-minute recording of 16 students at 5 fps is 288,000 faces (``--faces 290000`` fills one and a short second).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from db import classroom as db_classroom
from db.services import LabelStore
from webapp.services import classroom

STUDY = "scale"


def before(store: LabelStore, study: str) -> None:
    """The section as it was: the tables, then the three CSV downloads each through an export."""
    store.classroom.class_tables(study)
    for t in classroom.CLASS_TABLES:
        classroom.class_table_bytes(store, study, t)


def after(store: LabelStore, study: str) -> None:
    """The section now: the tables once; nothing written until a download."""
    classroom.class_over_time(store, study, owner=True)


def _time(fn: Callable[[], object]) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def services(store: LabelStore, runs: int) -> None:
    print("service calls of one render (median of runs, s):")
    for cold in (False, True):
        got: dict[str, list[float]] = {"before": [], "after": []}
        for _ in range(runs):
            for name, fn in (("before", before), ("after", after)):
                if cold:
                    db_classroom.clear_cache()
                else:
                    after(store, STUDY)  # warm
                got[name].append(_time(lambda fn=fn: fn(store, STUDY)))  # type: ignore[misc]
        b, a = statistics.median(got["before"]), statistics.median(got["after"])
        print(f"  {'cold' if cold else 'warm'}: before {b:.3f}  after {a:.3f}  before/after {b / a:.1f}x")


def person_change(store: LabelStore, runs: int) -> None:
    """A rename on the page: "before" recomputed the recording's sums (what the cache did on any person change),
    "after" re-reads its persons (sums per track)."""
    media_id = max(classroom.class_videos(store, STUDY), key=lambda m: m.duration_s or 0).id
    before_s, after_s = [], []
    for i in range(runs):
        after(store, STUDY)  # warm
        db_classroom.clear_cache()
        before_s.append(_time(lambda: after(store, STUDY)))
        after(store, STUDY)  # warm again
        person = store.classroom.persons(media_id)[i % 2]
        store.classroom.rename_person(person.person_id, f"S-{i:02d}", "bench", owner=True)
        after_s.append(_time(lambda: after(store, STUDY)))
    b, a = statistics.median(before_s), statistics.median(after_s)
    print(f"  after a rename: before {b:.3f}  after {a:.3f}  before/after {b / a:.1f}x")


def page(url: str, data: Path, runs: int) -> None:
    from streamlit.testing.v1 import AppTest

    os.environ.update(DATABASE_URL=url, AFFECTLAB_STUDY=STUDY, AFFECTLAB_DATA_DIR=str(data))
    os.environ.setdefault("AFFECTLAB_WEIGHTS_DIR", tempfile.mkdtemp(prefix="affectlab-bench-w-"))
    db_classroom.clear_cache()
    at = AppTest.from_file(str(Path(__file__).resolve().parents[1] / "webapp" / "app.py"), default_timeout=600)
    at.run()
    at.switch_page("views/classroom.py")
    first = _time(at.run)
    assert not at.exception, [e.value for e in at.exception]
    assert at.dataframe, "the page showed no table"
    times = [_time(at.run) for _ in range(runs)]
    print(
        f"page (AppTest, whole app script): first render {first:.2f} s (cold sums), "
        f"next renders median {statistics.median(times):.2f} s (max {max(times):.2f})"
    )


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--db", type=Path, required=True, help="a SQLite database filled by bench/scale_fill.py --keep")
    ap.add_argument("--runs", type=int, default=3)
    args = ap.parse_args(argv)
    url = f"sqlite:///{args.db.resolve()}"
    data = args.db.with_name(f"{args.db.stem}-data")  # scale_fill's folder beside the database
    store = LabelStore(url, data_dir=data)
    store.upgrade()  # the bench's own copy: a database filled before the newest migration
    try:
        tables = store.classroom.class_tables(STUDY)
        n = {r["media_id"] for r in tables.minutes}
        print(f"study {STUDY!r}: {len(n)} recordings, {len(tables.minutes)} student-minute rows")
        services(store, args.runs)
        person_change(store, args.runs)
    finally:
        store.close()
    page(url, data, args.runs)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
