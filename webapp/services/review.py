"""The review queue: each annotator's queue, the face under review with its context, corrections, skips and undo."""

from __future__ import annotations

import logging
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from db import review as review_rules
from db.errors import StudyNotFoundError
from db.queues import REVIEW_ORDERS
from db.review import LabelsPage, ReviewFilter, ReviewQueue, StudySettings
from db.rows import AnnotationRow, FaceLabel
from db.services import LabelStore
from models.errors import AffectLabError
from models.registry import EMOTIONS_8
from models.registry import ENGAGEMENT_LEVELS as ENGAGEMENT_LEVELS  # the review page's choices
from webapp.services.library import kept_media_file
from webapp.services.privacy import Box, blurs, frame_faces, viewer_crops
from webapp.services.studies import face_crop, face_crops, face_label, study_media
from webapp.services.who import require_annotator

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
    """``annotator``'s queue: faces they have neither labelled nor skipped, most in need first, with counts left.

    Raises:
        ValueError: For an order not in ``db.review.REVIEW_ORDERS``.
    """
    order = next((o for o in REVIEW_ORDERS if o == by), None)
    if order is None:
        raise ValueError(f"unknown review order {by!r}: use one of {', '.join(REVIEW_ORDERS)}")
    try:
        return store.review.review_queue(study, order, limit=limit, annotator=annotator, flt=flt)
    except StudyNotFoundError:
        return ReviewQueue(items=(), left=0, total=0, left_by_media={}, total_by_media={}, skipped=0)


def my_labels(
    store: LabelStore,
    study: str,
    annotator: str,
    flt: ReviewFilter | None = None,
    *,
    after: int | None = None,
    limit: int = 200,
) -> LabelsPage:
    """A page of the faces ``annotator`` has labelled in a study (own or through a track label), to browse and edit.

    ``after``: the ``after`` of the previous page (None: the first); only the page's faces are resolved, the count
    comes from the kept counts.
    """
    try:
        return store.review.labels_page(study, annotator, flt or ReviewFilter(), after=after, limit=limit)
    except StudyNotFoundError:
        return LabelsPage((), 0, None)


def skip(store: LabelStore, annotator: str | None, face_id: int) -> None:
    """Keeps a face out of ``annotator``'s queue (stored: it holds across reloads and devices).

    Raises:
        AnnotatorMissingError: Without an annotator name (skips are kept per annotator).
    """
    store.review.skip(face_id, require_annotator(annotator, "skipping a face"))


def unskip_all(store: LabelStore, study: str, annotator: str) -> int:
    """Puts every face ``annotator`` skipped in the study back into their queue; returns how many."""
    try:
        return store.review.unskip(study, annotator)
    except StudyNotFoundError:
        return 0


def undo_last(store: LabelStore, study: str, annotator: str) -> AnnotationRow | None:
    """Reverts ``annotator``'s newest active correction in the study (from any tab or device); None if none."""
    try:
        last = store.review.last_correction(study, annotator)
    except StudyNotFoundError:
        return None
    if last is None:
        return None
    return store.review.undo(annotator, annotation_id=last.id)


def visible_face(face: FaceLabel, annotator: str | None, settings: StudySettings) -> FaceLabel:
    """What ``annotator`` may see of a face under the study's rules (independent labelling hides others' votes)."""
    return review_rules.visible_face(face, annotator, settings)


