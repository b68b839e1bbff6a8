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

import threading
from bisect import bisect_right
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
from sqlalchemy import case, exists, func, literal, or_, select
from sqlalchemy.orm import Session, aliased

from db import labels, repo
from db.class_order import export_classes
from db.persons import PersonRow, current_persons
from db.rows import FaceLabel
from db.schema import Annotation, Face, Media, PersonCorrection, PersonTrack, Prediction, Track
from db.segments import SegmentRow, list_segments
from models.engagement import engagement_label

if TYPE_CHECKING:
    import pandas as pd

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


DECIMALS = 4
"""Decimals of every figure of the class and study tables (shares, means); stated in the codebooks."""
SECONDS_DECIMALS = 3
"""Decimals of the ``visible_s`` seconds."""
GAP_FACTOR = 1.5
"""A step between analysed frames longer than this times the median step is a gap: sampled frames with no face."""


def step_rule(times: Sequence[float]) -> tuple[float, float]:
    """``(one_step, longest)`` of a recording's distinct analysed frame times (see :func:`frame_durations`).

    ``longest`` is :data:`GAP_FACTOR` times the median step; ``one_step`` the mean of the steps up to it (1.0, and
    ``longest`` infinite, with fewer than two frames).
    """
    d = np.diff(np.unique(np.asarray(times, dtype=np.float64)))
    if not d.size:
        return 1.0, float("inf")
    longest = GAP_FACTOR * float(np.median(d))
    return float(np.mean(d[d <= longest])), longest


def frame_durations(times: Sequence[float]) -> dict[float, float]:
    """The time each distinct analysed frame of a recording stands for: up to the next one, or one step.

    A frame stands for the time to the next analysed frame, except the last one and one followed by a gap (a step
    longer than ``longest`` of :func:`step_rule`): those stand for ``one_step``. What :func:`class_tables` computes
    in SQL; sums of these are exact at 23.976, 25, 29.97 fps and variable frame rates (the steps of a 23.976 fps
    video sampled at 5 fps alternate 0.2085 and 0.1668 s and sum to the real time).
    """
    t = np.unique(np.asarray(times, dtype=np.float64))
    one, longest = step_rule(t.tolist())
    out: dict[float, float] = {}
    for a, b in zip(t.tolist(), [*t[1:].tolist(), None], strict=True):
        out[a] = one if b is None or b - a > longest else b - a
    return out


def _round(v: float | None, decimals: int = DECIMALS) -> float | None:
    return None if v is None else round(float(v), decimals) + 0.0


def figures(
    faces: Sequence[FaceLabel], classes: Sequence[str], period_s: float, durations: dict[float, float]
) -> dict[str, Any]:
    """The figures of one row from its faces and their recording's :func:`frame_durations` (module docstring)."""
    agg = _Agg(n=len(faces))
    agg.visible = sum(durations[t] for t in {f.time_s or 0.0 for f in faces})
    for f in faces:
        _add_values(agg, f.label, f.engagement, f.valence, f.arousal, 1)
    return _figures(agg, classes, period_s)


def _periods(
    duration: float, segments: Sequence[SegmentRow]
) -> tuple[list[tuple[int, float, float]], list[tuple[str, float, float]]]:
    minutes = [(k, 60.0 * k, min(60.0 * (k + 1), duration)) for k in range(max(1, int(np.ceil(duration / 60.0))))]
    return minutes, [(s.name, s.start_s, s.end_s) for s in segments]


def _inside(f: FaceLabel, start: float, end: float, last: bool) -> bool:
    t = f.time_s or 0.0
    return start <= t < end or (last and t == end)


# ---------------------------------------------------------------------------------------------------- aggregates


