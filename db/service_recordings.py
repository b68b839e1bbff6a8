"""The read side of a study: studies, media, tracks, faces, crops, features and history, each call one read.

:class:`db.services.LabelStore` holds one :class:`Recordings` as ``store.recordings``; each method runs in one
transaction of the store (:meth:`db.service_base.StoreBase.transaction`), retried on lock errors.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from sqlalchemy import select
from sqlalchemy.orm import Session

from db import (
    codecs,
    crops,
    face_pages,
    labels,
    media_files,
    recording,
    repo,
    review,
    status,
)
from db.rows import (
    AnnotationRow,
    FaceLabel,
    MediaRow,
    StudyRow,
    TrackRow,
)
from db.schema import Media, Track
from db.service_base import Service


class Recordings(Service):
    """The read side of a study."""

    def studies(self) -> list[StudyRow]:
        """All studies with their sizes."""
        return self._tx(repo.list_studies, write=False)

    def media(self, study: str) -> list[MediaRow]:
        """The media items of a study."""
        return self._tx(lambda s: status.list_media(s, repo.get_study(s, study)), write=False)

    def tracks(self, media_id: int, *, with_windows: bool = True) -> list[TrackRow]:
        """The tracks of a video, with engagement windows (unless ``with_windows`` is False)."""
        return self._tx(lambda s: repo.list_tracks(s, media_id, with_windows=with_windows), write=False)

    def faces(self, study: str, *, media_id: int | None = None, model: str | None = None) -> list[FaceLabel]:
        """Every face of a study (or of one media item) with prediction and current labels."""

        def work(s: Session) -> list[FaceLabel]:
            st = repo.get_study(s, study)
            if media_id is None:
                rows, _ = labels.face_labels(s, st.id, model)
                return rows
            if model is None:  # the kept read model (review.browse) of one media item
                return review.browse(s, study, review.ReviewFilter(media_id=media_id))
            # One media item under another model: its faces only, in keyset pages, then in the whole-study order.
            primary = face_pages.study_model(s, st.id, model)
            out = [r for page in face_pages.iter_face_pages(s, st.id, primary, media_id=media_id) for r in page]
            order = {fid: i for i, fid in enumerate(repo.face_order(s, media_id))}
            return sorted(out, key=lambda r: order[r.face_id])

        return self._tx(work, write=False)

    def face(self, face_id: int, *, model: str | None = None) -> FaceLabel:
        """One face with its prediction and current labels."""

        def work(s: Session) -> FaceLabel:
            study = repo.study_of_face(s, face_id)
            return face_pages.faces_by_id(s, study.id, [face_id], face_pages.study_model(s, study.id, model))[0]

        return self._tx(work, write=False)

    def faces_by_id(self, study: str, face_ids: Sequence[int]) -> list[FaceLabel]:
        """The rows of those of ``face_ids`` that are faces of ``study``, in the order asked (only those resolved)."""

        def work(s: Session) -> list[FaceLabel]:
            st = repo.get_study(s, study)
            mine = repo.faces_in_study(s, study, face_ids)
            ids = [i for i in face_ids if i in mine]
            rows = face_pages.faces_by_id(s, st.id, ids, face_pages.study_model(s, st.id, None)) if ids else []
            by_id = {r.face_id: r for r in rows}
            return [by_id[i] for i in ids if i in by_id]

        return self._tx(work, write=False) if face_ids else []

    def track_face_times(self, study: str, track_id: int) -> list[tuple[int, float | None]]:
        """``(face id, time)`` of each face of a track of ``study`` in time order (none for another study's track)."""
        return self._tx(lambda s: repo.track_face_times(s, study, track_id), write=False)

    def faces_in_study(self, study: str, face_ids: Sequence[int]) -> set[int]:
        """Those of ``face_ids`` that are faces of ``study`` (one indexed query; none for an unknown study)."""
        return self._tx(lambda s: repo.faces_in_study(s, study, face_ids), write=False) if face_ids else set()

    def media_in_study(self, study: str, media_ids: Sequence[int]) -> set[int]:
        """Those of ``media_ids`` that are media items of ``study`` (one indexed query)."""
        return self._tx(lambda s: repo.media_in_study(s, study, media_ids), write=False) if media_ids else set()

    def frame_boxes(self, media_id: int, frame: int | None) -> list[tuple[int, tuple[float, float, float, float]]]:
        """``(face_id, box)`` of every face on one frame of a media item (all faces of an image), in face order."""
        return self._tx(lambda s: repo.frame_boxes(s, media_id, frame), write=False)

    def recording_tracks(self, study: str, media_id: int) -> list[recording.TrackSummary]:
        """The tracks of a recording of ``study`` with their class counts (none for another study's item).

        One grouped read of the kept read model (:func:`db.recording.track_summaries`): no face row is resolved.
        """

        def work(s: Session) -> list[recording.TrackSummary]:
            if not repo.media_in_study(s, study, [media_id]):
                return []
            return recording.track_summaries(s, media_id)

        return self._tx(work, write=False)

    def recording_series(
        self,
        study: str,
        media_id: int,
        track_ids: Sequence[int | None],
        width_s: float,
        *,
        model: bool = True,
        human: bool = True,
    ) -> dict[int | None, recording.TrackSeries]:
        """The binned series of some tracks of a recording of ``study`` (:func:`db.recording.track_series`)."""

        def work(s: Session) -> dict[int | None, recording.TrackSeries]:
            if not track_ids or not repo.media_in_study(s, study, [media_id]):
                return {}
            st = repo.get_study(s, study)
            return recording.track_series(s, st.id, media_id, track_ids, width_s, model=model, human=human)

        return self._tx(work, write=False)

    def key_frame_boxes(
        self, study: str, media_id: int, n: int = 4
    ) -> tuple[tuple[int, ...], tuple[tuple[int, int, tuple[float, float, float, float]], ...]]:
        """Up to ``n`` frames of a recording of ``study`` spread over it, with their boxes (:mod:`db.recording`)."""

        def work(
            s: Session,
        ) -> tuple[tuple[int, ...], tuple[tuple[int, int, tuple[float, float, float, float]], ...]]:
            if not repo.media_in_study(s, study, [media_id]):
                return (), ()
            return recording.key_frame_boxes(s, media_id, n)

        return self._tx(work, write=False)

    def media_summary(self, study: str) -> dict[int, tuple[int, float]]:
        """Media id to ``(tracks, first face's time)`` of a study's items, for the Library (no face row loaded)."""
        return self._tx(lambda s: repo.media_summary(s, study), write=False)

    def face_crop(self, face_id: int) -> bytes | None:
        """The PNG crop of a face, stored or re-cut from its kept recording (None when it has neither)."""
        return self.face_crops([face_id]).get(face_id)

    def face_features(self, face_id: int) -> np.ndarray | None:
        """The stored backbone features of a face (None when it has none)."""
        stored = self._tx(lambda s: repo.stored_features(s, face_id), write=False)
        return codecs.features_from_bytes(*stored) if stored is not None else None

    def history(self, *, face_id: int | None = None, track_id: int | None = None) -> list[AnnotationRow]:
        """The full correction history of a face (its track's rows included) or of a track, oldest first."""
        return self._tx(lambda s: repo.history(s, face_id=face_id, track_id=track_id), write=False)

    def predictions(self, face_id: int) -> list[dict[str, Any]]:
        """Every model's prediction of a face, oldest first."""
        return self._tx(lambda s: repo.predictions_of_face(s, face_id), write=False)

    def media_path(self, media_id: int) -> Path | None:
        """The kept file of a media item, None when none is kept (features-only mode, deleted, or never kept).

        Raises:
            NotFoundError: No such media item.
        """

        def work(s: Session) -> Path:
            media = repo.get_row(s, Media, media_id, "media")
            return media_files.media_path(self.base.media_root, media.study_id, media.sha256, media.filename)

        path = self._tx(work, write=False)
        return path if path.is_file() else None

    def playable_media_path(self, media_id: int) -> Path | None:
        """The file a browser's video player can play for a media item, None when no file is kept.

        A kept animated GIF (a media item of kind ``video``) is converted once to H.264 MP4 (VP9 WebM without an
        H.264 encoder) by :func:`models.playable.to_browser_video` and the copy is kept beside it
        (``<sha256>.play.mp4``, owner-only; removed with the media item). Any other file is returned as it is.

        Raises:
            NotFoundError: No such media item.
            BadInputError: The kept file cannot be converted.
        """
        from models.playable import browser_suffix, needs_conversion, to_browser_video

        def work(s: Session) -> tuple[Path, str]:
            media = repo.get_row(s, Media, media_id, "media")
            return media_files.media_path(
                self.base.media_root, media.study_id, media.sha256, media.filename
            ), media.kind

        path, kind = self._tx(work, write=False)
        if not path.is_file():
            return None
        if kind != "video" or not needs_conversion(path):
            return path
        target = media_files.playable_path(path, browser_suffix())
        if not target.is_file():
            to_browser_video(path, target, name=path.name)
        return target

    def media_by_sha256(self, study: str, sha256: str) -> MediaRow | None:
        """The media item of a study with these bytes, None when the study does not hold them."""
        return self._tx(lambda s: repo.media_by_sha256(s, study, sha256), write=False)

    def best_faces(self, media_id: int, track_ids: Sequence[int] | None = None) -> dict[int, int]:
        """Track id to the face id of its most confident detection, for a recording's thumbnails.

        With ``track_ids``, only those tracks of the recording (one indexed query each, whatever the recording's size).
        """
        if track_ids is None:
            return self._tx(lambda s: repo.best_faces(s, media_id), write=False)

        def work(s: Session) -> dict[int, int]:
            mine = set(s.scalars(select(Track.id).where(Track.media_id == media_id, Track.id.in_(list(track_ids)))))
            return repo.best_faces_of_tracks(s, [t for t in track_ids if t in mine])

        return self._tx(work, write=False)

    def face_crops(self, face_ids: Sequence[int]) -> dict[int, bytes]:
        """The PNG crops of several faces, stored or re-cut (faces without one are absent; see :mod:`db.crops`).

        The database is read in one transaction; recordings are decoded after it (each once, in time order), and
        re-cut crops go through :attr:`crop_cache`.
        """
        if not face_ids:
            return {}
        sources = self._tx(lambda s: crops.crop_sources(s, self.base.media_root, face_ids), write=False)
        return crops.face_crops(sources, face_ids, self.base.crop_cache)

    def study_crops(self, study: str, limit: int = 64) -> list[bytes]:
        """Up to ``limit`` stored face crops (PNG) of the study, e.g. to calibrate an int8 export (one query)."""
        return self._tx(lambda s: repo.study_crops(s, repo.get_study(s, study).id, limit), write=False)
