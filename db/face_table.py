"""The face table: every face of a study with the model run it follows, its prediction and its resolved labels."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any, TypeVar

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from db import repo
from db.crops import crop_available
from db.resolution import NUMERIC_FIELDS, judgements_for_face, majority, numeric_agreement, resolve
from db.rows import FaceLabel
from db.schema import EngagementWindow, Face, Media, Prediction, StudyStatus, Track

ModelKey = tuple[str, str, str | None]
"""``(model, weights_hash, model_version)``: which model run a prediction comes from."""

_TrackWindows = tuple[float | None, list[tuple[float, float, float]]]
"""A track's engagement score and its windows ``(start_s, end_s, p_engaged)``."""


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
    need = [
        face
        for face, _, _ in face_rows
        if face.track_id is not None and (pred := by_face.get(face.id)) is not None and pred.engagement is None
    ]
    if face_ids is not None:  # a few faces: each one's window found by the index, not every window of its track
        at = windows_at(session, [(f.id, f.track_id, f.time_s) for f in need])
    else:
        windows = track_windows(session, {f.track_id for f in need if f.track_id is not None})
        at = {f.id: window_engagement(windows.get(f.track_id) if f.track_id else None, f.time_s) for f in need}
    rows = [
        face_label(face, media, track_index, by_face.get(face.id), resolved, face.id in has_crop, at.get(face.id))
        for face, media, track_index in face_rows
    ]
    return rows, primary


def windows_at(session: Session, faces: Sequence[tuple[int, int | None, float | None]]) -> dict[int, float | None]:
    """:func:`window_engagement` of some faces ``(id, track id, time)``, each found in SQL by the track's index.

    The first window by id holding the face's time, else its track's score (None for a track without one): what
    :func:`track_windows` and :func:`window_engagement` give, without reading every window of the faces' tracks (a
    track of 300 faces has ~170 windows of stride 1, so a Review page of 50 faces read ~8,500 rows for 50 values).
    """
    w = EngagementWindow
    out: dict[int, float | None] = {}
    tracked = {fid: (tid, t) for fid, tid, t in faces if tid is not None}
    ids = sorted(tracked)
    for i in range(0, len(ids), 500):
        part = ids[i : i + 500]
        first = (
            select(w.p_engaged)
            .where(w.track_id == Face.track_id, w.start_s <= Face.time_s, w.end_s >= Face.time_s)
            .order_by(w.id)
            .limit(1)
            .scalar_subquery()
        )
        stmt = (
            select(Face.id, Track.engagement_score, first)
            .join(Track, Track.id == Face.track_id)
            .where(Face.id.in_(part), Track.engagement_score.is_not(None))
        )
        for fid, score, p in session.execute(stmt):
            out[int(fid)] = float(p) if p is not None else score
    return out


def track_windows(session: Session, track_ids: set[int]) -> dict[int, _TrackWindows]:
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


def window_engagement(track: _TrackWindows | None, time_s: float | None) -> float | None:
    """P(engaged) of the window holding ``time_s``, else the track's score (as the ingest stores it per face)."""
    if track is None:
        return None
    if time_s is not None:
        for a, b, p in track[1]:
            if a <= time_s <= b:
                return float(p)
    return track[0]


def face_label(
    face: Any,
    media: Any,
    track_index: int | None,
    pred: Prediction | None,
    resolved: Any,
    has_crop: bool,
    track_engagement: float | None = None,
) -> FaceLabel:
    """One face's row: the model's values, each field resolved from the votes (:mod:`db.resolution`), provenance."""
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
        model_reused=bool(pred.reused) if pred else False,
        model_valence=model_values["valence"],
        model_arousal=model_values["arousal"],
        model_engagement=model_values["engagement"],
        judgements=judgements,
        note=" | ".join(notes) if notes else None,
        **out,
    )