@dataclass
class _Agg:
    """The sums a row's figures rest on, for some faces of one person (added up over time buckets)."""

    n: int = 0
    visible: float = 0.0
    """Seconds the faces stand for (:func:`frame_durations` of their distinct frames)."""
    eng_sum: float = 0.0
    eng_n: int = 0
    val_sum: float = 0.0
    val_n: int = 0
    aro_sum: float = 0.0
    aro_n: int = 0
    labels: Counter[str] = field(default_factory=Counter)

    def __iadd__(self, o: _Agg) -> _Agg:
        self.n += o.n
        self.visible += o.visible
        self.eng_sum += o.eng_sum
        self.eng_n += o.eng_n
        self.val_sum += o.val_sum
        self.val_n += o.val_n
        self.aro_sum += o.aro_sum
        self.aro_n += o.aro_n
        self.labels.update(o.labels)
        return self


Sums = _Agg
"""The sums a row's figures rest on (public name, for :mod:`db.study_tables`)."""


def _figures(agg: _Agg, classes: Sequence[str], period_s: float) -> dict[str, Any]:
    """The figures of a row from its sums (the module docstring's rules), rounded to :data:`DECIMALS`."""
    out: dict[str, Any] = {"n_faces": agg.n}
    out["visible_s"] = _round(agg.visible, SECONDS_DECIMALS)
    out["visible_share"] = _round(min(1.0, agg.visible / period_s) if period_s > 0 else 0.0)
    p = _round(agg.eng_sum / agg.eng_n) if agg.eng_n else None
    out["engagement_p"] = p
    out["engagement_label"] = None if p is None else engagement_label(p)  # of the rounded p: no float noise
    counts = agg.labels
    n = sum(counts.values())
    out["dominant_emotion"] = max(classes, key=lambda k: (counts[k], -classes.index(k))) if n else None
    for k in classes:
        out[f"share_{k}"] = _round(counts[k] / n) if n else None
    out["valence"] = _round(agg.val_sum / agg.val_n) if agg.val_n else None
    out["arousal"] = _round(agg.aro_sum / agg.aro_n) if agg.aro_n else None
    return out


figures_of = _figures
"""The figures of a row from its :class:`Sums` (public name, for :mod:`db.study_tables`)."""


@dataclass
class _Recording:
    """A recording's per-track sums per time bucket (what its rows are added up from), and what they rest on.

    Kept per track, not per person: a rename, merge or split changes only which tracks a row adds up
    (:meth:`regroup`), so the Classroom page after a person change reads the persons again, not every face.
    """

    media_id: int
    filename: str
    duration: float
    step: tuple[float, float]
    """``(one_step, longest)`` of :func:`step_rule`."""
    persons: tuple[PersonRow, ...]
    segments: tuple[SegmentRow, ...]
    bounds: tuple[float, ...]
    """Bucket ``2 i`` holds ``t == bounds[i]``, ``2 i + 1`` holds ``bounds[i] < t < bounds[i + 1]``; ``-1``: before."""
    sums: dict[tuple[int, int], _Agg]
    """``(track_id, bucket)``: every face of the track, with the model's values of its prediction of the run."""
    person_of: dict[int, int]
    """Track id to person id."""
    primary: labels.ModelKey | None
    deltas: dict[int, tuple[tuple[int, int], _Agg, str | None, str]] = field(default_factory=dict)
    """Face id to ``(key, people's values minus the model's, class, label source)`` of the faces people voted on
    (or without a prediction of the run): as many as the votes, replaced face by face as votes come."""
    delta_sums: dict[tuple[int, int], _Agg] = field(default_factory=dict)

    def set_deltas(self, rows: Sequence[FaceLabel]) -> None:
        """Replaces the corrections of these faces by their current rows (:mod:`db.face_pages`).

        Copy on write: a page reading this recording meanwhile sees the old corrections or the new ones, whole.
        """
        deltas = dict(self.deltas)
        for r in rows:
            if r.track_id is None:
                deltas.pop(r.face_id, None)
                continue
            d = _Agg()
            if self.primary is not None and (r.model, r.weights_hash, r.model_version) == self.primary:
                _add_values(d, r.model_label, r.model_engagement, r.model_valence, r.model_arousal, -1)
            _add_values(d, r.label, r.engagement, r.valence, r.arousal, 1)
            deltas[r.face_id] = ((r.track_id, _bucket_of(self.bounds, r.time_s or 0.0)), d, r.label, r.label_source)
        delta_sums: dict[tuple[int, int], _Agg] = {}
        for key, d, _, _ in deltas.values():
            got = delta_sums.setdefault(key, _Agg())
            got += d
        self.deltas, self.delta_sums = deltas, delta_sums

    def regroup(self, persons: Sequence[PersonRow]) -> None:
        """Takes the recording's current persons after a rename, merge or split (the sums stay: they are per track)."""
        self.persons = tuple(persons)
        self.person_of = {t: p.person_id for p in persons for t in p.track_ids}

    @property
    def labels_seen(self) -> tuple[str, ...]:
        """Classes of the corrected faces, in face order (for the study's class list)."""
        return tuple(k for k in dict.fromkeys(self.deltas[f][2] or "" for f in sorted(self.deltas)) if k)

    @property
    def n_faces(self) -> int:
        return sum(a.n for a in self.sums.values())

    @property
    def n_human(self) -> int:
        return sum(1 for *_, src in self.deltas.values() if src == "human")


