"""Online-class tables: per student per minute, per student per lecture segment, per segment for the class.

Every figure comes from the stored faces of a study's recordings, grouped by the *current* persons (the analysis's
joining with people's renames, merges and splits replayed, :mod:`db.persons`), so corrections show in every table.
Per face the values are those of the exports: ``label``, ``valence``, ``arousal`` and ``engagement`` are the human
ones where annotators gave them and the model's otherwise (:class:`db.rows.FaceLabel`).

Columns (also in the dataset card, :data:`COLUMN_DOCS`):

- ``engagement_p``: mean engagement of the faces (the model's p(engaged) of the window covering the face, or the
  annotators' level), ``engagement_label`` ``Engaged`` when it is above 0.5, else ``Distracted``;
- ``dominant_emotion`` and ``share_<class>``: the most frequent class and each class's share of the faces;
- ``valence``, ``arousal``: means over the faces that have one;
- ``visible_s``, ``visible_share``: the time in which the student's face was seen, and its share of the period (at
  most 1), from the real timestamps of the analysed frames (:func:`frame_durations`): each analysed frame with the
  face stands for the time to the recording's next analysed frame; the last frame, and a frame followed by a gap
  longer than :data:`GAP_FACTOR` times the median step (sampled frames where no face at all was found), stand for
  one step, the mean of the recording's other steps. Exact at any constant or variable frame rate;
- ``n_faces``: how many faces each figure rests on (``n_persons`` in the class table: students seen).

Figures are rounded to :data:`DECIMALS` decimals (``visible_s`` to :data:`SECONDS_DECIMALS`), after every sum.
Rows with no face have empty figures and ``visible_share`` 0. A minute is ``[60 k, 60 (k + 1))`` seconds, cut at
the recording's end; a segment is ``[start_s, end_s)``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
from sqlalchemy import select
from sqlalchemy.orm import Session

from db import class_sums, labels, repo
from db.class_buckets import (
    DECIMALS,
    GAP_FACTOR,
    SECONDS_DECIMALS,
    Sums,
    _Agg,
    _bucket_of,
    _bucket_sql,
    _figures,
    _inside,
    _periods,
    _round,
    bounds_of,
    figures,
    figures_of,
    frame_durations,
    periods_in,
    step_rule,
)
from db.class_compute import compute, frame_times, media_classes
from db.persons import PersonRow, current_persons
from db.rows import FaceLabel
from db.schema import Media
from db.segments import SegmentRow, list_segments

if TYPE_CHECKING:
    import pandas as pd

__all__ = [
    "DECIMALS",
    "GAP_FACTOR",
    "SECONDS_DECIMALS",
    "WHOLE",
    "ClassTables",
    "PersonPeriod",
    "Sums",
    "_bucket_of",
    "_bucket_sql",
    "_inside",
    "_periods",
    "class_tables",
    "figures",
    "figures_of",
    "frame_durations",
    "step_rule",
]

ClassTable = Literal["class-minutes", "class-segments", "class-overall"]
TABLES: tuple[ClassTable, ...] = ("class-minutes", "class-segments", "class-overall")
WHOLE = "(whole recording)"
"""Segment name of the class table's row over the whole recording."""

COLUMN_DOCS = {
    "media_id": "the recording's media id",
    "filename": "the recording's file name as uploaded",
    "person": "the student: the participant id people gave, else m{media_id}-P{n}",
    "participant": "the participant id, empty when nobody gave one",
    "person_index": "the person number within the recording (P{n} in the app)",
    "minute": "minute number from 0 (class-minutes)",
    "segment": "the lecture segment's name (class-segments, class-overall)",
    "start_s": "period start, seconds from the recording's start",
    "end_s": "period end (excluded), seconds",
    "n_faces": "faces the row's figures rest on",
    "n_persons": "students seen in the period (class-overall)",
    "visible_s": "seconds of the period in which the face was seen: each analysed frame with it stands for the time "
    "to the next analysed frame (class-overall: mean over the recording's students)",
    "visible_share": "visible_s over the period's length, at most 1 (class-overall: mean over the recording's "
    "students)",
    "engagement_p": "mean engagement: the model's p(engaged), or the annotators' level where given",
    "engagement_label": "Engaged when engagement_p > 0.5, else Distracted",
    "dominant_emotion": "the most frequent emotion class of the faces",
    "share_<class>": "share of the faces in that emotion class",
    "valence": "mean valence (-1 to 1)",
    "arousal": "mean arousal (-1 to 1)",
}