def correct(
    store: LabelStore,
    annotator: str | None,
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
        AnnotatorMissingError: Without an annotator name.
        ValueError: Without exactly one of face_id and track_id.
        InvalidLabelError: For a class or value out of range.
        NotFoundError: For a face or track that no longer exists.
    """
    name = require_annotator(annotator, "the first correction")
    if (face_id is None) == (track_id is None):
        raise ValueError("a correction needs exactly one of a face or a track")
    if track_id is not None:
        return store.review.correct_track(
            track_id, name, label=label, valence=valence, arousal=arousal, engagement=engagement, note=note
        )
    assert face_id is not None
    return store.review.correct_face(
        face_id, name, label=label, valence=valence, arousal=arousal, engagement=engagement, note=note
    )


STRIP_MAX = 24
"""Faces shown in a track's strip (evenly spread over the track, the current face always among them)."""


@dataclass(frozen=True)
class QueueView:
    """The queue panel of the Review page.

    Attributes:
        queue: The annotator's queue with its counts.
        face_id: The face to show: the one opened (from the strip, by Undo or in the URL) while it exists, else the
            queue's first; None when the queue is empty.
        media_id: The media item of that face (for the per-file count), None when the queue is empty.
        reason: Why the queue put that face where it is, None for a face opened from outside the queue.
    """

    queue: ReviewQueue
    face_id: int | None
    media_id: int | None
    reason: str | None


def queue_view(
    store: LabelStore, study: str, by: str, annotator: str | None, flt: ReviewFilter, opened: int | None
) -> QueueView:
    """``annotator``'s queue and the face to show in it (``opened`` when it is a face of the study)."""
    q = review_queue(store, study, by, annotator, flt)
    ids = [i.face_id for i in q.items]
    if not ids:
        return QueueView(queue=q, face_id=None, media_id=None, reason=None)
    face_id = opened if opened is not None and (opened in ids or _exists(store, study, opened)) else ids[0]
    item = next((i for i in q.items if i.face_id == face_id), None)
    if item is not None:
        return QueueView(queue=q, face_id=face_id, media_id=item.media_id, reason=item.reason)
    return QueueView(queue=q, face_id=face_id, media_id=face_label(store, face_id, study).media_id, reason=None)


def _exists(store: LabelStore, study: str, face_id: int) -> bool:
    try:
        face_label(store, face_id, study)
    except AffectLabError:
        return False
    return True


def face_for_review(
    store: LabelStore, study: str, face_id: int, annotator: str | None, settings: StudySettings
) -> FaceLabel:
    """A face of ``study`` as ``annotator`` may see it under the study's rules.

    Raises:
        NotFoundError: No such face in ``study``.
    """
    return visible_face(face_label(store, face_id, study), annotator, settings)


@dataclass(frozen=True)
class FaceContext:
    """What the Review page shows around a face.

    Attributes:
        crop: The face's stored crop (never blurred: it is the face being labelled), None in features-only mode.
        path: The kept media file, None when none is kept.
        blur: The boxes of the other faces on the same frame, to blur for this viewer (empty when nothing is blurred).
    """

    crop: bytes | None
    path: Path | None
    blur: tuple[Box, ...]


def face_context(
    store: LabelStore, study: str, face: FaceLabel, settings: StudySettings, owner: bool, media_dir: Path | None
) -> FaceContext:
    """The crop, the kept file and the boxes to blur around a face of ``study`` (see :class:`FaceContext`)."""
    crop = face_crop(store, face.face_id, study)
    media = next((m for m in study_media(store, study) if m.id == face.media_id), None) if media_dir else None
    path = kept_media_file(media_dir, store, study, media) if media is not None else None
    others: tuple[Box, ...] = ()
    if path is not None and blurs(settings, owner):
        boxes, keep = frame_faces(store, study, face)
        others = tuple(b for i, b in enumerate(boxes) if i != keep)
    return FaceContext(crop=crop, path=path, blur=others)


def face_history(
    store: LabelStore, face: FaceLabel, annotator: str | None, settings: StudySettings
) -> list[AnnotationRow]:
    """The correction history of a face (already checked to be of the study) that ``annotator`` may see.

    Under independent labelling only the annotator's own rows.
    """
    rows = store.recordings.history(face_id=face.face_id)
    if settings.independent:
        rows = [r for r in rows if r.annotator == annotator]
    return rows


@dataclass(frozen=True)
class TrackStrip:
    """The strip of a face's track on the Review page.

    Attributes:
        n_faces: Faces in the track.
        start_s: Time of its first face (seconds).
        end_s: Time of its last face.
        shown: The faces in the strip (at most :data:`STRIP_MAX`, evenly spread, the current face among them), as the
            annotator may see them: the only ones resolved, whatever the track's length.
        crops: The crops of the shown faces as the viewer may see them (the current face sharp).
    """

    n_faces: int
    start_s: float
    end_s: float
    shown: tuple[FaceLabel, ...]
    crops: Mapping[int, bytes]


def track_strip(
    store: LabelStore, study: str, face: FaceLabel, annotator: str | None, settings: StudySettings, owner: bool
) -> TrackStrip | None:
    """The strip of ``face``'s track (see :class:`TrackStrip`), None for a face without a track."""
    if face.track_id is None:
        return None
    times = store.recordings.track_face_times(study, face.track_id)
    if not times:
        return None
    ids = _strip_ids([i for i, _ in times], face.face_id)
    shown = [visible_face(f, annotator, settings) for f in store.recordings.faces_by_id(study, ids)]
    crops = viewer_crops(store, [f.face_id for f in shown], settings, owner, study, sharp=face.face_id)
    return TrackStrip(
        n_faces=len(times),
        start_s=times[0][1] or 0.0,
        end_s=times[-1][1] or 0.0,
        shown=tuple(shown),
        crops=crops,
    )


def _strip_ids(ids: Sequence[int], current: int) -> list[int]:
    """The face ids of the strip: all of a short track, else :data:`STRIP_MAX` - 1 evenly spread and the current."""
    if len(ids) <= STRIP_MAX:
        return list(ids)
    picks = {round(i * (len(ids) - 1) / (STRIP_MAX - 2)) for i in range(STRIP_MAX - 1)}
    return [f for i, f in enumerate(ids) if i in picks or f == current]


WARM_AHEAD = 2
"""Queue faces after the one on screen whose crops are re-cut ahead of the key press (:func:`warm_next`)."""
_WARMING = threading.Lock()
log = logging.getLogger(__name__)


def warm_next(store: LabelStore, study: str, face_ids: Sequence[int]) -> threading.Thread | None:
    """Re-cuts, in a background thread, the crops the next faces of the queue will show, into the store's crop cache.

    A video face's crop and its track strip's are re-cut from the kept recording (a seek and up to a keyframe
    interval of decoded frames each: most of a key press at any study size). While the annotator looks at a face,
    the next :data:`WARM_AHEAD` faces' own and strip crops are cut, so the key press finds them cached
    (``db.crops.CropCache``; raw crops: each viewer's blur is applied when shown). Best effort: one warm-up at a
    time in the process (a fast typist's key presses do not pile up; a busy one is skipped), and a failure is only
    logged: the page cuts what it shows itself. Returns the thread started, or None.
    """
    ids = list(face_ids)
    if not ids or not _WARMING.acquire(blocking=False):
        return None

    def run() -> None:
        try:
            for f in store.recordings.faces_by_id(study, ids):
                want = [f.face_id]
                if f.track_id is not None:
                    times = store.recordings.track_face_times(study, f.track_id)
                    want = _strip_ids([i for i, _ in times], f.face_id) if times else want
                face_crops(store, want, study)
        except Exception:  # a warm-up never fails a page; what it did not cut is cut when shown
            log.exception("warming the next faces' crops failed")
        finally:
            _WARMING.release()

    thread = threading.Thread(target=run, name="affectlab-warm-crops", daemon=True)
    thread.start()
    return thread