def _add_values(d: _Agg, label: str | None, eng: float | None, val: float | None, aro: float | None, sign: int) -> None:
    if label:
        d.labels[label] += sign
    if eng is not None:
        d.eng_sum += sign * eng
        d.eng_n += sign
    if val is not None:
        d.val_sum += sign * val
        d.val_n += sign
    if aro is not None:
        d.aro_sum += sign * aro
        d.aro_n += sign


def _bucket_of(bounds: Sequence[float], t: float) -> int:
    """The bucket of time ``t`` (see :attr:`_Recording.sums`)."""
    i = bisect_right(bounds, t) - 1
    if i < 0:
        return -1
    return 2 * i if bounds[i] == t else 2 * i + 1


def _bucket_sql(bounds: Sequence[float], t: Any) -> Any:
    """The SQL of :func:`_bucket_of`: a binary search as nested CASE expressions (log2 of the bounds deep)."""

    def search(lo: int, hi: int) -> Any:
        # bounds[lo] <= t < bounds[hi] (hi == len: no upper bound)
        if hi - lo == 1:
            return case((t == bounds[lo], literal(2 * lo)), else_=literal(2 * lo + 1))
        mid = (lo + hi) // 2
        return case((t < bounds[mid], search(lo, mid)), else_=search(mid, hi))

    return case((t < bounds[0], literal(-1)), else_=search(0, len(bounds)))


def _periods_in(rec: _Recording, start: float, end: float, last: bool) -> list[int]:
    """The buckets of the period ``start <= t < end`` (``or t == end`` when ``last``)."""
    b = rec.bounds
    out = []
    for i, x in enumerate(b):
        if start <= x < end or (last and x == end):
            out.append(2 * i)
        if i + 1 < len(b) and start <= x and b[i + 1] <= end:
            out.append(2 * i + 1)
    return out


