"""Review actions at 10^4-10^6 faces: the kept review state (db/status.py) against the whole-study path it replaced.

A quick fill in the schema by bulk inserts (no crops or features; issue 19's shape: 16 students, tracks of 300 faces,
one prediction per face, 3 % of the faces voted by two of three annotators, 5 % of the tracks voted, 0.2 % skipped),
then the read model of the judged and skipped faces (``--rebuild``: :func:`db.status.rebuild` of everything, what
migration 0008 does), then each action through :class:`db.services.LabelStore`, median of 3. ``--old`` also times
the whole-study paths (``build_queue`` over ``face_labels``; ``compute_stats`` over every face; every face of
"my labels") on the same database.

Usage: ``python bench/bench_review_state.py --faces 10000 100000 [--old] [--url postgresql://...]``
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from sqlalchemy import insert, select  # noqa: E402

from db import labels, repo, review, status, status_counts  # noqa: E402
from db.queues import queue_reason  # noqa: E402
from db.review import ReviewFilter, StudySettings  # noqa: E402
from db.schema import (  # noqa: E402
    Annotation,
    Annotator,
    Face,
    FaceStatus,
    Media,
    Prediction,
    ReviewSkip,
    Study,
    StudyStatus,
    Track,
)
from db.services import LabelStore  # noqa: E402
from models.registry import EMOTIONS_8  # noqa: E402

STUDY = "scale"
PER_MEDIA = 16 * 5 * 3600
TRACK = 300


def _model_only_status(study_id: int, faces: list[dict[str, Any]], preds: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The read model rows of faces nobody judged, from their predictions (what :func:`db.status.status_values` gives
    such a face), for a fill faster than resolving each face."""
    out = []
    for f, p in zip(faces, preds, strict=True):
        face = SimpleNamespace(
            model_confidence=p["confidence"],
            label_source="model",
            label=p["label"],
            model_label=p["label"],
            valence=p["valence"],
        )
        u = queue_reason(face, "uncertainty", False)  # type: ignore[arg-type]
        v = queue_reason(face, "valence", False)  # type: ignore[arg-type]
        out.append(
            {
                "face_id": f["id"],
                "study_id": study_id,
                "media_id": f["media_id"],
                "track_id": f["track_id"],
                "route": review.route_value(study_id, f["id"]),
                "model_label": p["label"],
                "model_confidence": p["confidence"],
                "u_key": -u[1] if u else -0.0,
                "human_label": None,
                "n_votes": 0,
                "n_judges": 0,
                "v_key": -v[1] if v else None,
                "d_key": None,
            }
        )
    return out


