"""Long videos stored chunk by chunk, so that a stopped analysis resumes where it stopped.

A video analysed this way gets its media row first, with ``analysis_status='partial'``; each stretch of faces is
then stored in one transaction together with how far the analysis got (``analysed_until_s``,
``analysed_until_frame``, ``analysed_samples``), so the stored faces and the resume point never disagree. Faces are
stored without track. At the end, tracks, engagement and persons are computed from every stored face (the caller
replays them: :class:`models.video.FaceReplay`) and :func:`db.ingest_finish.store_finish` stores them and marks the
media item ``complete``. A video whose file the store keeps is created with ``recut_crops`` (no crop stored; see
:mod:`db.crops`) unless its study sets ``keep_video_crops``; features are stored compactly (:mod:`db.codecs`), and
the tracker replay and the engagement model read them back from there. Predictions are append-only, so their
``engagement`` stays empty: a face's model engagement is read from its track's windows
(:func:`db.labels.face_labels`). Functions take the caller's session and never commit.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from db import claims, feature_store, ranges, repo
from db.claims import Claimant
from db.codecs import FEATURES_U8, features_from_bytes, features_to_bytes
from db.ingest import FaceIn, MediaInfo, _study, face_row, prediction_row
from db.ingest_finish import AnalysisStateError
from db.media_files import base_name
from db.schema import Face, Media
from models.types import Box


@dataclass(frozen=True)
class AnalysisState:
    """Where the analysis of a media item stands.

    Attributes:
        media_id: The media item.
        status: ``complete`` or ``partial``.
        created: Whether this call created the media row.
        until_s: Time of the last analysed frame of a partial analysis (None: nothing analysed yet).
        until_frame: Its number among the decoded frames.
        samples: Sampled frames analysed so far.
        faces: Boxes and detection scores of that frame's stored faces, in their order.
        n_faces: Faces stored so far.
    """

    media_id: int
    status: str
    created: bool
    until_s: float | None = None
    until_frame: int | None = None
    samples: int | None = None
    faces: tuple[tuple[Box, float], ...] = ()
    n_faces: int = 0


@dataclass(frozen=True)
class StoredFrame:
    """One frame's stored faces, for replaying the tracker.

    Attributes:
        frame: Frame index.
        time_s: Its time.
        face_ids: The faces' ids, in their stored order.
        boxes: Their boxes.
        features: Their features (N, D) float32, or None when a face has none.
    """

    frame: int
    time_s: float
    face_ids: tuple[int, ...]
    boxes: tuple[Box, ...]
    features: np.ndarray | None


def _state(session: Session, media: Media, created: bool) -> AnalysisState:
    n = session.scalar(select(func.count()).select_from(Face).where(Face.media_id == media.id)) or 0
    faces: tuple[tuple[Box, float], ...] = ()
    if media.analysis_status == "partial" and media.analysed_until_frame is not None:
        stmt = (
            select(Face.x1, Face.y1, Face.x2, Face.y2, Face.det_score)
            .where(Face.media_id == media.id, Face.frame == media.analysed_until_frame)
            .order_by(Face.face_index, Face.id)
        )
        faces = tuple(((x1, y1, x2, y2), d) for x1, y1, x2, y2, d in session.execute(stmt))
    return AnalysisState(
        media_id=media.id,
        status=media.analysis_status,
        created=created,
        until_s=media.analysed_until_s,
        until_frame=media.analysed_until_frame,
        samples=media.analysed_samples,
        faces=faces,
        n_faces=int(n),
    )


def begin_video(
    session: Session,
    study: str,
    *,
    sha256: str,
    size: int,
    filename: str,
    info: MediaInfo,
    uploaded_by: str | None,
    recut_crops: bool = False,
    claimant: Claimant | None = None,
) -> AnalysisState:
    """The media row of a video about to be analysed: created ``partial`` when new, else as it stands.

    ``recut_crops``: the store keeps the file, so a new video stores no crop (unless the study keeps video crops).
    With a ``claimant``, the video is claimed for it in this transaction (:mod:`db.claims`; the claim is released at
    once when the video is complete already).

    Returns:
        Its state: ``complete`` (nothing to do), or ``partial`` with the resume point of a stopped run.

    Raises:
        ClaimBusyError: Another live run is analysing the same bytes into the study.
    """
    st = _study(session, study)
    if claimant is not None:
        claims.take(session, st.id, sha256, claimant)
    media = session.scalar(select(Media).where(Media.study_id == st.id, Media.sha256 == sha256))
    if media is not None:
        if claimant is not None and media.analysis_status == "complete":
            claims.release(session, st.id, sha256, claimant)
        return _state(session, media, created=False)
    media = Media(
        study_id=st.id,
        sha256=sha256,
        filename=base_name(filename),
        kind=info.kind,
        size_bytes=size,
        width=info.width,
        height=info.height,
        duration_s=info.duration_s,
        fps=info.fps,
        uploaded_by=uploaded_by,
        analysis_status="partial",
        recut_crops=recut_crops and not st.keep_video_crops,
    )
    session.add(media)
    session.flush()
    return _state(session, media, created=True)


def store_chunk(
    session: Session,
    media_id: int,
    faces: Sequence[FaceIn],
    *,
    until_s: float,
    until_frame: int,
    samples: int,
    store_crops: bool,
    feature_codec: str = FEATURES_U8,
    claimant: Claimant | None = None,
    range_number: int | None = None,
    range_done: bool = False,
) -> tuple[int, int, int]:
    """Stores one stretch of a partial video's faces (without track) and moves its resume point.

    With ``range_number``, the video is cut into ranges (:mod:`db.ranges`): that range's resume point moves
    (``range_done``: the range is complete).

    Returns:
        Faces, crops and features stored.

    Raises:
        AnalysisStateError: The media item's analysis is complete (it was finished meanwhile).
        ClaimLostError: ``claimant`` no longer holds the video's claim (another run took it over).
    """
    media = repo.get_row(session, Media, media_id, "media")
    if claimant is not None:
        claims.check(session, media.study_id, media.sha256, claimant)
    if media.analysis_status != "partial":
        raise AnalysisStateError(f"media {media_id} is already analysed completely; delete it to analyse it again")
    rows: list[tuple[FaceIn, Face]] = []
    crops = features = 0
    pending: list[tuple[Face, bytes]] = []  # the features wait apart until the video is finished (db.feature_store)
    staging = feature_store.staging(session, "video")
    for f in faces:
        face = face_row(f, media_id)
        if store_crops and not media.recut_crops and f.crop_png is not None:
            face.crop_png = f.crop_png
            crops += 1
        if f.features is not None:
            face.features, face.feature_dim = features_to_bytes(f.features, feature_codec)
            if staging and face.feature_dim:
                pending.append((face, face.features))
                face.features = feature_store.IN_FILE
            face.feature_model = f.feature_model or f.model
            features += 1
        session.add(face)
        rows.append((f, face))
    session.flush()
    feature_store.add_pending(session, media_id, [(face.id, data) for face, data in pending])
    for f, face in rows:
        session.add(prediction_row(f, face.id))
    if range_number is None:
        media.analysed_until_s, media.analysed_until_frame, media.analysed_samples = until_s, until_frame, samples
    else:
        ranges.move(
            session, media_id, range_number, until_s=until_s, until_frame=until_frame, samples=samples, done=range_done
        )
    session.flush()
    return len(rows), crops, features


def stored_frames(session: Session, media_id: int, after_frame: int, max_frames: int = 500) -> list[StoredFrame]:
    """The next frames with stored faces after ``after_frame`` (at most ``max_frames``), in order."""
    frames = list(
        session.scalars(
            select(Face.frame)
            .where(Face.media_id == media_id, Face.frame > after_frame)
            .group_by(Face.frame)
            .order_by(Face.frame)
            .limit(max_frames)
        )
    )
    if not frames:
        return []
    stmt = (
        select(Face.id, Face.frame, Face.time_s, Face.x1, Face.y1, Face.x2, Face.y2, Face.features, Face.feature_dim)
        .where(Face.media_id == media_id, Face.frame > after_frame, Face.frame <= frames[-1])
        .order_by(Face.frame, Face.face_index, Face.id)
    )
    grouped: dict[int, list[Any]] = {}  # rows of the select above
    for row in session.execute(stmt):
        grouped.setdefault(int(row.frame), []).append(row)
    out = []
    for frame, rows in grouped.items():
        feats = None
        if all(r.features is not None for r in rows):
            in_file = feature_store.features(session, [r.id for r in rows if not r.features])  # a finished video's
            feats = np.stack(
                [in_file[r.id] if not r.features else features_from_bytes(r.features, r.feature_dim) for r in rows]
            )
        out.append(
            StoredFrame(
                frame=frame,
                time_s=float(rows[0].time_s or 0.0),
                face_ids=tuple(int(r.id) for r in rows),
                boxes=tuple((r.x1, r.y1, r.x2, r.y2) for r in rows),
                features=feats,
            )
        )
    return out


def features_of(session: Session, face_ids: Sequence[int]) -> np.ndarray:
    """The stored features of faces, in the order given, (N, D) float32 (faces without features are left out)."""
    ids = list(face_ids)
    got = feature_store.features(session, ids)  # rows, or a finished video's file
    kept = [got[i] for i in ids if i in got]
    return np.stack(kept) if kept else np.zeros((0, 0), dtype=np.float32)
