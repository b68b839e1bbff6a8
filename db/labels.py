"""The append-only correction history: its resolution rules, and the checked corrections and undos added to it.

Resolution rules (the one place they are written):

1. History is kept per target (a face or a track) and annotator, in id order. A ``set`` row adds a correction; an
   ``undo`` row removes the row named by its ``reverts_id`` from that annotator's active corrections
   (:func:`active_corrections`, which :func:`resolve`, :func:`undo` and :func:`last_correction` all use).
2. An annotator's current value of a field (label, valence, arousal, engagement, note) is the field of their latest
   active row that sets it, so a row that only sets valence keeps the class set before it.
3. For a face, each annotator's own current value wins; a field the annotator never set on the face comes from their
   current value on the face's track (a track-level correction applies to each face without its own).
4. Across annotators the class is the majority vote (a tie goes to the class voted most recently) and the numbers
   are the mean. Without any annotator the model's prediction is used, and the provenance says ``model``.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from db import repo
from db.crops import crop_available
from db.errors import InvalidLabelError, NothingToUndoError, StoreError
from db.rows import AnnotationRow, FaceLabel, Judgement
from db.schema import Annotation, Annotator, EngagementWindow, Face, Media, Prediction, StudyStatus, Track
from models.registry import EMOTIONS_8, ENGAGEMENT_LEVELS

FIELDS = ("label", "valence", "arousal", "engagement", "note")
NUMERIC_FIELDS = ("valence", "arousal", "engagement")
MAX_SD = {"valence": 1.0, "arousal": 1.0, "engagement": 0.5}
"""Largest possible standard deviation of each bounded field (half its range), for the agreement score."""

ENGAGEMENT_TOLERANCE = 0.01
"""Engagement values within this distance of a level (0.333, 0.667) are read as that level."""

ModelKey = tuple[str, str, str | None]
"""``(model, weights_hash, model_version)``: which model run a prediction comes from."""

_TrackWindows = tuple[float | None, list[tuple[float, float, float]]]
"""A track's engagement score and its windows ``(start_s, end_s, p_engaged)``."""


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


# ---------------------------------------------------------------------------------------------------- resolution


class Correction(Protocol):
    """What the active-correction rule reads of an annotation row (:class:`db.schema.Annotation` has it)."""

    @property
    def id(self) -> int:
        """The row's id (rows are applied in id order)."""
        ...

    @property
    def kind(self) -> str:
        """``set`` or ``undo``."""
        ...

    @property
    def reverts_id(self) -> int | None:
        """The row an ``undo`` reverts."""
        ...


C = TypeVar("C", bound=Correction)


def active_corrections(rows: Iterable[C]) -> dict[int, C]:
    """Rule 1: the rows of one annotator's history that are still active, by id (in id order).

    Args:
        rows: One annotator's rows, in any order: of one target, or of several (an undo names the id it reverts,
            and ids are unique, so targets cannot mix up).

    Returns:
        ``{id: row}`` of the ``set`` rows that no later ``undo`` row reverted; the newest active one is ``max``.
    """
    active: dict[int, C] = {}
    for a in sorted(rows, key=lambda r: r.id):
        if a.kind == "undo":
            if a.reverts_id is not None:
                active.pop(a.reverts_id, None)
        else:
            active[a.id] = a
    return active


@dataclass(frozen=True)
class _Value:
    value: Any
    annotation_id: int


Resolved = dict[tuple[str, int], dict[str, dict[str, _Value]]]
"""``{("face"|"track", id): {annotator: {field: value}}}``, what :func:`resolve` returns."""


