"""Persons of a recording: the analysis's joining of tracks, and people's renames, merges and splits on top.

The analysis gives each track a person (``person`` in the analyze JSON, stored once in ``person_tracks``). People
change that only by appending :class:`db.schema.PersonCorrection` rows; the current persons are the stored ones with
every correction replayed in order (:func:`current_persons`), so every table and export follows the corrections and
the history stays complete. Functions take the caller's session and never commit.

Who may change persons (rename, merge, split, and the roster's assignments) is decided in one place,
:func:`check_may_change`: the study's owners, or every annotator when the study sets ``persons_by_annotators``.
Every path (app, command line, roster imports) goes through it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from db import repo, status
from db.errors import NotAllowedError, StoreError
from db.schema import (
    Annotation,
    Annotator,
    EngagementWindow,
    Face,
    Media,
    Person,
    PersonCorrection,
    PersonTrack,
    Study,
    Track,
)


class PersonChangeError(StoreError):
    """A rename, merge or split that would make the persons wrong (the message says why and what to do)."""


@dataclass(frozen=True)
class PersonRow:
    """A current person of a recording.

    Attributes:
        person_id: Database id.
        media_id: The recording.
        person_index: The analysis's number (``P{n}``).
        participant: The participant id people gave it, or None.
        label: ``participant``, else ``P{person_index}``.
        key: Study-wide key: the participant id, else ``m{media_id}-P{person_index}``.
        track_ids: Its tracks' database ids, by start.
        track_indexes: Their track numbers.
        n_faces: Faces over its tracks.
        start_s: First sighting.
        end_s: Last sighting.
    """

    person_id: int
    media_id: int
    person_index: int
    participant: str | None
    label: str
    key: str
    track_ids: tuple[int, ...]
    track_indexes: tuple[int, ...]
    n_faces: int
    start_s: float | None
    end_s: float | None


@dataclass(frozen=True)
class PersonChangeRow:
    """One row of a recording's person history."""

    id: int
    media_id: int
    kind: str
    person_id: int
    other_person_id: int | None
    track_id: int | None
    participant: str | None
    annotator: str
    note: str | None
    created_at: object


@dataclass(frozen=True)
class _TrackInfo:
    id: int
    index: int
    start_s: float | None
    end_s: float | None
    n_faces: int


def store_persons(session: Session, media_id: int, persons: Mapping[int, int | None]) -> int:
    """Stores the analysis's person of each track of a recording that has none yet.

    Args:
        session: The caller's session.
        media_id: The recording.
        persons: Track number to person number (None: a person of its own).

    Returns:
        Tracks newly given a person.
    """
    tracks = {t.track_index: t for t in session.scalars(select(Track).where(Track.media_id == media_id))}
    have = set(
        session.scalars(select(PersonTrack.track_id).where(PersonTrack.track_id.in_([t.id for t in tracks.values()])))
    )
    rows = {p.person_index: p for p in session.scalars(select(Person).where(Person.media_id == media_id))}
    next_index = max([*rows, *(p for p in persons.values() if p is not None), -1]) + 1
    added = 0
    for number, track in sorted(tracks.items()):
        if track.id in have:
            continue
        index = persons.get(number)
        if index is None:
            index, next_index = next_index, next_index + 1
        if index not in rows:
            rows[index] = Person(media_id=media_id, person_index=index)
            session.add(rows[index])
            session.flush()
        session.add(PersonTrack(track_id=track.id, person_id=rows[index].id))
        added += 1
    session.flush()
    return added


