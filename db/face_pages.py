"""A study's face rows (:class:`db.rows.FaceLabel`) read in keyset pages by face id, in bounded memory.

:func:`db.labels.face_labels` loads a whole study into Python; the exports and the class tables of a large study
read it page by page instead: each page is one indexed query for its faces (``faces.id > last``, by id), one range
query for their predictions and one for their annotations (the page's faces, plus the track-level rows of the page's
tracks), then the rows are built with the rules of :mod:`db.labels` (:func:`db.labels.pick_predictions`,
:func:`db.labels.resolve` and its face-row builder), written once there. Only the current page is in memory.

Rows come in face id order (the order faces were stored, i.e. by recording and frame for an ingest in frame order).
"""

from __future__ import annotations

import threading
from bisect import bisect_left
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from itertools import pairwise
from typing import Any, NamedTuple

from sqlalchemy import Text, and_, cast, func, or_, select
from sqlalchemy.orm import Session

from db import face_table, labels
from db.labels import ModelKey
from db.rows import FaceLabel
from db.schema import Annotation, Annotator, Face, Media, Prediction, Track

PAGE_SIZE = 2000
"""Faces per page: a few MB of rows, and few enough ids for any database's bound-parameter limit."""

Progress = Callable[[int, int], None]
"""``progress(done, total)``: faces read so far out of the study's total, called after each page."""


class _FaceRow(NamedTuple):
    """The columns of a face that a :class:`db.rows.FaceLabel` reads (what :class:`db.schema.Face` offers)."""

    id: int
    media_id: int
    track_id: int | None
    frame: int | None
    time_s: float | None
    x1: float
    y1: float
    x2: float
    y2: float
    det_score: float
    feature_model: str | None
    has_crop: bool
    track_index: int | None

    @property
    def box(self) -> tuple[float, float, float, float]:
        """``(x1, y1, x2, y2)`` in upright-image pixels."""
        return (self.x1, self.y1, self.x2, self.y2)


@dataclass(frozen=True)
class _MediaInfo:
    id: int
    filename: str
    sha256: str
    kind: str
    analysis_status: str = "complete"


_PRED_COLS = (
    Prediction.id,
    Prediction.face_id,
    Prediction.model,
    Prediction.weights_hash,
    Prediction.model_version,
    Prediction.label,
    Prediction.confidence,
    Prediction.probs,
    Prediction.valence,
    Prediction.arousal,
    Prediction.engagement,
    Prediction.reused,
)
_PRED_TEXT_COLS = tuple(cast(c, Text).label("probs") if c is Prediction.probs else c for c in _PRED_COLS)
""":data:`_PRED_COLS` with ``probs`` as the stored JSON text."""
_ANN_COLS = (
    Annotation.id,
    Annotation.face_id,
    Annotation.track_id,
    Annotation.kind,
    Annotation.reverts_id,
    *(getattr(Annotation, f) for f in labels.FIELDS),
)


def study_media(session: Session, study_id: int) -> dict[int, _MediaInfo]:
    """The study's media items (what a face row shows of them), by id."""
    stmt = select(Media.id, Media.filename, Media.sha256, Media.kind, Media.analysis_status)
    stmt = stmt.where(Media.study_id == study_id)
    return {int(i): _MediaInfo(int(i), f, s, k, a) for i, f, s, k, a in session.execute(stmt)}


def count_faces(session: Session, study_id: int) -> int:
    """Faces of a study (one indexed count)."""
    stmt = select(func.count(Face.id)).join(Media, Face.media_id == Media.id).where(Media.study_id == study_id)
    return int(session.scalar(stmt) or 0)


def _face_select(study_id: int, *, by_key: bool = False) -> Any:
    on_media = (Face.media_id + 0 == Media.id) if by_key else (Face.media_id == Media.id)
    return (
        select(
            Face.id,
            Face.media_id,
            Face.track_id,
            Face.frame,
            Face.time_s,
            Face.x1,
            Face.y1,
            Face.x2,
            Face.y2,
            Face.det_score,
            Face.feature_model,
            Face.crop_png.is_not(None),
            Track.track_index,
        )
        .join(Media, on_media)
        .outerjoin(Track, Face.track_id == Track.id)
        .where(Media.study_id == study_id)
    )


class PageInputs(NamedTuple):
    """What a page of faces is resolved from: each face's picked prediction, the resolved votes, the track windows."""

    by_face: dict[int, Any]
    resolved: dict[Any, Any]
    windows: dict[int, Any]
    at: dict[int, float | None] | None = None
    """Without a cache of windows: the window engagement of each face that needs one (:func:`face_table.windows_at`)."""


