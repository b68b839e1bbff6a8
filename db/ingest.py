"""Storing analysed files from typed results: media, faces (crops, features), predictions, tracks.

Ingest is idempotent. A media item is identified by the sha256 of its bytes within a study, so the same file
uploaded twice is one row (the first upload's file name is kept). A face is identified by its media item, frame and
box: analysing the file again, with the same or another model, reuses the faces whose box overlaps a stored one on the
same frame with IoU >= :data:`FACE_MATCH_IOU`, and adds a prediction only for a model run (model, weights hash,
version) the face does not have yet. Crops and features fill in where a face has none; nothing is overwritten.

Compact by default: features are stored in the compact form of :mod:`db.codecs` (``feature_codec``), and a video
whose file the store keeps (``recut_video_crops``) gets ``media.recut_crops`` and no stored crop: its crops are
re-cut from the recording when shown or exported (:mod:`db.crops`), unless its study sets ``keep_video_crops``.
Stills keep their crop (a still is one face or a few, and re-cutting it means decoding the whole photo). A video
whose file is not kept keeps its crops.

The results come typed from the inference core, with no JSON between: a :class:`models.types.FaceResult` per face
(features and crops included) and a :class:`models.types.TrackResult` per video track (engagement windows, person).
:func:`ingest_results` stores one file (the web app, ``affectlab analyze``); :func:`store_files` stores several
(``python -m db ingest``, whose JSON :mod:`db.analysis_file` reads into the same typed results). Both take the
caller's Session (the services own the transaction) and end in the same storing code, so a face gets ``features``,
``feature_dim`` and ``feature_model`` the same way whichever path it came by.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.orm import Session

from db import feature_store, repo
from db.codecs import FEATURES_U8, features_to_bytes, image_size, sha256_bytes
from db.ingest_rows import (
    FaceIn,
    MediaInfo,
    _engagement_at,
    _windows,
    face_in,
    face_row,
    guess_kind,
    prediction_row,
    version_of,
)
from db.media_files import base_name
from db.persons import store_persons
from db.rows import IngestReport
from db.schema import EngagementWindow, Face, Media, Prediction, Study, Track
from models.types import FaceResult, TrackResult, iou

__all__ = [
    "FACE_MATCH_IOU",
    "AnalysedFile",
    "FaceIn",
    "MediaInfo",
    "analysed_file",
    "face_in",
    "face_row",
    "guess_kind",
    "ingest_results",
    "prediction_row",
    "store_files",
    "version_of",
]

FACE_MATCH_IOU = 0.9
"""Boxes on the same frame overlapping at least this much are the same face."""


@dataclass(frozen=True, eq=False)
class AnalysedFile:
    """One analysed file, ready to store.

    Attributes:
        name: Its name as the user gave it (stored as a base name).
        sha256: Hex sha256 of its bytes.
        size: Its size in bytes.
        info: Kind, size in pixels, duration and rate.
        faces: Its faces, flattened for the tables with their crops already encoded (:func:`face_in`), so that the
            write transaction does no image work.
        tracks: Its tracks (videos).
    """

    name: str
    sha256: str
    size: int
    info: MediaInfo
    faces: Sequence[FaceIn]
    tracks: Sequence[TrackResult] = ()


@dataclass
class _Counts:
    media_new: int = 0
    media_existing: int = 0
    faces_new: int = 0
    faces_reused: int = 0
    predictions_new: int = 0
    predictions_existing: int = 0
    tracks_new: int = 0
    crops_stored: int = 0
    features_stored: int = 0
    media_ids: list[int] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    def report(self, study: str) -> IngestReport:
        return IngestReport(
            study=study,
            media_ids=tuple(self.media_ids),
            media_new=self.media_new,
            media_existing=self.media_existing,
            faces_new=self.faces_new,
            faces_reused=self.faces_reused,
            predictions_new=self.predictions_new,
            predictions_existing=self.predictions_existing,
            tracks_new=self.tracks_new,
            crops_stored=self.crops_stored,
            features_stored=self.features_stored,
            warnings=tuple(self.warnings),
        )


# ---------------------------------------------------------------------------------------------------- core


def _store_media(
    session: Session,
    study: Study,
    counts: _Counts,
    *,
    sha256: str,
    size: int,
    filename: str,
    info: MediaInfo,
    uploaded_by: str | None,
    faces: list[FaceIn],
    tracks: list[TrackResult],
    store_crops: bool,
    recut_video_crops: bool = False,
    feature_codec: str = FEATURES_U8,
) -> Media:
    """Stores one analysed file: its media row, tracks, faces (crops, features), predictions and persons."""
    media, existing_faces, has_crop, has_features = _media_row(
        session,
        study,
        counts,
        sha256=sha256,
        size=size,
        filename=filename,
        info=info,
        uploaded_by=uploaded_by,
        recut=recut_video_crops and store_crops and info.kind == "video" and not study.keep_video_crops,
    )
    stored_tracks, track_in = _store_tracks(session, media, faces, tracks, counts)
    matched = _store_faces(
        session,
        media,
        faces,
        existing_faces,
        stored_tracks,
        counts,
        (has_crop, has_features),
        store_crops,
        feature_codec,
    )
    _store_predictions(session, matched, track_in, counts)
    if track_in:
        store_persons(session, media.id, {n: t.person for n, t in track_in.items()})
    if media.kind == "video":
        feature_store.move_video(session, media.id)  # a finished video's features go to its file
    return media


def _media_row(
    session: Session,
    study: Study,
    counts: _Counts,
    *,
    sha256: str,
    size: int,
    filename: str,
    info: MediaInfo,
    uploaded_by: str | None,
    recut: bool,
) -> tuple[Media, list[Face], set[int], set[int]]:
    """The media row (found or added), its stored faces, and those of them with a crop and with features."""
    media, created = repo.get_or_create(
        session,
        Media,
        defaults={
            "filename": base_name(filename),
            "kind": info.kind,
            "size_bytes": size,
            "width": info.width,
            "height": info.height,
            "duration_s": info.duration_s,
            "fps": info.fps,
            "uploaded_by": uploaded_by,
            "recut_crops": recut,
        },
        study_id=study.id,
        sha256=sha256,
    )
    if created:
        counts.media_new += 1
        existing_faces: list[Face] = []
    else:
        counts.media_existing += 1
        existing_faces = list(session.scalars(select(Face).where(Face.media_id == media.id)))
    stored = select(Face.id, Face.crop_png.is_not(None), Face.features.is_not(None)).where(Face.media_id == media.id)
    has_crop = {i for i, c, _ in session.execute(stored) if c} if existing_faces else set()
    has_features = {i for i, _, f in session.execute(stored) if f} if existing_faces else set()
    counts.media_ids.append(media.id)

    return media, existing_faces, has_crop, has_features


def _store_tracks(
    session: Session, media: Media, faces: list[FaceIn], tracks: list[TrackResult], counts: _Counts
) -> tuple[dict[int, Track], dict[int, TrackResult]]:
    """The tracks listed, and any a face names without a listing: stored rows by number, results by number."""
    stored_tracks = {t.track_index: t for t in session.scalars(select(Track).where(Track.media_id == media.id))}
    track_in = {t.track: t for t in tracks}
    for f in faces:
        if f.track is not None and f.track not in track_in:
            track_in[f.track] = TrackResult(track=f.track)
    for number, t in sorted(track_in.items()):
        row = stored_tracks.get(number)
        if row is None:
            row = Track(
                media_id=media.id,
                track_index=number,
                n_faces=t.n_faces or sum(1 for f in faces if f.track == number),
                start_s=t.start_s,
                end_s=t.end_s,
                engagement_score=None if t.engagement is None else t.engagement.score,
                engagement_label=None if t.engagement is None else t.engagement.label,
            )
            session.add(row)
            session.flush()
            session.add_all(
                EngagementWindow(track_id=row.id, start_s=s, end_s=e, p_engaged=p) for s, e, p in _windows(t)
            )
            stored_tracks[number] = row
            counts.tracks_new += 1
        elif row.engagement_score is None and t.engagement is not None:
            row.engagement_score, row.engagement_label = t.engagement.score, t.engagement.label
            has_windows = session.scalar(select(EngagementWindow.id).where(EngagementWindow.track_id == row.id))
            if not has_windows:
                session.add_all(
                    EngagementWindow(track_id=row.id, start_s=s, end_s=e, p_engaged=p) for s, e, p in _windows(t)
                )
    return stored_tracks, track_in


def _store_faces(
    session: Session,
    media: Media,
    faces: list[FaceIn],
    existing_faces: list[Face],
    stored_tracks: Mapping[int, Track],
    counts: _Counts,
    stored: tuple[set[int], set[int]],
    store_crops: bool,
    feature_codec: str,
) -> list[tuple[FaceIn, Face]]:
    """Faces: reused by (frame, box), else inserted; crops and features filled in where a face has none."""
    has_crop, has_features = stored
    by_frame: dict[int | None, list[Face]] = {}
    for face in existing_faces:
        by_frame.setdefault(face.frame, []).append(face)
    used: set[int] = set()
    matched: list[tuple[FaceIn, Face]] = []
    pending: list[tuple[Face, bytes]] = []
    staging = feature_store.staging(session, media.kind)
    for f in faces:
        candidates = [c for c in by_frame.get(f.frame, []) if c.id not in used]
        best = max(candidates, key=lambda c: iou(c.box, f.box), default=None)
        if best is not None and iou(best.box, f.box) >= FACE_MATCH_IOU:
            used.add(best.id)
            counts.faces_reused += 1
            face = best
            if f.track is not None and face.track_id is None:
                face.track_id = stored_tracks[f.track].id
        else:
            face = face_row(f, media.id, stored_tracks[f.track].id if f.track is not None else None)
            session.add(face)
            counts.faces_new += 1
        if store_crops and not media.recut_crops and f.crop_png is not None and face.id not in has_crop:
            face.crop_png = f.crop_png
            counts.crops_stored += 1
            if face.id is not None:
                has_crop.add(face.id)
        if f.features is not None and face.id not in has_features:
            face.features, face.feature_dim = features_to_bytes(f.features, feature_codec)
            if staging and face.feature_dim:  # a video's wait apart until they move to its file
                pending.append((face, face.features))
                face.features = feature_store.IN_FILE
            if face.id is not None:
                has_features.add(face.id)
            face.feature_model = f.feature_model or f.model
            counts.features_stored += 1
        matched.append((f, face))
    session.flush()
    feature_store.add_pending(session, media.id, [(face.id, data) for face, data in pending])
    return matched


def _store_predictions(
    session: Session, matched: list[tuple[FaceIn, Face]], track_in: Mapping[int, TrackResult], counts: _Counts
) -> None:
    """Predictions: one per face and model run, never replaced."""
    face_ids = [face.id for _, face in matched]
    have = set()
    if face_ids:
        stmt = select(Prediction.face_id, Prediction.model, Prediction.weights_hash, Prediction.model_version)
        have = {tuple(r) for r in session.execute(stmt.where(Prediction.face_id.in_(face_ids)))}
    for f, face in matched:
        key = (face.id, f.model, f.weights_hash, f.model_version)
        if key in have:
            counts.predictions_existing += 1
            continue
        track = track_in.get(f.track) if f.track is not None else None
        session.add(prediction_row(f, face.id, _engagement_at(track, f.time_s)))
        have.add(key)
        counts.predictions_new += 1
    session.flush()


def _study(session: Session, study: str | Study) -> Study:
    return study if isinstance(study, Study) else repo.get_or_create_study(session, study)


def store_files(
    session: Session,
    study: str | Study,
    files: Sequence[AnalysedFile],
    *,
    uploaded_by: str | None = None,
    store_crops: bool = True,
    warnings: Sequence[str] = (),
    recut_video_crops: bool = False,
    feature_codec: str = FEATURES_U8,
) -> IngestReport:
    """Stores analysed files (the caller's session; not committed here).

    Args:
        session: The caller's session.
        study: Study name (created when missing) or row.
        files: The files with their faces and tracks.
        uploaded_by: Who analysed them.
        store_crops: False for the features-only mode: crops are dropped, never stored.
        warnings: Problems met before storing, passed on in the report.
        recut_video_crops: The store keeps the files: a new video stores no crop (re-cut from its file instead),
            unless its study sets ``keep_video_crops``.
        feature_codec: The form features are stored in (:mod:`db.codecs`).

    Returns:
        What was added and what was found already stored.
    """
    st = _study(session, study)
    counts = _Counts(warnings=list(warnings))
    for item in files:
        _store_media(
            session,
            st,
            counts,
            sha256=item.sha256,
            size=item.size,
            filename=item.name,
            info=item.info,
            uploaded_by=uploaded_by,
            faces=list(item.faces),
            tracks=list(item.tracks),
            store_crops=store_crops,
            recut_video_crops=recut_video_crops,
            feature_codec=feature_codec,
        )
    return counts.report(st.name)


def analysed_file(
    source: Path | str | bytes,
    filename: str,
    results: Iterable[FaceResult],
    tracks: Iterable[TrackResult] = (),
    *,
    media_info: MediaInfo | None = None,
    store_crops: bool = True,
    model_version: str | None = None,
    sha256: str | None = None,
) -> AnalysedFile:
    """One analysed file made ready to store: hashed, its faces flattened and their crops encoded (no session).

    Args:
        source: The file's bytes, or its path.
        filename: The file's original name (kept as data only).
        results: The file's faces (features and crops are stored from them).
        tracks: The video's tracks (``models.video.VideoAnalysis.track_results()``).
        media_info: Kind, size, duration and fps; guessed from the name and the image header when omitted.
        store_crops: False for the features-only mode: crops are dropped, never stored.
        model_version: Version of a fine-tuned head that made the predictions.
        sha256: The bytes' hex sha256 when the caller has it already (else computed here).

    Returns:
        The file for :func:`store_files`.
    """
    data = source if isinstance(source, bytes) else Path(source).read_bytes()
    faces = list(results)
    if media_info is None:
        kind = "video" if any(r.frame is not None for r in faces) else guess_kind(filename)
        w, h = image_size(data) if kind == "image" else (None, None)
        media_info = MediaInfo(kind=kind, width=w, height=h)
    return AnalysedFile(
        name=filename,
        sha256=sha256 or sha256_bytes(data),
        size=len(data),
        info=media_info,
        faces=[face_in(r, store_crops=store_crops, model_version=model_version) for r in faces],
        tracks=list(tracks),
    )


def ingest_results(
    session: Session,
    study: str | Study,
    source: Path | str | bytes,
    filename: str,
    results: Iterable[FaceResult],
    tracks: Iterable[TrackResult] = (),
    *,
    media_info: MediaInfo | None = None,
    uploaded_by: str | None = None,
    store_crops: bool = True,
    model_version: str | None = None,
    sha256: str | None = None,
) -> IngestReport:
    """Stores one analysed file with its typed results: :func:`analysed_file`, then :func:`store_files`.

    The label store prepares the file before its write transaction (:meth:`db.service_ingest.Ingest.ingest_results`);
    this one-call form is for callers that hold a session already. Arguments as :func:`analysed_file`, plus the
    caller's ``session`` (not committed here), the ``study`` and who ``uploaded_by``.

    Returns:
        What was added and what was found already stored.
    """
    item = analysed_file(
        source,
        filename,
        results,
        tracks,
        media_info=media_info,
        store_crops=store_crops,
        model_version=model_version,
        sha256=sha256,
    )
    return store_files(session, study, [item], uploaded_by=uploaded_by, store_crops=store_crops)