def _state(
    session: Session, media_id: int
) -> tuple[dict[int, Person], dict[int, _TrackInfo], dict[int, int], dict[int, str]]:
    persons = {p.id: p for p in session.scalars(select(Person).where(Person.media_id == media_id))}
    stmt = (
        select(Track.id, Track.track_index, Track.start_s, Track.end_s, Track.n_faces, PersonTrack.person_id)
        .join(PersonTrack, PersonTrack.track_id == Track.id)
        .where(Track.media_id == media_id)
    )
    tracks: dict[int, _TrackInfo] = {}
    assign: dict[int, int] = {}
    for tid, index, start, end, n, pid in session.execute(stmt):
        tracks[tid] = _TrackInfo(tid, index, start, end, n or 0)
        assign[tid] = pid
    names: dict[int, str] = {}
    stmt2 = select(PersonCorrection).where(PersonCorrection.media_id == media_id).order_by(PersonCorrection.id)
    for c in session.scalars(stmt2):
        if c.kind == "rename":
            if c.participant:
                names[c.person_id] = c.participant
            else:
                names.pop(c.person_id, None)
        elif c.kind == "merge" and c.other_person_id is not None:
            for t, p in list(assign.items()):
                if p == c.other_person_id:
                    assign[t] = c.person_id
            if c.person_id not in names and c.other_person_id in names:
                names[c.person_id] = names.pop(c.other_person_id)
        elif c.kind == "split" and c.track_id in assign:
            assign[c.track_id] = c.person_id
    return persons, tracks, assign, names


def current_persons(session: Session, media_id: int) -> list[PersonRow]:
    """The persons of a recording after every correction, by first sighting (persons left without a track omitted)."""
    persons, tracks, assign, names = _state(session, media_id)
    out = []
    for pid, p in persons.items():
        ts = sorted((tracks[t] for t, q in assign.items() if q == pid), key=lambda t: (t.start_s or 0.0, t.index))
        if not ts:
            continue
        name = names.get(pid)
        starts = [t.start_s for t in ts if t.start_s is not None]
        ends = [t.end_s for t in ts if t.end_s is not None]
        out.append(
            PersonRow(
                person_id=pid,
                media_id=media_id,
                person_index=p.person_index,
                participant=name,
                label=name or f"P{p.person_index}",
                key=name or f"m{media_id}-P{p.person_index}",
                track_ids=tuple(t.id for t in ts),
                track_indexes=tuple(t.index for t in ts),
                n_faces=sum(t.n_faces for t in ts),
                start_s=min(starts) if starts else None,
                end_s=max(ends) if ends else None,
            )
        )
    out.sort(key=lambda r: (r.start_s if r.start_s is not None else float("inf"), r.person_index))
    return out


def check_may_change(session: Session, media_id: int, owner: bool, action: str) -> None:
    """Raises unless the caller may change the persons of a recording (an owner, or the study allows annotators).

    Raises:
        NotAllowedError: For an annotator when the study keeps person changes for its owners.
    """
    if owner:
        return
    stmt = select(Study.persons_by_annotators).join(Media, Media.study_id == Study.id).where(Media.id == media_id)
    if not session.scalar(stmt):
        raise NotAllowedError(action)


def check_may_change_study(session: Session, study_id: int, owner: bool, action: str) -> None:
    """:func:`check_may_change` for a study-wide change (a roster or assignment import)."""
    if not owner and not session.scalar(select(Study.persons_by_annotators).where(Study.id == study_id)):
        raise NotAllowedError(action)


def _person(session: Session, person_id: int) -> Person:
    return repo.get_row(session, Person, person_id, "person")


def _overlap(a: Sequence[_TrackInfo], b: Sequence[_TrackInfo]) -> tuple[_TrackInfo, _TrackInfo] | None:
    for x in a:
        for y in b:
            if x.start_s is None or x.end_s is None or y.start_s is None or y.end_s is None:
                continue
            if x.start_s <= y.end_s and y.start_s <= x.end_s:
                return x, y
    return None


def _add(session: Session, annotator: str, **values: object) -> PersonCorrection:
    who = repo.get_or_create_annotator(session, annotator)
    row = PersonCorrection(annotator_id=who.id, **values)
    session.add(row)
    session.flush()
    return row


