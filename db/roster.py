"""The roster of a study: participants, who each recording expects, and which person of a recording is whom.

- *Participants* (``participant,name,group`` CSV, group optional): the study's list of students, by the id the
  researcher uses. Importing again updates names and groups; nobody is removed.
- *Expected*: a recording's list (``recording,participant`` CSV). A recording without a list expects everyone.
- *Assignments*: person of a recording -> participant, appended with who, when and how (``app``, ``csv``, ``cli``,
  ``remembered``); the newest row of a person holds (``participant_id`` None: unassigned). Never overwritten.
- *Remembered*: :func:`remember` assigns the unassigned persons of a recording from the study's earlier recordings
  where both the tile (the person's place in the frame) and the appearance (mean backbone features, centred on the
  mean of the persons compared) match; a participant already assigned there is not given twice.
- :func:`recording_roster` gives every participant of the study a row per recording, with a reason: ``visible``
  (assigned to a person with faces), ``not detected`` (expected, no person assigned), ``absent`` (not on the
  recording's list); :func:`reason_in` narrows a row to a time span, where a participant seen before and after it
  but not in it is ``camera-off or away``.

Bad CSV (unknown recordings, persons or participants, duplicates, a participant given to two persons seen at the same
time) is refused whole with every line number (:class:`RosterError`); nothing changes. Functions take the caller's
session and never commit; who may change persons is checked by :func:`db.persons.check_may_change`.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Literal

import numpy as np
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from db import feature_store, repo
from db.errors import FileRefusedError
from db.persons import PersonRow, current_persons
from db.schema import Annotator, Face, Media, Participant, PersonAssignment, RosterExpected, Track
from db.segments import find_video

Reason = Literal["visible", "camera-off or away", "not detected", "absent"]
"""Why a participant has (or has no) faces in a recording or a span of it."""
AssignmentSource = Literal["app", "csv", "cli", "remembered"]
ROSTER_COLUMNS = ("participant", "name", "group")
EXPECTED_COLUMNS = ("recording", "participant")
ASSIGN_COLUMNS = ("recording", "person", "participant")
REMEMBER_NEAR = 0.5
"""A person is at the same tile as an earlier one when their centres are within this many face sizes."""
REMEMBER_MIN_SIMILARITY = 0.5
"""Smallest centred-feature cosine similarity for a remembered assignment (both tile and appearance must match)."""
_SAMPLE_FACES = 64


class RosterError(FileRefusedError):
    """A roster, expected-list or assignment file (or one assignment) was refused; nothing was written."""


@dataclass(frozen=True)
class ParticipantRow:
    """A participant of a study's roster."""

    id: int
    code: str
    name: str
    group: str | None


@dataclass(frozen=True)
class RosterRow:
    """One participant in one recording.

    Attributes:
        media_id: The recording.
        participant: The participant's id (roster code).
        name: Display name.
        group: Group, or None.
        reason: ``visible``, ``not detected`` or ``absent`` (see the module docstring).
        person_ids: The recording's persons assigned to the participant (empty unless visible).
        spans: ``(start_s, end_s)`` of each of their tracks, by start: where the face was seen.
    """

    media_id: int
    participant: str
    name: str
    group: str | None
    reason: Reason
    person_ids: tuple[int, ...]
    spans: tuple[tuple[float, float], ...]


@dataclass(frozen=True)
class RecordingRoster:
    """What the study-level tables need of one recording (:func:`recording_roster`).

    Attributes:
        media_id: The recording.
        n_expected: Participants the recording expects (its list, else the whole roster).
        persons: Person id -> participant id (roster code) for every assigned current person.
        rows: One :class:`RosterRow` per participant of the study, in roster order (by participant id).
    """

    media_id: int
    n_expected: int
    persons: dict[int, str]
    rows: tuple[RosterRow, ...]


@dataclass(frozen=True)
class AssignmentRow:
    """One row of a recording's assignment history."""

    id: int
    media_id: int
    person_id: int
    participant: str | None
    source: str
    annotator: str
    created_at: datetime


def participants(session: Session, study_id: int) -> list[ParticipantRow]:
    """The study's roster, by participant id."""
    stmt = select(Participant).where(Participant.study_id == study_id).order_by(Participant.code)
    return [ParticipantRow(p.id, p.code, p.name, p.group_name) for p in session.scalars(stmt)]


