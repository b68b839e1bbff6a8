"""The review queues' kept counts and the media items' row counts of the read model (:mod:`db.status`)."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from typing import Any

from sqlalchemy import and_, case, delete, func, insert, literal, select, update
from sqlalchemy.orm import Session

from db.schema import Face, FaceJudge, FaceStatus, Media, MediaTotals, Prediction, QueueCount, Study, Track
from db.status_sql import CHUNK, core_table, upsert

CountKey = tuple[int, int, str, str]
"""``(annotator_id, media_id, model_label, human_label)`` of a :class:`QueueCount` row (annotator 0: the study)."""
CountVec = list[int]
"""``[faces, uncertainty, valence, disagreement, skipped]``."""


def contributions(row: Any, marks: Sequence[tuple[int, bool, bool]], share: float) -> list[tuple[CountKey, CountVec]]:
    """What one face adds to the queue counts (see :class:`db.schema.QueueCount`).

    One to the study's row, and to the row of each annotator who judged or skipped it (their ``faces``: judged).
    """
    u = int(row.n_votes < (2 if row.route < share else 1))
    v = int(row.v_key is not None)
    dis = int(row.d_key is not None)
    labels = (row.model_label or "", row.human_label or "")
    out: list[tuple[CountKey, CountVec]] = [((0, row.media_id, *labels), [1, u, v, dis, 0])]
    for annotator, judged, skipped in marks:
        out.append(((annotator, row.media_id, *labels), [int(judged), u, v, dis, int(skipped and not judged)]))
    return out


def judge_marks(session: Session, face_ids: Sequence[int]) -> dict[int, list[tuple[int, bool, bool]]]:
    """``(annotator, judged, skipped)`` per face: who judged or skipped each face (:class:`db.schema.FaceJudge`)."""
    out: dict[int, list[tuple[int, bool, bool]]] = defaultdict(list)
    stmt = select(FaceJudge.face_id, FaceJudge.annotator_id, FaceJudge.judged, FaceJudge.skipped)
    for fid, a, j, sk in session.execute(stmt.where(FaceJudge.face_id.in_(face_ids))):
        out[fid].append((int(a), bool(j), bool(sk)))
    return out


class ValuesRow:
    """Attribute access to a :class:`FaceStatus` value dict."""

    def __init__(self, values: dict[str, Any]) -> None:
        self.__dict__.update(values)

    def __getattr__(self, name: str) -> Any:
        raise AttributeError(name)


def apply_counts(session: Session, study_id: int, delta: dict[CountKey, CountVec]) -> None:
    """Adds ``delta`` to the kept queue counts, atomically.

    One ``INSERT ... ON CONFLICT DO UPDATE`` adds to the row there is (or creates it), so that concurrent
    transactions never lose each other's changes; rows in key order, so that two never wait on each other in a cycle.
    """
    delta = {k: v for k, v in delta.items() if any(v)}
    if not delta:
        return
    names = ("faces", "uncertainty", "valence", "disagreement", "skipped")
    values = [
        {
            "study_id": study_id,
            "annotator_id": key[0],
            "media_id": key[1],
            "model_label": key[2],
            "human_label": key[3],
            **dict(zip(names, vec, strict=True)),
        }
        for key, vec in sorted(delta.items())
    ]
    table = core_table(QueueCount)
    stmt = upsert(session)(table)
    stmt = stmt.on_conflict_do_update(
        index_elements=["study_id", "annotator_id", "media_id", "model_label", "human_label"],
        set_={n: table.c[n] + stmt.excluded[n] for n in names},
    )
    for i in range(0, len(values), CHUNK):
        session.execute(stmt, values[i : i + CHUNK])


def recount_queues(session: Session, study_id: int) -> None:
    """Recomputes a study's queue counts from its rows (a double share change, a track deleted, a model change)."""
    session.execute(delete(QueueCount).where(QueueCount.study_id == study_id))
    share = float(session.scalar(select(Study.double_share).where(Study.id == study_id)) or 0.0)
    fs, fj = FaceStatus, FaceJudge
    u = case((fs.n_votes < case((fs.route < share, 2), else_=1), 1), else_=0)
    v = case((fs.v_key.is_not(None), 1), else_=0)
    dis = case((fs.d_key.is_not(None), 1), else_=0)
    ml, hl = func.coalesce(fs.model_label, ""), func.coalesce(fs.human_label, "")
    study = select(
        literal(0), fs.media_id, ml, hl, func.count(), func.sum(u), func.sum(v), func.sum(dis), literal(0)
    ).where(fs.study_id == study_id)
    sk = case((and_(fj.skipped, ~fj.judged), 1), else_=0)
    judged = case((fj.judged, 1), else_=0)
    mine = (
        select(
            fj.annotator_id,
            fs.media_id,
            ml,
            hl,
            func.sum(judged),
            func.sum(u),
            func.sum(v),
            func.sum(dis),
            func.sum(sk),
        )
        .join(fs, fs.face_id == fj.face_id)
        .where(fj.study_id == study_id)
    )
    rows = [
        *session.execute(study.group_by(fs.media_id, ml, hl)),
        *session.execute(mine.group_by(fj.annotator_id, fs.media_id, ml, hl)),
    ]
    names = ("annotator_id", "media_id", "model_label", "human_label", "faces", "uncertainty", "valence")
    values = [
        {
            "study_id": study_id,
            **dict(
                zip(
                    (*names, "disagreement", "skipped"),
                    (int(r[0]), int(r[1]), str(r[2]), str(r[3]), *(int(x or 0) for x in r[4:])),
                    strict=True,
                )
            ),
        }
        for r in rows
    ]
    if values:
        session.execute(insert(QueueCount), values)


