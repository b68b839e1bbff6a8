"""The class sums kept per track and time bucket (:class:`db.schema.ClassSum`), written with what they sum.

The Classroom tables and the class over time add these up (:mod:`db.classroom`) instead of reading the faces. They
are kept by the one mechanism every write path goes through, as :mod:`db.status` keeps the review read model: the
session notes what a flush wrote (see :func:`_collect`), Core writes say so with :func:`mark`, and just before the
transaction commits :func:`refresh` writes the sums again from the faces (:func:`db.class_compute.compute`):

- a vote or undo on a face: the sums of its track in its time bucket; on a track: that track's (visible seconds
  stay);
- new faces, predictions or tracks (ingest, finishing a resumable video, a track split at a time), a face moved to a
  track, a segment added or removed, a recording's duration changed, a track deleted: the whole recording (its
  buckets, frame steps and visible seconds may all change);
- a new model run that becomes the study's run: every recording of the study.

Renames, merges and whole-track splits change no sum: the tables add up the tracks of each current person. A
recording still being analysed has no sums (it has no tracks yet). Compacting drops crops and features only.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Select, delete, event, insert, inspect, select
from sqlalchemy.orm import Session

from db import labels, status
from db.class_buckets import Sums, bounds_of, bucket_of, step_rule
from db.class_compute import Key, compute, frame_times, media_classes
from db.schema import Annotation, ClassSum, ClassSumMedia, Face, LectureSegment, Media, PersonTrack, Prediction, Track
from db.segments import list_segments

_KEY = "affectlab_class_sums"
CHUNK = 500


@dataclass
class _Dirty:
    media: set[int] = field(default_factory=set)
    """Recordings whose sums are written again whole."""
    faces: set[int] = field(default_factory=set)
    """Faces voted on: their tracks' sums are written again."""
    tracks: set[int] = field(default_factory=set)
    """Tracks voted on."""
    track_media: set[int] = field(default_factory=set)
    """Tracks given a person or deleted: their recording is written again."""
    pred_faces: set[int] = field(default_factory=set)
    """Faces with a new prediction: their recording is written again, the study's model run checked."""
    studies: set[int] = field(default_factory=set)
    """Studies whose model run is checked (a delete)."""


def _dirty(session: Session) -> _Dirty:
    d = session.info.get(_KEY)
    if d is None:
        d = session.info[_KEY] = _Dirty()
    return d


def mark(
    session: Session, *, media: Iterable[int] = (), faces: Iterable[int] = (), studies: Iterable[int] = ()
) -> None:
    """Notes a Core write the flush does not see.

    Recordings whose faces or tracks changed or went, faces voted on (their tracks are written again), studies whose
    model run may change (a delete).
    """
    d = _dirty(session)
    d.media.update(media)
    d.faces.update(faces)
    d.studies.update(studies)


def _changed(obj: Any, *names: str) -> bool:
    attrs = inspect(obj).attrs
    return any(attrs[n].history.has_changes() for n in names)


@event.listens_for(Session, "after_flush")
def _collect(session: Session, _ctx: Any) -> None:
    """Notes what a flush wrote that the sums rest on."""
    if session.info.get(status.OFF):
        return
    for obj in session.new:
        if isinstance(obj, Face | Track | LectureSegment):
            _dirty(session).media.add(obj.media_id)
        elif isinstance(obj, Prediction):
            _dirty(session).pred_faces.add(obj.face_id)
        elif isinstance(obj, Annotation):
            if obj.face_id is not None:
                _dirty(session).faces.add(obj.face_id)
            elif obj.track_id is not None:
                _dirty(session).tracks.add(obj.track_id)
        elif isinstance(obj, PersonTrack):
            _dirty(session).track_media.add(obj.track_id)
    for obj in session.deleted:
        if isinstance(obj, LectureSegment | Track):
            _dirty(session).media.add(obj.media_id)
    for obj in session.dirty:
        if isinstance(obj, Face) and _changed(obj, "track_id", "time_s", "frame"):
            _dirty(session).media.add(obj.media_id)
        elif isinstance(obj, Media) and _changed(obj, "duration_s", "analysis_status"):
            _dirty(session).media.add(obj.id)