def _read(path: Path, columns: Sequence[str], optional: Sequence[str] = ()) -> list[tuple[int, dict[str, str]]]:
    """The rows of a CSV file with exactly ``columns`` (``optional`` may be left out), with their line numbers."""
    try:
        text = Path(path).read_text(encoding="utf-8-sig")
    except UnicodeDecodeError:
        raise RosterError(str(path), ["the file is not UTF-8 text; save it as CSV UTF-8"]) from None
    except OSError as e:
        raise RosterError(str(path), [f"cannot read the file ({e.strerror or e})"]) from None
    reader = csv.reader(io.StringIO(text))
    header = [h.strip().lower() for h in next(reader, [])]
    need = [c for c in columns if c not in optional]
    if any(c not in columns for c in header) or any(c not in header for c in need) or len(set(header)) != len(header):
        raise RosterError(str(path), [f"line 1: the header must be {','.join(columns)} (in any order)"])
    rows: list[tuple[int, dict[str, str]]] = []
    problems = []
    for line, row in enumerate(reader, start=2):
        if not any(c.strip() for c in row):
            continue
        if len(row) != len(header):
            problems.append(f"line {line}: {len(row)} fields, the header has {len(header)}")
            continue
        rows.append((line, {k: v.strip() for k, v in zip(header, row, strict=True)}))
    if problems:
        raise RosterError(str(path), problems)
    return rows


def import_roster(session: Session, study: str, path: Path) -> int:
    """Adds (or renames, regroups) the participants of a ``participant,name,group`` CSV; returns rows written.

    Raises:
        RosterError: Naming every refused line (empty or too long ids and names, an id twice).
    """
    st = repo.get_study(session, study)
    rows = _read(path, ROSTER_COLUMNS, optional=("group", "name"))
    problems: list[str] = []
    seen: dict[str, int] = {}
    for line, d in rows:
        code, name = d["participant"], d.get("name", "")
        if not code or len(code) > 200 or len(name) > 200 or len(d.get("group", "")) > 200:
            problems.append(f"line {line}: a participant id of 1 to 200 characters (names, groups up to 200)")
        elif code in seen:
            problems.append(f"line {line}: participant {code!r} is already on line {seen[code]}")
        seen.setdefault(code, line)
    if problems:
        raise RosterError(str(path), problems)
    have = {p.code: p for p in session.scalars(select(Participant).where(Participant.study_id == st.id))}
    for _, d in rows:
        p = have.get(d["participant"])
        if p is None:
            p = Participant(study_id=st.id, code=d["participant"])
            session.add(p)
        p.name = d.get("name") or d["participant"]
        p.group_name = d.get("group") or None
    session.flush()
    return len(rows)


def _participant_ids(session: Session, study_id: int) -> dict[str, int]:
    stmt = select(Participant.code, Participant.id).where(Participant.study_id == study_id)
    return {c: i for c, i in session.execute(stmt)}


def import_expected(session: Session, study: str, path: Path) -> int:
    """Sets the expected list of each recording named in a ``recording,participant`` CSV (replacing its list).

    Raises:
        RosterError: Unknown recordings or participants, a pair twice.
    """
    st = repo.get_study(session, study)
    codes = _participant_ids(session, st.id)
    problems: list[str] = []
    lists: dict[int, dict[int, int]] = {}
    for line, d in _read(path, EXPECTED_COLUMNS):
        media = find_video(session, st.id, d["recording"])
        if media is None:
            problems.append(f"line {line}: no recording {d['recording']!r} in study {study!r}")
        if d["participant"] not in codes:
            problems.append(f"line {line}: no participant {d['participant']!r} on the roster (import it first)")
        if media is None or d["participant"] not in codes:
            continue
        pid = codes[d["participant"]]
        if pid in lists.setdefault(media.id, {}):
            problems.append(f"line {line}: {d['participant']!r} is already on line {lists[media.id][pid]}")
        lists[media.id].setdefault(pid, line)
    if problems:
        raise RosterError(str(path), problems)
    for media_id, pids in lists.items():
        set_expected(session, media_id, list(pids))
    return sum(len(v) for v in lists.values())