def rename(
    session: Session, person_id: int, participant: str | None, annotator: str, note: str | None = None, *, owner: bool
) -> PersonCorrection:
    """Gives a person a participant id (None or empty removes it).

    Raises:
        PersonChangeError: Another person of the recording already has that participant id.
        NotAllowedError: Not an owner, and the study keeps person changes for owners.
    """
    p = _person(session, person_id)
    check_may_change(session, p.media_id, owner, "renaming a person")
    name = (participant or "").strip() or None
    if name is not None and len(name) > 200:
        raise PersonChangeError("a participant id has at most 200 characters")
    if name is not None:
        for other in current_persons(session, p.media_id):
            if other.participant == name and other.person_id != person_id:
                raise PersonChangeError(
                    f"{other.label} of this recording is already called {name!r}; if both are the same student, "
                    f"merge P{p.person_index} into {other.label} instead"
                )
    return _add(
        session, annotator, media_id=p.media_id, kind="rename", person_id=person_id, participant=name, note=note
    )


def merge(
    session: Session, person_id: int, other_person_id: int, annotator: str, note: str | None = None, *, owner: bool
) -> PersonCorrection:
    """Moves every track of ``other_person_id`` to ``person_id``.

    Raises:
        PersonChangeError: The two are one person already, belong to different recordings, or were seen at the same
            moment (two faces of one frame are two people).
    """
    a, b = _person(session, person_id), _person(session, other_person_id)
    check_may_change(session, a.media_id, owner, "merging persons")
    if a.media_id != b.media_id:
        raise PersonChangeError(
            "the two persons belong to different recordings; give both the same participant id "
            "instead (rename), which joins them in the tables"
        )
    _, tracks, assign, names = _state(session, a.media_id)
    ta = [tracks[t] for t, p in assign.items() if p == a.id]
    tb = [tracks[t] for t, p in assign.items() if p == b.id]
    if a.id == b.id or not ta or not tb:
        raise PersonChangeError("nothing to merge: pick two different persons that both have tracks")
    clash = _overlap(ta, tb)
    if clash is not None:
        x, y = clash
        la, lb = names.get(a.id, f"P{a.person_index}"), names.get(b.id, f"P{b.person_index}")
        raise PersonChangeError(
            f"refused: {la} (track {x.index}, {x.start_s:.1f}-{x.end_s:.1f} s) and {lb} (track {y.index}, "
            f"{y.start_s:.1f}-{y.end_s:.1f} s) are on screen at the same time, so they are two people; if a track "
            "holds the wrong student, split it off first"
        )
    return _add(session, annotator, media_id=a.media_id, kind="merge", person_id=a.id, other_person_id=b.id, note=note)


def split(session: Session, track_id: int, annotator: str, note: str | None = None, *, owner: bool) -> PersonCorrection:
    """Moves one track out of its person into a new person.

    Raises:
        PersonChangeError: The track's person has no other track (nothing to split).
        NotAllowedError: Not an owner, and the study keeps person changes for owners.
    """
    track = repo.get_row(session, Track, track_id, "track")
    check_may_change(session, track.media_id, owner, "splitting a track")
    _, _, assign, _ = _state(session, track.media_id)
    if track_id not in assign:
        raise PersonChangeError(f"track {track.track_index} has no person yet; ingest its analysis again")
    if sum(1 for p in assign.values() if p == assign[track_id]) < 2:
        raise PersonChangeError(f"track {track.track_index} is its person's only track: nothing to split off")
    top = session.scalar(select(func.max(Person.person_index)).where(Person.media_id == track.media_id))
    new = Person(media_id=track.media_id, person_index=(top or 0) + 1)
    session.add(new)
    session.flush()
    return _add(
        session, annotator, media_id=track.media_id, kind="split", person_id=new.id, track_id=track_id, note=note
    )