@dataclass(frozen=True)
class PersonPeriod:
    """A person's sums over one segment of a recording, or over the whole recording (segment :data:`WHOLE`)."""

    media_id: int
    person: PersonRow
    segment: str
    start_s: float
    end_s: float
    sums: _Agg


@dataclass(frozen=True)
class ClassTables:
    """The three tables (lists of dict rows with the columns above) and the emotion classes used."""

    minutes: list[dict[str, Any]]
    segments: list[dict[str, Any]]
    overall: list[dict[str, Any]]
    classes: tuple[str, ...]
    n_human: int = 0
    """Faces of the recordings' persons whose class people gave."""
    n_model: int = 0
    """Faces of the recordings' persons whose class is the model's."""
    periods: tuple[PersonPeriod, ...] = ()
    """Every person's sums per segment and over each whole recording (what :mod:`db.study_tables` adds up)."""
    steps: dict[int, tuple[float, float]] = field(default_factory=dict)
    """Per recording, ``(one_step, longest)`` of :func:`step_rule` (the sampling its codebook states)."""

    def table(self, name: ClassTable) -> list[dict[str, Any]]:
        """The table called ``class-minutes``, ``class-segments`` or ``class-overall``."""
        return {"class-minutes": self.minutes, "class-segments": self.segments, "class-overall": self.overall}[name]


@dataclass
class _Recording:
    """A recording's per-track sums per time bucket (what its rows are added up from), and what they rest on.

    Kept per track, not per person: a rename, merge or split changes only which tracks a row adds up.
    """

    media_id: int
    filename: str
    duration: float
    step: tuple[float, float]
    """``(one_step, longest)`` of :func:`step_rule`."""
    persons: tuple[PersonRow, ...]
    segments: tuple[SegmentRow, ...]
    bounds: tuple[float, ...]
    """The bucket bounds (:func:`db.class_buckets.bucket_of`)."""
    sums: dict[tuple[int, int], _Agg]
    """``(track_id, bucket)``: every face of the track, people's values where they gave them."""
    classes: tuple[str, ...] = ()
    """The classes of the recording's model runs, the study's run first."""
    firsts: dict[str, int] = field(default_factory=dict)

    @property
    def labels_seen(self) -> tuple[str, ...]:
        """Classes of the corrected faces, in face order (for the study's class list)."""
        firsts: dict[str, int] = {}
        for agg in self.sums.values():
            for k, f in agg.firsts.items():
                firsts[k] = min(f, firsts.get(k, f))
        return tuple(k for k, _ in sorted(firsts.items(), key=lambda kv: kv[1]) if k)

    @property
    def n_faces(self) -> int:
        return sum(a.n for a in self.sums.values())

    @property
    def n_human(self) -> int:
        return sum(a.n_human for a in self.sums.values())


def _periods_in(rec: _Recording, start: float, end: float, last: bool) -> list[int]:
    return periods_in(rec.bounds, start, end, last)


def _copy(agg: _Agg) -> _Agg:
    out = _Agg()
    out += agg
    return out


