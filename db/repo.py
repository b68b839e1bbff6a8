"""Repository functions: queries and inserts on a caller's Session. They never commit; the services do."""

from __future__ import annotations

import unicodedata
from collections.abc import Sequence
from typing import Any, TypeVar

from sqlalchemy import Select, func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from db import feature_store
from db.crops import crop_available
from db.errors import NotFoundError, StudyNotFoundError
from db.repo_annotations import add_annotation as add_annotation
from db.repo_annotations import annotation_row as annotation_row
from db.repo_annotations import annotations_in_study as annotations_in_study
from db.repo_annotations import annotations_of_study as annotations_of_study
from db.repo_annotations import annotations_of_targets as annotations_of_targets
from db.rows import AnnotationRow, MediaRow, StudyRow, TrackRow
from db.schema import Annotation, Annotator, Base, EngagementWindow, Face, Media, Prediction, Study, Track

T = TypeVar("T", bound=Base)


def get_or_create(
    session: Session, model: type[T], defaults: dict[str, Any] | None = None, **keys: Any
) -> tuple[T, bool]:
    """Returns the row of ``model`` matching ``keys`` and whether it was inserted now (with ``defaults``).

    A concurrent insert of the same unique key is caught inside a savepoint, after which the other writer's row is
    returned.
    """
    stmt = select(model).filter_by(**keys)
    row = session.scalars(stmt).first()
    if row is not None:
        return row, False
    try:
        with session.begin_nested():
            row = model(**keys, **(defaults or {}))
            session.add(row)
            session.flush()
    except IntegrityError:
        row = session.scalars(stmt).first()
        if row is None:
            raise
        return row, False
    return row, True


def study_names(session: Session) -> list[str]:
    """Names of all studies, sorted."""
    return list(session.scalars(select(Study.name).order_by(Study.name)))


def get_study(session: Session, name: str) -> Study:
    """The study called ``name``.

    Raises:
        StudyNotFoundError: If there is none.
    """
    study = session.scalars(select(Study).where(Study.name == name)).first()
    if study is None:
        raise StudyNotFoundError(name, study_names(session))
    return study


def get_or_create_study(session: Session, name: str) -> Study:
    """The study called ``name``, created when missing."""
    return get_or_create(session, Study, name=name)[0]


def annotator_key(name: str) -> str:
    """The identity of an annotator's name: case- and space-insensitive (``" Alice  Smith"`` is ``alicesmith``).

    Unicode is normalised (NFKC) and case-folded, and every whitespace character is dropped, so that one person
    typing their name a little differently stays one annotator. Migration 0006 uses the same rule, written out.
    """
    return "".join(unicodedata.normalize("NFKC", name).split()).casefold()


def get_or_create_annotator(session: Session, name: str) -> Annotator:
    """The annotator whose name has the identity of ``name`` (:func:`annotator_key`), created when missing.

    A new annotator keeps ``name`` as typed (trimmed) for display; an existing one keeps the name it was created with.
    Every path that records a vote, skip or person change goes through here, so ``Alice`` and ``alice`` are one.
    """
    return get_or_create(session, Annotator, defaults={"name": " ".join(name.split())}, key=annotator_key(name))[0]


def annotator_name(session: Session, name: str) -> str:
    """The stored display name of the annotator with the identity of ``name``; ``name`` trimmed when there is none.

    Pages resolve what a person typed through this once, so that every later comparison with stored names (their own
    votes, skips, filters) sees one identity.
    """
    stored = session.scalar(select(Annotator.name).where(Annotator.key == annotator_key(name)))
    return stored if stored is not None else " ".join(name.split())


def get_row(session: Session, model: type[T], ident: int, what: str) -> T:
    """The row of ``model`` with primary key ``ident``.

    Raises:
        NotFoundError: If there is none.
    """
    row = session.get(model, ident)
    if row is None:
        raise NotFoundError(what, ident)
    return row


def list_studies(session: Session) -> list[StudyRow]:
    """All studies with their media and face counts."""
    n_media = select(Media.study_id, func.count(Media.id).label("n")).group_by(Media.study_id).subquery("n_media")
    n_faces = (
        select(Media.study_id, func.count(Face.id).label("n"))
        .join(Face, Face.media_id == Media.id)
        .group_by(Media.study_id)
        .subquery("n_faces")
    )
    stmt = (
        select(Study, func.coalesce(n_media.c.n, 0), func.coalesce(n_faces.c.n, 0))
        .outerjoin(n_media, n_media.c.study_id == Study.id)
        .outerjoin(n_faces, n_faces.c.study_id == Study.id)
        .order_by(Study.name)
    )
    return [StudyRow(s.id, s.name, int(m), int(f), s.created_at) for s, m, f in session.execute(stmt)]