def page_inputs(
    session: Session,
    execute: Callable[[Any], Any],
    faces: Sequence[Any],
    primary: ModelKey | None,
    windows: dict[int, Any] | None = None,
    *,
    probs_text: bool = False,
) -> PageInputs:
    """The predictions, votes and track windows of some faces of one study, read in three indexed queries.

    Args:
        session: An open session (the track windows are read through it).
        execute: Runs a statement: ``session.execute``, or a raw connection's ``execute`` (no ORM work per row).
        faces: The faces (ids ascending make the queries ranges).
        primary: The study's model run (:func:`db.labels.choose_model`).
        windows: A cache of track engagement windows kept across pages (filled here); None (a few faces): each
            face's window is found in SQL instead (:attr:`PageInputs.at`).
        probs_text: Each prediction's ``probs`` as its stored JSON text, not decoded (the caller decodes a page's
            at once).
    """
    ids = {f.id for f in faces}
    lo, hi = min(ids), max(ids)
    dense = hi - lo < 4 * len(ids) + 64
    # Dense pages (a keyset page) are read as id ranges, scattered ids with IN.
    pred_where = and_(Prediction.face_id >= lo, Prediction.face_id <= hi) if dense else Prediction.face_id.in_(ids)
    cols = _PRED_TEXT_COLS if probs_text else _PRED_COLS
    preds = [p for p in execute(select(*cols).where(pred_where).order_by(Prediction.id)).all() if p.face_id in ids]
    by_face: dict[int, Any] = {p.face_id: p for p in preds}
    if len(by_face) < len(preds):  # a face with several predictions: the rules choose
        by_face = labels.pick_predictions(preds, primary)
    tracks = sorted({f.track_id for f in faces if f.track_id is not None})
    cond = [and_(Annotation.face_id >= lo, Annotation.face_id <= hi) if dense else Annotation.face_id.in_(ids)]
    if tracks:
        cond.append(Annotation.track_id.in_(tracks))
    ann_stmt = (
        select(*_ANN_COLS, Annotator.name)
        .join(Annotator, Annotation.annotator_id == Annotator.id)
        .where(or_(*cond))
        .order_by(Annotation.id)
    )
    anns = [(a, a.name) for a in execute(ann_stmt) if a.face_id is None or a.face_id in ids]
    resolved = labels.resolve(anns) if anns else {}
    if windows is None:
        need_faces = [
            (f.id, f.track_id, f.time_s)
            for f in faces
            if f.track_id is not None and (p := by_face.get(f.id)) is not None and p.engagement is None
        ]
        return PageInputs(by_face, resolved, {}, face_table.windows_at(session, need_faces))
    cache = windows
    need = {
        f.track_id
        for f in faces
        if f.track_id is not None
        and f.track_id not in cache
        and (p := by_face.get(f.id)) is not None
        and p.engagement is None
    }
    if need:
        if len(cache) > 4096:
            cache.clear()
        got = face_table.track_windows(session, need)
        for t in need:
            cache[t] = _indexed(got.get(t))
    return PageInputs(by_face, resolved, cache)


def labels_of_faces(
    session: Session,
    faces: Sequence[_FaceRow],
    media: dict[int, _MediaInfo],
    primary: ModelKey | None,
    windows: dict[int, Any] | None = None,
) -> list[FaceLabel]:
    """The rows of some faces of one study (same values as :func:`db.labels.face_labels`), in the given order.

    Args:
        session: An open session.
        faces: The faces, as read by :func:`iter_face_pages` (ids ascending make the queries ranges).
        media: The study's media items (:func:`study_media`).
        primary: The study's model run (:func:`db.labels.choose_model`).
        windows: A cache of track engagement windows kept across pages (filled here); None: each face's window is
            found in SQL (a few faces, :func:`faces_by_id`).
    """
    if not faces:
        return []
    by_face, resolved, cache, at = page_inputs(session, session.execute, faces, primary, windows)
    return [
        face_table.face_label(
            f,
            media[f.media_id],
            f.track_index,
            by_face.get(f.id),
            resolved,
            bool(f.has_crop),
            at.get(f.id)
            if at is not None
            else _window_engagement(cache.get(f.track_id) if f.track_id is not None else None, f.time_s),
        )
        for f in faces
    ]


class _SortedWindows(NamedTuple):
    """A track's windows whose starts and ends both rise with their ids (as the engagement model writes them)."""

    score: float | None
    windows: list[tuple[float, float, float]]
    ends: list[float]


def _indexed(track: Any) -> Any:
    """The track's windows with a bisect index when their starts and ends rise in id order, else as they are."""
    if track is None:
        return None
    score, windows = track
    starts = [a for a, _, _ in windows]
    ends = [b for _, b, _ in windows]
    if all(x <= y for x, y in pairwise(starts)) and all(x <= y for x, y in pairwise(ends)):
        return _SortedWindows(score, windows, ends)
    return track