def resolve(rows: Iterable[tuple[Any, str]]) -> Resolved:
    """Each annotator's current field values per target (rules 1 and 2), from history rows in any order.

    Args:
        rows: ``(annotation, annotator_name)`` pairs; an annotation (an ORM row, or a result row of the same
            columns) has ``id, face_id, track_id, kind, reverts_id`` and the fields of :data:`FIELDS`.

    Returns:
        ``{("face"|"track", id): {annotator: {field: value}}}``; a field no active row sets is absent.
    """
    history: dict[tuple[tuple[str, int], str], list[Any]] = {}
    for a, who in rows:
        target = ("face", a.face_id) if a.face_id is not None else ("track", int(a.track_id or 0))
        history.setdefault((target, who), []).append(a)
    out: Resolved = {}
    for (target, who), mine in history.items():
        rows_by_id = active_corrections(mine)
        current: dict[str, _Value] = {}
        for ident in sorted(rows_by_id, reverse=True):
            row = rows_by_id[ident]
            for f in FIELDS:
                v = getattr(row, f)
                if f not in current and v is not None:
                    current[f] = _Value(v, ident)
        if current:
            out.setdefault(target, {})[who] = current
    return out


def judgements_for_face(
    resolved: Resolved, face_id: int, track_id: int | None
) -> list[tuple[Judgement, dict[str, int]]]:
    """Each annotator's current values on a face (own first, then the track's), with the annotation id per field."""
    own = resolved.get(("face", face_id), {})
    trk = resolved.get(("track", track_id), {}) if track_id is not None else {}
    out = []
    for who in sorted(set(own) | set(trk)):
        values: dict[str, Any] = {}
        ids: dict[str, int] = {}
        from_track = set()
        for f in FIELDS:
            v = own.get(who, {}).get(f)
            if v is None:
                v = trk.get(who, {}).get(f)
                if v is not None:
                    from_track.add(f)
            if v is not None:
                values[f] = v.value
                ids[f] = v.annotation_id
        if values:
            out.append((Judgement(annotator=who, from_track=frozenset(from_track), **values), ids))
    return out


def majority(votes: Sequence[tuple[str, int]]) -> tuple[str, float] | None:
    """The majority class of ``(label, annotation_id)`` votes (ties: most recent vote) and its share."""
    if not votes:
        return None
    counts = Counter(v for v, _ in votes)
    latest = {v: max(i for w, i in votes if w == v) for v in counts}
    best = max(counts, key=lambda v: (counts[v], latest[v]))
    return best, counts[best] / len(votes)


def numeric_agreement(values: Sequence[float], field: str) -> float | None:
    """``1 - sd / max_sd`` of the annotators' values (None with fewer than two)."""
    if len(values) < 2:
        return None
    mean = sum(values) / len(values)
    sd = math.sqrt(sum((v - mean) ** 2 for v in values) / len(values))
    return max(0.0, 1.0 - sd / MAX_SD[field])


# ---------------------------------------------------------------------------------------------------- face table


def choose_model(session: Session, study_id: int, model: str | None = None) -> ModelKey | None:
    """The model run a study's rows follow: the one with most predictions (ties: the most recent).

    Without ``model`` this is the run kept by :mod:`db.status` (one row read), which it keeps equal to
    :func:`count_model_runs`; a study without a kept row is counted.

    Args:
        session: An open session.
        study_id: The study.
        model: Restrict to runs of this model name.
    """
    if model is None:
        kept = session.get(StudyStatus, study_id)
        if kept is not None:
            return (kept.model, kept.weights_hash or "", kept.model_version) if kept.model is not None else None
    return count_model_runs(session, study_id, model)


def count_model_runs(session: Session, study_id: int, model: str | None = None) -> ModelKey | None:
    """:func:`choose_model` counted over the study's predictions (what :mod:`db.status` keeps)."""
    run = (Prediction.model, Prediction.weights_hash, Prediction.model_version)
    stmt = (
        select(*run, func.count(), func.max(Prediction.id))
        .join(Face, Prediction.face_id == Face.id)
        .join(Media, Face.media_id == Media.id)
        .where(Media.study_id == study_id)
        .group_by(*run)
    )
    if model is not None:
        stmt = stmt.where(Prediction.model == model)
    runs = list(session.execute(stmt))
    if not runs:
        return None
    best = max(runs, key=lambda r: (r[3], r[4]))
    return (best[0], best[1], best[2])