def fill(store: LabelStore, n: int, seed: int = 0, *, rebuild: bool = False) -> dict[str, float]:
    rng = random.Random(seed)
    t0 = time.perf_counter()
    store.review.set_study_settings(STUDY, StudySettings(double_share=0.2))

    people = status._Dirty()

    def work(s: Any) -> None:
        sid = s.scalar(select(Study.id).where(Study.name == STUDY))
        anns = []
        for name in ("ann1", "ann2", "ann3"):
            s.add(Annotator(name=name, key=repo.annotator_key(name)))
        s.flush()
        anns = list(s.scalars(select(Annotator.id).order_by(Annotator.id)))
        face_id = s.scalar(select(Face.id).order_by(Face.id.desc()).limit(1)) or 0
        done = 0
        m = 0
        while done < n:
            size = min(PER_MEDIA, n - done)
            media = Media(study_id=sid, sha256=f"{m:064d}", filename=f"lecture{m}.mp4", kind="video", size_bytes=1)
            s.add(media)
            s.flush()
            tracks: list[int] = []
            for t in range((size + TRACK - 1) // TRACK):
                row = Track(media_id=media.id, track_index=t, n_faces=TRACK)
                s.add(row)
                s.flush()
                tracks.append(row.id)
            faces, preds, votes = [], [], []
            for i in range(size):
                face_id += 1
                frame = i // 16
                faces.append(
                    {
                        "id": face_id,
                        "media_id": media.id,
                        "track_id": tracks[i // TRACK],
                        "face_index": i % 16,
                        "frame": frame,
                        "time_s": frame / 5.0,
                        "x1": 0.0,
                        "y1": 0.0,
                        "x2": 10.0,
                        "y2": 10.0,
                        "det_score": 0.9,
                    }
                )
                top = rng.choice(EMOTIONS_8[:5] * 3 + EMOTIONS_8)
                conf = rng.uniform(0.2, 0.99)
                probs = {c: (conf if c == top else (1 - conf) / 7) for c in EMOTIONS_8}
                preds.append(
                    {
                        "face_id": face_id,
                        "model": "m",
                        "weights_hash": "h",
                        "probs": probs,
                        "label": top,
                        "confidence": conf,
                        "valence": rng.uniform(-1, 1),
                        "arousal": 0.1,
                    }
                )
                if rng.random() < 0.03:
                    for a in rng.sample(anns, 2):
                        votes.append({"face_id": face_id, "annotator_id": a, "label": rng.choice(EMOTIONS_8)})
            for part in range(0, size, 20000):
                s.execute(insert(Face), faces[part : part + 20000])
                s.execute(insert(Prediction), preds[part : part + 20000])
                if not rebuild:
                    rows = _model_only_status(sid, faces[part : part + 20000], preds[part : part + 20000])
                    s.execute(FaceStatus.__table__.insert(), rows)
            if votes:
                s.execute(insert(Annotation), [{**v, "kind": "set", "source": "bench"} for v in votes])
            tvotes = [
                {"track_id": t, "annotator_id": rng.choice(anns), "label": rng.choice(EMOTIONS_8), "kind": "set"}
                for t in tracks
                if rng.random() < 0.05
            ]
            if tvotes:
                s.execute(insert(Annotation), tvotes)
            skips = [{"face_id": f["id"], "annotator_id": anns[0]} for f in faces if rng.random() < 0.002]
            if skips:
                s.execute(insert(ReviewSkip), skips)
            people.faces.update(v["face_id"] for v in votes)
            people.faces.update(k["face_id"] for k in skips)
            people.tracks.update(v["track_id"] for v in tvotes)
            people.media.add(media.id)
            done += size
            m += 1

    store.transaction(work)
    t1 = time.perf_counter()
    if rebuild:
        store.transaction(lambda s: status.rebuild(s))
    else:

        def people_part(s: Any) -> None:
            sid = s.scalar(select(Study.id).where(Study.name == STUDY))
            s.add(StudyStatus(study_id=sid, model="m", weights_hash="h", model_version=None, classes=list(EMOTIONS_8)))
            s.flush()
            status.refresh(s, people)  # the judged and skipped faces through the rules
            status_counts.recount_queues(s, sid)

        store.transaction(people_part)
    t2 = time.perf_counter()
    return {"fill_s": t1 - t0, ("rebuild_s" if rebuild else "people_s"): t2 - t1}


def timed(fn: Callable[[], Any], repeat: int = 3) -> float:
    out = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t)
    return statistics.median(out)


def actions(store: LabelStore, old: bool) -> dict[str, float]:
    media_id = store.transaction(lambda s: s.scalar(select(Media.id).order_by(Media.id).limit(1)), write=False)
    track_id = store.transaction(lambda s: s.scalar(select(Track.id).order_by(Track.id).limit(1)), write=False)
    rng = random.Random(1)
    out: dict[str, float] = {}

    shown = [store.review.review_queue(STUDY, "uncertainty", annotator="ann1").items[0].face_id]

    def key_press() -> None:  # the vote on the face shown, the queue with its counts, the next face
        store.review.correct_face(shown[0], "ann1", label=rng.choice(EMOTIONS_8))
        q = store.review.review_queue(STUDY, "uncertainty", annotator="ann1")
        shown[0] = store.recordings.face(q.items[0].face_id).face_id

    out["open review"] = timed(lambda: store.review.review_queue(STUDY, "uncertainty", annotator="ann1"))
    out["key press"] = timed(key_press)
    out["skip"] = timed(
        lambda: store.review.skip(store.review.review_queue(STUDY, annotator="ann2", limit=1).items[0].face_id, "ann2")
    )
    out["queue valence"] = timed(lambda: store.review.review_queue(STUDY, "valence", annotator="ann1"))
    out["queue disagreement"] = timed(lambda: store.review.review_queue(STUDY, "disagreement", annotator="ann1"))
    out["filter file"] = timed(
        lambda: store.review.review_queue(STUDY, annotator="ann1", flt=ReviewFilter(media_id=media_id))
    )
    out["filter class"] = timed(
        lambda: store.review.review_queue(STUDY, annotator="ann1", flt=ReviewFilter(model_label="Anger"))
    )
    out["filter track"] = timed(
        lambda: store.review.review_queue(STUDY, annotator="ann1", flt=ReviewFilter(track_id=track_id))
    )
    out["filter labelled_by"] = timed(
        lambda: store.review.review_queue(STUDY, annotator="ann1", flt=ReviewFilter(labelled_by="ann2"))
    )
    out["my labels (first 50)"] = timed(lambda: store.review.labels_page(STUDY, "ann1", limit=50))
    later = [store.review.labels_page(STUDY, "ann1", limit=50).after]
    out["my labels (a later page)"] = timed(lambda: store.review.labels_page(STUDY, "ann1", after=later[0], limit=50))
    out["my labels by class (first 50)"] = timed(
        lambda: store.review.labels_page(STUDY, "ANN1", ReviewFilter(model_label="Anger"), limit=50)
    )
    if old:
        out["OLD my labels (all)"] = timed(
            lambda: store.review.browse(STUDY, ReviewFilter(labelled_by="ann1")), repeat=1
        )
    out["stats"] = timed(lambda: store.exports.stats(STUDY), repeat=1)
    if old:

        def old_queue() -> None:
            def work(s: Any) -> None:
                st = review.repo.get_study(s, STUDY)
                rows, _ = labels.face_labels(s, st.id)
                review.build_queue(
                    rows,
                    "uncertainty",
                    annotator="ann1",
                    skipped=review.skipped_faces(s, st.id, "ann1"),
                    settings=review.study_settings(s, STUDY),
                    study_id=st.id,
                )

            store.transaction(work, write=False)

        out["OLD open review"] = timed(old_queue, repeat=1)
        out["OLD stats (whole study)"] = timed(
            lambda: store.transaction(lambda s: store._stats(s, STUDY, None), write=False), repeat=1
        )
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--faces", type=int, nargs="+", default=[10_000, 100_000])
    p.add_argument("--old", action="store_true", help="also time the whole-study path")
    p.add_argument("--url", help="a database URL (default: a temporary SQLite file)")
    p.add_argument("--rebuild", action="store_true", help="fill the read model by db.status.rebuild (migration 0008)")
    args = p.parse_args(argv)
    rows: dict[int, dict[str, float]] = {}
    for n in args.faces:
        with tempfile.TemporaryDirectory(prefix="affectlab-review-state-") as tmp:
            store = LabelStore(args.url or f"sqlite:///{tmp}/s.sqlite3", data_dir=Path(tmp) / "data")
            store.upgrade()
            got = fill(store, n, rebuild=args.rebuild)
            got.update(actions(store, args.old))
            store.close()
            rows[n] = got
            print(n, {k: round(v, 4) for k, v in got.items()}, flush=True)
    keys = list(next(iter(rows.values())))
    ns = list(rows)
    print(f"{'action (seconds, median of 3)':<32}" + "".join(f"{n:>12,}" for n in ns) + "   growth")
    for k in keys:
        vals = [rows[n].get(k) for n in ns]
        growth = f"x{vals[-1] / vals[0]:.2f}" if vals[0] and vals[-1] else ""
        print(f"{k:<32}" + "".join(f"{v:>12.4f}" if v is not None else f"{'':>12}" for v in vals) + f"   {growth}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