def _rows(
    rec: _Recording, classes: Sequence[str]
) -> tuple[list[dict[str, Any]], list[dict[str, Any]], list[dict[str, Any]], list[PersonPeriod]]:
    """A recording's rows of the three tables from its sums, and each person's sums per segment and overall."""
    minutes_t: list[dict[str, Any]] = []
    segments_t: list[dict[str, Any]] = []
    overall_t: list[dict[str, Any]] = []
    periods: list[PersonPeriod] = []
    persons = rec.persons
    if not persons:
        return minutes_t, segments_t, overall_t, periods
    duration = rec.duration
    minutes, seg_periods = _periods(duration, rec.segments)
    base: dict[str, Any] = {"media_id": rec.media_id, "filename": rec.filename}

    def person_cols(p: PersonRow) -> dict[str, Any]:
        return {"person": p.key, "participant": p.participant, "person_index": p.person_index}

    person_of = {t: p.person_id for p in persons for t in p.track_ids}
    by_person: dict[int, dict[int, _Agg]] = {}  # the sums of each person's tracks, per bucket: one pass
    for (t, bucket), got in rec.sums.items():
        pid = person_of.get(t)
        if pid is not None:
            per = by_person.setdefault(pid, {})
            if bucket in per:
                per[bucket] += got
            else:
                per[bucket] = _copy(got)

    def total(p: PersonRow, buckets: Sequence[int]) -> _Agg:
        agg = _Agg()
        per = by_person.get(p.person_id, {})
        for b in buckets:
            got = per.get(b)
            if got is not None:
                agg += got
        return agg

    for minute, a, b in minutes:
        buckets = _periods_in(rec, a, b, b >= duration)
        for p in persons:
            fig = _figures(total(p, buckets), classes, b - a)
            minutes_t.append({**base, **person_cols(p), "minute": minute, "start_s": a, "end_s": b, **fig})
    for name, a, b in [*seg_periods, (WHOLE, 0.0, duration)]:
        buckets = _periods_in(rec, a, b, b >= duration)
        pooled = _Agg()
        shares, seconds = [], []
        n_persons = 0
        for p in persons:
            agg = total(p, buckets)
            fig = _figures(agg, classes, b - a)
            shares.append(fig["visible_share"])
            seconds.append(fig["visible_s"])
            pooled += agg
            n_persons += agg.n > 0
            periods.append(PersonPeriod(rec.media_id, p, name, a, b, agg))
            if name != WHOLE:
                segments_t.append({**base, **person_cols(p), "segment": name, "start_s": a, "end_s": b, **fig})
        fig = _figures(pooled, classes, b - a)
        fig["visible_share"] = _round(float(np.mean(shares))) if shares else 0.0
        fig["visible_s"] = _round(float(np.mean(seconds)), SECONDS_DECIMALS) if seconds else 0.0
        overall_t.append({**base, "segment": name, "start_s": a, "end_s": b, "n_persons": n_persons, **fig})
    return minutes_t, segments_t, overall_t, periods


def class_tables(session: Session, study: str, rows: Sequence[FaceLabel] | None = None) -> ClassTables:
    """The tables of a study's recordings (videos with tracks), added up from the kept sums.

    Each recording's sums per track and time bucket are kept by :mod:`db.class_sums` in the transaction of every
    write that changes them; a view reads them (a few rows per track), the recordings' persons and segments, and
    never the faces. A recording whose kept sums do not fit (none kept yet, cut at other segments, another model
    run) is computed from its faces for this view (:func:`db.class_compute.compute`).

    Args:
        session: An open session.
        study: The study's name.
        rows: Ignored (kept for callers that pass the study's face rows).
    """
    st = repo.get_study(session, study)
    primary = labels.choose_model(session, st.id, None)
    videos = list(
        session.scalars(select(Media).where(Media.study_id == st.id, Media.kind == "video").order_by(Media.id))
    )
    segs = list_segments(session, [m.id for m in videos])
    kept = class_sums.kept(session, [m.id for m in videos])
    recs = []
    for m in videos:
        mine = tuple(s for s in segs if s.media_id == m.id)
        got = kept.get(m.id)
        rec = _from_kept(m, mine, primary, got) if got is not None else None
        if rec is None:
            rec = _computed(session, m, mine, primary)
        if m.analysis_status != "partial":
            rec.persons = tuple(current_persons(session, m.id))
        recs.append(rec)
    return _assemble(recs)


def _from_kept(
    media: Media, segs: tuple[SegmentRow, ...], primary: labels.ModelKey | None, got: tuple[Any, Any]
) -> _Recording | None:
    """A recording from its kept sums, None when they do not fit its segments, duration or model run."""
    state, sums = got
    run = None if state.run is None else tuple(state.run)
    duration = float(state.duration_s)
    if run != primary or (media.duration_s and float(media.duration_s) != duration):
        return None
    bounds = tuple(float(b) for b in state.bounds)
    if bounds != tuple(bounds_of(duration, segs)):
        return None
    step = (float(state.one_step), float("inf") if state.longest is None else float(state.longest))
    return _Recording(media.id, media.filename, duration, step, (), segs, bounds, sums, tuple(state.classes or ()))


