"""Speed of ``import-labels`` on SQLite: a labels file of 1,000,000 rows into a study of 1,000,000 faces.

The study (one media item, N faces without crops, features or predictions) is made with bulk inserts; the labels file
has ``face_id,label,valence,arousal`` for every face. It is imported twice by the same annotator: the first import
adds N votes, the second adds none (every value is the annotator's current one), which reads and resolves the N
rows written by the first. Printed per import: rows/s, total seconds and seconds inside the write transaction (the
time SQLite's write lock is held, waiting for it included).

Usage: python bench/bench_import.py [--rows 1000000] [--keep DIR]
"""

from __future__ import annotations

import argparse
import csv
import random
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from sqlalchemy import insert, select  # noqa: E402
from sqlalchemy.orm import Session  # noqa: E402

from db.schema import Face, Media, Study  # noqa: E402
from db.services import LabelStore  # noqa: E402
from models.registry import EMOTIONS_8  # noqa: E402


def make_study(store: LabelStore, n: int) -> list[int]:
    def work(s: Session) -> list[int]:
        s.execute(insert(Study).values(name="bench"))
        study_id = s.scalar(select(Study.id).where(Study.name == "bench"))
        s.execute(
            insert(Media).values(study_id=study_id, sha256="0" * 64, filename="bench.mp4", kind="video", size_bytes=1)
        )
        media_id = s.scalar(select(Media.id))
        box = {"face_index": 0, "x1": 0.0, "y1": 0.0, "x2": 1.0, "y2": 1.0, "det_score": 0.99}
        for start in range(0, n, 100_000):
            s.execute(
                insert(Face),
                [{**box, "media_id": media_id, "frame": i} for i in range(start, min(n, start + 100_000))],
            )
        return list(s.scalars(select(Face.id).order_by(Face.id)))

    return store.transaction(work)


def write_labels(path: Path, face_ids: list[int], seed: int = 0) -> None:
    rng = random.Random(seed)
    with path.open("w", newline="", encoding="utf-8") as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerow(["face_id", "label", "valence", "arousal"])
        for fid in face_ids:
            w.writerow([fid, rng.choice(EMOTIONS_8), round(rng.uniform(-1, 1), 3), round(rng.uniform(-1, 1), 3)])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rows", type=int, default=1_000_000)
    p.add_argument("--keep", default=None, help="folder to keep the database and the CSV in (default: a temp one)")
    args = p.parse_args()
    folder = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="bench-import-"))
    folder.mkdir(parents=True, exist_ok=True)
    db = folder / "bench.sqlite3"
    db.unlink(missing_ok=True)
    store = LabelStore(f"sqlite:///{db}", data_dir=folder)
    store.upgrade()
    t = time.perf_counter()
    ids = make_study(store, args.rows)
    print(f"study: {len(ids)} faces in {time.perf_counter() - t:.1f} s")
    labels = folder / "labels.csv"
    write_labels(labels, ids)
    print(f"labels file: {labels.stat().st_size / 1e6:.1f} MB, {len(ids)} rows")
    for run in ("first import", "same file again"):
        t = time.perf_counter()
        rep = store.review.import_labels("bench", labels, "alice")
        total = time.perf_counter() - t
        print(
            f"{run}: {rep.rows} rows, {rep.annotations_added} votes added, {rep.rows / total:,.0f} rows/s, "
            f"total {total:.1f} s, write transaction {rep.write_seconds:.2f} s"
        )
    store.close()
    print(f"database: {db.stat().st_size / 1e6:.0f} MB ({folder})")


if __name__ == "__main__":
    main()
