"""The roster's services: each function is one transaction of :class:`db.services.LabelStore` over :mod:`db.roster`.

Changes (imports, assignments, remembered assignments) are for the study's owners, or for every annotator when the
study sets ``persons_by_annotators`` (:func:`db.persons.check_may_change`), on every path: the app's roster view and
``python -m db roster``. A recording id is checked against the study named (ids from a page are never trusted).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.orm import Session

from db import repo, roster
from db.errors import NotAllowedError, NotFoundError
from db.persons import check_may_change, check_may_change_study
from db.roster import AssignmentRow, AssignmentSource, ParticipantRow, RecordingRoster
from db.schema import Media
from db.services import LabelStore


def _recording(session: Session, study: str, media_id: int) -> int:
    st = repo.get_study(session, study)
    found = session.scalar(select(Media.id).where(Media.id == media_id, Media.study_id == st.id))
    if found is None:
        raise NotFoundError(f"recording of study {study!r}", media_id)
    return st.id


def participants(store: LabelStore, study: str) -> list[ParticipantRow]:
    """The study's roster, by participant id."""
    return store.transaction(lambda s: roster.participants(s, repo.get_study(s, study).id), write=False)


def import_roster(store: LabelStore, study: str, path: Path, *, owner: bool) -> int:
    """Imports a ``participant,name,group`` CSV, all or nothing; returns the rows written.

    Raises:
        RosterError: Naming every refused line.
        NotAllowedError: Not an owner, and the study keeps person changes for owners.
    """

    def work(s: Session) -> int:
        check_may_change_study(s, repo.get_study(s, study).id, owner, "importing a roster")
        return roster.import_roster(s, study, path)

    return store.transaction(work)


def import_expected(store: LabelStore, study: str, path: Path, *, owner: bool) -> int:
    """Sets the expected lists of a ``recording,participant`` CSV, all or nothing; returns the pairs written."""

    def work(s: Session) -> int:
        check_may_change_study(s, repo.get_study(s, study).id, owner, "setting who a recording expects")
        return roster.import_expected(s, study, path)

    return store.transaction(work)


def set_expected(store: LabelStore, study: str, media_id: int, codes: Sequence[str], *, owner: bool) -> int:
    """Replaces a recording's expected list with these participant ids (empty: the whole roster).

    Raises:
        RosterError: A participant id not on the roster.
    """

    def work(s: Session) -> int:
        study_id = _recording(s, study, media_id)
        check_may_change(s, media_id, owner, "setting who a recording expects")
        ids = {p.code: p.id for p in roster.participants(s, study_id)}
        unknown = [c for c in codes if c not in ids]
        if unknown:
            raise roster.RosterError(f"recording {media_id}", [f"no participant {c!r} on the roster" for c in unknown])
        return roster.set_expected(s, media_id, [ids[c] for c in codes])

    return store.transaction(work)


def assign(
    store: LabelStore,
    study: str,
    media_id: int,
    changes: Mapping[int, str | None],
    annotator: str,
    *,
    owner: bool,
    source: AssignmentSource = "app",
) -> int:
    """Assigns persons of a recording to participants (None: unassign), appended with who and when.

    Raises:
        RosterError: Unknown person or participant, or a participant given to two persons seen at the same time.
        NotFoundError: The recording is not in ``study``.
        NotAllowedError: Not an owner, and the study keeps person changes for owners.
    """

    def work(s: Session) -> int:
        _recording(s, study, media_id)
        check_may_change(s, media_id, owner, "assigning persons to participants")
        return roster.assign(s, media_id, changes, annotator, source)

    return store.transaction(work)


def import_assignments(store: LabelStore, study: str, path: Path, annotator: str, *, owner: bool) -> int:
    """Imports a ``recording,person,participant`` CSV, all or nothing; returns the assignments added."""

    def work(s: Session) -> int:
        check_may_change_study(s, repo.get_study(s, study).id, owner, "importing assignments")
        return roster.import_assignments(s, study, path, annotator)

    return store.transaction(work)


def remember(store: LabelStore, study: str, media_id: int, annotator: str, *, owner: bool) -> int:
    """Assigns a recording's unassigned persons as in the study's earlier recordings (tile and appearance)."""

    def work(s: Session) -> int:
        _recording(s, study, media_id)
        check_may_change(s, media_id, owner, "assigning persons to participants")
        return roster.remember(s, media_id, annotator)

    return store.transaction(work)


def recording_roster(store: LabelStore, study: str, media_id: int) -> RecordingRoster:
    """Every participant of ``study`` in one recording, with its reason, and the person -> participant mapping."""

    def work(s: Session) -> RecordingRoster:
        _recording(s, study, media_id)
        return roster.recording_roster(s, media_id)

    return store.transaction(work, write=False)


def assignment_history(store: LabelStore, study: str, media_id: int) -> list[AssignmentRow]:
    """Every assignment of a recording's persons, oldest first."""

    def work(s: Session) -> list[AssignmentRow]:
        _recording(s, study, media_id)
        return roster.assignment_history(s, media_id)

    return store.transaction(work, write=False)


def persons_by_annotators(store: LabelStore, study: str) -> bool:
    """Whether the study lets annotators (not only owners) change persons and assignments."""
    return store.transaction(lambda s: bool(repo.get_study(s, study).persons_by_annotators), write=False)


def set_persons_by_annotators(store: LabelStore, study: str, allow: bool, *, owner: bool) -> bool:
    """Lets annotators change persons (or keeps it for owners); for owners only.

    Raises:
        NotAllowedError: For anyone but an owner.
    """
    if not owner:
        raise NotAllowedError("letting annotators change persons")

    def work(s: Session) -> bool:
        st = repo.get_study(s, study)
        st.persons_by_annotators = bool(allow)
        return st.persons_by_annotators

    return store.transaction(work)
