"""A study's media library: the kept files, thumbnails and frames, the stored results of an item, deleting one.

When crops are stored (the default), the uploaded file itself is kept under
``<data_dir>/media/<study id>/<sha256><suffix>`` so that the pages can draw boxes on it and play videos from a chosen
time. In the features-only privacy mode (``AFFECTLAB_STORE_CROPS=0``) no media file is kept. Deleting a media item
deletes its file too.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from db import review as review_rules
from db.errors import NotFoundError
from db.recording import TrackSeries, TrackSummary, bucket_width, with_counts
from db.review import StudySettings
from db.rows import FaceLabel, MediaRow
from db.services import LabelStore
from models.errors import AffectLabError
from webapp.services.privacy import Box, blur_image, blurs
from webapp.services.studies import study_faces, study_media, study_settings
from webapp.services.who import require_owner

log = logging.getLogger(__name__)


def kept_media_file(media_dir: Path | None, store: LabelStore, study: str, media: MediaRow) -> Path | None:
    """The kept copy of a media item, None when none is kept (features-only mode, or deleted).

    The label store owns the files (:meth:`db.service_recordings.Recordings.media_path`); ``media_dir`` None means the
    features-only mode.
    """
    if media_dir is None:
        return None
    return store.recordings.media_path(media.id)


def playable_media_file(store: LabelStore, media: MediaRow) -> Path | None:
    """The file the browser's video player can play for a kept video, None when no file is kept.

    An animated GIF is converted to MP4 (WebM without an H.264 encoder) once and kept beside it by the store; when
    that fails, the kept file itself is returned (and the failure logged).
    """
    try:
        return store.recordings.playable_media_path(media.id)
    except AffectLabError:
        log.warning("media %s: no playable copy, serving the kept file", media.id, exc_info=True)
        return store.recordings.media_path(media.id)


def thumbnail(path: Path, kind: str, time_s: float = 0.0, max_side: int = 240, *, blur: bool = False) -> np.ndarray:
    """A small picture of a kept media file: the image, or the video's frame at ``time_s``.

    With ``blur`` all of it is blurred (a thumbnail is small and its face boxes are not looked up).

    Raises:
        BadInputError: The file cannot be read.
    """
    from PIL import Image

    img = video_frame(path, time_s) if kind == "video" else load_media_image(path)
    h, w = img.shape[:2]
    scale = max_side / max(h, w)
    if scale < 1:
        size = (max(1, round(w * scale)), max(1, round(h * scale)))
        img = np.asarray(Image.fromarray(img).resize(size, Image.Resampling.BILINEAR))
    if blur:
        h, w = img.shape[:2]
        img = blur_image(img, [(0, 0, w, h)], radius=6)
    return img


def key_frames(
    path: Path, frames: Sequence[int], n: int = 4, *, blur: Mapping[int, Sequence[Box]] | None = None
) -> list[tuple[float, int, np.ndarray]]:
    """Up to ``n`` of the given frames of a video, evenly spread over them, decoded.

    Args:
        path: The video file.
        frames: Indices of the frames with faces.
        n: How many to pick.
        blur: Face boxes to blur per frame index (for a viewer who sees faces blurred).

    Returns:
        ``(time_s, frame index, RGB image)`` per chosen frame, in time order.
    """
    from models.decode import iter_frames

    ordered = sorted(set(frames))
    if not ordered:
        return []
    picks = sorted({ordered[round(i * (len(ordered) - 1) / max(1, n - 1))] for i in range(min(n, len(ordered)))})
    wanted = set(picks)
    out: list[tuple[float, int, np.ndarray]] = []
    for frame in iter_frames(path, path.name, fps=0):
        if frame.index in wanted:
            boxes = (blur or {}).get(frame.index)
            out.append((frame.time_s, frame.index, blur_image(frame.image, boxes) if boxes else frame.image))
            if len(out) == len(wanted):
                break
        if frame.index > picks[-1]:
            break
    return out


def load_media_image(path: Path, blur: Sequence[Box] = ()) -> np.ndarray:
    """The upright RGB image of a kept image file, with the face boxes in ``blur`` blurred."""
    from models.images import load_image

    image = load_image(path, path.name)
    return blur_image(image, blur) if blur else image


def video_frame(path: Path, time_s: float, blur: Sequence[Box] = ()) -> np.ndarray:
    """The frame of a kept video at ``time_s`` (seeking, not decoding from the start), ``blur`` boxes blurred."""
    from models.decode import frame_at

    image = frame_at(path, time_s, path.name)
    return blur_image(image, blur) if blur else image


def delete_media(
    store: LabelStore, study: str, media_id: int, media_dir: Path | None, *, owner: bool
) -> dict[str, int]:
    """Deletes a media item of ``study`` with everything derived from it, and its kept file.

    Returns:
        What was removed, per kind.

    Raises:
        NotAllowedError: For anyone but an owner of the study.
        NotFoundError: No such media item in ``study``.
    """
    require_owner(owner, f"deleting media of study {study!r}")
    media = next((m for m in study_media(store, study) if m.id == media_id), None)
    if media is None:
        raise NotFoundError(f"media item of study {study!r}", media_id)
    return delete_media_item(store, study, media, media_dir)


def delete_media_item(store: LabelStore, study: str, media: MediaRow, media_dir: Path | None) -> dict[str, int]:
    """Deletes a media item (already checked to be of ``study``) with everything derived from it, and its kept file."""
    path = kept_media_file(media_dir, store, study, media) if media_dir is not None else None
    counts = store.upkeep.delete_media(media.id)
    if path is not None:
        path.unlink(missing_ok=True)
    return counts


# ---------------------------------------------------------------------------------------------------- views


@dataclass(frozen=True)
class LibraryCard:
    """One media item's card in the Library.

    Attributes:
        media: The media item.
        path: Its kept file, None when none is kept.
        n_tracks: Person tracks found in it.
        first_face_s: When its first face appears (the thumbnail's time).
    """

    media: MediaRow
    path: Path | None
    n_tracks: int
    first_face_s: float


@dataclass(frozen=True)
class LibraryView:
    """The Library page: a card per media item (newest first), and whether this viewer sees faces blurred."""

    cards: tuple[LibraryCard, ...]
    blur: bool


def library_view(store: LabelStore, study: str, owner: bool, media_dir: Path | None) -> LibraryView:
    """The cards of the study's media items (see :class:`LibraryView`)."""
    media = study_media(store, study)
    summary = store.recordings.media_summary(study) if media else {}
    cards = tuple(
        LibraryCard(
            media=m,
            path=kept_media_file(media_dir, store, study, m),
            n_tracks=summary.get(m.id, (0, 0.0))[0],
            first_face_s=summary.get(m.id, (0, 0.0))[1],
        )
        for m in media
    )
    return LibraryView(cards=cards, blur=blurs(study_settings(store, study), owner) if media else False)


@dataclass(frozen=True)
class MediaResult:
    """A media item with its faces (frame order), as a viewer may see them."""

    media: MediaRow
    faces: tuple[FaceLabel, ...]


@dataclass(frozen=True)
class StoredResults:
    """The stored results of some media items of a study.

    Attributes:
        settings: The study's labelling rules (what the viewer may see, blurring).
        items: One per media item asked for, in that order; deleted ones left out.
    """

    settings: StudySettings
    items: tuple[MediaResult, ...]


def stored_results(
    store: LabelStore, study: str, media_ids: Sequence[int], annotator: str | None, owner: bool
) -> StoredResults:
    """The faces of the given media items of ``study`` as this viewer may see them (owners see everything).

    Only an image's faces are resolved (a picture shows a few); a video's are left empty: its page reads per-track
    summaries and binned series in SQL (:func:`recording_view`), whatever the recording's length.
    """
    media = {m.id: m for m in study_media(store, study)}
    settings = study_settings(store, study)
    faces: dict[int, list[FaceLabel]] = {}
    for mid in dict.fromkeys(media_ids):
        if mid not in media or media[mid].kind == "video":
            continue
        for f in study_faces(store, study, mid):  # that item's faces only
            faces.setdefault(f.media_id, []).append(f if owner else review_rules.visible_face(f, annotator, settings))
    items = tuple(
        MediaResult(media[mid], tuple(sorted(faces.get(mid, []), key=lambda r: (r.frame or 0, r.face_id))))
        for mid in media_ids
        if mid in media
    )
    return StoredResults(settings=settings, items=items)


def shown_image(
    store: LabelStore,
    study: str,
    media: MediaRow,
    faces: Sequence[FaceLabel],
    settings: StudySettings,
    owner: bool,
    media_dir: Path | None,
) -> np.ndarray | None:
    """An image item's picture as this viewer may see it (its faces blurred when the study says so).

    Returns:
        The picture, None when the file is not kept.

    Raises:
        BadInputError: The kept file cannot be read.
    """
    path = kept_media_file(media_dir, store, study, media)
    if path is None:
        return None
    return load_media_image(path, [f.box for f in faces] if blurs(settings, owner) else ())


@dataclass(frozen=True)
class VideoView:
    """What the results of a video show.

    Attributes:
        path: The kept file (for the key frames), None when none is kept.
        playable: The file the player plays, None when none is kept or the player is hidden (faces blurred).
        blur: Whether this viewer sees faces blurred.
    """

    path: Path | None
    playable: Path | None
    blur: bool


def video_view(
    store: LabelStore, study: str, media: MediaRow, settings: StudySettings, owner: bool, media_dir: Path | None
) -> VideoView:
    """The kept and playable files and blurring of a video of ``study`` (see :class:`VideoView`)."""
    path = kept_media_file(media_dir, store, study, media)
    blur = blurs(settings, owner)
    playable = playable_media_file(store, media) if path is not None and not blur else None  # a GIF plays as MP4
    return VideoView(path=path, playable=playable, blur=blur)


TRACKS_PER_PAGE = 8
"""Tracks whose figures one page of a recording draws (a lecture holds hundreds of tracks)."""


@dataclass(frozen=True)
class RecordingView:
    """A recording's tracks and the figures of one page of them, read in SQL (no face row resolved).

    Attributes:
        tracks: Every track (by index; the faces without a track last); those of the page shown with their exact
            faces and class counts (over their series), the others with the faces stored with the track.
        page: The page of tracks shown (0-based), ``pages`` in all.
        series: The binned series of the tracks of that page, by track id.
        width_s: The bucket width of every series (:func:`db.recording.bucket_width`).
        show_model: Whether this viewer sees the model's values (probabilities, valence/arousal, classes).
        show_human: Whether this viewer sees the annotators' (consensus) classes.
        key_frames: Up to 4 frames with faces spread over the recording.
        boxes: ``(frame, track index, box)`` of the faces on those frames.
    """

    tracks: tuple[TrackSummary, ...]
    page: int
    pages: int
    series: Mapping[int | None, TrackSeries]
    width_s: float
    show_model: bool
    show_human: bool
    key_frames: tuple[int, ...]
    boxes: tuple[tuple[int, int, Box], ...]

    @property
    def shown(self) -> tuple[TrackSummary, ...]:
        """The tracks of the page shown."""
        return self.tracks[self.page * TRACKS_PER_PAGE : (self.page + 1) * TRACKS_PER_PAGE]


def recording_view(
    store: LabelStore, study: str, media: MediaRow, settings: StudySettings, owner: bool, page: int = 0
) -> RecordingView:
    """The tracks of a video of ``study`` and the binned figures of page ``page`` of them (see :class:`RecordingView`).

    The work grows with the tracks of the page shown, never with the study: the track list is a read of the track
    rows, the series one grouped read per kind over the shown tracks' faces, at most
    :data:`db.recording.MAX_POINTS` buckets per series. In an independent study a viewer who is not an owner sees no
    annotators' classes (only their own judgement, on the Review page), nor the model's when the study hides it.
    """
    tracks = tuple(store.recordings.recording_tracks(study, media.id))
    pages = max(1, -(-len(tracks) // TRACKS_PER_PAGE))
    page = min(max(0, page), pages - 1)
    show_model = owner or not (settings.independent and settings.hide_model)
    show_human = owner or not settings.independent
    span = max([float(media.duration_s or 0.0)] + [t.end_s or 0.0 for t in tracks])
    width = bucket_width(span)
    shown = tracks[page * TRACKS_PER_PAGE : (page + 1) * TRACKS_PER_PAGE]
    series = store.recordings.recording_series(
        study, media.id, [t.track_id for t in shown], width, model=show_model, human=show_human
    )
    counted = {t.track_id: with_counts(t, series.get(t.track_id)) for t in shown}  # exact, over the series
    tracks = tuple(counted.get(t.track_id, t) if t in shown else t for t in tracks)
    frames, boxes = store.recordings.key_frame_boxes(study, media.id)
    return RecordingView(
        tracks=tracks,
        page=page,
        pages=pages,
        series=series,
        width_s=width,
        show_model=show_model,
        show_human=show_human,
        key_frames=frames,
        boxes=boxes,
    )
