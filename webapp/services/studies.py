"""Reads of one study, scoped to it: studies, media, faces, tracks, crops and labelling rules.

A face, media item or track of another study reads as absent (``NotFoundError`` or empty), so that an id from a URL
or an old tab never reaches another study's data. Each check asks the database about the ids given only.
"""

from __future__ import annotations

from collections.abc import Sequence

from db.errors import NotFoundError, StudyNotFoundError
from db.review import StudySettings
from db.rows import FaceLabel, MediaRow, StudyRow, TrackRow
from db.services import LabelStore
from webapp.services.who import require_owner


def list_studies(store: LabelStore) -> list[StudyRow]:
    """Every study of the store."""
    return store.recordings.studies()


def study_media(store: LabelStore, study: str) -> list[MediaRow]:
    """The media items of a study (empty for a study that has none yet)."""
    try:
        return store.recordings.media(study)
    except StudyNotFoundError:
        return []


def study_faces(store: LabelStore, study: str, media_id: int | None = None) -> list[FaceLabel]:
    """The faces of a study or of one media item, with predictions and current labels."""
    try:
        return store.recordings.faces(study, media_id=media_id)
    except StudyNotFoundError:
        return []


def media_tracks(store: LabelStore, media_id: int, study: str, *, with_windows: bool = True) -> list[TrackRow]:
    """The person tracks of a video of ``study`` with their engagement windows (none for another study's video).

    ``with_windows=False`` for a choice list: the windows (one per face of a long recording) are not read.
    """
    if media_id not in store.recordings.media_in_study(study, [media_id]):
        return []
    return store.recordings.tracks(media_id, with_windows=with_windows)


def face_crop(store: LabelStore, face_id: int, study: str) -> bytes | None:
    """The PNG crop of a face of ``study`` (stored, or re-cut from the kept recording), None in features-only mode.

    Raises:
        NotFoundError: No such face in ``study``.
    """
    if face_id not in store.recordings.faces_in_study(study, [face_id]):
        raise NotFoundError(f"face of study {study!r}", face_id)
    return store.recordings.face_crop(face_id)


def study_settings(store: LabelStore, study: str) -> StudySettings:
    """The study's labelling rules."""
    return store.review.study_settings(study)


def set_study_settings(store: LabelStore, study: str, settings: StudySettings, *, owner: bool) -> StudySettings:
    """Stores the study's labelling rules.

    Raises:
        NotAllowedError: For anyone but a study owner.
    """
    require_owner(owner, "changing a study's labelling rules")
    return store.review.set_study_settings(study, settings)


def face_crops(store: LabelStore, face_ids: Sequence[int], study: str) -> dict[int, bytes]:
    """Crops of several faces of ``study`` at once, stored or re-cut (none in features-only mode; others left out).

    Membership is checked in SQL for the ids asked only (:meth:`Recordings.faces_in_study`).
    """
    mine = store.recordings.faces_in_study(study, face_ids)
    return store.recordings.face_crops([i for i in face_ids if i in mine])


def face_label(store: LabelStore, face_id: int, study: str) -> FaceLabel:
    """One face of ``study`` with its prediction and current labels.

    Raises:
        NotFoundError: No such face in ``study`` (another study's face id, from a URL or an old tab, reads the same).
    """
    if face_id not in store.recordings.faces_in_study(study, [face_id]):
        raise NotFoundError(f"face of study {study!r}", face_id)  # the same answer as for no face at all
    return store.recordings.face(face_id)