P = TypeVar("P")


def pick_predictions(preds: Iterable[P], primary: ModelKey | None) -> dict[int, P]:
    """The prediction each face's row follows: its latest of the ``primary`` run, else its latest of any run.

    Args:
        preds: Prediction rows (ORM rows or result rows with ``face_id, model, weights_hash, model_version``),
            oldest first.
        primary: The study's model run (:func:`choose_model`).
    """
    by_face: dict[int, Any] = {}
    for p in preds:  # oldest first: later rows win, the primary run wins over all
        row: Any = p
        cur = by_face.get(row.face_id)
        is_primary = (row.model, row.weights_hash, row.model_version) == primary
        cur_primary = cur is not None and (cur.model, cur.weights_hash, cur.model_version) == primary
        if cur is None or is_primary or not cur_primary:
            by_face[row.face_id] = row
    return by_face


def face_labels(
    session: Session, study_id: int, model: str | None = None, *, face_ids: Sequence[int] | None = None
) -> tuple[list[FaceLabel], ModelKey | None]:
    """The faces of a study with their prediction and current labels.

    Args:
        session: An open session.
        study_id: The study.
        model: The model whose predictions to use (default: the study's most used run, see :func:`choose_model`).
            A face without a prediction of that run uses its latest prediction of any model.
        face_ids: Only these faces (the web app's single-face views); default: all.

    Returns:
        The rows (by media, frame, face index) and the chosen model run.
    """
    primary = choose_model(session, study_id, model)
    if face_ids is None:
        faces_stmt = repo.faces_of_study(study_id)
    else:  # the faces lead (by primary key), never the study's media: ``+ 0`` keeps SQLite off ix_media_study_id
        faces_stmt = (
            select(Face, Media, Track.track_index)
            .join(Media, Face.media_id == Media.id)
            .outerjoin(Track, Face.track_id == Track.id)
            .where(Face.id.in_(list(face_ids)), Media.study_id + 0 == study_id)
            .order_by(Media.id, Face.frame, Face.face_index, Face.id)
        )
    face_rows = list(session.execute(faces_stmt))
    if face_ids is None:
        preds = repo.predictions_of_study(session, study_id)
        annotations = repo.annotations_of_study(session, study_id)
    else:
        ids = [f.id for f, _, _ in face_rows]
        preds = list(session.scalars(select(Prediction).where(Prediction.face_id.in_(ids)).order_by(Prediction.id)))
        tracks = {f.track_id for f, _, _ in face_rows if f.track_id is not None}
        annotations = repo.annotations_of_targets(session, ids, tracks)
    by_face = pick_predictions(preds, primary)
    resolved = resolve(annotations)
    crop_stmt = (
        select(Face.id).join(Media, Face.media_id == Media.id).where(Media.study_id == study_id, crop_available())
    )
    if face_ids is not None:
        crop_stmt = (
            select(Face.id)
            .join(Media, Face.media_id == Media.id)
            .where(Face.id.in_(list(face_ids)), Media.study_id + 0 == study_id, Face.crop_png.is_not(None))
        )
    has_crop = set(session.scalars(crop_stmt))
    # A video stored chunk by chunk (db/resumable.py) gets its engagement only at the end, as track windows, when its
    # predictions (append-only) are written already: a face's model engagement then comes from its track's windows.
    need = {
        face.track_id
        for face, _, _ in face_rows
        if face.track_id is not None and (pred := by_face.get(face.id)) is not None and pred.engagement is None
    }
    windows = _track_windows(session, need)
    rows = [
        _face_label(
            face,
            media,
            track_index,
            by_face.get(face.id),
            resolved,
            face.id in has_crop,
            _window_engagement(windows.get(face.track_id) if face.track_id is not None else None, face.time_s),
        )
        for face, media, track_index in face_rows
    ]
    return rows, primary