def media_row(media: Media, study: str, n_faces: int = 0) -> MediaRow:
    """The frozen row of a media item."""
    return MediaRow(
        id=media.id,
        study=study,
        sha256=media.sha256,
        filename=media.filename,
        kind=media.kind,
        size_bytes=media.size_bytes,
        width=media.width,
        height=media.height,
        duration_s=media.duration_s,
        fps=media.fps,
        uploaded_by=media.uploaded_by,
        created_at=media.created_at,
        n_faces=n_faces,
        analysis_status=media.analysis_status,
        analysed_until_s=media.analysed_until_s,
    )


def list_tracks(session: Session, media_id: int, *, with_windows: bool = True) -> list[TrackRow]:
    """The tracks of a video, with their engagement windows unless ``with_windows`` is False.

    A choice list needs no window, and a 60-minute recording has one window per face.
    """
    tracks = list(session.scalars(select(Track).where(Track.media_id == media_id).order_by(Track.track_index)))
    windows: dict[int, list[tuple[float, float, float]]] = {t.id: [] for t in tracks}
    if tracks and with_windows:
        stmt = (
            select(EngagementWindow)
            .where(EngagementWindow.track_id.in_(list(windows)))
            .order_by(EngagementWindow.track_id, EngagementWindow.start_s)
        )
        for w in session.scalars(stmt):
            windows[w.track_id].append((w.start_s, w.end_s, w.p_engaged))
    return [
        TrackRow(
            id=t.id,
            media_id=t.media_id,
            track_index=t.track_index,
            n_faces=t.n_faces,
            start_s=t.start_s,
            end_s=t.end_s,
            engagement_score=t.engagement_score,
            engagement_label=t.engagement_label,
            windows=tuple(windows[t.id]),
        )
        for t in tracks
    ]


def study_of_face(session: Session, face_id: int) -> Study:
    """The study a face belongs to."""
    stmt = select(Study).join(Media, Media.study_id == Study.id).join(Face, Face.media_id == Media.id)
    study = session.scalars(stmt.where(Face.id == face_id)).first()
    if study is None:
        raise NotFoundError("face", face_id)
    return study


def history(session: Session, *, face_id: int | None = None, track_id: int | None = None) -> list[AnnotationRow]:
    """The correction history of a face (its track's rows included) or of a track, oldest first.

    Raises:
        NotFoundError: For an unknown face.
    """
    tracks = [track_id] if track_id is not None else []
    faces = [face_id] if face_id is not None else []
    if face_id is not None:
        face = get_row(session, Face, face_id, "face")
        if face.track_id is not None:
            tracks.append(face.track_id)
    return [annotation_row(a, who) for a, who in annotations_of_targets(session, faces, tracks)]


def predictions_of_face(session: Session, face_id: int) -> list[dict[str, Any]]:
    """Every model's prediction of a face as plain values, oldest first."""
    stmt = select(Prediction).where(Prediction.face_id == face_id).order_by(Prediction.id)
    return [
        {
            "id": p.id,
            "model": p.model,
            "weights_hash": p.weights_hash,
            "model_version": p.model_version,
            "label": p.label,
            "confidence": p.confidence,
            "probs": dict(p.probs),
            "valence": p.valence,
            "arousal": p.arousal,
            "engagement": p.engagement,
            "created_at": p.created_at,
        }
        for p in session.scalars(stmt)
    ]


def media_by_sha256(session: Session, study: str, sha256: str) -> MediaRow | None:
    """The media item of a study with these bytes, None when the study (or the item) does not exist."""
    st = session.scalar(select(Study).where(Study.name == study))
    if st is None:
        return None
    m = session.scalar(select(Media).where(Media.study_id == st.id, Media.sha256 == sha256))
    if m is None:
        return None
    n = session.scalar(select(func.count()).select_from(Face).where(Face.media_id == m.id)) or 0
    return media_row(m, study, int(n))


def best_faces(session: Session, media_id: int) -> dict[int, int]:
    """Track id to the face id of its most confident detection (ties: the lowest face id), in one query."""
    stmt = (
        select(Face.track_id, Face.id)
        .where(Face.media_id == media_id, Face.track_id.is_not(None))
        .order_by(Face.track_id, Face.det_score.desc(), Face.id)
    )
    out: dict[int, int] = {}
    for tid, fid in session.execute(stmt):
        out.setdefault(int(tid or 0), int(fid))
    return out