@event.listens_for(Session, "before_commit")
def _before_commit(session: Session) -> None:
    if session.info.get(status.OFF) or _KEY not in session.info:
        return
    session.flush()
    d = session.info.pop(_KEY)
    refresh(session, d)
    session.flush()
    session.info.pop(_KEY, None)  # what the refresh itself wrote


@event.listens_for(Session, "after_rollback")
def _after_rollback(session: Session) -> None:
    session.info.pop(_KEY, None)


def _chunks(ids: Iterable[int]) -> Iterable[list[int]]:
    items = sorted(ids)
    for i in range(0, len(items), CHUNK):
        yield items[i : i + CHUNK]


def _media_of(session: Session, col: Any, ids: Iterable[int]) -> dict[int, int]:
    """``id -> media_id`` of faces or tracks (``col``: ``Face.id`` or ``Track.id``)."""
    model = Face if col is Face.id else Track
    out: dict[int, int] = {}
    for part in _chunks(ids):
        out.update((int(i), int(m)) for i, m in session.execute(select(col, model.media_id).where(col.in_(part))))
    return out


def refresh(session: Session, d: _Dirty) -> None:
    """Writes again the sums of what ``d`` names (see the module docstring)."""
    media = set(d.media)
    media.update(_media_of(session, Face.id, d.pred_faces).values())
    media.update(_media_of(session, Track.id, d.track_media).values())
    voted: dict[int, set[int]] = defaultdict(set)  # recording -> tracks voted on whole
    voted_at: dict[int, dict[int, set[float]]] = defaultdict(lambda: defaultdict(set))  # -> track -> face times
    for part in _chunks(d.faces):
        stmt = select(Face.media_id, Face.track_id, Face.time_s).where(Face.id.in_(part))
        for m, t, ts in session.execute(stmt):
            if t is not None:
                voted_at[int(m)][int(t)].add(float(ts or 0.0))
    for t, m in _media_of(session, Track.id, d.tracks).items():
        voted[m].add(t)
    rows = session.execute(
        select(Media.id, Media.study_id, Media.analysis_status).where(Media.id.in_(media | set(voted) | set(voted_at)))
    ).all()
    study_of = {int(m): int(sid) for m, sid, _ in rows}
    # a video still being analysed has no sums (no tracks yet): its chunks cost no count of the study's runs
    partial = {int(m) for m, _, st in rows if st == "partial"}
    for m in partial & media:
        rebuild(session, m, None)
    media -= partial
    study_of = {m: sid for m, sid in study_of.items() if m not in partial}
    recount = set(d.studies)
    if d.pred_faces or d.studies:
        recount |= {study_of[m] for m in media if m in study_of}
    primary: dict[int, labels.ModelKey | None] = {}
    for sid in set(study_of.values()) | set(d.studies):
        # the run the study follows after this transaction (the kept one may not be refreshed yet)
        primary[sid] = labels.count_model_runs(session, sid) if sid in recount else labels.choose_model(session, sid)
        stale = select(ClassSumMedia.media_id, ClassSumMedia.run).where(ClassSumMedia.study_id == sid)
        for m, run in session.execute(stale):
            if _run(run) != primary[sid]:
                media.add(int(m))
                study_of[int(m)] = sid
    for m in sorted(media):
        rebuild(session, m, primary.get(study_of.get(m, -1)))
    for m in sorted((set(voted) | set(voted_at)) - media):
        if m in study_of:
            refresh_tracks(session, m, voted.get(m, set()), voted_at.get(m, {}), primary[study_of[m]])


def _run(run: Sequence[Any] | None) -> labels.ModelKey | None:
    return None if run is None else (str(run[0]), str(run[1]), None if run[2] is None else str(run[2]))


def _lock(session: Session, media_id: int) -> Any:
    """The recording's row (the columns the sums need), locked for this transaction.

    One writer of a recording's sums at a time on PostgreSQL.
    """
    cols = (Media.id, Media.study_id, Media.kind, Media.analysis_status, Media.duration_s)
    return session.execute(select(*cols).where(Media.id == media_id).with_for_update()).first()


