"""The Roster page's actions: participants, a recording's expected list and its persons' participants, in one view.

Each function is one user action over :mod:`db.roster_services` (owners only, unless the study lets annotators change
persons; ids from the page are checked against the study there). Uploaded CSVs are refused whole with line numbers.
"""

from __future__ import annotations

import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from db import roster_services as rs
from db.persons import PersonRow
from db.roster import AssignmentRow, ParticipantRow, RecordingRoster
from db.services import LabelStore
from webapp.services.classroom import person_thumbnails
from webapp.services.studies import study_settings
from webapp.services.who import require_annotator


@dataclass(frozen=True)
class RosterView:
    """What the Roster page shows of one recording.

    Attributes:
        participants: The study's roster.
        persons: The recording's current persons.
        roster: Every participant's row with its reason, and the person -> participant mapping.
        thumbnails: One face crop per person id, as this viewer may see it.
        history: The recording's assignments, oldest first.
        may_change: Whether this viewer may change the roster and the assignments.
        annotators_allowed: Whether the study lets annotators (not only owners) change persons.
    """

    participants: tuple[ParticipantRow, ...]
    persons: tuple[PersonRow, ...]
    roster: RecordingRoster
    thumbnails: dict[int, bytes]
    history: tuple[AssignmentRow, ...]
    may_change: bool
    annotators_allowed: bool


def roster_view(store: LabelStore, study: str, media_id: int, owner: bool) -> RosterView:
    """The roster, persons, reasons and history of a recording of ``study``.

    Raises:
        NotFoundError: No such recording in ``study``.
    """
    r = rs.recording_roster(store, study, media_id)
    persons = store.classroom.persons(media_id)
    allowed = rs.persons_by_annotators(store, study)
    return RosterView(
        participants=tuple(rs.participants(store, study)),
        persons=tuple(persons),
        roster=r,
        thumbnails=person_thumbnails(store, media_id, persons, study_settings(store, study), owner),
        history=tuple(rs.assignment_history(store, study, media_id)),
        may_change=owner or allowed,
        annotators_allowed=allowed,
    )


def _with_file(data: bytes, name: str) -> tuple[tempfile.TemporaryDirectory[str], Path]:
    tmp = tempfile.TemporaryDirectory(prefix="affectlab-roster-")
    path = Path(tmp.name) / name
    path.write_bytes(data)
    return tmp, path


def import_roster(store: LabelStore, study: str, data: bytes, *, owner: bool) -> int:
    """Imports an uploaded ``participant,name,group`` CSV, all or nothing; returns the rows written."""
    tmp, path = _with_file(data, "roster.csv")
    with tmp:
        return rs.import_roster(store, study, path, owner=owner)


def import_assignments(store: LabelStore, study: str, data: bytes, annotator: str | None, *, owner: bool) -> int:
    """Imports an uploaded ``recording,person,participant`` CSV, all or nothing; returns the assignments added."""
    who = require_annotator(annotator, "assigning persons")
    tmp, path = _with_file(data, "assignments.csv")
    with tmp:
        return rs.import_assignments(store, study, path, who, owner=owner)


def save_assignments(
    store: LabelStore,
    study: str,
    media_id: int,
    annotator: str | None,
    chosen: Mapping[int, str | None],
    *,
    owner: bool,
) -> int:
    """Stores the participants chosen for a recording's persons (only the changed ones are appended)."""
    who = require_annotator(annotator, "assigning persons")
    now = rs.recording_roster(store, study, media_id).persons
    changes = {p: c for p, c in chosen.items() if now.get(p) != c}
    return rs.assign(store, study, media_id, changes, who, owner=owner) if changes else 0


def save_expected(store: LabelStore, study: str, media_id: int, codes: Sequence[str], *, owner: bool) -> int:
    """Sets who a recording expects (empty: the whole roster)."""
    return rs.set_expected(store, study, media_id, codes, owner=owner)


def remember(store: LabelStore, study: str, media_id: int, annotator: str | None, *, owner: bool) -> int:
    """Assigns the recording's unassigned persons as in earlier recordings; returns how many."""
    who = require_annotator(annotator, "assigning persons")
    return rs.remember(store, study, media_id, who, owner=owner)


def allow_annotators(store: LabelStore, study: str, allow: bool, *, owner: bool) -> bool:
    """Lets annotators change persons and assignments (owners only)."""
    return rs.set_persons_by_annotators(store, study, allow, owner=owner)
