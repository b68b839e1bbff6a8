"""The review queue: each annotator's queue and labels, corrections, skips and undo."""

from __future__ import annotations

import dataclasses

from db import review as review_rules
from db.errors import StudyNotFoundError
from db.review import ReviewFilter, ReviewQueue, StudySettings
from db.rows import AnnotationRow, FaceLabel
from db.services import LabelStore
from models.registry import EMOTIONS_8
from models.registry import ENGAGEMENT_LEVELS as ENGAGEMENT_LEVELS  # the review page's choices

ENGAGEMENT_NAMES: dict[float, str] = {
    0.0: "0 - disengaged",
    0.33: "0.33 - barely",
    0.66: "0.66 - engaged",
    1.0: "1 - highly",
}


def class_names(face: FaceLabel | None = None) -> list[str]:
    """The classes a correction of ``face`` can use: its model's classes, or the 8 AffectNet classes."""
    if face is not None and face.model_probs:
        names = list(face.model_probs)
        return names + [c for c in EMOTIONS_8 if c not in names]
    return list(EMOTIONS_8)


def review_queue(
    store: LabelStore, study: str, by: str, annotator: str | None, flt: ReviewFilter | None = None, limit: int = 50
) -> ReviewQueue:
    """``annotator``'s queue: faces they have neither labelled nor skipped, most in need first, with counts left."""
    try:
        return store.review_queue(study, by, limit=limit, annotator=annotator, flt=flt)  # type: ignore[arg-type]
    except StudyNotFoundError:
        return ReviewQueue(items=(), left=0, total=0, left_by_media={}, total_by_media={}, skipped=0)


def my_labels(store: LabelStore, study: str, annotator: str, flt: ReviewFilter | None = None) -> list[FaceLabel]:
    """The faces ``annotator`` has labelled in a study (own or through a track label), for browsing and editing."""
    base = flt or ReviewFilter()
    try:
        return store.browse(study, dataclasses.replace(base, labelled_by=annotator))
    except StudyNotFoundError:
        return []


def skip(store: LabelStore, annotator: str | None, face_id: int) -> None:
    """Keeps a face out of ``annotator``'s queue (stored: it holds across reloads and devices).

    Raises:
        ValueError: Without an annotator name.
    """
    if not annotator:
        raise ValueError("enter your name as annotator before skipping: skips are kept per annotator")
    store.skip(face_id, annotator)


def unskip_all(store: LabelStore, study: str, annotator: str) -> int:
    """Puts every face ``annotator`` skipped in the study back into their queue; returns how many."""
    try:
        return store.unskip(study, annotator)
    except StudyNotFoundError:
        return 0


def undo_last(store: LabelStore, study: str, annotator: str) -> AnnotationRow | None:
    """Reverts ``annotator``'s newest active correction in the study (from any tab or device); None if none."""
    try:
        last = store.last_correction(study, annotator)
    except StudyNotFoundError:
        return None
    if last is None:
        return None
    return store.undo(annotator, annotation_id=last.id)


def visible_face(face: FaceLabel, annotator: str | None, settings: StudySettings) -> FaceLabel:
    """What ``annotator`` may see of a face under the study's rules (independent labelling hides others' votes)."""
    return review_rules.visible_face(face, annotator, settings)


def correct(
    store: LabelStore,
    annotator: str,
    *,
    face_id: int | None = None,
    track_id: int | None = None,
    label: str | None = None,
    valence: float | None = None,
    arousal: float | None = None,
    engagement: float | None = None,
    note: str | None = None,
) -> AnnotationRow:
    """Appends a correction of one face, or of a whole track, by ``annotator``.

    Raises:
        ValueError: Without an annotator name, or without exactly one of face_id and track_id.
        InvalidLabelError: For a class or value out of range.
        NotFoundError: For a face or track that no longer exists.
    """
    name = (annotator or "").strip()
    if not name:
        raise ValueError("enter your name as annotator before the first correction")
    if (face_id is None) == (track_id is None):
        raise ValueError("a correction needs exactly one of a face or a track")
    kw = {"label": label, "valence": valence, "arousal": arousal, "engagement": engagement, "note": note}
    if track_id is not None:
        return store.correct_track(track_id, name, **kw)
    assert face_id is not None
    return store.correct_face(face_id, name, **kw)