def set_expected(session: Session, media_id: int, participant_ids: Sequence[int]) -> int:
    """Replaces a recording's expected list (empty: everyone on the roster); returns its length."""
    for row in session.scalars(select(RosterExpected).where(RosterExpected.media_id == media_id)):
        session.delete(row)
    session.flush()
    session.add_all(RosterExpected(media_id=media_id, participant_id=p) for p in sorted(set(participant_ids)))
    session.flush()
    return len(set(participant_ids))


def current_assignments(session: Session, media_id: int) -> dict[int, int]:
    """Person id -> participant id, the newest assignment of each person of a recording (unassigned left out)."""
    newest = (
        select(func.max(PersonAssignment.id))
        .where(PersonAssignment.media_id == media_id)
        .group_by(PersonAssignment.person_id)
    )
    stmt = select(PersonAssignment.person_id, PersonAssignment.participant_id).where(PersonAssignment.id.in_(newest))
    return {p: q for p, q in session.execute(stmt) if q is not None}


def _track_spans(session: Session, persons: Sequence[PersonRow]) -> dict[int, list[tuple[float, float]]]:
    ids = [t for p in persons for t in p.track_ids]
    stmt = select(Track.id, Track.start_s, Track.end_s).where(Track.id.in_(ids))
    spans = {t: (s or 0.0, e if e is not None else s or 0.0) for t, s, e in session.execute(stmt)}
    return {p.person_id: sorted(spans[t] for t in p.track_ids if t in spans) for p in persons}


def _clashes(spans: Mapping[int, list[tuple[float, float]]], assigned: Mapping[int, int]) -> list[tuple[int, int, int]]:
    """(participant, person, other person) for each participant given two persons seen at the same time."""
    by_participant: dict[int, list[int]] = {}
    for person, participant in sorted(assigned.items()):
        by_participant.setdefault(participant, []).append(person)
    out = []
    for participant, people in by_participant.items():
        for i, a in enumerate(people):
            for b in people[i + 1 :]:
                if any(s1 <= e2 and s2 <= e1 for s1, e1 in spans.get(a, []) for s2, e2 in spans.get(b, [])):
                    out.append((participant, a, b))
    return out


def _append(
    session: Session, media_id: int, changes: Mapping[int, int | None], annotator: str, source: AssignmentSource
) -> int:
    who = repo.get_or_create_annotator(session, annotator)
    session.add_all(
        PersonAssignment(media_id=media_id, person_id=p, participant_id=q, source=source, annotator_id=who.id)
        for p, q in changes.items()
    )
    session.flush()
    return len(changes)


def _person_ref(persons: Sequence[PersonRow], ref: str) -> PersonRow | None:
    ref = ref.strip()
    index = ref[1:] if ref[:1] in ("P", "p") else ref
    for p in persons:
        if (index.isdigit() and p.person_index == int(index)) or (p.participant is not None and p.participant == ref):
            return p
    return None


def assign(
    session: Session, media_id: int, changes: Mapping[int, str | None], annotator: str, source: AssignmentSource
) -> int:
    """Assigns persons of a recording to participants (roster codes; None unassigns), appended; returns rows added.

    Raises:
        RosterError: Unknown person or participant, or a participant given to two persons seen at the same time.
    """
    media = repo.get_row(session, Media, media_id, "recording")
    persons = current_persons(session, media_id)
    codes = _participant_ids(session, media.study_id)
    known = {p.person_id for p in persons}
    problems = [f"person {p} is not a current person of recording {media_id}" for p in changes if p not in known]
    problems += [f"no participant {c!r} on the roster" for c in changes.values() if c is not None and c not in codes]
    if problems:
        raise RosterError(media.filename, problems)
    planned = current_assignments(session, media_id)
    for p, c in changes.items():
        planned.pop(p, None)
        if c is not None:
            planned[p] = codes[c]
    names = {v: k for k, v in codes.items()}
    labels = {p.person_id: p.label for p in persons}
    clashes = _clashes(_track_spans(session, persons), planned)
    if clashes:
        raise RosterError(
            media.filename,
            [f"{names[q]!r} would be {labels[a]} and {labels[b]}, seen at the same time" for q, a, b in clashes],
        )
    rows = {p: None if c is None else codes[c] for p, c in changes.items()}
    return _append(session, media_id, rows, annotator, source)


