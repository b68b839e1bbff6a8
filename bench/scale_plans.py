"""The query plans of the scale bench's actions (issue 19: a user action reads what it shows, not the study).

Runs one or more actions of :mod:`bench.bench_scale` on a filled SQLite database, notes every SELECT they send, and
prints SQLite's ``EXPLAIN QUERY PLAN`` of those that walk a study: a full scan of a per-face table, or every face of
a recording by the media index with no further bound (what SQLite's planner, which has no statistics here, chose
for ``faces.id IN (...)`` joined to the media of a study, in place of the primary key). The plans do not depend on
the database's size, so a tiny study shows the plans of a large one; ``tests/test_bench_scale.py`` checks that the
actions of :data:`STUDY_WIDE` walk nothing.

Usage::

    python bench/scale_plans.py DB.sqlite3 [--actions review_first,key_press] [--all]

``--all`` prints every plan, not only the walks.
"""

from __future__ import annotations

import argparse
import re
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
for p in (str(ROOT), str(ROOT / "bench")):
    if p not in sys.path:
        sys.path.insert(0, p)

import bench_scale  # noqa: E402
import scale_fill  # noqa: E402

STUDY_WIDE = (
    "review_first",
    "review_by_class",
    "review_by_annotator",
    "key_press",
    "my_labels",
    "library",
    "dataset_stats",
    "vote",
    "undo",
)
"""Actions over the whole study that must not walk a recording's faces (the others are about one recording)."""

PER_FACE = ("faces", "face_status", "face_judges", "face_tallies", "predictions", "annotations", "engagement_windows")
WALK = re.compile(
    rf"^SCAN ({'|'.join(PER_FACE)})\b|^SEARCH faces USING (COVERING )?INDEX ix_faces_media_id_frame \(media_id=\?\)$"
)
"""A plan line that reads a number of rows growing with the study or its recordings."""


@dataclass(frozen=True)
class Plan:
    """One statement an action sent, its plan lines, and those of them that walk a study."""

    sql: str
    lines: tuple[str, ...]

    @property
    def walks(self) -> tuple[str, ...]:
        return tuple(line for line in self.lines if WALK.search(line))


def action_plans(ctx: bench_scale.Ctx, name: str) -> list[Plan]:
    """Runs action ``name`` once (after its set-up) and returns the plans of the distinct SELECTs it sent."""
    from sqlalchemy import event

    sent: dict[str, Any] = {}

    def note(_conn: Any, _cur: Any, stmt: str, params: Any, _ctx: Any, many: bool) -> None:
        if not many and stmt.lstrip()[:6].upper() in ("SELECT", "WITH R"):
            sent.setdefault(stmt, params)

    action = bench_scale.ACTIONS[name]
    if action.setup is not None:
        action.setup(ctx)
    event.listen(ctx.store.engine, "before_cursor_execute", note)
    try:
        action.fn(ctx)
    finally:
        event.remove(ctx.store.engine, "before_cursor_execute", note)
    raw = ctx.store.engine.raw_connection()
    try:
        cur = raw.cursor()
        return [
            Plan(stmt, tuple(str(r[3]) for r in cur.execute("EXPLAIN QUERY PLAN " + stmt, params).fetchall()))
            for stmt, params in sent.items()
        ]
    finally:
        raw.close()


def context(db_file: Path, tmp: Path) -> bench_scale.Ctx:
    """The bench's context on a filled SQLite database (a fresh store, as each timed action gets)."""
    from db.services import LabelStore

    url = f"sqlite:///{db_file}"
    store = LabelStore(url, data_dir=tmp / "data")
    media_id, cls = bench_scale._first_recording(store)
    return bench_scale.Ctx(store=store, study=scale_fill.STUDY, media_id=media_id, model_class=cls, tmp=tmp, url=url)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("db", type=Path, help="a SQLite database filled by bench/scale_fill.py (or bench_scale --keep)")
    ap.add_argument("--actions", default=",".join(STUDY_WIDE), help="comma-separated (bench_scale.py --list)")
    ap.add_argument("--all", action="store_true", help="print every plan, not only the walks")
    args = ap.parse_args(argv)
    ctx = context(args.db, Path(tempfile.mkdtemp(prefix="affectlab-plans-")))
    n_walks = 0
    for name in [n.strip() for n in args.actions.split(",") if n.strip()]:
        for plan in action_plans(ctx, name):
            if plan.walks or args.all:
                n_walks += bool(plan.walks)
                print(f"[{name}] {' '.join(plan.sql.split())[:400]}")
                print("    " + "\n    ".join(plan.lines))
    ctx.store.close()
    print(f"{n_walks} statement(s) walking a study")
    return 1 if n_walks else 0


if __name__ == "__main__":
    raise SystemExit(main())