def _recording_sums(session: Session, media: Media, primary: labels.ModelKey | None, study_id: int) -> _Recording:
    """A recording's sums: SQL aggregates of every face with its model values, then the voted faces corrected.

    The faces people voted on (their own rows or their track's) and those without a prediction of the study's run
    go through the rules of :mod:`db.labels` (:mod:`db.face_pages`); they are as many as the votes, not the faces.
    """
    persons = tuple(current_persons(session, media.id))
    segs = tuple(list_segments(session, [media.id]))
    times = sorted(
        float(t)
        for t in session.scalars(select(Face.time_s).where(Face.media_id == media.id).distinct())
        if t is not None
    )
    duration = float(media.duration_s or (max(times) if times else 0.0)) or 1.0
    step = step_rule(times)
    minutes, seg_periods = _periods(duration, segs)
    bounds = sorted(
        {0.0, duration, *(a for _, a, _ in minutes), *(b for _, _, b in minutes)}
        | {x for _, a, b in seg_periods for x in (a, b)}
    )
    person_of = {t: p.person_id for p in persons for t in p.track_ids}
    rec = _Recording(media.id, media.filename, duration, step, persons, segs, tuple(bounds), {}, person_of, primary)
    if not persons:
        return rec
    pred = aliased(Prediction)
    latest: Any = literal(None)
    if primary is not None:
        version = Prediction.model_version.is_(None) if primary[2] is None else Prediction.model_version == primary[2]
        latest = (
            select(func.max(Prediction.id))
            .where(
                Prediction.face_id == Face.id,
                Prediction.model == primary[0],
                Prediction.weights_hash == primary[1],
                version,
            )
            .scalar_subquery()
        )
    t = func.coalesce(Face.time_s, 0.0)
    # A face whose prediction has no engagement (a video stored chunk by chunk) takes its track's window's:
    # those are summed below in Python over the recording's windows, not by a subquery per face.
    engagement = case((pred.id.is_(None), literal(None)), else_=pred.engagement)
    base = (
        select(
            Face.frame,
            _bucket_sql(bounds, t).label("bucket"),
            engagement.label("eng"),
            pred.label.label("label"),
            pred.valence.label("valence"),
            pred.arousal.label("arousal"),
            Face.track_id.label("track_id"),
            Face.time_s.label("time_s"),
            pred.id.is_not(None).label("has_pred"),
            Track.engagement_score.label("track_score"),
        )
        .join(PersonTrack, PersonTrack.track_id == Face.track_id)
        .join(Track, Track.id == Face.track_id)
        .outerjoin(pred, pred.id == latest)
        .where(Face.media_id == media.id)
        .subquery()
    )
    stmt = select(
        base.c.track_id,
        base.c.bucket,
        base.c.label,
        func.count(),
        func.sum(base.c.eng),
        func.count(base.c.eng),
        func.sum(base.c.valence),
        func.count(base.c.valence),
        func.sum(base.c.arousal),
        func.count(base.c.arousal),
    ).group_by(base.c.track_id, base.c.bucket, base.c.label)
    for tid, b, label, n, es, en, vs, vn, as_, an in session.execute(stmt):
        agg = rec.sums.setdefault((int(tid), int(b)), _Agg())
        agg += _Agg(int(n), 0, float(es or 0.0), int(en), float(vs or 0.0), int(vn), float(as_ or 0.0), int(an))
        if label:
            agg.labels[str(label)] += int(n)
    # Per track: a person's tracks never overlap in time (merging overlapping ones is refused), so a person's
    # visible seconds are the sum of its tracks'.
    frames = _visible_sql(media.id, Face.track_id, _bucket_sql(bounds, t), step)
    for tid, b, seconds in session.execute(frames):
        rec.sums[(int(tid), int(b))].visible += float(seconds or 0.0)
    _window_sums(session, rec, base)
    # The faces whose values are not the model's run: voted on (own rows or their track's), or without a prediction.
    voted_tracks = select(Annotation.track_id).where(Annotation.track_id == Face.track_id)
    special = or_(exists().where(Annotation.face_id == Face.id), exists(voted_tracks), latest.is_(None))
    ids = list(session.scalars(select(Face.id).where(Face.media_id == media.id, Face.track_id.is_not(None), special)))
    _correct(session, rec, ids, study_id)
    return rec