def rebuild(session: Session, media_id: int, primary: labels.ModelKey | None) -> int:
    """Writes a recording's sums again from its faces; returns the rows written (none for a partial video)."""
    media = _lock(session, media_id)
    session.execute(delete(ClassSum).where(ClassSum.media_id == media_id))
    session.execute(delete(ClassSumMedia).where(ClassSumMedia.media_id == media_id))
    if media is None or media.kind != "video" or media.analysis_status == "partial":
        return 0
    times = frame_times(session, media_id)
    duration = float(media.duration_s or (max(times) if times else 0.0)) or 1.0
    step = step_rule(times)
    bounds = bounds_of(duration, list_segments(session, [media_id]))
    sums = compute(session, media_id, media.study_id, primary, bounds, step)
    session.execute(
        insert(ClassSumMedia),
        [
            {
                "media_id": media_id,
                "study_id": media.study_id,
                "bounds": bounds,
                "duration_s": duration,
                "one_step": step[0],
                "longest": None if step[1] == float("inf") else step[1],
                "run": None if primary is None else list(primary),
                "classes": media_classes(session, media_id, primary),
            }
        ],
    )
    _write(session, media_id, sums)
    return len(sums)


MANY_BUCKETS = 4
"""Votes in this many buckets, and in a third of a recording's, write its sums again in one pass (:func:`rebuild`).

A bucket's rewrite reads that bucket's faces of the voted tracks and their engagement windows; at 10^5 faces, an
import of 3,000 votes spread over all 26 buckets of a recording took 18 s bucket by bucket against 4.8 s for one
rebuild (the same sums). A key press (one face, one bucket) always rewrites its one bucket.
"""


def refresh_tracks(
    session: Session,
    media_id: int,
    track_ids: Iterable[int],
    faces_at: Mapping[int, Iterable[float]],
    primary: labels.ModelKey | None,
) -> None:
    """Writes again, after votes, the sums of whole tracks and of the buckets of voted faces.

    ``track_ids``: tracks voted on whole; ``faces_at``: track -> the times of its voted faces (one bucket of a track
    is read, whatever the track's length). Visible seconds stay: a vote does not change when a face was seen.
    """
    _lock(session, media_id)
    state = session.get(ClassSumMedia, media_id)
    if state is None or _run(state.run) != primary:
        rebuild(session, media_id, primary)
        return
    whole = sorted(set(track_ids))
    by_bucket: dict[int, set[int]] = defaultdict(set)
    for t, times in faces_at.items():
        if t not in whole:
            for ts in times:
                by_bucket[bucket_of(state.bounds, ts)].add(t)
    if len(by_bucket) >= MANY_BUCKETS and 3 * len(by_bucket) >= len(state.bounds):
        rebuild(session, media_id, primary)  # votes all over the recording (an import): one pass over its faces
        return
    if whole:
        _rewrite(session, state, primary, whole, None)
    for b, tracks in sorted(by_bucket.items()):
        _rewrite(session, state, primary, sorted(tracks), [b])


def _rewrite(
    session: Session,
    state: ClassSumMedia,
    primary: labels.ModelKey | None,
    tracks: list[int],
    buckets: list[int] | None,
) -> None:
    """The kept sums of ``tracks`` (in ``buckets`` only, when given) computed again; their visible seconds kept."""
    where = [ClassSum.media_id == state.media_id, ClassSum.track_id.in_(tracks)]
    if buckets is not None:
        where.append(ClassSum.bucket.in_(buckets))
    old = select(ClassSum.track_id, ClassSum.bucket, ClassSum.visible_s).where(*where)
    visible = {(int(t), int(b)): float(v) for t, b, v in session.execute(old)}
    step = (state.one_step, float("inf") if state.longest is None else state.longest)
    sums = compute(session, state.media_id, state.study_id, primary, state.bounds, step, tracks, buckets)
    for key, agg in sums.items():
        agg.visible = visible.get(key, 0.0)
    session.execute(delete(ClassSum).where(*where))
    _write(session, state.media_id, sums)


