"""A recording's class sums computed from its faces (:mod:`db.class_buckets`): what :mod:`db.class_sums` keeps.

The faces only the model labelled are summed in SQL, per track and time bucket, with the values of their prediction
of the study's model run (the engagement of the track's window where the prediction has none); the faces people
voted on (their own rows or their track's) and those without a prediction of the run go through the rules of
:mod:`db.labels` (:mod:`db.face_pages`): they are as many as the votes, not the faces.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from typing import Any

from sqlalchemy import Integer, and_, case, exists, func, literal, or_, select
from sqlalchemy.orm import Session, aliased

from db import face_table, labels
from db.class_buckets import Sums, add_values, bucket_of, bucket_sql
from db.schema import Annotation, Face, PersonTrack, Prediction, Track

Key = tuple[int, int]
"""``(track_id, bucket)``."""


def frame_times(session: Session, media_id: int) -> list[float]:
    """A recording's distinct analysed frame times, in order."""
    got = session.scalars(select(Face.time_s).where(Face.media_id == media_id).distinct())
    return sorted(float(t) for t in got if t is not None)


def media_classes(session: Session, media_id: int, primary: labels.ModelKey | None) -> list[str]:
    """The classes of a recording's model runs (one stored prediction per run), the study's run first."""
    run = (Prediction.model, Prediction.weights_hash, Prediction.model_version)
    stmt = select(*run, func.min(Prediction.id)).join(Face, Prediction.face_id == Face.id)
    runs = sorted(session.execute(stmt.where(Face.media_id == media_id).group_by(*run)), key=lambda r: r[3])
    runs.sort(key=lambda r: tuple(r[:3]) != primary)
    order: dict[str, None] = {}
    for r in runs:
        probs = session.scalar(select(Prediction.probs).where(Prediction.id == r[3]))
        for k in probs or {}:
            order.setdefault(str(k), None)
    return list(order)


def _latest(primary: labels.ModelKey | None) -> Any:
    if primary is None:
        return literal(None, type_=Integer)
    version = Prediction.model_version.is_(None) if primary[2] is None else Prediction.model_version == primary[2]
    return (
        select(func.max(Prediction.id))
        .where(
            Prediction.face_id == Face.id,
            Prediction.model == primary[0],
            Prediction.weights_hash == primary[1],
            version,
        )
        .scalar_subquery()
    )