def import_assignments(session: Session, study: str, path: Path, annotator: str) -> int:
    """Assigns the persons of a ``recording,person,participant`` CSV (``person``: ``P3`` or 3), all or none.

    Raises:
        RosterError: Naming every refused line: unknown recording, person or participant, a person twice, a
            participant given to two persons of one recording seen at the same time.
    """
    st = repo.get_study(session, study)
    codes = _participant_ids(session, st.id)
    problems: list[str] = []
    plans: dict[int, dict[int, tuple[int, int]]] = {}  # media -> person -> (participant, line)
    persons_of: dict[int, list[PersonRow]] = {}
    for line, d in _read(path, ASSIGN_COLUMNS):
        media = find_video(session, st.id, d["recording"])
        if media is None:
            problems.append(f"line {line}: no recording {d['recording']!r} in study {study!r}")
            continue
        persons = persons_of.setdefault(media.id, current_persons(session, media.id))
        person = _person_ref(persons, d["person"])
        if person is None:
            problems.append(f"line {line}: no person {d['person']!r} in recording {media.filename!r}")
        if d["participant"] not in codes:
            problems.append(f"line {line}: no participant {d['participant']!r} on the roster (import it first)")
        if person is None or d["participant"] not in codes:
            continue
        plan = plans.setdefault(media.id, {})
        if person.person_id in plan:
            problems.append(f"line {line}: {person.label} is already on line {plan[person.person_id][1]}")
            continue
        plan[person.person_id] = (codes[d["participant"]], line)
    names = {v: k for k, v in codes.items()}
    for media_id, plan in plans.items():
        planned = current_assignments(session, media_id) | {p: q for p, (q, _) in plan.items()}
        for q, a, b in _clashes(_track_spans(session, persons_of[media_id]), planned):
            line = max(plan[x][1] for x in (a, b) if x in plan)
            problems.append(f"line {line}: {names[q]!r} is given to two persons seen at the same time")
    if problems:
        raise RosterError(str(path), sorted(set(problems), key=lambda s: int(s.split()[1].rstrip(":"))))
    return sum(_append(session, m, {p: q for p, (q, _) in plan.items()}, annotator, "csv") for m, plan in plans.items())


def recording_roster(session: Session, media_id: int) -> RecordingRoster:
    """Every participant of the recording's study with its reason, and the person -> participant mapping.

    This is what the study-level tables take: ``persons`` maps the recording's current person ids (after renames,
    merges and splits) to participant ids, and ``rows`` has one :class:`RosterRow` per participant.
    """
    media = repo.get_row(session, Media, media_id, "recording")
    roster = participants(session, media.study_id)
    expected = set(session.scalars(select(RosterExpected.participant_id).where(RosterExpected.media_id == media_id)))
    persons = [p for p in current_persons(session, media_id) if p.n_faces > 0]
    assigned = {p: q for p, q in current_assignments(session, media_id).items() if p in {x.person_id for x in persons}}
    spans = _track_spans(session, persons)
    code_of = {p.id: p.code for p in roster}
    rows = []
    for part in roster:
        mine = tuple(sorted(p for p, q in assigned.items() if q == part.id))
        reason: Reason = "visible" if mine else "not detected"
        if expected and part.id not in expected:
            reason = "absent" if not mine else "visible"
        seen = tuple(sorted(s for p in mine for s in spans.get(p, [])))
        rows.append(RosterRow(media_id, part.code, part.name, part.group, reason, mine, seen))
    n_expected = len(expected) if expected else len(roster)
    return RecordingRoster(media_id, n_expected, {p: code_of[q] for p, q in assigned.items()}, tuple(rows))


def reason_in(row: RosterRow, start_s: float, end_s: float) -> Reason:
    """A participant's reason for the span ``[start_s, end_s)`` of its recording.

    ``visible`` when a track of theirs overlaps the span; ``camera-off or away`` when they were seen in the recording
    but not in the span (before and after it, or on one side only: gone for a while or for good); else the row's.
    """
    if row.reason != "visible":
        return row.reason
    if any(s < end_s and e >= start_s for s, e in row.spans):
        return "visible"
    return "camera-off or away"


def assignment_history(session: Session, media_id: int) -> list[AssignmentRow]:
    """Every assignment of a recording's persons, oldest first."""
    stmt = (
        select(PersonAssignment, Annotator.name, Participant.code)
        .join(Annotator, Annotator.id == PersonAssignment.annotator_id)
        .outerjoin(Participant, Participant.id == PersonAssignment.participant_id)
        .where(PersonAssignment.media_id == media_id)
        .order_by(PersonAssignment.id)
    )
    return [
        AssignmentRow(a.id, a.media_id, a.person_id, code, a.source, who, a.created_at)
        for a, who, code in session.execute(stmt)
    ]


