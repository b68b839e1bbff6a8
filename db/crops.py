"""Face crops, stored or re-cut: the one place that answers "the crop of this face" for pages, exports and training.

A face's crop is its stored PNG (``faces.crop_png``: stills, videos whose file is not kept, studies that set
``keep_video_crops``, stores made before revision 0007), else, for a video whose media item has ``recut_crops``, it
is cut again from the kept recording: the frame at the face's time (:func:`models.decode.frames_at`, the frame the
analysis decoded, pixel-equal) cut with :func:`models.faces.crop_face` at the stored box, exactly as the analysis
cut it, so the re-cut crop equals the one that would have been stored (``tests/test_crops.py`` proves it on real
videos). :func:`crop_available` is the SQL test of "this face has a crop" that counts and listings use.

Several faces are re-cut recording by recording, in time order, each recording decoded once (:func:`iter_crops`):
the imagefolder export of a whole study decodes each recording once and holds one frame at a time. What is on
screen is kept in a small LRU cache (:class:`CropCache`, owned by :class:`db.services.LabelStore`).
"""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from sqlalchemy import ColumnElement, or_, select
from sqlalchemy.orm import Session

from db.codecs import decode_png, encode_png
from db.media_files import media_path
from db.schema import Face, Media
from models.errors import BadInputError

log = logging.getLogger(__name__)

CACHE_SIZE = 256
"""Re-cut crops kept in memory (PNG bytes, ~20 KB each: ~5 MB): the faces on screen and the next few."""


def crop_available() -> ColumnElement[bool]:
    """SQL: the face has a crop, stored or re-cut from its kept recording (needs ``faces`` joined to ``media``)."""
    return or_(Face.crop_png.is_not(None), Media.recut_crops.is_(True))


@dataclass(frozen=True)
class CropSource:
    """Where one face's crop comes from.

    Attributes:
        face_id: The face.
        png: Its stored PNG, or None (re-cut from ``path`` at ``time_s``, box ``box``).
        path: The kept recording, None when the face's crop is stored or not available.
        time_s: The face's frame time.
        box: Its box ``(x1, y1, x2, y2)`` in upright pixels.
    """

    face_id: int
    png: bytes | None
    path: Path | None
    time_s: float | None
    box: tuple[float, float, float, float]


def crop_sources(session: Session, media_root: Path | None, face_ids: Sequence[int]) -> dict[int, CropSource]:
    """Where the crops of faces come from (faces with neither a stored crop nor a kept recording are absent)."""
    out: dict[int, CropSource] = {}
    ids = list(face_ids)
    for i in range(0, len(ids), 500):
        stmt = (
            select(
                Face.id,
                Face.crop_png,
                Face.time_s,
                Face.x1,
                Face.y1,
                Face.x2,
                Face.y2,
                Media.recut_crops,
                Media.study_id,
                Media.sha256,
                Media.filename,
            )
            .join(Media, Face.media_id == Media.id)
            .where(Face.id.in_(ids[i : i + 500]), crop_available())
        )
        paths: dict[tuple[int, str], Path | None] = {}
        for fid, png, t, x1, y1, x2, y2, recut, study_id, sha, name in session.execute(stmt):
            path = None
            if png is None:
                if not recut or media_root is None or t is None:
                    continue
                key = (int(study_id), str(sha))
                if key not in paths:
                    p = media_path(media_root, int(study_id), str(sha), str(name))
                    paths[key] = p if p.is_file() else None
                path = paths[key]
                if path is None:
                    continue
            out[int(fid)] = CropSource(
                int(fid), None if png is None else bytes(png), path, t, (float(x1), float(y1), float(x2), float(y2))
            )
    return out


def recut(sources: Sequence[CropSource]) -> Iterator[tuple[int, np.ndarray]]:
    """``(face_id, crop)`` of faces re-cut from their recordings, recording by recording in time order.

    Each recording is decoded once (:func:`models.decode.frames_at`), one frame in memory at a time. A face whose
    frame cannot be found or decoded is left out (logged with the file and the reason).
    """
    from models.decode import frames_at
    from models.faces import crop_face

    by_path: dict[Path, list[CropSource]] = {}
    for s in sources:
        if s.path is not None and s.time_s is not None:
            by_path.setdefault(s.path, []).append(s)
    for path, items in by_path.items():
        items.sort(key=lambda s: (float(s.time_s or 0.0), s.face_id))
        times = sorted({float(s.time_s or 0.0) for s in items})
        j = 0
        try:
            for t, image in frames_at(path, times):
                while j < len(items) and float(items[j].time_s or 0.0) == t:
                    s = items[j]
                    j += 1
                    if image is None:
                        log.warning("%s: no frame at %.3f s for face %d; its crop is left out", path, t, s.face_id)
                        continue
                    crop = crop_face(image, s.box)
                    if crop.size:
                        yield s.face_id, crop
        except BadInputError as e:
            log.warning("%s: crops of %d faces cannot be re-cut: %s", path, len(items) - j, e.reason)