def compute(
    session: Session,
    media_id: int,
    study_id: int,
    primary: labels.ModelKey | None,
    bounds: Sequence[float],
    step: tuple[float, float],
    tracks: Collection[int] | None = None,
    buckets: Collection[int] | None = None,
) -> dict[Key, Sums]:
    """The sums of a recording's tracked faces of a person per track and bucket.

    Only ``tracks`` when given, and only the faces of ``buckets`` when given. With ``tracks``, ``visible`` is left
    0: a vote does not change when a face was seen (the caller keeps it).
    """
    sums: dict[Key, Sums] = {}
    latest = _latest(primary)
    pred = aliased(Prediction)
    t = func.coalesce(Face.time_s, 0.0)
    where = [Face.media_id == media_id]
    if tracks is not None:
        where.append(Face.track_id.in_(sorted(tracks)))
    if buckets is not None:
        where.append(or_(*(in_bucket(bounds, b, t) for b in sorted(buckets))))
    # A face whose prediction has no engagement (a video stored chunk by chunk) takes its track's window's:
    # those are summed below in Python over the recording's windows, not by a subquery per face.
    engagement = case((pred.id.is_(None), literal(None)), else_=pred.engagement)
    base = (
        select(
            bucket_sql(bounds, t).label("bucket"),
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
        .where(*where)
        .subquery()
    )
    c = base.c
    stmt = select(
        c.track_id,
        c.bucket,
        c.label,
        func.count(),
        func.sum(c.eng),
        func.count(c.eng),
        func.sum(c.valence),
        func.count(c.valence),
        func.sum(c.arousal),
        func.count(c.arousal),
    ).group_by(c.track_id, c.bucket, c.label)
    for tid, b, label, n, es, en, vs, vn, as_, an in session.execute(stmt):
        agg = sums.setdefault((int(tid), int(b)), Sums())
        agg += Sums(int(n), 0, float(es or 0.0), int(en), float(vs or 0.0), int(vn), float(as_ or 0.0), int(an))
        if label:
            agg.labels[str(label)] += int(n)
    if tracks is None:
        # Per track: a person's tracks never overlap in time (merging overlapping ones is refused), so a person's
        # visible seconds are the sum of its tracks'.
        for tid, b, seconds in session.execute(_visible_sql(media_id, bucket_sql(bounds, t), step)):
            sums[(int(tid), int(b))].visible += float(seconds or 0.0)
    _window_sums(session, sums, base)
    _correct(session, sums, media_id, study_id, primary, bounds, where, latest)
    return sums


def in_bucket(bounds: Sequence[float], bucket: int, t: Any) -> Any:
    """The SQL test that time ``t`` falls in ``bucket`` (:func:`db.class_buckets.bucket_of`), on the time index."""
    i = bucket // 2
    if bucket < 0:
        return t < bounds[0]
    if bucket % 2 == 0:
        return t == bounds[i]
    return and_(t > bounds[i], t < bounds[i + 1]) if i + 1 < len(bounds) else t > bounds[i]


def _visible_sql(media_id: int, bucket: Any, step: tuple[float, float]) -> Any:
    """Per track and bucket, the seconds of :func:`db.class_buckets.frame_durations` of its distinct frames, in SQL.

    One pass over the recording's faces in frame order (the ``media_id, frame`` index): each face gets the next
    distinct frame's time (a window over the next peer group, ``GROUPS BETWEEN 1 FOLLOWING AND 1 FOLLOWING``) and
    its track (faces of no person count as analysed frames but for nobody); its frame stands for the step to that
    time, or for ``one_step`` when last or followed by a gap; summed over the distinct frames of each track and
    bucket.
    """
    one, longest = step
    t = func.coalesce(Face.time_s, 0.0)
    nxt = func.first_value(t).over(order_by=Face.frame, groups=(1, 1))
    person = case((PersonTrack.track_id.is_(None), literal(None)), else_=Face.track_id)
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


def _window_sums(session: Session, sums: dict[Key, Sums], base: Any) -> None:
    """Adds the window engagement of the faces whose prediction has none (the rule of :func:`db.labels.face_labels`).

    Their track's windows are read once and looked up by bisection (:mod:`db.face_pages`).
    """
    from db import face_pages

    stmt = select(base.c.bucket, base.c.track_id, base.c.time_s).where(
        base.c.has_pred, base.c.eng.is_(None), base.c.track_score.is_not(None)
    )
    rows = session.execute(stmt).all()
    if not rows:
        return
    windows = face_table.track_windows(session, {int(r[1]) for r in rows})
    indexed = {t: face_pages._indexed(w) for t, w in windows.items()}
    for b, tid, time_s in rows:
        p = face_pages._window_engagement(indexed.get(int(tid)), time_s)
        if p is not None:
            agg = sums[(int(tid), int(b))]
            agg.eng_sum += p
            agg.eng_n += 1


def _correct(
    session: Session,
    sums: dict[Key, Sums],
    media_id: int,
    study_id: int,
    primary: labels.ModelKey | None,
    bounds: Sequence[float],
    where: list[Any],
    latest: Any,
) -> None:
    """Adds what people's votes (and the rules for faces without a prediction of the run) change in the sums."""
    from db import face_pages

    voted_tracks = select(Annotation.track_id).where(Annotation.track_id == Face.track_id)
    special = or_(exists().where(Annotation.face_id == Face.id), exists(voted_tracks), latest.is_(None))
    ids = list(session.scalars(select(Face.id).where(*where, Face.track_id.is_not(None), special)))
    for r in face_pages.faces_by_id(session, study_id, ids, primary):
        if r.track_id is None or r.media_id != media_id:
            continue
        key = (r.track_id, bucket_of(bounds, r.time_s or 0.0))
        d = sums.get(key)
        if d is None:
            continue  # a face of no person
        if primary is not None and (r.model, r.weights_hash, r.model_version) == primary:
            add_values(d, r.model_label, r.model_engagement, r.model_valence, r.model_arousal, -1)
        add_values(d, r.label, r.engagement, r.valence, r.arousal, 1)
        d.n_human += r.label_source == "human"
        if r.label:
            d.firsts[r.label] = min(r.face_id, d.firsts.get(r.label, r.face_id))