def split_at(
    session: Session, track_id: int, time_s: float, annotator: str, note: str | None = None, *, owner: bool
) -> PersonCorrection:
    """Splits a track at a time: its faces from ``time_s`` on become a new track of a new person.

    For a track that continued with another student's face (a re-flow put a newcomer in a leaver's tile): the faces
    before stay, the rest move to a new track (numbered after the recording's last) whose person is new; the move is
    recorded as a ``split`` row naming the new track, with who, when and the time in the note. Engagement windows
    starting at or after ``time_s`` move with the faces.

    Raises:
        PersonChangeError: No face on one side of ``time_s``, or the track has whole-track labels (they would
            silently cover both students: split before labelling whole tracks, or undo those labels first).
        NotAllowedError: Not an owner, and the study keeps person changes for owners.
    """
    track = repo.get_row(session, Track, track_id, "track")
    check_may_change(session, track.media_id, owner, "splitting a track")
    times = list(session.execute(select(Face.id, Face.time_s).where(Face.track_id == track_id)))
    after = [i for i, t in times if t is not None and t >= time_s]
    before = [t for _, t in times if t is not None and t < time_s]
    if not after or not before:
        raise PersonChangeError(
            f"track {track.track_index} has no face {'after' if before else 'before'} {time_s:g} s: pick a time "
            "between its first and last face, or split the whole track off"
        )
    if session.scalar(select(func.count()).select_from(Annotation).where(Annotation.track_id == track_id)):
        raise PersonChangeError(
            f"track {track.track_index} has labels for the whole track, which would cover both students; "
            "undo them, split, then label each piece"
        )
    _, _, assign, _ = _state(session, track.media_id)
    if track_id not in assign:
        raise PersonChangeError(f"track {track.track_index} has no person yet; ingest its analysis again")
    top_track = session.scalar(select(func.max(Track.track_index)).where(Track.media_id == track.media_id)) or 0
    moved = [t for i, t in times if i in set(after)]
    piece = Track(
        media_id=track.media_id,
        track_index=top_track + 1,
        n_faces=len(after),
        start_s=min(t for t in moved if t is not None),
        end_s=max(t for t in moved if t is not None),
    )
    session.add(piece)
    session.flush()
    original = session.scalar(select(PersonTrack.person_id).where(PersonTrack.track_id == track_id))
    session.add(PersonTrack(track_id=piece.id, person_id=original))
    session.execute(update(Face).where(Face.id.in_(after)).values(track_id=piece.id))
    session.execute(
        update(EngagementWindow)
        .where(EngagementWindow.track_id == track_id, EngagementWindow.start_s >= time_s)
        .values(track_id=piece.id)
    )
    track.n_faces, track.end_s = len(before), max(before)
    status.mark(session, faces=after)
    top = session.scalar(select(func.max(Person.person_index)).where(Person.media_id == track.media_id))
    new = Person(media_id=track.media_id, person_index=(top or 0) + 1)
    session.add(new)
    session.flush()
    text = f"track {track.track_index} split at {time_s:g} s" + (f"; {note}" if note else "")
    return _add(
        session, annotator, media_id=track.media_id, kind="split", person_id=new.id, track_id=piece.id, note=text
    )


def history(session: Session, media_id: int) -> list[PersonChangeRow]:
    """Every person correction of a recording, oldest first."""
    repo.get_row(session, Media, media_id, "media item")
    stmt = (
        select(PersonCorrection, Annotator.name)
        .join(Annotator, Annotator.id == PersonCorrection.annotator_id)
        .where(PersonCorrection.media_id == media_id)
        .order_by(PersonCorrection.id)
    )
    return [
        PersonChangeRow(
            id=c.id,
            media_id=c.media_id,
            kind=c.kind,
            person_id=c.person_id,
            other_person_id=c.other_person_id,
            track_id=c.track_id,
            participant=c.participant,
            annotator=who,
            note=c.note,
            created_at=c.created_at,
        )
        for c, who in session.execute(stmt)
    ]
