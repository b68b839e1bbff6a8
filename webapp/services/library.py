"""The kept media files of a study: where they are, a playable copy, thumbnails and frames, deleting an item.

When crops are stored (the default), the uploaded file itself is kept under
``<data_dir>/media/<study id>/<sha256><suffix>`` so that the pages can draw boxes on it and play videos from a chosen
time. In the features-only privacy mode (``AFFECTLAB_STORE_CROPS=0``) no media file is kept. Deleting a media item
deletes its file too.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from db.errors import NotFoundError
from db.rows import MediaRow
from db.services import LabelStore
from models.errors import AffectLabError
from webapp.services.owner import require_owner
from webapp.services.studies import study_media

log = logging.getLogger(__name__)


def kept_media_file(media_dir: Path | None, store: LabelStore, study: str, media: MediaRow) -> Path | None:
    """The kept copy of a media item, None when none is kept (features-only mode, or deleted).

    The label store owns the files (:meth:`db.services.LabelStore.media_path`); ``media_dir`` None means the
    features-only mode.
    """
    if media_dir is None:
        return None
    return store.media_path(media.id)


def playable_media_file(store: LabelStore, media: MediaRow) -> Path | None:
    """The file the browser's video player can play for a kept video, None when no file is kept.

    An animated GIF is converted to MP4 (WebM without an H.264 encoder) once and kept beside it by the store; when
    that fails, the kept file itself is returned (and the failure logged).
    """
    try:
        return store.playable_media_path(media.id)
    except AffectLabError:
        log.warning("media %s: no playable copy, serving the kept file", media.id, exc_info=True)
        return store.media_path(media.id)


def thumbnail(path: Path, kind: str, time_s: float = 0.0, max_side: int = 240) -> np.ndarray:
    """A small picture of a kept media file: the image, or the video's frame at ``time_s``.

    Raises:
        BadInputError: The file cannot be read.
    """
    from PIL import Image

    img = video_frame(path, time_s) if kind == "video" else load_media_image(path)
    h, w = img.shape[:2]
    scale = max_side / max(h, w)
    if scale >= 1:
        return img
    small = Image.fromarray(img).resize((max(1, round(w * scale)), max(1, round(h * scale))), Image.BILINEAR)
    return np.asarray(small)


def key_frames(path: Path, frames: Sequence[int], n: int = 4) -> list[tuple[float, int, np.ndarray]]:
    """Up to ``n`` of the given frames of a video, evenly spread over them, decoded.

    Args:
        path: The video file.
        frames: Indices of the frames with faces.
        n: How many to pick.

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
            out.append((frame.time_s, frame.index, frame.image))
            if len(out) == len(wanted):
                break
        if frame.index > picks[-1]:
            break
    return out


def load_media_image(path: Path) -> np.ndarray:
    """The upright RGB image of a kept image file."""
    from models.images import load_image

    return load_image(path, path.name)


def video_frame(path: Path, time_s: float) -> np.ndarray:
    """The frame of a kept video at ``time_s`` (seeking, not decoding from the start)."""
    from models.decode import frame_at

    return frame_at(path, time_s, path.name)


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
    counts = store.delete_media(media.id)
    if path is not None:
        path.unlink(missing_ok=True)
    return counts