def _visible_sql(media_id: int, person: Any, bucket: Any, step: tuple[float, float]) -> Any:
    """Per person and bucket, the seconds of :func:`frame_durations` of the person's distinct frames, in SQL.

    One pass over the recording's faces in frame order (the ``media_id, frame`` index): each face gets the next
    distinct frame's time (a window over the next peer group, ``GROUPS BETWEEN 1 FOLLOWING AND 1 FOLLOWING``) and
    its person (faces of no person count as analysed frames but for nobody); its frame stands for the step to that
    time, or for ``one_step`` when last or followed by a gap; summed over the distinct frames of each person and
    bucket.
    """
    one, longest = step
    t = func.coalesce(Face.time_s, 0.0)
    nxt = func.first_value(t).over(order_by=Face.frame, groups=(1, 1))
    fw = (
        select(person.label("person"), bucket.label("bucket"), t.label("t"), nxt.label("nxt"))
        .outerjoin(PersonTrack, PersonTrack.track_id == Face.track_id)
        .where(Face.media_id == media_id)
        .subquery()
    )
    d = fw.c.nxt - fw.c.t
    long_gap = d > longest if longest != float("inf") else literal(False)
    dur = case((or_(fw.c.nxt.is_(None), long_gap), literal(one)), else_=d)
    seen = (
        select(fw.c.person, fw.c.bucket, fw.c.t, dur.label("dur")).where(fw.c.person.is_not(None)).distinct().subquery()
    )
    return select(seen.c.person, seen.c.bucket, func.sum(seen.c.dur)).group_by(seen.c.person, seen.c.bucket)


def _window_sums(session: Session, rec: _Recording, base: Any) -> None:
    """Adds the window engagement of the faces whose prediction has none (the rule of :func:`db.labels.face_labels`).

    Their track's windows are read once per recording and looked up by bisection (:mod:`db.face_pages`).
    """
    from db import face_pages, labels

    stmt = select(base.c.bucket, base.c.track_id, base.c.time_s).where(
        base.c.has_pred, base.c.eng.is_(None), base.c.track_score.is_not(None)
    )
    rows = session.execute(stmt).all()
    if not rows:
        return
    windows = labels._track_windows(session, {int(r[1]) for r in rows})
    indexed = {t: face_pages._indexed(w) for t, w in windows.items()}
    for b, tid, time_s in rows:
        p = face_pages._window_engagement(indexed.get(int(tid)), time_s)
        if p is not None:
            agg = rec.sums[(int(tid), int(b))]
            agg.eng_sum += p
            agg.eng_n += 1


def _correct(session: Session, rec: _Recording, face_ids: Sequence[int], study_id: int) -> None:
    """Recomputes the corrections of some faces of a recording from their current rows."""
    from db import face_pages

    rec.set_deltas(face_pages.faces_by_id(session, study_id, face_ids, rec.primary))


def _rows(
    rec: _Recording, classes: Sequence[str]
) -> tuple[list[dict[str, Any]], list[dict[str, Any]], list[dict[str, Any]], list[PersonPeriod]]:
    """A recording's rows of the three tables from its sums, and each person's sums per segment and overall."""
    minutes_t: list[dict[str, Any]] = []
    segments_t: list[dict[str, Any]] = []
    overall_t: list[dict[str, Any]] = []
    periods: list[PersonPeriod] = []
    persons = rec.persons  # once: a person change swaps the tuple (:meth:`_Recording.regroup`)
    if not persons:
        return minutes_t, segments_t, overall_t, periods
    duration = rec.duration
    minutes, seg_periods = _periods(duration, rec.segments)
    base: dict[str, Any] = {"media_id": rec.media_id, "filename": rec.filename}

    def person_cols(p: PersonRow) -> dict[str, Any]:
        return {"person": p.key, "participant": p.participant, "person_index": p.person_index}

    def total(p: PersonRow, buckets: Sequence[int]) -> _Agg:
        agg = _Agg()
        for t in p.track_ids:
            for b in buckets:
                for part in (rec.sums, rec.delta_sums):
                    got = part.get((t, b))
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


