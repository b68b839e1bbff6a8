"""Deleting a media item or a track: the rows go by the database's cascades, the read model is told first.

Above :mod:`db.repo` and :mod:`db.status` (the read model needs the faces before they go).
"""

from __future__ import annotations

from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session

from db import class_sums, status
from db.repo import get_row
from db.schema import Annotation, Face, Media, Track


def delete_target(session: Session, model: type[Media] | type[Track], ident: int, what: str) -> dict[str, int]:
    """Deletes a media item or a track; the database cascades to its faces, annotations and the rest.

    Returns:
        What went: ``{what: 1, "faces": n, "face_annotations": n}``.

    Raises:
        NotFoundError: When there is no such row.
    """
    row = get_row(session, model, ident, what)
    media_id = row.id if isinstance(row, Media) else row.media_id
    study_id = session.scalar(select(Media.study_id).where(Media.id == media_id))
    status.mark(session, media=[media_id], studies=[study_id] if study_id is not None else [])
    class_sums.mark(session, media=[media_id], studies=[study_id] if study_id is not None else [])
    face_filter = Face.media_id == ident if model is Media else Face.track_id == ident
    if model is Track:
        status.forget(session, list(session.scalars(select(Face.id).where(face_filter))))
    face_ids = select(Face.id).where(face_filter).scalar_subquery()
    n_faces = session.scalar(select(func.count()).select_from(Face).where(face_filter)) or 0
    n_ann = session.scalar(select(func.count(Annotation.id)).where(Annotation.face_id.in_(face_ids))) or 0
    session.execute(delete(model).where(model.id == ident))
    return {what: 1, "faces": int(n_faces), "face_annotations": int(n_ann)}
