"""One recording's per-track summaries and binned time series, computed in SQL (the Library's figures).

Opening a recording must cost the same whatever its length, so its faces are never resolved into rows for the
figures: :func:`track_summaries` lists its tracks (their rows, no face read); :func:`track_series` bins the faces of
the tracks shown into buckets of ``width_s`` seconds (chosen by :func:`bucket_width` so a series has at most
:data:`MAX_POINTS` points), counts per bucket the model classes and the annotators' consensus classes from the kept
read model (:class:`db.schema.FaceStatus`), averages the class probabilities, valence and arousal of each face's
prediction (the one :func:`db.labels.pick_predictions` picks: its latest of the study's model run, else its latest of
any run), and averages the engagement windows (by their middle); :func:`with_counts` sums a shown track's exact faces
and class counts over its series.

The values equal the same computation over :func:`db.labels.face_labels`'s rows (``tests/test_recording_series.py``
checks it on SQLite and PostgreSQL). A face without a time counts at 0 s.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from sqlalchemy import Integer, and_, case, cast, func, or_, select
from sqlalchemy.orm import Session

from db import face_pages
from db.schema import EngagementWindow, Face, FaceStatus, Prediction, StudyStatus, Track

MAX_POINTS = 300
"""The most buckets of one series: a recording of any length draws a few hundred points per track."""

WIDTHS = (0.2, 0.5, 1.0, 2.0, 5.0, 10.0, 15.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0)
"""The bucket widths offered (seconds): round numbers a figure can name ("per 15 s")."""


def bucket_width(span_s: float, max_points: int = MAX_POINTS) -> float:
    """The smallest width of :data:`WIDTHS` that cuts ``span_s`` seconds into at most ``max_points`` buckets."""
    for w in WIDTHS:
        if span_s / w <= max_points - 1:
            return w
    return float(max(WIDTHS[-1], span_s / (max_points - 1)))


def width_name(width_s: float) -> str:
    """A bucket width as a figure names it: ``"0.5 s"``, ``"15 s"``, ``"2 min"``."""
    if width_s >= 60 and width_s % 60 == 0:
        return f"{width_s / 60:g} min"
    return f"{width_s:g} s"


@dataclass(frozen=True)
class TrackSummary:
    """One track of a recording (``track_id`` None: the recording's faces without a track).

    Attributes:
        model_counts: Faces per model class (the study's model run), faces without a prediction left out.
        human_counts: Faces per annotators' class (majority, corrections included), faces without a vote left out.
    """

    track_id: int | None
    track_index: int | None
    n_faces: int
    start_s: float | None
    end_s: float | None
    engagement_score: float | None
    engagement_label: str | None
    model_counts: Mapping[str, int] = field(default_factory=dict)
    human_counts: Mapping[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class Bucket:
    """The faces of one track within ``[start_s, start_s + width)``.

    Attributes:
        start_s: The bucket's start (a multiple of the width).
        n_faces: Faces in it.
        n_predicted: Faces with a prediction (the means are over these).
        probs: Mean probability per class (a class a prediction lacks counts 0).
        valence: Mean valence of the predictions that have one, None without any.
        arousal: Mean arousal, likewise.
        model_counts: Faces per model class.
        human_counts: Faces per annotators' class.
    """

    start_s: float
    n_faces: int
    n_predicted: int
    probs: Mapping[str, float]
    valence: float | None
    arousal: float | None
    model_counts: Mapping[str, int]
    human_counts: Mapping[str, int]


@dataclass(frozen=True)
class TrackSeries:
    """The binned series of one track: its buckets with faces in time order, and its engagement per bucket."""

    track_id: int | None
    width_s: float
    buckets: tuple[Bucket, ...]
    engagement: tuple[tuple[float, float], ...] = ()
    """``(bucket start, mean P(engaged))`` of the windows whose middle falls in the bucket."""


def track_summaries(session: Session, media_id: int) -> list[TrackSummary]:
    """The tracks of a recording (by track index; the faces without a track last), without class counts.

    One read of its track rows (faces per track as stored with the track) and one count of its faces without a
    track (by the faces' track index, whose NULL entries are the study's image faces and untracked video faces, never
    the recording's tracked faces): the work grows with the recording's tracks, not its faces. The class counts of
    the tracks shown come with their series (:func:`with_counts`).
    """
    tracks = session.execute(
        select(
            Track.id,
            Track.track_index,
            Track.n_faces,
            Track.start_s,
            Track.end_s,
            Track.engagement_score,
            Track.engagement_label,
        ).where(Track.media_id == media_id)
    ).all()
    out = [
        TrackSummary(
            track_id=int(t.id),
            track_index=int(t.track_index),
            n_faces=int(t.n_faces or 0),
            start_s=t.start_s,
            end_s=t.end_s,
            engagement_score=t.engagement_score,
            engagement_label=t.engagement_label,
        )
        for t in sorted(tracks, key=lambda t: (t.track_index, t.id))
    ]
    # ``media_id + 0``: the faces' track index leads (its NULL entries), never the recording's (media, frame) index
    untracked = session.scalar(
        select(func.count()).select_from(Face).where(Face.track_id.is_(None), Face.media_id + 0 == media_id)
    )
    if untracked:
        out.append(TrackSummary(None, None, int(untracked), None, None, None, None))
    return out


def with_counts(summary: TrackSummary, series: TrackSeries | None) -> TrackSummary:
    """A track's summary with its faces and class counts summed over its series' buckets (exact, as resolved)."""
    if series is None:
        return summary
    model: dict[str, int] = {}
    human: dict[str, int] = {}
    for b in series.buckets:
        for k, c in b.model_counts.items():
            model[k] = model.get(k, 0) + c
        for k, c in b.human_counts.items():
            human[k] = human.get(k, 0) + c
    return replace(
        summary,
        n_faces=sum(b.n_faces for b in series.buckets),
        model_counts=_sorted(model),
        human_counts=_sorted(human),
    )


def _sorted(counts: Mapping[str, int]) -> dict[str, int]:
    return {k: counts[k] for k in sorted(counts, key=lambda k: (-counts[k], k))}


def _bucket(session: Session, seconds: Any, width: float) -> Any:
    """``floor(seconds / width)`` in SQL (SQLite has no ``floor`` without its math extension: times are >= 0)."""
    x = func.coalesce(seconds, 0.0) / width
    if session.get_bind().dialect.name == "sqlite":
        return cast(x, Integer)
    return func.floor(x)


def _of_tracks(media_id: int, track_ids: Sequence[int | None]) -> Any:
    ids = [t for t in track_ids if t is not None]
    conds = [Face.track_id.in_(ids)] if ids else []
    if any(t is None for t in track_ids):
        conds.append(Face.track_id.is_(None))
    # ``media_id + 0``: the faces' track index leads (the shown tracks' faces), never the whole recording's
    return and_(Face.media_id + 0 == media_id, or_(*conds)) if conds else Face.id < 0


def track_series(
    session: Session,
    study_id: int,
    media_id: int,
    track_ids: Sequence[int | None],
    width_s: float,
    *,
    model: bool = True,
    human: bool = True,
) -> dict[int | None, TrackSeries]:
    """The binned series of the given tracks of a recording (None: its faces without a track).

    Args:
        session: An open session.
        study_id: The recording's study (whose model run the predictions follow).
        media_id: The recording.
        track_ids: The tracks (the ones shown: the work grows with their faces, never the study's).
        width_s: The bucket width (:func:`bucket_width`).
        model: Whether to read the model's values (probabilities, valence/arousal, classes, engagement).
        human: Whether to count the annotators' classes.
    """
    where = _of_tracks(media_id, track_ids)
    b = _bucket(session, Face.time_s, width_s).label("b")
    counts: dict[tuple[int | None, int], list[Any]] = {}  # (track, bucket) -> [n, model counts, human counts]
    stmt = (
        select(Face.track_id, b, FaceStatus.model_label, FaceStatus.human_label, func.count())
        .join(FaceStatus, FaceStatus.face_id == Face.id)
        .where(where)
        .group_by(Face.track_id, b, FaceStatus.model_label, FaceStatus.human_label)
    )
    for tid, k, ml, hl, c in session.execute(stmt):
        cell = counts.setdefault((tid, int(k)), [0, {}, {}])
        cell[0] += int(c)
        if model and ml is not None:
            cell[1][ml] = cell[1].get(ml, 0) + int(c)
        if human and hl is not None:
            cell[2][hl] = cell[2].get(hl, 0) + int(c)
    means: dict[tuple[int | None, int], tuple[int, dict[str, float], float | None, float | None]] = {}
    engagement: dict[int | None, list[tuple[float, float]]] = {}
    if model:
        means = _prediction_means(session, study_id, where, width_s)
        engagement = _engagement(session, [t for t in track_ids if t is not None], width_s)
    out: dict[int | None, TrackSeries] = {}
    for tid in dict.fromkeys(track_ids):
        keys = sorted(k for t, k in counts if t == tid)
        buckets = []
        for k in keys:
            n, mc, hc = counts[(tid, k)]
            np_, probs, v, a = means.get((tid, k), (0, {}, None, None))
            buckets.append(Bucket(k * width_s, n, np_, probs, v, a, _sorted(mc), _sorted(hc)))
        out[tid] = TrackSeries(tid, width_s, tuple(buckets), tuple(engagement.get(tid, ())))
    return out


def _prediction_means(
    session: Session, study_id: int, where: Any, width_s: float
) -> dict[tuple[int | None, int], tuple[int, dict[str, float], float | None, float | None]]:
    """Per (track, bucket): predicted faces, mean probability per class, mean valence and arousal."""
    primary = face_pages.study_model(session, study_id, None)
    kept = session.get(StudyStatus, study_id)
    classes = list(kept.classes or []) if kept is not None else []
    best: Any
    if primary is None:
        best = func.max(Prediction.id)
    else:
        is_primary = and_(
            Prediction.model == primary[0],
            Prediction.weights_hash == primary[1],
            Prediction.model_version.is_(None) if primary[2] is None else Prediction.model_version == primary[2],
        )
        best = func.coalesce(func.max(case((is_primary, Prediction.id))), func.max(Prediction.id))
    b = _bucket(session, Face.time_s, width_s).label("b")
    picked = (  # per face: its bucket and the id of the prediction its row follows (faces read once)
        select(Face.track_id.label("track_id"), b, best.label("pid"))
        .join(Face, Face.id == Prediction.face_id)
        .where(where)
        .group_by(Prediction.face_id, Face.track_id, b)
        .subquery()
    )
    cols = [func.avg(func.coalesce(Prediction.probs[c].as_float(), 0.0)) for c in classes]
    stmt = (
        select(
            picked.c.track_id,
            picked.c.b,
            func.count(),
            func.avg(Prediction.valence),
            func.avg(Prediction.arousal),
            *cols,
        )
        .select_from(picked)
        .join(Prediction, Prediction.id == picked.c.pid)
        .group_by(picked.c.track_id, picked.c.b)
    )
    out: dict[tuple[int | None, int], tuple[int, dict[str, float], float | None, float | None]] = {}
    for row in session.execute(stmt):
        tid, k, n, v, a, *ps = row
        probs = {c: float(p) for c, p in zip(classes, ps, strict=True) if p is not None}
        out[(tid, int(k))] = (int(n), probs, None if v is None else float(v), None if a is None else float(a))
    return out


def _engagement(
    session: Session, track_ids: Sequence[int], width_s: float
) -> dict[int | None, list[tuple[float, float]]]:
    """Per track: ``(bucket start, mean P(engaged))`` of its windows, by the windows' middles."""
    if not track_ids:
        return {}
    b = _bucket(session, (EngagementWindow.start_s + EngagementWindow.end_s) / 2, width_s).label("b")
    stmt = (
        select(EngagementWindow.track_id, b, func.avg(EngagementWindow.p_engaged))
        .where(EngagementWindow.track_id.in_(list(track_ids)))
        .group_by(EngagementWindow.track_id, b)
        .order_by(EngagementWindow.track_id, b)
    )
    out: dict[int | None, list[tuple[float, float]]] = {}
    for tid, k, p in session.execute(stmt):
        out.setdefault(int(tid), []).append((int(k) * width_s, float(p)))
    return out


def key_frame_boxes(
    session: Session, media_id: int, n: int = 4
) -> tuple[tuple[int, ...], tuple[tuple[int, int, tuple[float, float, float, float]], ...]]:
    """Up to ``n`` frames with faces, evenly spread over the recording's frame range, and their faces' boxes.

    Each frame is the first with a face at or after its target (one seek on the faces' (media, frame) index).

    Returns:
        The frames, and ``(frame, track index (0 without a track), box)`` of each face on them.
    """
    lo = session.scalar(select(func.min(Face.frame)).where(Face.media_id == media_id, Face.frame.is_not(None)))
    hi = session.scalar(select(func.max(Face.frame)).where(Face.media_id == media_id, Face.frame.is_not(None)))
    if lo is None or hi is None:
        return (), ()
    targets = sorted({round(lo + i * (hi - lo) / max(1, n - 1)) for i in range(n)})
    frames: set[int] = set()
    for t in targets:
        got = session.scalar(select(func.min(Face.frame)).where(Face.media_id == media_id, Face.frame >= t))
        if got is not None:
            frames.add(int(got))
    stmt = (
        select(Face.frame, Track.track_index, Face.x1, Face.y1, Face.x2, Face.y2)
        .outerjoin(Track, Track.id == Face.track_id)
        .where(Face.media_id == media_id, Face.frame.in_(sorted(frames)))
        .order_by(Face.frame, Face.id)
    )
    boxes = tuple(
        (int(fr or 0), int(ti or 0), (float(x1), float(y1), float(x2), float(y2)))
        for fr, ti, x1, y1, x2, y2 in session.execute(stmt)
    )
    return tuple(sorted(frames)), boxes