def _track_windows(session: Session, track_ids: set[int]) -> dict[int, _TrackWindows]:
    """Engagement score and windows ``(start_s, end_s, p)`` of tracks that have a score."""
    out: dict[int, _TrackWindows] = {}
    ids = sorted(track_ids)
    for i in range(0, len(ids), 500):
        part = ids[i : i + 500]
        for tid, score in session.execute(
            select(Track.id, Track.engagement_score).where(Track.id.in_(part), Track.engagement_score.is_not(None))
        ):
            out[int(tid)] = (score, [])
        stmt = (
            select(
                EngagementWindow.track_id, EngagementWindow.start_s, EngagementWindow.end_s, EngagementWindow.p_engaged
            )
            .where(EngagementWindow.track_id.in_(part))
            .order_by(EngagementWindow.id)
        )
        for tid, a, b, p in session.execute(stmt):
            if int(tid) in out:
                out[int(tid)][1].append((a, b, p))
    return out


def _window_engagement(track: _TrackWindows | None, time_s: float | None) -> float | None:
    """P(engaged) of the window holding ``time_s``, else the track's score (as the ingest stores it per face)."""
    if track is None:
        return None
    if time_s is not None:
        for a, b, p in track[1]:
            if a <= time_s <= b:
                return float(p)
    return track[0]


def _face_label(
    face: Any,
    media: Any,
    track_index: int | None,
    pred: Prediction | None,
    resolved: Any,
    has_crop: bool,
    track_engagement: float | None = None,
) -> FaceLabel:
    judged = judgements_for_face(resolved, face.id, face.track_id)
    judgements = tuple(j for j, _ in judged)
    votes = [(j.label, ids["label"]) for j, ids in judged if j.label is not None]
    maj = majority(votes)
    out: dict[str, Any] = {}
    if maj is not None:
        out.update(label=maj[0], label_source="human", label_annotators=len(votes))
        out["label_agreement"] = maj[1] if len(votes) > 1 else None
    else:
        out.update(label=pred.label if pred else None, label_source="model" if pred else "none")
        out.update(label_annotators=0, label_agreement=None)
    model_values = {
        "valence": pred.valence if pred else None,
        "arousal": pred.arousal if pred else None,
        "engagement": (pred.engagement if pred.engagement is not None else track_engagement) if pred else None,
    }
    for f in NUMERIC_FIELDS:
        vals = [getattr(j, f) for j in judgements if getattr(j, f) is not None]
        if vals:
            out[f] = sum(vals) / len(vals)
            out[f"{f}_source"], out[f"{f}_annotators"] = "human", len(vals)
            out[f"{f}_agreement"] = numeric_agreement(vals, f)
        else:
            out[f] = model_values[f]
            out[f"{f}_source"] = "model" if model_values[f] is not None else "none"
            out[f"{f}_annotators"], out[f"{f}_agreement"] = 0, None
    notes = [j.note for j in judgements if j.note]
    return FaceLabel(
        face_id=face.id,
        media_id=media.id,
        filename=media.filename,
        media_sha256=media.sha256,
        media_kind=media.kind,
        media_status=getattr(media, "analysis_status", "complete"),
        frame=face.frame,
        time_s=face.time_s,
        track_id=face.track_id,
        track_index=track_index,
        box=face.box,
        det_score=face.det_score,
        has_crop=has_crop,
        feature_model=face.feature_model,
        model=pred.model if pred else None,
        weights_hash=pred.weights_hash if pred else None,
        model_version=pred.model_version if pred else None,
        model_label=pred.label if pred else None,
        model_confidence=pred.confidence if pred else None,
        model_probs={k: float(v) for k, v in pred.probs.items()} if pred else None,
        model_valence=model_values["valence"],
        model_arousal=model_values["arousal"],
        model_engagement=model_values["engagement"],
        judgements=judgements,
        note=" | ".join(notes) if notes else None,
        **out,
    )


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