def faces_in_study(session: Session, study: str, face_ids: Sequence[int]) -> set[int]:
    """Those of ``face_ids`` that are faces of ``study`` (by primary key, then the media's study).

    ``+ 0`` keeps SQLite's planner (no statistics) from walking every face of the study's media by the media index
    and testing each against the list, which it chose for a list of a couple of dozen ids (linear in the study).
    """
    out: set[int] = set()
    ids = sorted({int(i) for i in face_ids})
    for i in range(0, len(ids), 1000):
        stmt = (
            select(Face.id)
            .join(Media, Face.media_id + 0 == Media.id)
            .join(Study, Media.study_id == Study.id)
            .where(Study.name == study, Face.id.in_(ids[i : i + 1000]))
        )
        out.update(int(x) for x in session.scalars(stmt))
    return out


def media_in_study(session: Session, study: str, media_ids: Sequence[int]) -> set[int]:
    """Those of ``media_ids`` that are media items of ``study``."""
    stmt = (
        select(Media.id)
        .join(Study, Media.study_id == Study.id)
        .where(Study.name == study, Media.id.in_(sorted({int(i) for i in media_ids})))
    )
    return {int(x) for x in session.scalars(stmt)}


def frame_boxes(
    session: Session, media_id: int, frame: int | None
) -> list[tuple[int, tuple[float, float, float, float]]]:
    """``(face_id, box)`` of the faces on one frame of a media item (``frame`` None: those without a frame)."""
    on_frame = Face.frame.is_(None) if frame is None else Face.frame == frame
    stmt = (
        select(Face.id, Face.x1, Face.y1, Face.x2, Face.y2)
        .where(Face.media_id == media_id, on_frame)
        .order_by(Face.face_index, Face.id)
    )
    return [(int(i), (x1, y1, x2, y2)) for i, x1, y1, x2, y2 in session.execute(stmt)]


def face_order(session: Session, media_id: int) -> list[int]:
    """A media item's face ids in the whole-study order (frame, face index, id), read from its index."""
    stmt = select(Face.id).where(Face.media_id == media_id).order_by(Face.frame, Face.face_index, Face.id)
    return [int(i) for i in session.scalars(stmt)]


def media_summary(session: Session, study: str) -> dict[int, tuple[int, float]]:
    """Media id to ``(tracks, first face's time)`` of a study's videos (an image's faces have no time: 0).

    Tracks are counted per video, the first face found by the faces' (media, frame) index: no face row is read.
    """
    st = get_study(session, study)
    videos = list(session.scalars(select(Media.id).where(Media.study_id == st.id, Media.kind == "video")))
    out: dict[int, tuple[int, float]] = {}
    n_tracks: dict[int, int] = {}
    if videos:
        stmt = select(Track.media_id, func.count(Track.id)).where(Track.media_id.in_(videos)).group_by(Track.media_id)
        n_tracks = {int(m): int(n) for m, n in session.execute(stmt)}
    for m in videos:
        untimed = session.scalar(select(Face.id).where(Face.media_id == m, Face.frame.is_(None)).limit(1))
        first = session.scalar(select(func.min(Face.frame)).where(Face.media_id == m, Face.frame.is_not(None)))
        t = 0.0
        if untimed is None and first is not None:
            t = float(
                session.scalar(
                    select(func.min(func.coalesce(Face.time_s, 0.0))).where(Face.media_id == m, Face.frame == first)
                )
                or 0.0
            )
        out[int(m)] = (n_tracks.get(int(m), 0), t)
    return out


def best_faces_of_tracks(session: Session, track_ids: Sequence[int]) -> dict[int, int]:
    """Track id to its most confident face (ties: the lowest face id): one indexed query per track, no other face."""
    out: dict[int, int] = {}
    for tid in track_ids:
        stmt = select(Face.id).where(Face.track_id == tid).order_by(Face.det_score.desc(), Face.id).limit(1)
        fid = session.scalar(stmt)
        if fid is not None:
            out[int(tid)] = int(fid)
    return out


def has_votes(session: Session, study_id: int) -> bool:
    """Whether anyone corrected anything in the study (one EXISTS on the votes of its faces or tracks)."""
    on_faces = (
        select(Annotation.id)
        .join(Face, Annotation.face_id == Face.id)
        .join(Media, Face.media_id == Media.id)
        .where(Media.study_id == study_id)
        .limit(1)
    )
    on_tracks = (
        select(Annotation.id)
        .join(Track, Annotation.track_id == Track.id)
        .join(Media, Track.media_id == Media.id)
        .where(Media.study_id == study_id)
        .limit(1)
    )
    return session.scalar(on_faces) is not None or session.scalar(on_tracks) is not None


def face_crop(session: Session, face_id: int) -> bytes | None:
    """The stored PNG crop of a face, None when it has none (or does not exist)."""
    return session.scalar(select(Face.crop_png).where(Face.id == face_id))


