"""The append-only correction history: the checked corrections and undos added to it, and their values' checks.

The rules that resolve the history into one value per face and field live in :mod:`db.resolution`; the face table
that shows them in :mod:`db.face_table` (both re-exported here for the callers that read them with the history).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from db import repo
from db.errors import InvalidLabelError, NothingToUndoError, StoreError

# Re-exported for the callers that read the resolved history with the corrections (one import for both).
from db.face_table import ModelKey as ModelKey
from db.face_table import choose_model as choose_model
from db.face_table import count_model_runs as count_model_runs
from db.face_table import face_labels as face_labels
from db.face_table import pick_predictions as pick_predictions
from db.resolution import FIELDS as FIELDS
from db.resolution import NUMERIC_FIELDS as NUMERIC_FIELDS
from db.resolution import Resolved as Resolved
from db.resolution import active_corrections as active_corrections
from db.resolution import judgements_for_face as judgements_for_face
from db.resolution import resolve as resolve
from db.rows import AnnotationRow
from db.schema import Annotation, Annotator, Face, Media, Prediction, Track
from models.registry import EMOTIONS_8, ENGAGEMENT_LEVELS

ENGAGEMENT_TOLERANCE = 0.01
"""Engagement values within this distance of a level (0.333, 0.667) are read as that level."""


# ---------------------------------------------------------------------------------------------------- validation


def allowed_labels(
    session: Session, *, face_id: int | None = None, track_id: int | None = None, study_id: int | None = None
) -> list[str]:
    """Classes a correction may use: the 8 AffectNet classes plus any other class the target's models predicted.

    The target is a face, a track (its faces) or a whole study; the extra classes only matter for fine-tuned heads
    with classes of their own.
    """
    labels = list(EMOTIONS_8)
    if face_id is None and track_id is None and study_id is None:
        return labels
    stmt = select(Prediction.label).join(Face, Prediction.face_id == Face.id)
    if face_id is not None:
        stmt = stmt.where(Face.id == face_id)
    elif track_id is not None:
        stmt = stmt.where(Face.track_id == track_id)
    else:
        stmt = stmt.join(Media, Face.media_id == Media.id).where(Media.study_id == study_id)
    for (label,) in session.execute(stmt.distinct()):
        if label and label not in labels:
            labels.append(label)
    return labels


def normalize_label(value: str | None, allowed: Sequence[str]) -> str | None:
    """The canonical spelling of a class name (case and spaces ignored), None for empty.

    Raises:
        InvalidLabelError: For a name that is not a known class.
    """
    if value is None:
        return None
    text = str(value).strip()
    if not text:
        return None
    by_key = {a.casefold(): a for a in allowed}
    canonical = by_key.get(text.casefold())
    if canonical is None:
        raise InvalidLabelError("label", value, "use one of " + ", ".join(allowed))
    return canonical


def _as_float(field: str, value: Any, allowed: str) -> float | None:
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    try:
        x = float(value)
    except (TypeError, ValueError):
        raise InvalidLabelError(field, value, allowed) from None
    if math.isnan(x):
        return None
    if math.isinf(x):
        raise InvalidLabelError(field, value, allowed)
    return x


def normalize_va(field: str, value: Any) -> float | None:
    """A valence or arousal value in [-1, 1], None for empty.

    Raises:
        InvalidLabelError: For a non-number or a value outside [-1, 1].
    """
    allowed = "a number from -1 to 1"
    x = _as_float(field, value, allowed)
    if x is not None and not -1.0 <= x <= 1.0:
        raise InvalidLabelError(field, value, allowed)
    return x


def normalize_engagement(value: Any) -> float | None:
    """An engagement level snapped to 0, 0.33, 0.66 or 1, None for empty.

    Raises:
        InvalidLabelError: For anything not within 0.01 of a level.
    """
    allowed = "one of EngageWild's levels 0, 0.33, 0.66, 1"
    x = _as_float("engagement", value, allowed)
    if x is None:
        return None
    for level in ENGAGEMENT_LEVELS:
        if abs(x - level) <= ENGAGEMENT_TOLERANCE:
            return level
    raise InvalidLabelError("engagement", value, allowed)


def correction_values(
    allowed: Callable[[], Sequence[str]],
    label: str | None,
    valence: Any,
    arousal: Any,
    engagement: Any,
    note: str | None,
) -> dict[str, Any]:
    """The checked values of one correction, a key per field of :data:`FIELDS` (None: not set by it).

    Args:
        allowed: The classes the target may take (called only when a label is given).
        label: A class name (any case).
        valence: A number in [-1, 1].
        arousal: A number in [-1, 1].
        engagement: One of the engagement levels.
        note: Free text (stripped; blank is no note).

    Raises:
        InvalidLabelError: For an unknown class, a value out of range, or a correction that sets nothing.
    """
    values = {
        "label": normalize_label(label, allowed()) if label is not None else None,
        "valence": normalize_va("valence", valence),
        "arousal": normalize_va("arousal", arousal),
        "engagement": normalize_engagement(engagement),
        "note": note.strip() if isinstance(note, str) and note.strip() else None,
    }
    if all(v is None for v in values.values()):
        raise InvalidLabelError("correction", None, "give at least one of label, valence, arousal, engagement or note")
    return values


# ---------------------------------------------------------------------------------------------------- corrections


def add_correction(
    session: Session,
    annotator: str,
    *,
    face_id: int | None = None,
    track_id: int | None = None,
    source: str,
    label: str | None = None,
    valence: Any = None,
    arousal: Any = None,
    engagement: Any = None,
    note: str | None = None,
) -> AnnotationRow:
    """Appends ``annotator``'s correction of one face or one track (exactly one of the ids), values checked.

    Raises:
        NotFoundError: If the face or track does not exist.
        InvalidLabelError: For a class the target may not take, a value out of range, or nothing set.
    """
    if face_id is not None:
        repo.get_row(session, Face, face_id, "face")
    else:
        repo.get_row(session, Track, int(track_id or 0), "track")

    def allowed() -> list[str]:
        return allowed_labels(session, face_id=face_id, track_id=track_id)

    values = correction_values(allowed, label, valence, arousal, engagement, note)
    who = repo.get_or_create_annotator(session, annotator)
    row = repo.add_annotation(session, annotator=who, source=source, face_id=face_id, track_id=track_id, **values)
    return repo.annotation_row(row, who.name)


def undo(
    session: Session,
    annotator: str,
    *,
    face_id: int | None = None,
    track_id: int | None = None,
    annotation_id: int | None = None,
    source: str,
) -> AnnotationRow:
    """Reverts ``annotator``'s newest active correction of a face or track (or the one given) with an undo row.

    Give exactly one of ``face_id``, ``track_id`` or ``annotation_id``.

    Raises:
        StoreError: Unless exactly one target is given.
        NotFoundError: For an unknown ``annotation_id``.
        NothingToUndoError: If the annotator has no active correction there (or ``annotation_id`` is not one).
    """
    if (face_id is None) + (track_id is None) + (annotation_id is None) != 2:
        raise StoreError("undo needs exactly one of face_id, track_id or annotation_id")
    who = session.scalar(select(Annotator).where(Annotator.key == repo.annotator_key(annotator)))
    if annotation_id is not None:
        a = repo.get_row(session, Annotation, annotation_id, "annotation")
        face_id, track_id = a.face_id, a.track_id
    rows = repo.annotations_of_targets(
        session, [face_id] if face_id is not None else [], [track_id] if track_id is not None else []
    )
    mine = who.name if who is not None else annotator
    active = active_corrections(a for a, name in rows if name == mine and a.face_id == face_id)
    target = f"face {face_id}" if face_id is not None else f"track {track_id}"
    if who is None or not active:
        raise NothingToUndoError(f"{annotator!r} has no correction of {target} to undo")
    if annotation_id is not None and annotation_id not in active:
        raise NothingToUndoError(
            f"annotation {annotation_id} is not an active correction of {annotator!r} (already undone, "
            "another annotator's, or an undo itself)"
        )
    revert = annotation_id if annotation_id is not None else max(active)
    row = repo.add_annotation(
        session, annotator=who, face_id=face_id, track_id=track_id, kind="undo", reverts_id=revert, source=source
    )
    return repo.annotation_row(row, who.name)


_UNDO_PAGE = 200
"""Rows of an annotator read at a time by :func:`last_correction`."""


def last_correction(session: Session, study: str, annotator: str) -> AnnotationRow | None:
    """``annotator``'s newest correction in a study that is still active (what :func:`undo` reverts), or None.

    Raises:
        StudyNotFoundError: For an unknown study.
    """
    st = repo.get_study(session, study)
    aid = session.scalar(select(Annotator.id).where(Annotator.key == repo.annotator_key(annotator)))
    if aid is None:
        return None
    # Rule 1 read newest first: a "set" row is active unless a later undo of the annotator names it (an undo always
    # comes after the row it reverts), so the first unreverted row of the study met going back is the newest active.
    # Pages of the annotator's own rows by (annotator_id, id): the cost does not grow with the study's history.
    reverted: set[int] = set()
    before: int | None = None
    while True:
        stmt = select(Annotation).where(Annotation.annotator_id == aid)
        if before is not None:
            stmt = stmt.where(Annotation.id < before)
        page = list(session.scalars(stmt.order_by(Annotation.id.desc()).limit(_UNDO_PAGE)))
        if not page:
            return None
        mine = repo.annotations_in_study(session, st.id, [a.id for a in page if a.kind != "undo"])
        for a in page:
            if a.kind == "undo":
                if a.reverts_id is not None:
                    reverted.add(a.reverts_id)
            elif a.id not in reverted and a.id in mine:
                return repo.annotation_row(a, annotator)
        before = page[-1].id