# ---------------------------------------------------------------------------------------------------- cache


@dataclass
class _StudyCache:
    cursor: tuple[Any, ...] = ()
    primary: tuple[tuple[Any, ...], labels.ModelKey | None, tuple[str, ...]] | None = None
    recordings: dict[int, tuple[tuple[Any, ...], _Recording]] = field(default_factory=dict)


_CACHE: dict[tuple[str, int], _StudyCache] = {}
_LOCK = threading.Lock()
MAX_CACHED_STUDIES = 64


def _cursor(session: Session) -> tuple[Any, ...]:
    """What any write that changes a class table moves: the newest id and count of votes and person changes.

    Also the newest face and prediction; each an index lookup or a count of a small table.
    """
    return (
        session.scalar(select(func.max(Annotation.id))),
        session.scalar(select(func.count(Annotation.id))),
        session.scalar(select(func.max(PersonCorrection.id))),
        session.scalar(select(func.count(PersonCorrection.id))),
        session.scalar(select(func.max(Face.id))),
        session.scalar(select(func.max(Prediction.id))),
    )


def _touched(
    session: Session, old: tuple[Any, ...], now: tuple[Any, ...]
) -> tuple[set[int] | None, dict[int, set[int]], set[int]]:
    """What writes between cursors ``old`` and ``now`` touched.

    Returns:
        The recordings to recompute (None: all, when rows went or the cursor is new), per recording the faces
        whose votes changed (a track vote: every face of the track), and the recordings whose persons changed
        (renamed, merged, split: their sums stay, their persons are read again).
    """
    if not old:
        return None, {}, set()
    ann, n_ann, pc, n_pc, face, pred = old
    if now == old:
        return set(), {}, set()
    if (now[1] or 0) < (n_ann or 0) or (now[3] or 0) < (n_pc or 0) or (now[0] or 0) < (ann or 0):
        return None, {}, set()  # rows went (a media item or track deleted, ids maybe reused): recompute all
    rebuild: set[int] = set()
    regroup: set[int] = set()
    votes: dict[int, set[int]] = {}
    if now[0] != ann:
        on_faces = select(Face.media_id, Face.id).join(Annotation, Annotation.face_id == Face.id)
        for m, f in session.execute(on_faces.where(Annotation.id > (ann or 0))):
            votes.setdefault(int(m), set()).add(int(f))
        tracks = select(Annotation.track_id).where(Annotation.id > (ann or 0), Annotation.track_id.is_not(None))
        on_tracks = select(Face.media_id, Face.id).where(Face.track_id.in_(tracks.scalar_subquery()))
        for m, f in session.execute(on_tracks):
            votes.setdefault(int(m), set()).add(int(f))
    if now[2] != pc:
        regroup.update(
            session.scalars(select(PersonCorrection.media_id).where(PersonCorrection.id > (pc or 0)).distinct())
        )
    if now[4] != face:
        rebuild.update(session.scalars(select(Face.media_id).where(Face.id > (face or 0)).distinct()))
    if now[5] != pred:
        f2 = select(Face.media_id).join(Prediction, Prediction.face_id == Face.id).where(Prediction.id > (pred or 0))
        rebuild.update(session.scalars(f2.distinct()))
    return rebuild, votes, regroup


def _stamp(media: Media, segs: Sequence[SegmentRow], n_tracks: int, primary: labels.ModelKey | None) -> tuple[Any, ...]:
    """What a recording's sums depend on besides the cursor: its row, segments, tracks and the study's model run."""
    return (
        media.created_at,
        media.duration_s,
        media.analysis_status,
        media.analysed_until_frame,
        tuple((s.id, s.name, s.start_s, s.end_s) for s in segs),
        n_tracks,
        primary,
    )


