"""The class order of a study's ``prob_*`` columns, read from SQL: the model's classes, then the classes of votes."""

from __future__ import annotations

from sqlalchemy import exists, func, select
from sqlalchemy.orm import Session, aliased

from db.labels import ModelKey
from db.schema import Annotation, Face, Media, Prediction, Track
from models.registry import EMOTIONS_8


def export_classes(session: Session, study_id: int, primary: ModelKey | None, *, votes: bool = True) -> tuple[str, ...]:
    """The class order of a study's ``prob_*`` columns, from SQL (what :func:`db.quality.class_order` gives).

    The model's output classes: each run's class order (one stored prediction per run), the study's run first and
    then the others by their first prediction; no run: the 8 AffectNet classes. Then, sorted, the other classes of
    people's active votes (a ``set`` row no undo reverted; left out with ``votes=False``, and then no run gives no
    class). A class that only an outvoted or replaced vote named
    also gets its (empty) column here, where a whole-study read would leave it out.
    """
    run = (Prediction.model, Prediction.weights_hash, Prediction.model_version)
    stmt = (
        select(*run, func.min(Prediction.id))
        .join(Face, Prediction.face_id == Face.id)
        .join(Media, Face.media_id == Media.id)
        .where(Media.study_id == study_id)
        .group_by(*run)
    )
    runs = sorted(session.execute(stmt), key=lambda r: (tuple(r[:3]) != primary, r[3]))
    order: dict[str, None] = {}
    for r in runs:
        probs = session.scalar(select(Prediction.probs).where(Prediction.id == r[3]))
        for k in probs or {}:
            order.setdefault(str(k), None)
    if not votes:
        return tuple(order)
    labels = list(order) or list(EMOTIONS_8)
    undo = aliased(Annotation)
    active = (
        Annotation.kind == "set",
        Annotation.label.is_not(None),
        ~exists().where(undo.reverts_id == Annotation.id, undo.kind == "undo"),
    )
    on_faces = (
        select(Annotation.label)
        .join(Face, Annotation.face_id == Face.id)
        .join(Media, Face.media_id == Media.id)
        .where(Media.study_id == study_id, *active)
    )
    on_tracks = (
        select(Annotation.label)
        .join(Track, Annotation.track_id == Track.id)
        .join(Media, Track.media_id == Media.id)
        .where(Media.study_id == study_id, *active)
    )
    voted = {str(x) for x in session.scalars(on_faces.union(on_tracks))}
    return (*labels, *sorted(voted - set(labels)))
