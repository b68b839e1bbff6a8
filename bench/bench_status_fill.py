"""The read model's refresh at ingest and the migration's fill: the set-based path against resolving every face.

At ingest nobody has judged a new face, so :func:`db.status_write.write_faces` takes its row from its prediction alone
(``_ModelOnly``); before, every face went through :func:`db.labels.face_labels`. Both are timed side by side in one
run on the same database (the old path by making every face count as judged: ``_people`` returns them all, which
is exactly the code that ran before), each in a transaction rolled back afterwards:

- ``ingest``: a new recording of ``--ingest`` faces with one prediction each, written by bulk inserts, then
  :func:`db.status.refresh` of what an ingest flush notes (its faces, their media item, their model run);
  milliseconds per face.
- ``fill``: :func:`db.status.rebuild` of the whole study (what migration 0008 runs on an existing database);
  seconds per 10^4 faces.

The study comes from ``bench/bench_review_state.py``'s fill (issue 19's shape: 3 % of the faces voted, 5 % of the
tracks, 0.2 % skipped).

Usage: ``python bench/bench_status_fill.py --faces 10000 100000 [--ingest 5000] [--url postgresql://...]``
"""

from __future__ import annotations

import argparse
import random
import sys
import tempfile
import time
from collections.abc import Callable
from contextlib import nullcontext
from pathlib import Path
from typing import Any
from unittest import mock

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from sqlalchemy import func, insert, select  # noqa: E402
from sqlalchemy.orm import Session  # noqa: E402

from bench.bench_review_state import STUDY, fill  # noqa: E402
from db import status  # noqa: E402
from db.schema import Face, Media, Prediction, Study, Track  # noqa: E402
from db.services import LabelStore  # noqa: E402
from models.registry import EMOTIONS_8  # noqa: E402


def _everyone(session: Session, faces: dict[int, Any]) -> set[int]:
    """The old path: every face resolved by the rules."""
    return set(faces)


def _rolled_back(store: LabelStore, fn: Callable[[Session], Any]) -> float:
    with Session(store.engine) as s:
        s.begin()
        t0 = time.perf_counter()
        fn(s)
        s.flush()
        took = time.perf_counter() - t0
        s.rollback()
    return took


def _ingest(n: int, s: Session) -> float:
    """A new recording of ``n`` faces (tracks of 300) with their predictions, then the refresh an ingest runs.

    Returns the refresh's seconds.
    """
    rng = random.Random(7)
    sid = s.scalar(select(Study.id).where(Study.name == STUDY))
    media = Media(study_id=sid, sha256="f" * 64, filename="new.mp4", kind="video", size_bytes=1)
    s.add(media)
    s.flush()
    tracks = []
    for t in range((n + 299) // 300):
        row = Track(media_id=media.id, track_index=t, n_faces=300)
        s.add(row)
        s.flush()
        tracks.append(row.id)
    first = (s.scalar(select(func.max(Face.id))) or 0) + 1
    ids = list(range(first, first + n))
    s.execute(
        insert(Face),
        [
            {
                "id": f,
                "media_id": media.id,
                "track_id": tracks[i // 300],
                "face_index": i % 16,
                "frame": i // 16,
                "time_s": i / 80,
                "x1": 0.0,
                "y1": 0.0,
                "x2": 9.0,
                "y2": 9.0,
                "det_score": 0.9,
            }
            for i, f in enumerate(ids)
        ],
    )
    preds = []
    for f in ids:
        top, conf = rng.choice(EMOTIONS_8), rng.uniform(0.2, 0.99)
        probs = {c: (conf if c == top else (1 - conf) / 7) for c in EMOTIONS_8}
        preds.append(
            {"face_id": f, "model": "m", "weights_hash": "h", "probs": probs, "label": top, "confidence": conf}
        )
    s.execute(insert(Prediction), preds)
    t0 = time.perf_counter()
    status.refresh(s, status._Dirty(faces=set(ids), recount_faces=set(ids), runs={(f, ("m", "h", None)) for f in ids}))
    return time.perf_counter() - t0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--faces", type=int, nargs="+", default=[10_000, 100_000])
    p.add_argument("--ingest", type=int, default=5000, help="faces of the recording ingested")
    p.add_argument("--url", help="a database URL (default: a temporary SQLite file)")
    args = p.parse_args(argv)
    print(f"{'study faces':>12} {'path':<12} {'ingest ms/face':>15} {'fill s/10^4 faces':>18}")
    for n in args.faces:
        with tempfile.TemporaryDirectory(prefix="affectlab-status-fill-") as tmp:
            store = LabelStore(args.url or f"sqlite:///{tmp}/s.sqlite3", data_dir=Path(tmp) / "data")
            store.upgrade()
            fill(store, n)
            got: dict[str, tuple[float, float]] = {}
            for path in ("rules", "set-based", "rules", "set-based"):  # alternated: a noisy machine hits both
                patch = mock.patch.object(status, "_people", _everyone) if path == "rules" else nullcontext()
                with patch:
                    box: dict[str, float] = {}
                    _rolled_back(store, lambda s, box=box: box.update(refresh=_ingest(args.ingest, s)))
                    fill_s = _rolled_back(store, lambda s: status.rebuild(s))
                prev = got.get(path)
                cur = (box["refresh"] / args.ingest * 1000, fill_s / n * 10_000)
                got[path] = cur if prev is None else (min(prev[0], cur[0]), min(prev[1], cur[1]))
            for path, (ms, fill_s) in got.items():
                print(f"{n:>12,} {path:<12} {ms:>15.3f} {fill_s:>18.2f}")
            r, f = got["rules"], got["set-based"]
            print(f"{n:>12,} {'ratio':<12} {r[0] / f[0]:>14.1f}x {r[1] / f[1]:>17.1f}x", flush=True)
            store.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