def _computed(
    session: Session, media: Media, segs: tuple[SegmentRow, ...], primary: labels.ModelKey | None
) -> _Recording:
    """A recording's sums computed from its faces (no kept sums fit)."""
    times = frame_times(session, media.id)
    duration = float(media.duration_s or (max(times) if times else 0.0)) or 1.0
    step = step_rule(times)
    bounds = tuple(bounds_of(duration, segs))
    rec = _Recording(media.id, media.filename, duration, step, (), segs, bounds, {})
    if media.analysis_status == "partial" or not current_persons(session, media.id):
        return rec
    rec.sums = compute(session, media.id, media.study_id, primary, bounds, step)
    rec.classes = tuple(media_classes(session, media.id, primary))
    return rec


def _assemble(recs: Sequence[_Recording]) -> ClassTables:
    """The tables of some recordings from their sums: the model's classes, then the classes people gave."""
    classes: list[str] = []
    for rec in recs:
        for k in rec.classes:
            if k not in classes:
                classes.append(k)
    firsts: dict[str, int] = {}
    for rec in recs:
        for agg in rec.sums.values():
            for k, f in agg.firsts.items():
                firsts[k] = min(f, firsts.get(k, f))
    classes += [k for k, _ in sorted(firsts.items(), key=lambda kv: kv[1]) if k not in classes]
    minutes_t: list[dict[str, Any]] = []
    segments_t: list[dict[str, Any]] = []
    overall_t: list[dict[str, Any]] = []
    periods: list[PersonPeriod] = []
    for rec in recs:
        a, b, c, d = _rows(rec, classes)
        minutes_t += a
        segments_t += b
        overall_t += c
        periods += d
    return ClassTables(
        minutes=minutes_t,
        segments=segments_t,
        overall=overall_t,
        classes=tuple(classes),
        n_human=sum(r.n_human for r in recs),
        n_model=sum(r.n_faces - r.n_human for r in recs),
        periods=tuple(periods),
        steps={r.media_id: r.step for r in recs},
    )


def clear_cache() -> None:
    """Nothing to forget: the sums are kept in the database (kept for the benches and tests that call it)."""


def columns(table: ClassTable, classes: Sequence[str]) -> list[str]:
    """The columns of a table, in order."""
    figs = [
        "n_faces",
        "visible_share",
        "engagement_p",
        "engagement_label",
        "dominant_emotion",
        *(f"share_{k}" for k in classes),
        "valence",
        "arousal",
    ]
    figs.insert(1, "visible_s")
    if table == "class-minutes":
        return ["media_id", "filename", "person", "participant", "person_index", "minute", "start_s", "end_s", *figs]
    if table == "class-segments":
        return ["media_id", "filename", "person", "participant", "person_index", "segment", "start_s", "end_s", *figs]
    return ["media_id", "filename", "segment", "start_s", "end_s", "n_persons", *figs]


def dataframe(tables: ClassTables, table: ClassTable) -> pd.DataFrame:
    """One table as a pandas DataFrame with its columns in order."""
    import pandas as pd

    cols = columns(table, tables.classes)
    return pd.DataFrame(tables.table(table), columns=cols)


def card(study: str, table: ClassTable, tables: ClassTables) -> str:
    """The dataset card of a table export: what a row is and what each column means; no image is exported."""
    what = {
        "class-minutes": "one row per student per minute of each recording",
        "class-segments": "one row per student per lecture segment",
        "class-overall": "one row per lecture segment of each recording for the whole class, plus a row "
        f"{WHOLE!r} over the whole recording",
    }[table]
    lines = [
        f"# AffectLab study `{study}`: `{table}`",
        "",
        f"{what.capitalize()}; {len(tables.table(table))} rows.",
        "",
        "This table holds no image and no face crop: figures only. Students are the recording's persons "
        "after people's renames, merges and splits.",
        "",
        "| column | meaning |",
        "|---|---|",
    ]
    for c in columns(table, tables.classes):
        key = "share_<class>" if c.startswith("share_") else c
        lines.append(f"| `{c}` | {COLUMN_DOCS[key]} |")
    lines += ["", (__doc__ or "").split("Columns")[0].strip()]
    return "\n".join(lines) + "\n"