def iter_crops(
    session: Session,
    media_root: Path | None,
    face_ids: Sequence[int],
    *,
    batch: int = 256,
    progress: Callable[[int, int], None] | None = None,
) -> Iterator[tuple[int, np.ndarray | bytes]]:
    """Every available crop of ``face_ids``: stored ones as PNG bytes (in batches), re-cut ones as arrays.

    Stored crops come first in the order given, then the re-cut ones recording by recording in time order (each
    recording decoded once). Memory holds one batch of stored crops or one frame. ``progress(done, total)`` is
    called as crops are yielded.
    """
    ids = list(face_ids)
    total = len(ids)
    done = 0
    to_cut: list[CropSource] = []
    for i in range(0, len(ids), batch):
        sources = crop_sources(session, media_root, ids[i : i + batch])
        for fid in ids[i : i + batch]:
            src = sources.get(fid)
            if src is None:
                continue
            if src.png is not None:
                done += 1
                yield fid, src.png
                if progress is not None and done % 100 == 0:
                    progress(done, total)
            else:
                to_cut.append(src)
    for fid, crop in recut(to_cut):
        done += 1
        yield fid, crop
        if progress is not None and done % 100 == 0:
            progress(done, total)
    if progress is not None:
        progress(done, total)


def crop_arrays(sources: dict[int, CropSource]) -> Iterator[tuple[int, np.ndarray]]:
    """``(face_id, RGB crop)`` of faces from their :func:`crop_sources`: stored ones first, then re-cut ones."""
    for fid, src in sources.items():
        if src.png is not None:
            yield fid, decode_png(src.png)
    yield from recut([src for src in sources.values() if src.png is None])


def as_array(crop: np.ndarray | bytes) -> np.ndarray:
    """The RGB array of a crop given as PNG bytes or as an array."""
    return decode_png(crop) if isinstance(crop, bytes) else crop


CacheKey = tuple[int, str, float, tuple[float, float, float, float]]
"""A re-cut crop's identity: face id, recording, time and box (a reused face id never hits a stale crop)."""


def cache_key(src: CropSource) -> CacheKey:
    """The cache key of a re-cut crop."""
    return (src.face_id, str(src.path), float(src.time_s or 0.0), src.box)


class CropCache:
    """A small thread-safe LRU of re-cut crops (PNG bytes), for what is on screen."""

    def __init__(self, size: int = CACHE_SIZE) -> None:
        self.size = size
        self._items: OrderedDict[CacheKey, bytes] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: CacheKey) -> bytes | None:
        """The cached crop, None when not cached."""
        with self._lock:
            data = self._items.get(key)
            if data is not None:
                self._items.move_to_end(key)
            return data

    def put(self, key: CacheKey, data: bytes) -> None:
        """Caches a crop, dropping the least recently used beyond :attr:`size`."""
        with self._lock:
            self._items[key] = data
            self._items.move_to_end(key)
            while len(self._items) > self.size:
                self._items.popitem(last=False)

    def __len__(self) -> int:
        with self._lock:
            return len(self._items)


def face_crops(
    sources: dict[int, CropSource], face_ids: Sequence[int], cache: CropCache | None = None
) -> dict[int, bytes]:
    """The PNG crops of faces from their :func:`crop_sources` (faces without one are absent).

    Re-cut ones go through ``cache``. No session: recordings are decoded outside any transaction.
    """
    out: dict[int, bytes] = {}
    to_cut: list[CropSource] = []
    for fid, src in sources.items():
        if src.png is not None:
            out[fid] = src.png
        elif cache is not None and (hit := cache.get(cache_key(src))) is not None:
            out[fid] = hit
        else:
            to_cut.append(src)
    keys = {src.face_id: cache_key(src) for src in to_cut}
    for fid, crop in recut(to_cut):
        data = encode_png(crop)
        out[fid] = data
        if cache is not None:
            cache.put(keys[fid], data)
    return {fid: out[fid] for fid in face_ids if fid in out}
