"""The review read model: per-face review state and kept counts, updated in the transaction of every write.

The queues, their counts, "my labels" and the statistics read :class:`db.schema.FaceStatus` (one row per face),
:class:`db.schema.FaceJudge` (who judged which face), :class:`db.schema.MediaCount` (faces per media item and model
class) and :class:`db.schema.StudyStatus` (the study's chosen model run) instead of resolving a whole study.

The one mechanism every write path goes through: the session notes what a flush wrote (new faces, predictions and
annotations, faces moved to a track; see :func:`_collect`), writes made with Core statements (bulk vote import,
tracks of a resumable video, deletes) say so with :func:`mark`, and just before the transaction commits
:func:`refresh` recomputes the rows of those faces with the written rules (:func:`db.labels.face_labels` on just
those faces), so the rows are always what the rules say and a rolled-back transaction leaves nothing behind.

What is recomputed: the faces a write touched (a track correction: the faces of the track); the kept counts of a
media item only when its faces or predictions change (they hold model values only, a vote never touches them); every
face of a study only when its chosen model run changes (a new model run outnumbers the old one, or a delete).
"""

from __future__ import annotations

import dataclasses
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import delete, event, func, insert, select
from sqlalchemy.orm import Session

from db.schema import (
    Annotation,
    Annotator,
    Face,
    FaceJudge,
    FaceStatus,
    Media,
    MediaCount,
    Prediction,
    StudyStatus,
)

_KEY = "affectlab_status"
OFF = "affectlab_status_off"
"""``session.info`` key: set to True on a session that writes a database without the read model (migrations)."""
CHUNK = 500


@dataclass
class _Dirty:
    faces: set[int] = field(default_factory=set)
    tracks: set[int] = field(default_factory=set)
    recount_faces: set[int] = field(default_factory=set)
    """Faces whose media item's kept counts change (new faces or predictions)."""
    media: set[int] = field(default_factory=set)
    """Media items whose kept counts change (a delete)."""
    runs: set[tuple[int, tuple[str, str, str | None]]] = field(default_factory=set)
    """``(face_id, model run)`` of new predictions."""
    studies: set[int] = field(default_factory=set)
    """Studies whose chosen model run must be checked again (a delete)."""


def _dirty(session: Session) -> _Dirty:
    d = session.info.get(_KEY)
    if d is None:
        d = session.info[_KEY] = _Dirty()
    return d  # type: ignore[no-any-return]


def mark(
    session: Session,
    *,
    faces: Iterable[int] = (),
    tracks: Iterable[int] = (),
    media: Iterable[int] = (),
    studies: Iterable[int] = (),
) -> None:
    """Notes a Core write the flush does not see: faces or tracks whose labels changed, media items whose faces went,
    studies whose chosen model run may have changed."""
    d = _dirty(session)
    d.faces.update(faces)
    d.tracks.update(tracks)
    d.media.update(media)
    d.studies.update(studies)


@event.listens_for(Session, "after_flush")
def _collect(session: Session, _ctx: Any) -> None:
    """Notes the faces a flush wrote (new faces, predictions, annotations; faces given a track)."""
    if session.info.get(OFF):
        return
    d: _Dirty | None = None
    for obj in session.new:
        if isinstance(obj, Face | Prediction | Annotation):
            d = d or _dirty(session)
            if isinstance(obj, Face):
                d.faces.add(obj.id)
                d.recount_faces.add(obj.id)
            elif isinstance(obj, Prediction):
                d.faces.add(obj.face_id)
                d.recount_faces.add(obj.face_id)
                d.runs.add((obj.face_id, (obj.model, obj.weights_hash, obj.model_version)))
            elif obj.face_id is not None:
                d.faces.add(obj.face_id)
            elif obj.track_id is not None:
                d.tracks.add(obj.track_id)
    for obj in session.dirty:
        if isinstance(obj, Face):
            (d or _dirty(session)).faces.add(obj.id)


@event.listens_for(Session, "before_commit")
def _before_commit(session: Session) -> None:
    if session.info.get(OFF):
        return
    if _KEY in session.info:
        session.flush()
        d = session.info.pop(_KEY)
        refresh(session, d)


@event.listens_for(Session, "after_rollback")
def _after_rollback(session: Session) -> None:
    session.info.pop(_KEY, None)


def _chunks(ids: Iterable[int]) -> Iterable[list[int]]:
    items = sorted(ids)
    for i in range(0, len(items), CHUNK):
        yield items[i : i + CHUNK]


