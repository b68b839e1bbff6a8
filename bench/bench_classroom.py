"""The Classroom page over a filled study (issues 19 and 24): seconds per render, before and after, side by side.

"before" is a first render as it was until the class sums were kept (:mod:`db.class_sums`): every recording's sums
computed from its faces (:func:`db.class_compute.compute`, what the in-process cache filled on a new server
process, after a restart or a segment change). "after" is a render now: the kept sums per track and time bucket
added up, whatever the process (:func:`webapp.services.classroom.class_over_time`). Both run in one process,
alternately. Then a vote (the vote's transaction, with and without writing its track's sums again) and the render
after it, a rename and the render after it; then the whole page through Streamlit's AppTest as an owner.

Usage::

    python bench/scale_fill.py --faces 290000 --path bulk --feature-dim 16 --crop 24 --keep /tmp/scale
    python bench/bench_classroom.py --db /tmp/scale/scale-290000.sqlite3 [--runs 3]

It upgrades that database (migration 0028 fills the sums; its seconds are printed), votes and renames persons in it
(a copy is the thing to bench on).

A 60-minute recording of 16 students at 5 fps is 288,000 faces (``--faces 290000`` fills one and a short second).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from db import class_sums
from db.services import LabelStore
from webapp.services import classroom

STUDY = "scale"


@contextmanager
def from_faces() -> Iterator[None]:
    """A render as before: no kept sums, every recording computed from its faces."""
    kept = class_sums.kept
    setattr(class_sums, "kept", lambda session, media_ids: {})  # noqa: B010
    try:
        yield
    finally:
        setattr(class_sums, "kept", kept)  # noqa: B010


@contextmanager
def no_kept_writes() -> Iterator[None]:
    """A write as before: the kept sums not written again."""
    refresh = class_sums.refresh
    setattr(class_sums, "refresh", lambda session, d: None)  # noqa: B010
    try:
        yield
    finally:
        setattr(class_sums, "refresh", refresh)  # noqa: B010


def render(store: LabelStore, study: str) -> None:
    """The Classroom section's service call of one render."""
    classroom.class_over_time(store, study, owner=True)


def _time(fn: Callable[[], object]) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def services(store: LabelStore, runs: int) -> None:
    print("service calls of one render (median of runs, s):")
    before, after = [], []
    for _ in range(runs):
        with from_faces():
            before.append(_time(lambda: render(store, STUDY)))
        after.append(_time(lambda: render(store, STUDY)))
    assert _same(store), "the tables from the kept sums differ from the tables computed from the faces"
    b, a = statistics.median(before), statistics.median(after)
    print(f"  first render: before (from the faces) {b:.3f}  after (kept sums) {a:.3f}  before/after {b / a:.1f}x")


def _same(store: LabelStore) -> bool:
    with from_faces():
        want = store.classroom.class_tables(STUDY)
    return store.classroom.class_tables(STUDY) == want


def writes(store: LabelStore, runs: int) -> None:
    """A vote and a rename: the write itself (before: no kept sums written), then the render after it."""
    ids = _some_faces(store, runs * 2)
    vote_b, vote_a, after_vote = [], [], []
    for i in range(runs):
        with no_kept_writes():
            vote_b.append(_time(lambda i=i: store.review.correct_face(ids[2 * i], "bench", label="Fear")))  # type: ignore[misc]
        vote_a.append(_time(lambda i=i: store.review.correct_face(ids[2 * i + 1], "bench", label="Anger")))  # type: ignore[misc]
        after_vote.append(_time(lambda: render(store, STUDY)))
    # the "before" votes left the kept sums of their tracks behind: have those tracks written again
    store.transaction(lambda s: class_sums.mark(s, faces=ids))
    b, a = statistics.median(vote_b), statistics.median(vote_a)
    print(f"  a vote: before {b:.3f}  after (its track's sums written again) {a:.3f}  after/before {a / b:.1f}x")
    print(f"  render after a vote: {statistics.median(after_vote):.3f}")
    media_id = max(classroom.class_videos(store, STUDY), key=lambda m: m.duration_s or 0).id
    after_rename = []
    for i in range(runs):
        person = store.classroom.persons(media_id)[i % 2]
        store.classroom.rename_person(person.person_id, f"S-{i:02d}", "bench", owner=True)
        after_rename.append(_time(lambda: render(store, STUDY)))
    print(f"  render after a rename: {statistics.median(after_rename):.3f}")
    assert _same(store), "the tables from the kept sums differ from the tables computed from the faces"


def _some_faces(store: LabelStore, n: int) -> list[int]:
    from sqlalchemy import select

    from db.schema import Face

    stmt = select(Face.id).where(Face.track_id.is_not(None)).order_by(Face.id.desc()).limit(n)
    return list(store.transaction(lambda s: list(s.scalars(stmt)), write=False))


def page(url: str, data: Path, runs: int) -> None:
    from streamlit.testing.v1 import AppTest

    os.environ.update(DATABASE_URL=url, AFFECTLAB_STUDY=STUDY, AFFECTLAB_DATA_DIR=str(data))
    os.environ.setdefault("AFFECTLAB_WEIGHTS_DIR", tempfile.mkdtemp(prefix="affectlab-bench-w-"))
    at = AppTest.from_file(str(Path(__file__).resolve().parents[1] / "webapp" / "app.py"), default_timeout=600)
    at.run()
    at.switch_page("views/classroom.py")
    first = _time(at.run)
    assert not at.exception, [e.value for e in at.exception]
    assert at.dataframe, "the page showed no table"
    times = [_time(at.run) for _ in range(runs)]
    print(
        f"page (AppTest, whole app script): first render {first:.2f} s (new process), "
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
    up = _time(store.upgrade)  # the bench's own copy: a database filled before the newest migration
    print(f"upgrade (0028 fills the class sums of every recording, if not yet): {up:.1f} s")
    try:
        tables = store.classroom.class_tables(STUDY)
        n = {r["media_id"] for r in tables.minutes}
        print(f"study {STUDY!r}: {len(n)} recordings, {len(tables.minutes)} student-minute rows")
        services(store, args.runs)
        writes(store, args.runs)
    finally:
        store.close()
    page(url, data, args.runs)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