def _write(session: Session, media_id: int, sums: dict[Key, Sums]) -> None:
    rows = [
        {
            "media_id": media_id,
            "track_id": t,
            "bucket": b,
            "n": a.n,
            "n_human": a.n_human,
            "visible_s": a.visible,
            "eng_sum": a.eng_sum,
            "eng_n": a.eng_n,
            "val_sum": a.val_sum,
            "val_n": a.val_n,
            "aro_sum": a.aro_sum,
            "aro_n": a.aro_n,
            "labels": {k: int(v) for k, v in a.labels.items() if v},
            "firsts": dict(a.firsts),
        }
        for (t, b), a in sorted(sums.items())
    ]
    for i in range(0, len(rows), CHUNK):
        session.execute(insert(ClassSum), rows[i : i + CHUNK])


def kept(session: Session, media_ids: Sequence[int]) -> dict[int, tuple[ClassSumMedia, dict[Key, Sums]]]:
    """The kept sums of some recordings (those that have them), with how they were cut."""
    out: dict[int, tuple[ClassSumMedia, dict[Key, Sums]]] = {}
    for part in _chunks(media_ids):
        for state in session.scalars(select(ClassSumMedia).where(ClassSumMedia.media_id.in_(part))):
            out[state.media_id] = (state, {})
        c = ClassSum
        cols = (c.media_id, c.track_id, c.bucket, c.n, c.visible_s, c.eng_sum, c.eng_n, c.val_sum, c.val_n)
        more = (c.aro_sum, c.aro_n, c.labels, c.n_human, c.firsts)
        for m, t, b, n, vis, es, en, vs, vn, as_, an, labels_, n_human, firsts in session.execute(
            select(*cols, *more).where(c.media_id.in_(part))
        ):
            agg = Sums(n, vis, es, en, vs, vn, as_, an)
            dict.update(agg.labels, labels_ or {})  # not Counter(): its Mapping check is the cost here
            agg.n_human = n_human
            agg.firsts = dict(firsts or {})
            out[m][1][(t, b)] = agg
    return out


def recompute(session: Session, media_id: int) -> dict[Key, Sums]:
    """A recording's sums computed from its faces now, without writing (what the kept ones must equal)."""
    media = session.get(Media, media_id)
    if media is None or media.kind != "video" or media.analysis_status == "partial":
        return {}
    times = frame_times(session, media_id)
    duration = float(media.duration_s or (max(times) if times else 0.0)) or 1.0
    bounds = bounds_of(duration, list_segments(session, [media_id]))
    primary = labels.count_model_runs(session, media.study_id)
    return compute(session, media_id, media.study_id, primary, bounds, step_rule(times))


def rebuild_all(session: Session, study_id: int | None = None) -> int:
    """Writes the sums of every video of a study (all studies: None) again; returns the recordings written."""
    stmt = select(Media.id, Media.study_id).where(Media.kind == "video")
    return _rebuild_each(session, stmt if study_id is None else stmt.where(Media.study_id == study_id))


def fill_missing(session: Session) -> int:
    """Writes the sums of every completely analysed video that has none (a store upgraded to them); returns how many."""
    has = select(ClassSumMedia.media_id).where(ClassSumMedia.media_id == Media.id)
    complete = (Media.kind == "video") & (Media.analysis_status == "complete")
    return _rebuild_each(session, select(Media.id, Media.study_id).where(complete, ~has.exists()))


def _rebuild_each(session: Session, stmt: Select[int, int]) -> int:
    """:func:`rebuild` for each ``(media id, study id)`` the statement selects, each study's run counted once."""
    runs: dict[int, labels.ModelKey | None] = {}
    n = 0
    for m, sid in session.execute(stmt.order_by(Media.id)).all():
        if sid not in runs:
            runs[sid] = labels.count_model_runs(session, sid)
        rebuild(session, int(m), runs[sid])
        n += 1
    return n
