"""Persons and class studies: person corrections, lecture segments, recording metadata, class and study tables.

:class:`db.services.LabelStore` holds one :class:`Classroom` as ``store.classroom``; each method runs in one
transaction of the store (:meth:`db.service_base.StoreBase.transaction`), retried on lock errors.
"""

from __future__ import annotations

from pathlib import Path

from sqlalchemy.orm import Session

from db import (
    classroom,
    persons,
    recording_info,
    repo,
    segments,
    status,
    study_tables,
)
from db.classroom import ClassTables
from db.persons import PersonChangeRow, PersonRow
from db.recording_info import RecordingInfo
from db.segments import SegmentRow
from db.service_base import Service
from db.study_tables import Participants, StudyTables


class Classroom(Service):
    """Persons and class studies."""

    def persons(self, media_id: int) -> list[PersonRow]:
        """The current persons of a recording, corrections applied."""
        return self._tx(lambda s: persons.current_persons(s, media_id), write=False)

    def person_history(self, media_id: int) -> list[PersonChangeRow]:
        """Every rename, merge and split of a recording's persons, oldest first."""
        return self._tx(lambda s: persons.history(s, media_id), write=False)

    def rename_person(
        self, person_id: int, participant: str | None, annotator: str, note: str | None = None, *, owner: bool
    ) -> int:
        """Gives a person a participant id (appended to the history); returns the correction's id.

        Raises:
            PersonChangeError: Another person of the recording has that id already (merge them instead).
            NotAllowedError: Not an owner, and the study keeps person changes for owners.
        """
        return self._tx(lambda s: persons.rename(s, person_id, participant, annotator, note, owner=owner).id)

    def merge_persons(
        self, person_id: int, other_person_id: int, annotator: str, note: str | None = None, *, owner: bool
    ) -> int:
        """Moves every track of ``other_person_id`` into ``person_id`` (appended to the history).

        Raises:
            PersonChangeError: The two were seen at the same moment (two faces of one frame), or cannot be merged.
            NotAllowedError: Not an owner, and the study keeps person changes for owners.
        """
        return self._tx(lambda s: persons.merge(s, person_id, other_person_id, annotator, note, owner=owner).id)

    def split_track(self, track_id: int, annotator: str, note: str | None = None, *, owner: bool) -> int:
        """Moves one track out of its person into a new person (appended to the history).

        Raises:
            PersonChangeError: The track is its person's only one.
            NotAllowedError: Not an owner, and the study keeps person changes for owners.
        """
        return self._tx(lambda s: persons.split(s, track_id, annotator, note, owner=owner).id)

    def split_track_at(
        self, track_id: int, time_s: float, annotator: str, note: str | None = None, *, owner: bool
    ) -> int:
        """Splits a track at a time: its faces from ``time_s`` on go to a new track of a new person (history row).

        Raises:
            PersonChangeError: No face on one side of the time, or the track has whole-track labels.
            NotAllowedError: Not an owner, and the study keeps person changes for owners.
        """
        return self._tx(lambda s: persons.split_at(s, track_id, time_s, annotator, note, owner=owner).id)

    def segments(self, study: str, media_id: int | None = None) -> list[SegmentRow]:
        """The lecture segments of a study's recordings (or of one), by recording and start."""

        def work(s: Session) -> list[SegmentRow]:
            ids = [m.id for m in status.list_media(s, repo.get_study(s, study))]
            return segments.list_segments(
                s, [media_id] if media_id is not None and media_id in ids else ([] if media_id is not None else ids)
            )

        return self._tx(work, write=False)

    def import_segments(self, study: str, path: Path, created_by: str | None = None) -> list[SegmentRow]:
        """Adds the lecture segments of a CSV file, all or none (see :mod:`db.segments`).

        Raises:
            SegmentsError: Naming every refused line; nothing was written.
        """
        return self._tx(lambda s: segments.import_segments(s, study, Path(path), created_by))

    def add_segment(
        self, media_id: int, name: str, start_s: float, end_s: float, created_by: str | None = None
    ) -> SegmentRow:
        """Adds one lecture segment (same checks as the import)."""
        return self._tx(lambda s: segments.add_segment(s, media_id, name, start_s, end_s, created_by))

    def delete_segment(self, segment_id: int) -> None:
        """Removes a lecture segment."""
        self._tx(lambda s: segments.delete_segment(s, segment_id))

    def class_tables(self, study: str) -> ClassTables:
        """The online-class tables of a study (:mod:`db.classroom`), persons corrected."""
        return self._tx(lambda s: classroom.class_tables(s, study), write=False)

    def study_tables(self, study: str, participants: Participants | None = None) -> StudyTables:
        """The study-level tables (:mod:`db.study_tables`); ``participants`` None: each person is a participant."""
        return self._tx(lambda s: study_tables.study_tables(s, study, participants), write=False)

    def set_recording_info(
        self, media_id: int, *, course: str | None, recording: str | None, day: str | None
    ) -> RecordingInfo:
        """Sets a recording's course, name and date (:mod:`db.recording_info`); empty or None clears one."""
        return self._tx(
            lambda s: recording_info.set_recording_info(s, media_id, course=course, recording=recording, day=day)
        )

    def import_recording_info(self, study: str, path: Path) -> list[RecordingInfo]:
        """Sets the course, name and date of the recordings a CSV names, all or none (:mod:`db.recording_info`)."""
        return self._tx(lambda s: recording_info.import_recording_info(s, study, Path(path)))

    def recording_infos(self, study: str) -> dict[int, RecordingInfo]:
        """The metadata of a study's recordings, by media id (:mod:`db.recording_info`)."""
        return self._tx(lambda s: recording_info.recording_infos(s, repo.get_study(s, study).id), write=False)