def _profiles(session: Session, media: Media, persons: Sequence[PersonRow]) -> dict[int, tuple[np.ndarray, np.ndarray]]:
    """Person id -> (centre and size as shares of the frame width, mean unit feature) from a sample of its faces."""
    width = float(media.width or 1)
    out = {}
    for p in persons:
        stmt = (
            select(Face.x1, Face.y1, Face.x2, Face.y2, Face.id)
            .where(Face.track_id.in_(p.track_ids))
            .order_by(Face.id)
            .limit(_SAMPLE_FACES)
        )
        rows = list(session.execute(stmt))
        if not rows:
            continue
        geo = np.median([[(x1 + x2) / 2, (y1 + y2) / 2, ((x2 - x1) + (y2 - y1)) / 2] for x1, y1, x2, y2, *_ in rows], 0)
        stored = feature_store.features(session, [r.id for r in rows])  # rows, or the video's file
        feats = [v for r in rows if (v := stored.get(r.id)) is not None and v.size]
        unit = [v / n for v in feats if (n := float(np.linalg.norm(v))) > 0]
        out[p.person_id] = (geo / width, np.mean(unit, 0) if unit else np.zeros(0))
    return out


def _earlier_profiles(session: Session, media: Media, skip: set[int]) -> dict[int, tuple[np.ndarray, np.ndarray]]:
    """Participant id -> profile of its person in the latest earlier recording of the study where it was assigned."""
    earlier = session.scalars(
        select(Media)
        .where(Media.study_id == media.study_id, Media.kind == "video", Media.id < media.id)
        .order_by(Media.id.desc())
    )
    out: dict[int, tuple[np.ndarray, np.ndarray]] = {}
    for m in earlier:
        assigned = {p: q for p, q in current_assignments(session, m.id).items() if q not in out and q not in skip}
        if not assigned:
            continue
        persons = [p for p in current_persons(session, m.id) if p.person_id in assigned]
        for pid, prof in _profiles(session, m, persons).items():
            out.setdefault(assigned[pid], prof)
    return out


def remember(session: Session, media_id: int, annotator: str) -> int:
    """Assigns the unassigned persons of a recording as in the study's earlier recordings; returns how many.

    A person gets a participant when its tile (centre within :data:`REMEMBER_NEAR` face sizes) and its appearance
    (centred similarity at least :data:`REMEMBER_MIN_SIMILARITY`) both match that participant's person in the latest
    earlier recording that has one; one-to-one (Hungarian), so persons seen at the same time never share one.
    """
    media = repo.get_row(session, Media, media_id, "recording")
    done = current_assignments(session, media_id)
    persons = [p for p in current_persons(session, media_id) if p.person_id not in done and p.n_faces > 0]
    before = _earlier_profiles(session, media, set(done.values()))
    now = _profiles(session, media, persons)
    if not before or not now:
        return 0
    a, b = list(now), list(before)
    feats = [now[x][1] for x in a] + [before[y][1] for y in b]
    dims = {f.size for f in feats}
    if len(dims) != 1 or 0 in dims:
        return 0  # no comparable appearance: position alone is not enough to name a student
    x = np.stack(feats)
    x = x - x.mean(0)
    x /= np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
    sim = x[: len(a)] @ x[len(a) :].T
    cost = np.full((len(a), len(b)), 1e6)
    for i, p in enumerate(a):
        for j, q in enumerate(b):
            (g1, _), (g2, _) = now[p], before[q]
            dist = float(np.hypot(g1[0] - g2[0], g1[1] - g2[1])) / max((g1[2] + g2[2]) / 2, 1e-9)
            if dist <= REMEMBER_NEAR and sim[i, j] >= REMEMBER_MIN_SIMILARITY:
                cost[i, j] = dist + 1.0 - sim[i, j]
    from scipy.optimize import linear_sum_assignment  # ~1 s to import: only where tracks meet faces

    rows, cols = linear_sum_assignment(cost)
    planned: dict[int, int | None] = {a[i]: b[j] for i, j in zip(rows, cols, strict=True) if cost[i, j] < 1e6}
    return _append(session, media_id, planned, annotator, "remembered") if planned else 0