def _window_engagement(track: Any, time_s: float | None) -> float | None:
    """:func:`db.face_table.window_engagement` (the first window by id holding the time), by bisection when sorted.

    With starts and ends rising in id order, the first window holding ``t`` is the first whose end is at least
    ``t``, if its start is at most ``t`` (a later window starts later still).
    """
    if not isinstance(track, _SortedWindows):
        return face_table.window_engagement(track, time_s)
    if time_s is not None:
        i = bisect_left(track.ends, time_s)
        if i < len(track.windows) and track.windows[i][0] <= time_s:
            return float(track.windows[i][2])
    return track.score


def iter_face_pages(
    session: Session,
    study_id: int,
    primary: ModelKey | None,
    *,
    page_size: int = PAGE_SIZE,
    progress: Progress | None = None,
    media_id: int | None = None,
    after: int | None = None,
    until: int | None = None,
) -> Iterator[list[FaceLabel]]:
    """The study's face rows, page by page in face id order (see the module docstring).

    Args:
        session: An open session (kept open while iterating).
        study_id: The study.
        primary: The model run the rows follow (:func:`db.labels.choose_model`).
        page_size: Faces per page.
        progress: Called with ``(faces done, faces in the study)`` after each page.
        media_id: Only the faces of this media item.
        after: Only faces with a larger id.
        until: Only faces with an id up to this one.
    """
    media = study_media(session, study_id)
    windows: dict[int, Any] = {}
    done = 0
    spans = page_spans(session.execute, study_id, page_size=page_size, media_id=media_id, after=after, until=until)
    for page, total in spans:
        faces = [_FaceRow(*r) for r in page]
        rows = labels_of_faces(session, faces, media, primary, windows)
        done += len(rows)
        yield rows
        if progress is not None:
            progress(done, max(total, done))


def page_spans(
    execute: Callable[[Any], Any],
    study_id: int,
    *,
    page_size: int = PAGE_SIZE,
    media_id: int | None = None,
    after: int | None = None,
    until: int | None = None,
) -> Iterator[tuple[Sequence[Any], int]]:
    """The keyset walk of a study's faces by id: pages of ``_face_select(by_key=True)`` rows, and the faces in range.

    One index-only pass finds where the pages start and end, then each page is one primary-key range query.

    Args:
        execute: ``Session.execute`` or ``Connection.execute`` (the raw rows of the streamed exports).
        study_id: The study.
        page_size: Faces per page.
        media_id: Only the faces of this media item.
        after: Only faces with a larger id.
        until: Only faces with an id up to this one.
    """
    span = select(func.min(Face.id), func.max(Face.id), func.count(Face.id)).join(Media, Face.media_id == Media.id)
    span = span.where(Media.study_id == study_id)
    if media_id is not None:
        span = span.where(Face.media_id == media_id)
    if after is not None:
        span = span.where(Face.id > after)
    if until is not None:
        span = span.where(Face.id <= until)
    first, top, total = execute(span).one()
    if first is None:
        return
    # The pages walk the faces by primary key (``media_id + 0`` keeps the planner off the (media, frame) index,
    # which would sort every remaining face of the study for each page).
    base = _face_select(study_id, by_key=True).where(Face.id <= top)
    if media_id is not None:
        base = base.where(Face.media_id + 0 == media_id)
    last = int(first) - 1
    while True:
        faces = execute(base.where(Face.id > last).order_by(Face.id).limit(page_size)).all()
        if not faces:
            return
        last = faces[-1].id
        yield faces, int(total)
        if len(faces) < page_size:
            return


_MODELS: dict[tuple[str, int, str | None], tuple[Any, ModelKey | None]] = {}
_MODELS_LOCK = threading.Lock()


def study_model(session: Session, study_id: int, model: str | None = None) -> ModelKey | None:
    """:func:`db.labels.choose_model`, remembered until a prediction is added anywhere (newest prediction id).

    Choosing the run counts a whole study's predictions; a single-face view must not do that on every request.
    """
    key = (str(session.get_bind().engine.url), study_id, model)
    stamp = (session.scalar(select(func.max(Prediction.id))), session.scalar(select(func.count(Media.id))))
    with _MODELS_LOCK:
        got = _MODELS.get(key)
    if got is not None and got[0] == stamp:
        return got[1]
    primary = labels.choose_model(session, study_id, model)
    with _MODELS_LOCK:
        if len(_MODELS) > 256:
            _MODELS.clear()
        _MODELS[key] = (stamp, primary)
    return primary


def faces_by_id(session: Session, study_id: int, face_ids: Sequence[int], primary: ModelKey | None) -> list[FaceLabel]:
    """The rows of the given faces of a study (those not in it are left out), by face id."""
    media = study_media(session, study_id)
    out: list[FaceLabel] = []
    ids = sorted(set(face_ids))
    for i in range(0, len(ids), PAGE_SIZE):
        part = ids[i : i + PAGE_SIZE]
        stmt = _face_select(study_id).where(Face.id.in_(part)).order_by(Face.id)
        out += labels_of_faces(session, [_FaceRow(*r) for r in session.execute(stmt)], media, primary)
    return out