def face_crops(session: Session, face_ids: Sequence[int]) -> dict[int, bytes]:
    """The stored crops of several faces (faces without one are absent), in one query."""
    stmt = select(Face.id, Face.crop_png).where(Face.id.in_(list(face_ids)), Face.crop_png.is_not(None))
    return {int(i): bytes(c or b"") for i, c in session.execute(stmt)}


def study_crops(session: Session, study_id: int, limit: int) -> list[bytes]:
    """Up to ``limit`` stored face crops (PNG) of a study, lowest face ids first, in one bounded query."""
    stmt = (
        select(Face.crop_png)
        .join(Media, Media.id == Face.media_id)
        .where(Media.study_id == study_id, Face.crop_png.is_not(None))
        .order_by(Face.id)
        .limit(limit)
    )
    return [bytes(c) for c in session.scalars(stmt) if c]


def stored_features(session: Session, face_id: int) -> tuple[bytes, int] | None:
    """The stored feature bytes of a face and their length in values, None when it has none."""
    return feature_store.stored_bytes(session, [face_id]).get(face_id)  # rows or the video's features file


def faces_of_study(study_id: int) -> Select[Face, Media, int]:
    """Select of (face, media, track_index) for every face of a study, by media then frame then index."""
    return (
        select(Face, Media, Track.track_index)
        .join(Media, Face.media_id == Media.id)
        .outerjoin(Track, Face.track_id == Track.id)
        .where(Media.study_id == study_id)
        .order_by(Media.id, Face.frame, Face.face_index, Face.id)
    )


def predictions_of_study(session: Session, study_id: int) -> list[Prediction]:
    """Every prediction of a study's faces, oldest first."""
    stmt = (
        select(Prediction)
        .join(Face, Prediction.face_id == Face.id)
        .join(Media, Face.media_id == Media.id)
        .where(Media.study_id == study_id)
        .order_by(Prediction.id)
    )
    return list(session.scalars(stmt))


def count_rows(session: Session, study_id: int) -> dict[str, int]:
    """Row counts of a study: media, faces, predictions, tracks, stored crops and features, annotation rows."""
    media = session.scalar(select(func.count(Media.id)).where(Media.study_id == study_id)) or 0
    faces = session.scalar(select(func.count(Face.id)).join(Media).where(Media.study_id == study_id)) or 0
    preds = (
        session.scalar(select(func.count(Prediction.id)).join(Face).join(Media).where(Media.study_id == study_id)) or 0
    )
    tracks = session.scalar(select(func.count(Track.id)).join(Media).where(Media.study_id == study_id)) or 0
    crops = (
        session.scalar(select(func.count(Face.id)).join(Media).where(Media.study_id == study_id, crop_available())) or 0
    )
    feats = (
        session.scalar(
            select(func.count(Face.id)).join(Media).where(Media.study_id == study_id, Face.features.is_not(None))
        )
        or 0
    )
    face_ann = (
        session.scalar(select(func.count(Annotation.id)).join(Face).join(Media).where(Media.study_id == study_id)) or 0
    )
    track_ann = (
        session.scalar(
            select(func.count(Annotation.id))
            .join(Track, Annotation.track_id == Track.id)
            .join(Media, Track.media_id == Media.id)
            .where(Media.study_id == study_id)
        )
        or 0
    )
    partial = select(func.count(Media.id)).where(Media.study_id == study_id, Media.analysis_status == "partial")
    partial_faces = (
        select(func.count(Face.id)).join(Media).where(Media.study_id == study_id, Media.analysis_status == "partial")
    )
    return {
        "media": media,
        "faces": faces,
        "predictions": preds,
        "tracks": tracks,
        "crops": crops,
        "features": feats,
        "annotations": face_ann + track_ann,
        "partial_media": session.scalar(partial) or 0,
        "partial_faces": session.scalar(partial_faces) or 0,
    }


def track_face_times(session: Session, study: str, track_id: int) -> list[tuple[int, float | None]]:
    """``(face id, time)`` of every face of a track of ``study`` in time order (none for another study's track).

    One query on the faces' track index; no row is resolved.
    """
    stmt = (
        select(Face.id, Face.time_s)
        .join(Track, Track.id == Face.track_id)
        .join(Media, Media.id == Track.media_id)
        .join(Study, Study.id == Media.study_id)
        .where(Face.track_id == track_id, Study.name == study)
    )
    rows = [(int(i), None if t is None else float(t)) for i, t in session.execute(stmt)]
    return sorted(rows, key=lambda r: (r[1] or 0.0, r[0]))
