"""Repository functions of annotation rows: append one, read those of faces, tracks or a study (never commit)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from sqlalchemy import or_, select
from sqlalchemy.orm import Session

from db.rows import AnnotationRow
from db.schema import Annotation, Annotator, Face, FaceStatus, Media, Track


def annotations_in_study(session: Session, study_id: int, ids: Sequence[int]) -> set[int]:
    """Those of the annotation ``ids`` whose face or track belongs to the study.

    By primary keys only: the annotations, then their faces in the slim read model (``face_status``) and their tracks
    (``+ 0`` keeps the planner off the study's indexes, which would walk every face or track of the study).
    """
    if not ids:
        return set()
    rows = session.execute(select(Annotation.id, Annotation.face_id, Annotation.track_id).where(Annotation.id.in_(ids)))
    by_face: dict[int, list[int]] = {}
    by_track: dict[int, list[int]] = {}
    for aid, fid, tid in rows:
        if fid is not None:
            by_face.setdefault(int(fid), []).append(int(aid))
        elif tid is not None:
            by_track.setdefault(int(tid), []).append(int(aid))
    out: set[int] = set()
    if by_face:
        stmt = select(FaceStatus.face_id).where(
            FaceStatus.face_id.in_(list(by_face)), FaceStatus.study_id + 0 == study_id
        )
        out.update(a for f in session.scalars(stmt) for a in by_face[int(f)])
    if by_track:
        stmt = (
            select(Track.id)
            .join(Media, Track.media_id + 0 == Media.id)
            .where(Track.id.in_(list(by_track)), Media.study_id + 0 == study_id)
        )
        out.update(a for t in session.scalars(stmt) for a in by_track[int(t)])
    return out


def annotations_of_study(session: Session, study_id: int) -> list[tuple[Annotation, str]]:
    """Every annotation row of a study (face-level and track-level) with its annotator's name, oldest first."""
    face_level = (
        select(Annotation.id)
        .join(Face, Annotation.face_id == Face.id)
        .join(Media, Face.media_id == Media.id)
        .where(Media.study_id == study_id)
    )
    track_level = (
        select(Annotation.id)
        .join(Track, Annotation.track_id == Track.id)
        .join(Media, Track.media_id == Media.id)
        .where(Media.study_id == study_id)
    )
    stmt = (
        select(Annotation, Annotator.name)
        .join(Annotator, Annotation.annotator_id == Annotator.id)
        .where(Annotation.id.in_(face_level.union_all(track_level).scalar_subquery()))
        .order_by(Annotation.id)
    )
    return [(a, name) for a, name in session.execute(stmt)]


def annotations_of_targets(
    session: Session, face_ids: Iterable[int] = (), track_ids: Iterable[int] = ()
) -> list[tuple[Annotation, str]]:
    """Annotation rows of the given faces and tracks with their annotators' names, oldest first."""
    faces, tracks = list(face_ids), list(track_ids)
    cond = []
    if faces:
        cond.append(Annotation.face_id.in_(faces))
    if tracks:
        cond.append(Annotation.track_id.in_(tracks))
    if not cond:
        return []
    stmt = (
        select(Annotation, Annotator.name)
        .join(Annotator, Annotation.annotator_id == Annotator.id)
        .where(or_(*cond))
        .order_by(Annotation.id)
    )
    return [(a, name) for a, name in session.execute(stmt)]


def annotation_row(a: Annotation, annotator: str) -> AnnotationRow:
    """The frozen row of an annotation."""
    return AnnotationRow(
        id=a.id,
        face_id=a.face_id,
        track_id=a.track_id,
        annotator=annotator,
        kind=a.kind,
        reverts_id=a.reverts_id,
        label=a.label,
        valence=a.valence,
        arousal=a.arousal,
        engagement=a.engagement,
        note=a.note,
        source=a.source,
        created_at=a.created_at,
    )


def add_annotation(
    session: Session,
    *,
    annotator: Annotator,
    face_id: int | None = None,
    track_id: int | None = None,
    kind: str = "set",
    reverts_id: int | None = None,
    label: str | None = None,
    valence: float | None = None,
    arousal: float | None = None,
    engagement: float | None = None,
    note: str | None = None,
    source: str | None = None,
) -> Annotation:
    """Appends one annotation row (values must already be validated)."""
    row = Annotation(
        face_id=face_id,
        track_id=track_id,
        annotator_id=annotator.id,
        kind=kind,
        reverts_id=reverts_id,
        label=label,
        valence=valence,
        arousal=arousal,
        engagement=engagement,
        note=note,
        source=source,
    )
    session.add(row)
    session.flush()
    return row
