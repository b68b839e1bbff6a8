"""Compacting a study's stored faces: ``python -m db compact --study S`` (:meth:`db.service_upkeep.Upkeep.compact`).

Three steps, each in short transactions of :data:`BATCH` faces, each safe to stop and run again:

- ``features``: float32 features (stores before revision 0007 converted by the migration, or a store run with
  ``feature_codec='float32'``) are rewritten in the compact form of :mod:`db.codecs`.
- ``crops``: the stored crops of a video whose recording is kept are re-cut from it (:mod:`db.crops`) and compared
  pixel by pixel with the stored PNG; each equal one is dropped, a differing one is kept (and counted), and the media
  item gets ``recut_crops``. Skipped for studies that set ``keep_video_crops``.
- ``drop_features``: the features of the faces of completely analysed videos are dropped. Engagement, tracks and
  persons are stored results, computed from them once; fine-tuning (:mod:`db.training`) re-extracts the features
  of the corrected faces from their crops (re-cut from the recording), and the ``features`` export then lists none
  for those videos (run fine-tuning, or export the features, before dropping them if you need them as stored).

The SQLite file shrinks only when vacuumed (``vacuum``, :func:`db.maintenance.vacuum`): freed pages are otherwise
reused by the next recordings.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from db import crops, feature_store, repo, status
from db.codecs import compact_feature_bytes, decode_png
from db.media_files import media_path
from db.schema import Face, Media, PendingFeatures

BATCH = 1000
"""Faces per transaction."""


@dataclass(frozen=True)
class CompactReport:
    """What compacting a study did.

    Attributes:
        study: The study.
        features_converted: Float32 feature vectors rewritten compactly.
        crops_dropped: Stored video crops dropped (re-cut pixel-equal from the kept recording).
        crops_kept: Stored video crops kept because the re-cut one differed, or the frame could not be decoded.
        videos_without_file: Videos with stored crops whose recording is not kept (their crops stay).
        features_dropped: Feature vectors dropped (``drop_features``).
        notes: What the user should know.
    """

    study: str
    features_converted: int = 0
    crops_dropped: int = 0
    crops_kept: int = 0
    videos_without_file: int = 0
    features_dropped: int = 0
    notes: tuple[str, ...] = ()


def convert_features(session: Session, study_id: int, after_id: int) -> tuple[int, int | None]:
    """Rewrites the next :data:`BATCH` float32 feature vectors of a study compactly; returns (converted, last id)."""
    stmt = (
        select(Face.id, Face.features, Face.feature_dim)
        .join(Media, Face.media_id == Media.id)
        .where(
            Media.study_id == study_id,
            Face.id > after_id,
            Face.features.is_not(None),
            func.length(Face.features) == 4 * Face.feature_dim,
        )
        .order_by(Face.id)
        .limit(BATCH)
    )
    rows = [(int(i), bytes(d), int(n)) for i, d, n in session.execute(stmt) if d is not None and n is not None]
    if not rows:
        return 0, None
    session.execute(update(Face), [{"id": i, "features": compact_feature_bytes(d, n)} for i, d, n in rows])
    return len(rows), rows[-1][0]


def videos_with_crops(session: Session, study_id: int) -> list[tuple[int, int, str, str, bool]]:
    """The study's videos with stored crops: (media id, study id, sha256, filename, recut_crops)."""
    has = select(Face.id).where(Face.media_id == Media.id, Face.crop_png.is_not(None)).exists()
    stmt = select(Media.id, Media.study_id, Media.sha256, Media.filename, Media.recut_crops).where(
        Media.study_id == study_id, Media.kind == "video", Media.analysis_status == "complete", has
    )
    return [(int(a), int(b), str(c), str(d), bool(e)) for a, b, c, d, e in session.execute(stmt)]


StoredCrop = tuple[int, float, tuple[float, float, float, float], bytes]
"""A video face with a stored crop: id, time, box, PNG bytes."""


def stored_crop_batch(session: Session, media_id: int, after: tuple[float, int]) -> list[StoredCrop]:
    """The next :data:`BATCH` faces of a video with a stored crop, in (time, id) order after ``after``."""
    t0, id0 = after
    stmt = (
        select(Face.id, Face.time_s, Face.x1, Face.y1, Face.x2, Face.y2, Face.crop_png)
        .where(
            Face.media_id == media_id,
            Face.crop_png.is_not(None),
            Face.time_s.is_not(None),
            (Face.time_s > t0) | ((Face.time_s == t0) & (Face.id > id0)),
        )
        .order_by(Face.time_s, Face.id)
        .limit(BATCH)
    )
    return [
        (int(i), float(t), (float(x1), float(y1), float(x2), float(y2)), bytes(png))
        for i, t, x1, y1, x2, y2, png in session.execute(stmt)
        if t is not None and png is not None
    ]


def equal_recuts(path: Path, faces: list[StoredCrop]) -> list[int]:
    """The ids of faces whose crop re-cut from ``path`` is pixel-equal to their stored PNG."""
    sources = [crops.CropSource(fid, None, path, t, box) for fid, t, box, _ in faces]
    stored = {fid: png for fid, _, _, png in faces}
    return [fid for fid, crop in crops.recut(sources) if np.array_equal(crop, decode_png(stored[fid]))]


def drop_crops(session: Session, face_ids: list[int]) -> None:
    """Drops the stored crops of faces (their media item re-cuts them)."""
    if face_ids:
        session.execute(update(Face), [{"id": i, "crop_png": None} for i in face_ids])
        _recount_media_of(session, face_ids)


def _recount_media_of(session: Session, face_ids: list[int]) -> None:
    """Has the read model recount the media items of faces changed by a Core update (:func:`db.status.mark`)."""
    media = session.scalars(select(Face.media_id).where(Face.id.in_(face_ids)).distinct())
    status.mark(session, media=[int(m) for m in media])


def set_recut(session: Session, media_id: int) -> None:
    """Marks a video's crops as re-cut from its kept recording."""
    repo.get_row(session, Media, media_id, "media").recut_crops = True
    status.mark(session, media=[media_id])


def drop_features(session: Session, study_id: int) -> int:
    """Drops the features of the faces of the study's completely analysed videos; returns how many."""
    videos = select(Media.id).where(
        Media.study_id == study_id, Media.kind == "video", Media.analysis_status == "complete"
    )
    pending = select(PendingFeatures.face_id).where(PendingFeatures.media_id == Media.id).exists()
    elsewhere = Media.id.in_(videos) & (Media.features_file.is_not(None) | pending)
    with_file = session.scalar(select(Media.id).where(elsewhere).limit(1))
    if with_file is not None:  # a video's pending features or its file (db.feature_store): dropped, the file goes
        n = session.scalar(
            select(func.count(Face.id)).where(Face.media_id == with_file, func.length(Face.features) == 0)
        )
        path = feature_store.drop_file(session, with_file)
        if path is not None:
            path.unlink(missing_ok=True)
        status.mark(session, media=[with_file])
        return max(int(n or 0), 1)
    ids = list(
        session.scalars(
            select(Face.id).where(Face.media_id.in_(videos), Face.features.is_not(None)).order_by(Face.id).limit(BATCH)
        )
    )
    if ids:
        session.execute(update(Face), [{"id": i, "features": None} for i in ids])
        _recount_media_of(session, ids)
    return len(ids)


def recording_path(media_root: Path, study_id: int, sha256: str, filename: str) -> Path | None:
    """The kept recording of a video, None when it is not kept."""
    p = media_path(media_root, study_id, sha256, filename)
    return p if p.is_file() else None
