"""Study-level tables a paper uses: per participant per recording, per participant per segment type, one row each.

Built from the class tables' sums (:attr:`db.classroom.ClassTables.periods`: each person's faces per segment and
over each whole recording, people's corrections applied) and the recordings' metadata (:mod:`db.recording_info`):

- ``participant-recordings``: one row per participant per recording, with the recording's ``course``,
  ``recording`` and ``date``, and a ``reason`` (``visible``, or why the participant has no face there);
- ``participant-segments``: one row per participant per segment type (segments of the same name across the
  recordings, e.g. every ``quiz``), the sums of all of them pooled;
- ``participants``: one row per participant (wide): the whole recordings pooled, then each segment type's figures
  in columns ``<figure>_<segment>``.

A participant is given by a :class:`Participants` mapping (the roster plugs in there); by default each person is
their own participant, under their display name (the participant id people gave, else ``m{media}-P{n}``), so
persons given the same participant id in several recordings are one participant. Figures pool the sums before
dividing (a share is visible seconds over period seconds, a mean is over every face), with the rules and rounding
of :mod:`db.classroom`. Each table's columns carry their type, label and computation (:class:`Column`): the Parquet
types, the SPSS/Stata variable and value labels (:mod:`db.stat_files`) and the codebook (:mod:`db.codebook`).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from sqlalchemy.orm import Session

from db.classroom import WHOLE, ClassTables, PersonPeriod, Sums, figures_of
from db.recording_info import RecordingInfo
from db.segments import SegmentRow

Reason = Literal["visible", "camera-off or away", "not detected", "absent"]
REASONS: tuple[Reason, ...] = ("visible", "camera-off or away", "not detected", "absent")
StudyTable = Literal["participant-recordings", "participant-segments", "participants"]
STUDY_TABLES: tuple[StudyTable, ...] = ("participant-recordings", "participant-segments", "participants")
ColumnKind = Literal["str", "int", "float", "category"]
ENGAGEMENT_LABELS = ("Distracted", "Engaged")


@dataclass(frozen=True)
class ReasonRow:
    """Why a participant has (or has no) faces in a recording (the roster's rows for "N expected")."""

    media_id: int
    participant: str
    reason: Reason


@dataclass(frozen=True)
class Participants:
    """Who each person is, and the reason rows of each recording; default: each person is their own participant.

    Attributes:
        of_person: Person id -> participant id; a person not in it is the participant of their display name.
        reasons: Reason rows; a participant without one is ``visible`` where they have faces.
        groups: Participant id -> group (an optional column).
    """

    of_person: Mapping[int, str] = field(default_factory=dict)
    reasons: tuple[ReasonRow, ...] = ()
    groups: Mapping[str, str] = field(default_factory=dict)

    def participant(self, person_id: int, display: str) -> str:
        """The participant of a person."""
        return self.of_person.get(person_id, display)


@dataclass(frozen=True)
class Column:
    """A study table's column: name, type, variable label, computation, and the categories of a coded column."""

    name: str
    kind: ColumnKind
    label: str
    how: str
    values: tuple[str, ...] = ()
    """A ``category`` column's values, coded 1, 2... in SPSS and Stata (value labels)."""


@dataclass(frozen=True)
class Table:
    """One study table: what a row is, its columns and rows (dicts keyed by column name)."""

    name: StudyTable
    what: str
    columns: tuple[Column, ...]
    rows: tuple[dict[str, Any], ...]


@dataclass(frozen=True)
class StudyTables:
    """The three study tables and what they rest on."""

    tables: tuple[Table, ...]
    classes: tuple[str, ...]
    segment_types: tuple[str, ...]

    def table(self, name: StudyTable) -> Table:
        """The table called ``name``."""
        return next(t for t in self.tables if t.name == name)


# ---------------------------------------------------------------------------------------------------- columns


def figure_columns(classes: Sequence[str], suffix: str = "", where: str = "") -> list[Column]:
    """The figure columns (``<figure><suffix>``), labelled for the period ``where`` describes."""
    w = f" {where}" if where else ""
    out = [
        Column(f"n_faces{suffix}", "int", f"faces{w}", "faces of the participant's persons in the period"),
        Column(
            f"visible_s{suffix}",
            "float",
            f"seconds visible{w}",
            "sum over the participant's analysed frames of the time to the recording's next analysed frame (last "
            "frame, or one before a gap: one step)",
        ),
        Column(
            f"visible_share{suffix}",
            "float",
            f"share of time visible{w}",
            "visible_s over the period's seconds (pooled over recordings), at most 1",
        ),
        Column(
            f"engagement_p{suffix}",
            "float",
            f"mean p(engaged){w}",
            "mean over the faces of the model's p(engaged) of the engagement window covering the face, or the "
            "annotators' level; faces of tracks under 16 faces have none",
        ),
        Column(
            f"engagement_label{suffix}",
            "category",
            f"engagement{w}",
            "Engaged when engagement_p > 0.5, else Distracted",
            ENGAGEMENT_LABELS,
        ),
        Column(
            f"dominant_emotion{suffix}",
            "category",
            f"most frequent emotion{w}",
            "the most frequent class of the faces (people's label where given, else the model's)",
            tuple(classes),
        ),
    ]
    out += [
        Column(f"share_{_slug(k)}{suffix}", "float", f"share {k}{w}", f"share of the faces in class {k}")
        for k in classes
    ]
    out += [
        Column(f"valence{suffix}", "float", f"mean valence{w}", "mean valence (-1 to 1) of the faces that have one"),
        Column(f"arousal{suffix}", "float", f"mean arousal{w}", "mean arousal (-1 to 1) of the faces that have one"),
    ]
    return out


RECORDING_COLUMNS = (
    Column("course", "str", "course", "the recording's course (recording metadata)"),
    Column("recording", "str", "recording", "the recording's name (metadata), else its file name"),
    Column("date", "str", "date recorded", "the day of the recording, YYYY-MM-DD (metadata)"),
    Column("media_id", "int", "media id", "the recording's media id in AffectLab"),
    Column("filename", "str", "file name", "the recording's file name as uploaded"),
)
PARTICIPANT = Column("participant", "str", "participant", "the participant id (roster), else the person's name")
GROUP = Column("group", "str", "group", "the participant's group (roster), empty when none")


def _slug(text: str, width: int = 24) -> str:
    """A variable-name piece: lower case letters, digits and ``_`` (Stata and SPSS names)."""
    s = re.sub(r"[^0-9a-zA-Z]+", "_", text).strip("_").lower()[:width] or "x"
    return s if not s[0].isdigit() else "s" + s[: width - 1]


def _figures(sums: Sums, classes: Sequence[str], period_s: float) -> dict[str, Any]:
    fig = figures_of(sums, classes, period_s)
    return {(f"share_{_slug(k[6:])}" if k.startswith("share_") else k): v for k, v in fig.items()}


# ---------------------------------------------------------------------------------------------------- building


@dataclass
class _Cell:
    """A participant's sums in one recording, per period (segment name or :data:`WHOLE`)."""

    reason: Reason | None = None
    n_persons: int = 0
    sums: dict[str, Sums] = field(default_factory=dict)


def _cells(tables: ClassTables, who: Participants) -> dict[tuple[str, int], _Cell]:
    cells: dict[tuple[str, int], _Cell] = {}
    seen_person: set[tuple[int, int]] = set()
    for p in tables.periods:
        cell = _cell_of(cells, who, p)
        if (p.media_id, p.person.person_id) not in seen_person:
            seen_person.add((p.media_id, p.person.person_id))
            cell.n_persons += 1
        got = cell.sums.setdefault(p.segment, Sums())
        got += p.sums
    for r in who.reasons:
        cells.setdefault((r.participant, r.media_id), _Cell()).reason = r.reason
    return cells


def _cell_of(cells: dict[tuple[str, int], _Cell], who: Participants, p: PersonPeriod) -> _Cell:
    key = (who.participant(p.person.person_id, p.person.key), p.media_id)
    return cells.setdefault(key, _Cell())


def _reason(cell: _Cell) -> Reason:
    if cell.reason is not None:
        return cell.reason
    whole = cell.sums.get(WHOLE)
    return "visible" if whole is not None and whole.n > 0 else "not detected"


def build(
    tables: ClassTables,
    infos: Mapping[int, RecordingInfo],
    segments: Sequence[SegmentRow],
    participants: Participants | None = None,
) -> StudyTables:
    """The study tables from the class tables' sums, the recordings' metadata and segments (module docstring).

    Args:
        tables: The study's class tables (:func:`db.classroom.class_tables`).
        infos: The study's recordings by media id (:func:`db.recording_info.recording_infos`).
        segments: The recordings' lecture segments.
        participants: Who each person is and the reason rows; None: each person is their own participant.
    """
    who = participants or Participants()
    cells = _cells(tables, who)
    classes = tables.classes
    seg_len: dict[int, dict[str, float]] = {}
    for s in segments:
        seg_len.setdefault(s.media_id, {})[s.name] = s.end_s - s.start_s
    types = tuple(sorted({s.name for s in segments}))
    durations = {m: _duration(tables, i) for m, i in infos.items()}
    by_rec = _by_recording(cells, infos, durations, classes, who)
    by_seg, pooled = _by_segment(cells, seg_len, durations, types, classes, who)
    wide = _wide(pooled, types, classes, who)
    return StudyTables((by_rec, by_seg, wide), tuple(classes), types)


def _duration(tables: ClassTables, info: RecordingInfo) -> float:
    ends = [p.end_s for p in tables.periods if p.media_id == info.media_id and p.segment == WHOLE]
    return float(ends[0] if ends else info.duration_s or 0.0)


def _by_recording(
    cells: Mapping[tuple[str, int], _Cell],
    infos: Mapping[int, RecordingInfo],
    durations: Mapping[int, float],
    classes: Sequence[str],
    who: Participants,
) -> Table:
    cols = (
        *RECORDING_COLUMNS,
        PARTICIPANT,
        GROUP,
        Column("reason", "category", "why (not) visible", "visible, or the roster's reason for no face", REASONS),
        Column("n_persons", "int", "persons joined", "the recording's persons assigned to the participant"),
        Column("period_s", "float", "recording seconds", "the recording's duration"),
        *figure_columns(classes, where="in the recording"),
    )
    rows = []
    for (participant, media_id), cell in sorted(cells.items(), key=lambda kv: (kv[0][1], kv[0][0])):
        info = infos.get(media_id)
        if info is None:
            continue
        period = durations[media_id]
        row = {
            "course": info.course,
            "recording": info.recording,
            "date": info.date,
            "media_id": media_id,
            "filename": info.filename,
            "participant": participant,
            "group": who.groups.get(participant),
            "reason": _reason(cell),
            "n_persons": cell.n_persons,
            "period_s": period,
            **_figures(cell.sums.get(WHOLE, Sums()), classes, period),
        }
        rows.append(row)
    what = "one row per participant per recording"
    return Table("participant-recordings", what, cols, tuple(rows))


def _by_segment(
    cells: Mapping[tuple[str, int], _Cell],
    seg_len: Mapping[int, Mapping[str, float]],
    durations: Mapping[int, float],
    types: Sequence[str],
    classes: Sequence[str],
    who: Participants,
) -> tuple[Table, dict[str, dict[str, tuple[Sums, float, int]]]]:
    """The per segment type table, and per participant per type (and WHOLE) the pooled sums, seconds, recordings."""
    pooled: dict[str, dict[str, tuple[Sums, float, int]]] = {}
    for (participant, media_id), cell in cells.items():
        if _reason(cell) == "absent" or media_id not in durations:
            continue
        mine = pooled.setdefault(participant, {})
        periods = {**seg_len.get(media_id, {}), WHOLE: durations[media_id]}
        for name, length in periods.items():
            sums, total, n = mine.get(name, (Sums(), 0.0, 0))
            sums += cell.sums.get(name, Sums())
            mine[name] = (sums, total + length, n + 1)
    cols = (
        PARTICIPANT,
        GROUP,
        Column("segment", "str", "segment type", "the segments of this name in every recording, pooled"),
        Column(
            "n_recordings", "int", "recordings", "recordings with such a segment where the participant is not absent"
        ),
        Column("period_s", "float", "segment seconds", "the seconds of those segments"),
        *figure_columns(classes, where="in the segment type"),
    )
    rows = []
    for participant in sorted(pooled):
        for name in types:
            if name not in pooled[participant]:
                continue
            sums, total, n = pooled[participant][name]
            rows.append(
                {
                    "participant": participant,
                    "group": who.groups.get(participant),
                    "segment": name,
                    "n_recordings": n,
                    "period_s": round(total, 3),
                    **_figures(sums, classes, total),
                }
            )
    what = "one row per participant per segment type (same-named segments across recordings pooled)"
    return Table("participant-segments", what, cols, tuple(rows)), pooled


WIDE_FIGURES = ("n_faces", "visible_share", "engagement_p", "valence", "arousal")
"""The figures the wide table has per segment type."""
_SHORT = {"n_faces": "nf", "visible_share": "vis", "engagement_p": "eng", "valence": "val", "arousal": "aro"}


def wide_suffixes(types: Sequence[str]) -> dict[str, str]:
    """Per segment type, the unique suffix of its wide columns (``_<slug>``, numbered when two slugs meet)."""
    out: dict[str, str] = {}
    for name in types:
        base = "_" + _slug(name)
        s, k = base, 2
        while s in out.values():
            s, k = f"{base}{k}", k + 1
        out[name] = s
    return out


def _wide(
    pooled: Mapping[str, Mapping[str, tuple[Sums, float, int]]],
    types: Sequence[str],
    classes: Sequence[str],
    who: Participants,
) -> Table:
    suffixes = wide_suffixes(types)
    cols = [
        PARTICIPANT,
        GROUP,
        Column("n_recordings", "int", "recordings", "recordings where the participant is not absent"),
        Column("period_s", "float", "recorded seconds", "the seconds of those recordings"),
        *figure_columns(classes, where="over all recordings"),
    ]
    by_name = {c.name: c for c in figure_columns(classes)}
    for name in types:
        for f in WIDE_FIGURES:
            c = by_name[f]
            label = f"{c.label} in segment type {name}"[:80]
            cols.append(Column(f"{_SHORT[f]}{suffixes[name]}", c.kind, label, f"{c.how}; segments named {name!r}"))
    rows = []
    for participant in sorted(pooled):
        mine = pooled[participant]
        sums, total, n = mine.get(WHOLE, (Sums(), 0.0, 0))
        row = {
            "participant": participant,
            "group": who.groups.get(participant),
            "n_recordings": n,
            "period_s": round(total, 3),
            **_figures(sums, classes, total),
        }
        for name in types:
            got = mine.get(name)
            fig = _figures(got[0], classes, got[1]) if got else {}
            for f in WIDE_FIGURES:
                row[f"{_SHORT[f]}{suffixes[name]}"] = fig.get(f)
        rows.append(row)
    return Table("participants", "one row per participant (wide)", tuple(cols), tuple(rows))


def study_tables(session: Session, study: str, participants: Participants | None = None) -> StudyTables:
    """The study tables of ``study`` (its class tables' cached sums, recordings' metadata and segments)."""
    from db import classroom, repo
    from db.recording_info import recording_infos
    from db.segments import list_segments

    st = repo.get_study(session, study)
    tables = classroom.class_tables(session, study)
    infos = recording_infos(session, st.id)
    who = participants or roster_participants(session, st.id)
    return build(tables, infos, list_segments(session, list(infos)), who)


def roster_participants(session: Session, study_id: int) -> Participants | None:
    """The study's roster as the tables take it (None: the study has no roster, each person is a participant).

    Per recording, :func:`db.roster.recording_roster`: the persons assigned to each participant, and every
    participant's reason (``visible``, ``not detected``, ``absent``), so each one on the roster has a row.
    """
    from sqlalchemy import select

    from db import roster
    from db.schema import Media

    if not roster.participants(session, study_id):
        return None
    of_person: dict[int, str] = {}
    reasons: list[ReasonRow] = []
    groups: dict[str, str] = {}
    videos = select(Media.id).where(Media.study_id == study_id, Media.kind == "video").order_by(Media.id)
    for media_id in session.scalars(videos):
        rec = roster.recording_roster(session, media_id)
        of_person.update(rec.persons)
        for row in rec.rows:
            reasons.append(ReasonRow(media_id, row.participant, row.reason))
            if row.group:
                groups[row.participant] = row.group
    return Participants(of_person, tuple(reasons), groups)