def recount_media(session: Session, media_ids: Sequence[int]) -> None:
    """Recomputes the row counts of media items."""
    session.execute(delete(MediaTotals).where(MediaTotals.media_id.in_(media_ids)))
    totals = []
    stmt = select(Media.id, Media.study_id, Media.recut_crops).where(Media.id.in_(media_ids))
    for mid, sid, recut in session.execute(stmt):
        faces = select(func.count()).select_from(Face).where(Face.media_id == mid)
        n_faces = session.scalar(faces) or 0
        totals.append(
            {
                "media_id": mid,
                "study_id": sid,
                "faces": n_faces,
                "predictions": session.scalar(
                    select(func.count()).select_from(Prediction).join(Face).where(Face.media_id == mid)
                )
                or 0,
                "tracks": session.scalar(select(func.count()).select_from(Track).where(Track.media_id == mid)) or 0,
                # a crop stored or re-cut from the kept recording (db.crops.crop_available)
                "crops": n_faces if recut else session.scalar(faces.where(Face.crop_png.is_not(None))) or 0,
                "features": session.scalar(faces.where(Face.features.is_not(None))) or 0,
            }
        )
    if totals:
        session.execute(insert(MediaTotals), totals)


def add_media(session: Session, media_ids: set[int], face_ids: Sequence[int], predictions: dict[int, int]) -> set[int]:
    """Moves media items' kept totals by faces and predictions just inserted (``predictions``: face id -> count).

    What a stretch of a video adds, counted over its own rows instead of the whole recording (:func:`recount_media`
    per stretch grew with the recording: ~1.2 s at 282k faces). Returns the media items without kept totals yet,
    which the caller recounts.
    """
    if not media_ids:
        return set()
    kept = {
        int(m): bool(r)
        for m, r in session.execute(
            select(MediaTotals.media_id, Media.recut_crops)
            .join(Media, Media.id == MediaTotals.media_id)
            .where(MediaTotals.media_id.in_(sorted(media_ids)))
        )
    }
    delta: dict[int, list[int]] = {m: [0, 0, 0, 0] for m in kept}  # faces, predictions, crops, features
    for i in range(0, len(face_ids), CHUNK):
        part = sorted(face_ids)[i : i + CHUNK]
        stmt = select(Face.media_id, func.count(), func.count(Face.crop_png), func.count(Face.features))
        for mid, n, crops, feats in session.execute(stmt.where(Face.id.in_(part)).group_by(Face.media_id)):
            if int(mid) in delta:
                acc = delta[int(mid)]
                acc[0] += int(n)
                acc[2] += int(n) if kept[int(mid)] else int(crops)  # a crop stored or re-cut (db.crops)
                acc[3] += int(feats)
    with_preds = sorted(predictions)
    for i in range(0, len(with_preds), CHUNK):
        part = with_preds[i : i + CHUNK]
        for fid, mid in session.execute(select(Face.id, Face.media_id).where(Face.id.in_(part))):
            if int(mid) in delta:
                delta[int(mid)][1] += predictions[int(fid)]
    t = MediaTotals
    for mid, (n, preds, crops, feats) in sorted(delta.items()):
        if n or preds:
            session.execute(
                update(t)
                .where(t.media_id == mid)
                .values(
                    faces=t.faces + n,
                    predictions=t.predictions + preds,
                    crops=t.crops + crops,
                    features=t.features + feats,
                )
            )
    return set(media_ids) - set(kept)