def class_tables(session: Session, study: str, rows: Sequence[FaceLabel] | None = None) -> ClassTables:
    """The tables of a study's recordings (videos with tracks), from per-recording sums cached per revision.

    Each recording's sums (per track per time bucket) are computed in SQL for the faces only the model labelled
    and with the rules of :mod:`db.labels` for the faces people voted on, then kept in this process until a write
    touches the recording: a vote or undo on its faces or tracks (those faces are corrected), new faces or
    predictions, a segment added or removed, a track deleted (:func:`_cursor`, :func:`_stamp`). A rename, merge or
    split re-reads the recording's persons only: rows add up their tracks' sums. A page view then reads a few index
    lookups and the recordings' small rows, whatever the number of faces.

    Args:
        session: An open session.
        study: The study's name.
        rows: Ignored (kept for callers that pass the study's face rows).
    """
    st = repo.get_study(session, study)
    key = (str(session.get_bind().engine.url), st.id)
    with _LOCK:
        cache = _CACHE.get(key)
        if cache is None:
            if len(_CACHE) >= MAX_CACHED_STUDIES:
                _CACHE.pop(next(iter(_CACHE)))
            cache = _CACHE[key] = _StudyCache()
        cursor = cache.cursor
    new_cursor = _cursor(session)  # read before the sums: a write meanwhile makes the next view recompute
    touched, votes, regroup = _touched(session, cursor, new_cursor)
    pred_stamp = (new_cursor[5],)
    if cache.primary is None or cache.primary[0] != pred_stamp or touched is None:
        primary = labels.choose_model(session, st.id, None)
        model_classes = _model_classes(session, st.id, primary, export_classes)
        cache.primary = (pred_stamp, primary, model_classes)
    _, primary, model_classes = cache.primary
    videos = list(
        session.scalars(select(Media).where(Media.study_id == st.id, Media.kind == "video").order_by(Media.id))
    )
    segs = list_segments(session, [m.id for m in videos])
    n_tracks = {
        int(m): int(n)
        for m, n in session.execute(
            select(Track.media_id, func.count(Track.id))
            .where(Track.media_id.in_([m.id for m in videos]))
            .group_by(Track.media_id)
        )
    }
    recs: list[_Recording] = []
    fresh: dict[int, tuple[tuple[Any, ...], _Recording]] = {}
    for m in videos:
        stamp = _stamp(m, [s for s in segs if s.media_id == m.id], n_tracks.get(m.id, 0), primary)
        got = cache.recordings.get(m.id)
        if got is None or got[0] != stamp or touched is None or m.id in touched:
            got = (stamp, _recording_sums(session, m, primary, st.id))
        else:
            _update(session, got[1], m.id in regroup, votes.get(m.id, set()), st.id)
        fresh[m.id] = got
        recs.append(got[1])
    with _LOCK:
        cache.recordings = fresh
        cache.cursor = new_cursor
    return _assemble(recs, model_classes)


def _assemble(recs: Sequence[_Recording], model_classes: Sequence[str]) -> ClassTables:
    """The tables of some recordings from their sums: the model's classes, then the classes people gave."""
    classes = list(model_classes)
    for rec in recs:
        for k in rec.labels_seen:
            if k not in classes:
                classes.append(k)
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


def _update(session: Session, rec: _Recording, regroup: bool, voted: set[int], study_id: int) -> None:
    """Brings a cached recording up to date: its persons read again after a person change, its voted faces."""
    if regroup:
        rec.regroup(current_persons(session, rec.media_id))
    if voted:
        _correct(session, rec, sorted(voted), study_id)


def _model_classes(
    session: Session, study_id: int, primary: labels.ModelKey | None, export_classes: Any
) -> tuple[str, ...]:
    """The model's classes of the study (the ``prob_*`` order of the exports, without the voted-only classes)."""
    return tuple(export_classes(session, study_id, primary, votes=False))


def clear_cache() -> None:
    """Forgets every cached recording (tests; a process that restored a backup under the same URL)."""
    with _LOCK:
        _CACHE.clear()


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