def refresh(session: Session, d: _Dirty) -> None:
    """Recomputes the read model of what ``d`` names (see the module docstring)."""
    from db import labels

    faces = set(d.faces)
    for part in _chunks(d.tracks):
        faces.update(session.scalars(select(Face.id).where(Face.track_id.in_(part))))
    by_study: dict[int, set[int]] = defaultdict(set)
    media_of: dict[int, int] = {}
    for part in _chunks(faces | d.recount_faces):
        stmt = select(Face.id, Face.media_id, Media.study_id).join(Media, Face.media_id == Media.id)
        for fid, mid, sid in session.execute(stmt.where(Face.id.in_(part))):
            by_study[sid].add(fid)
            media_of[fid] = mid
    recount = set(d.media) | {media_of[f] for f in d.recount_faces if f in media_of}
    runs: dict[int, set[tuple[str, str, str | None]]] = defaultdict(set)
    study_of_face = {f: s for s, fs in by_study.items() for f in fs}
    for fid, run in d.runs:
        if fid in study_of_face:
            runs[study_of_face[fid]].add(run)
    for sid in set(by_study) | set(d.studies) | {s for (s,) in _studies_of_media(session, d.media)}:
        kept = session.get(StudyStatus, sid)
        current = (kept.model, kept.weights_hash or "", kept.model_version) if kept and kept.model else None
        if kept is not None and sid not in d.studies and runs[sid] <= {current}:
            continue
        fresh = labels.count_model_runs(session, sid)
        new = kept is None
        if kept is None:
            session.add(StudyStatus(study_id=sid, model=None, weights_hash=None, model_version=None, classes=[]))
            session.flush()
            kept = session.get(StudyStatus, sid)
        assert kept is not None
        if fresh != current or new:
            kept.model, kept.weights_hash, kept.model_version = fresh if fresh else (None, None, None)
            kept.classes = []
            session.flush()
            every = set(session.scalars(select(Face.id).join(Media, Face.media_id == Media.id).where(Media.study_id == sid)))
            by_study[sid] = every
            recount.update(session.scalars(select(Media.id).where(Media.study_id == sid)))
    for sid, ids in by_study.items():
        for part in _chunks(ids):
            _write(session, sid, part)
    for part in _chunks(recount):
        _recount(session, part)


def _studies_of_media(session: Session, media: set[int]) -> list[tuple[int]]:
    if not media:
        return []
    return [tuple(r) for r in session.execute(select(Media.study_id).where(Media.id.in_(sorted(media))).distinct())]  # type: ignore[misc]


def status_values(face: Any, study_id: int) -> dict[str, Any]:
    """The :class:`FaceStatus` columns of one resolved face (a :class:`db.rows.FaceLabel`)."""
    from db.review import _reason, route_value

    model_only = dataclasses.replace(
        face,
        label=face.model_label,
        label_source="model" if face.model_label is not None else "none",
        valence=face.model_valence,
    )
    u = _reason(face, "uncertainty", False)
    dis = _reason(face, "disagreement", False)
    val = _reason(face, "valence", False)
    mval = _reason(model_only, "valence", False)
    return {
        "face_id": face.face_id,
        "study_id": study_id,
        "media_id": face.media_id,
        "track_id": face.track_id,
        "route": route_value(study_id, face.face_id),
        "model_label": face.model_label,
        "model_confidence": face.model_confidence,
        "u_key": -u[1] if u else -0.0,
        "m_valence": mval[1] if mval else None,
        "human_label": face.label if face.label_source == "human" else None,
        "n_votes": face.label_annotators,
        "n_judges": len(face.judgements),
        "v_key": -val[1] if val else None,
        "d_key": -dis[1] if dis else None,
    }


def _write(session: Session, study_id: int, face_ids: Sequence[int]) -> None:
    from db import labels

    rows, _ = labels.face_labels(session, study_id, face_ids=face_ids)
    session.execute(delete(FaceStatus).where(FaceStatus.face_id.in_(face_ids)))
    session.execute(delete(FaceJudge).where(FaceJudge.face_id.in_(face_ids)))
    if not rows:
        return
    session.execute(insert(FaceStatus), [status_values(r, study_id) for r in rows])
    names = sorted({j.annotator for r in rows for j in r.judgements})
    if names:
        found = session.execute(select(Annotator.name, Annotator.id).where(Annotator.name.in_(names)))
        ids = {str(n): int(i) for n, i in found}
        judges = [
            {"face_id": r.face_id, "annotator_id": ids[j.annotator], "study_id": study_id}
            for r in rows
            for j in r.judgements
        ]
        session.execute(insert(FaceJudge), judges)
    kept = session.get(StudyStatus, study_id)
    if kept is not None:
        classes = list(kept.classes or [])
        for r in rows:
            for k in r.model_probs or {}:
                if k not in classes:
                    classes.append(k)
        if classes != list(kept.classes or []):
            kept.classes = classes


def _recount(session: Session, media_ids: Sequence[int]) -> None:
    session.execute(delete(MediaCount).where(MediaCount.media_id.in_(media_ids)))
    stmt = (
        select(
            FaceStatus.study_id,
            FaceStatus.media_id,
            FaceStatus.model_label,
            func.count(),
            func.count(FaceStatus.m_valence),
        )
        .where(FaceStatus.media_id.in_(media_ids))
        .group_by(FaceStatus.study_id, FaceStatus.media_id, FaceStatus.model_label)
    )
    rows = [
        {"study_id": s, "media_id": m, "model_label": lab, "n_faces": n, "n_valence": v}
        for s, m, lab, n, v in session.execute(stmt)
    ]
    if rows:
        session.execute(insert(MediaCount), rows)


def rebuild(session: Session, study_id: int | None = None) -> int:
    """Recomputes the read model of one study (or every study) from scratch; returns the faces written.

    Used by the migration that introduced it, and by ``python -m db`` maintenance should the rows ever be doubted.
    """
    from db.schema import Study

    studies = [study_id] if study_id is not None else list(session.scalars(select(Study.id)))
    n = 0
    for sid in studies:
        session.execute(delete(StudyStatus).where(StudyStatus.study_id == sid))
        session.execute(delete(FaceStatus).where(FaceStatus.study_id == sid))
        session.execute(delete(FaceJudge).where(FaceJudge.study_id == sid))
        session.execute(delete(MediaCount).where(MediaCount.study_id == sid))
        d = _Dirty(studies={sid})
        refresh(session, d)
        n += session.scalar(select(func.count()).select_from(FaceStatus).where(FaceStatus.study_id == sid)) or 0
    return n
