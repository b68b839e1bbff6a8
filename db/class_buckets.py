"""The time buckets and sums the class tables add up (:mod:`db.classroom`), and the rules of their figures.

A recording's faces are summed per track and time bucket (:class:`Sums`); a bucket is cut at every minute and
lecture segment bound of the recording (:func:`bucket_of`), so any row of the tables is a sum of whole buckets
(:func:`periods_in`). Figures come from sums by :func:`figures_of`, rounded to :data:`DECIMALS`.
"""

from __future__ import annotations

from bisect import bisect_right
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from sqlalchemy import case, literal

from db.rows import FaceLabel
from db.segments import SegmentRow
from models.engagement import engagement_label

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
        add_values(agg, f.label, f.engagement, f.valence, f.arousal, 1)
    return _figures(agg, classes, period_s)


def _periods(
    duration: float, segments: Sequence[SegmentRow]
) -> tuple[list[tuple[int, float, float]], list[tuple[str, float, float]]]:
    minutes = [(k, 60.0 * k, min(60.0 * (k + 1), duration)) for k in range(max(1, int(np.ceil(duration / 60.0))))]
    return minutes, [(s.name, s.start_s, s.end_s) for s in segments]


def _inside(f: FaceLabel, start: float, end: float, last: bool) -> bool:
    t = f.time_s or 0.0
    return start <= t < end or (last and t == end)


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
    n_human: int = 0
    """Faces whose class people gave."""
    firsts: dict[str, int] = field(default_factory=dict)
    """Per class of the faces people corrected, the first such face id (the order of the classes people add)."""

    def __iadd__(self, o: _Agg) -> _Agg:
        self.n += o.n
        self.visible += o.visible
        self.eng_sum += o.eng_sum
        self.eng_n += o.eng_n
        self.val_sum += o.val_sum
        self.val_n += o.val_n
        self.aro_sum += o.aro_sum
        self.aro_n += o.aro_n
        labels = self.labels
        for k, v in o.labels.items():  # not Counter.update: its Mapping check costs more than the adding
            labels[k] += v
        self.n_human += o.n_human
        for k, f in o.firsts.items():
            self.firsts[k] = min(f, self.firsts.get(k, f))
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


def add_values(d: _Agg, label: str | None, eng: float | None, val: float | None, aro: float | None, sign: int) -> None:
    """Adds (``sign`` 1) or takes out (-1) one face's values."""
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


def bucket_of(bounds: Sequence[float], t: float) -> int:
    """The bucket of time ``t``: ``2 i`` holds ``t == bounds[i]``, ``2 i + 1`` ``bounds[i] < t < bounds[i + 1]``.

    ``-1``: before the first bound.
    """
    i = bisect_right(bounds, t) - 1
    if i < 0:
        return -1
    return 2 * i if bounds[i] == t else 2 * i + 1


def bucket_sql(bounds: Sequence[float], t: Any) -> Any:
    """The SQL of :func:`bucket_of`: a binary search as nested CASE expressions (log2 of the bounds deep)."""

    def search(lo: int, hi: int) -> Any:
        # bounds[lo] <= t < bounds[hi] (hi == len: no upper bound)
        if hi - lo == 1:
            return case((t == bounds[lo], literal(2 * lo)), else_=literal(2 * lo + 1))
        mid = (lo + hi) // 2
        return case((t < bounds[mid], search(lo, mid)), else_=search(mid, hi))

    return case((t < bounds[0], literal(-1)), else_=search(0, len(bounds)))


_bucket_of = bucket_of
_bucket_sql = bucket_sql


def periods_in(bounds: Sequence[float], start: float, end: float, last: bool) -> list[int]:
    """The buckets of the period ``start <= t < end`` (``or t == end`` when ``last``)."""
    out = []
    for i, x in enumerate(bounds):
        if start <= x < end or (last and x == end):
            out.append(2 * i)
        if i + 1 < len(bounds) and start <= x and bounds[i + 1] <= end:
            out.append(2 * i + 1)
    return out


def bounds_of(duration: float, segments: Sequence[SegmentRow]) -> list[float]:
    """A recording's bucket bounds: 0, every minute's and segment's bounds, the duration."""
    minutes, seg_periods = _periods(duration, segments)
    return sorted(
        {0.0, duration, *(a for _, a, _ in minutes), *(b for _, _, b in minutes)}
        | {x for _, a, b in seg_periods for x in (a, b)}
    )


_add_values = add_values
