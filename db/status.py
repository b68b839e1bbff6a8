"""The review read model: per-face review state and kept counts, updated in the transaction of every write.

The queues, their counts, "my labels" and the statistics read :class:`db.schema.FaceStatus` (one row per face),
:class:`db.schema.FaceJudge` (who judged or skipped which face), :class:`db.schema.QueueCount` (the queues' counts
per media item, class and annotator), :class:`db.schema.MediaTotals` (row counts) and
:class:`db.schema.StudyStatus` (the study's chosen model run) instead of resolving a whole study.

The one mechanism every write path goes through: the session notes what a flush wrote (new faces, predictions and
annotations, faces moved to a track; see :func:`_collect`), writes made with Core statements (bulk vote import,
tracks of a resumable video, deletes) say so with :func:`mark`, and just before the transaction commits
:func:`refresh` recomputes the rows of those faces with the written rules (:func:`db.labels.face_labels` on just
those faces), so the rows are always what the rules say and a rolled-back transaction leaves nothing behind.

What is recomputed: the faces a write touched (a track correction: the faces of the track; a skip: the face), the
queue counts by the difference those faces make; a media item's row counts when its faces or predictions change;
every face of a study only when its chosen model run changes (a new model run outnumbers the old one, or a delete);
a study's queue counts from its rows when its double share changes or a track is deleted.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from sqlalchemy import delete, event, func, select
from sqlalchemy.orm import Session

from db.repo import media_row
from db.rows import MediaRow
from db.schema import (
    Annotation,
    Annotator,
    Face,
    FaceJudge,
    FaceStatus,
    FaceTally,
    Media,
    MediaTotals,
    Prediction,
    QueueCount,
    ReviewSkip,
    Study,
    StudyStatus,
    StudyTally,
    Track,
)
from db.status_counts import (
    CountKey,
    CountVec,
    add_media,
    apply_counts,
    contributions,
    judge_marks,
    recount_media,
    recount_queues,
)
from db.status_new import write_new
from db.status_sql import CHUNK as CHUNK
from db.status_sql import OFF as OFF
from db.status_sql import TALLIES_OFF as TALLIES_OFF
from db.status_sql import chunks, locked_study, upsert
from db.status_stats import study_stats as study_stats
from db.status_tallies import TallyKey, TallyVec, apply_tallies, take_out, write_tallies
from db.status_write import status_values as status_values
from db.status_write import write_faces

if TYPE_CHECKING:
    pass

_KEY = "affectlab_status"


@dataclass
class _Dirty:
    faces: set[int] = field(default_factory=set)
    tracks: set[int] = field(default_factory=set)
    recount_faces: set[int] = field(default_factory=set)
    """Faces whose media item's kept counts are recounted (a face updated: its track, crop or features may change)."""
    added_faces: set[int] = field(default_factory=set)
    """Faces inserted: their media item's kept counts move by what they add (:func:`db.status_counts.add_media`)."""
    added_predictions: dict[int, int] = field(default_factory=dict)
    """Face id -> predictions inserted for it (the kept counts move by them)."""
    media: set[int] = field(default_factory=set)
    """Media items whose kept counts change (a delete)."""
    runs: set[tuple[int, tuple[str, str, str | None]]] = field(default_factory=set)
    """``(face_id, model run)`` of new predictions."""
    studies: set[int] = field(default_factory=set)
    """Studies whose chosen model run must be checked again (a delete)."""
    counts: set[int] = field(default_factory=set)
    """Studies whose queue counts are recomputed from their rows (double share changed, a track deleted)."""


def _dirty(session: Session) -> _Dirty:
    d = session.info.get(_KEY)
    if d is None:
        d = session.info[_KEY] = _Dirty()
    return d


def mark(
    session: Session,
    *,
    faces: Iterable[int] = (),
    tracks: Iterable[int] = (),
    media: Iterable[int] = (),
    studies: Iterable[int] = (),
    counts: Iterable[int] = (),
) -> None:
    """Notes a Core write the flush does not see.

    Faces or tracks whose labels changed, media items whose faces went, studies whose chosen model run may change.
    """
    d = _dirty(session)
    d.faces.update(faces)
    d.tracks.update(tracks)
    d.media.update(media)
    d.studies.update(studies)
    d.counts.update(counts)


@event.listens_for(Session, "after_flush")
def _collect(session: Session, _ctx: Any) -> None:
    """Notes the faces a flush wrote (new faces, predictions, annotations; faces given a track)."""
    if session.info.get(OFF):
        return
    d: _Dirty | None = None
    for obj in session.new:
        if isinstance(obj, ReviewSkip):
            _dirty(session).faces.add(obj.face_id)
        if isinstance(obj, Face | Prediction | Annotation):
            d = d or _dirty(session)
            if isinstance(obj, Face):
                d.faces.add(obj.id)
                d.added_faces.add(obj.id)
            elif isinstance(obj, Prediction):
                d.faces.add(obj.face_id)
                d.added_predictions[obj.face_id] = d.added_predictions.get(obj.face_id, 0) + 1
                d.runs.add((obj.face_id, (obj.model, obj.weights_hash, obj.model_version)))
            elif isinstance(obj, Annotation):
                if obj.face_id is not None:
                    d.faces.add(obj.face_id)
                elif obj.track_id is not None:
                    d.tracks.add(obj.track_id)
        elif isinstance(obj, Track):
            d = d or _dirty(session)
            d.media.add(obj.media_id)
    for obj in session.dirty:
        if isinstance(obj, Face):
            d = d or _dirty(session)
            d.faces.add(obj.id)
            d.recount_faces.add(obj.id)


@event.listens_for(Session, "before_commit")
def _before_commit(session: Session) -> None:
    if session.info.get(OFF):
        return
    if _KEY in session.info:
        session.flush()
        d = session.info.pop(_KEY)
        refresh(session, d)


@event.listens_for(Session, "after_rollback")
def _after_rollback(session: Session) -> None:
    session.info.pop(_KEY, None)


def refresh(session: Session, d: _Dirty) -> None:
    """Recomputes the read model of what ``d`` names (see the module docstring)."""
    from db import labels

    faces = set(d.faces)
    for part in chunks(d.tracks):
        faces.update(session.scalars(select(Face.id).where(Face.track_id.in_(part))))
    _lock(session, Face, faces | d.recount_faces)
    by_study: dict[int, set[int]] = defaultdict(set)
    media_of: dict[int, int] = {}
    for part in chunks(faces | d.recount_faces):
        stmt = select(Face.id, Face.media_id, Media.study_id).join(Media, Face.media_id == Media.id)
        for fid, mid, sid in session.execute(stmt.where(Face.id.in_(part))):
            by_study[sid].add(fid)
            media_of[fid] = mid
    recount = set(d.media) | {media_of[f] for f in d.recount_faces if f in media_of}
    # media items that only gained faces or predictions: their totals move by what was added (no recount of the
    # recording per stretch); one without kept totals yet is recounted
    added = (
        {media_of[f] for f in d.added_faces if f in media_of}
        | {media_of[f] for f in d.added_predictions if f in media_of}
    ) - recount
    runs: dict[int, set[tuple[str, str, str | None]]] = defaultdict(set)
    study_of_face = {f: s for s, fs in by_study.items() for f in fs}
    for fid, run in d.runs:
        if fid in study_of_face:
            runs[study_of_face[fid]].add(run)
    full_studies: set[int] = set()
    for sid in set(by_study) | set(d.studies) | {s for (s,) in _studies_of_media(session, d.media)}:
        kept = session.get(StudyStatus, sid)
        current = (kept.model, kept.weights_hash or "", kept.model_version) if kept and kept.model else None
        if kept is not None and sid not in d.studies and runs[sid] <= {current}:
            continue
        new = _ensure_study(session, sid)
        kept = locked_study(session, sid)  # one transaction at a time decides a study's model run
        current = (kept.model, kept.weights_hash or "", kept.model_version) if kept.model else None
        fresh = labels.count_model_runs(session, sid)
        if fresh != current or new:
            kept.model, kept.weights_hash, kept.model_version = fresh if fresh else (None, None, None)
            kept.classes = []
            session.flush()
            of_study = select(Face.id).join(Media, Face.media_id == Media.id).where(Media.study_id == sid)
            by_study[sid] = set(session.scalars(of_study))
            _lock(session, Face, by_study[sid])
            recount.update(session.scalars(select(Media.id).where(Media.study_id == sid)))
            full_studies.add(sid)
    full = set(d.counts) | full_studies
    for sid, ids in by_study.items():
        if write_new(session, sid, ids, counts=sid not in full):  # a stretch of new faces (PostgreSQL)
            continue
        share = float(session.scalar(select(Study.double_share).where(Study.id == sid)) or 0.0)
        for part in chunks(ids):
            write_faces(session, sid, part, share, counts=sid not in full)
    for sid in sorted(full):
        recount_queues(session, sid)
    _lock(session, Media, recount | added)
    recount |= add_media(
        session,
        added,
        [f for f in d.added_faces if media_of.get(f) in added],
        {f: n for f, n in d.added_predictions.items() if media_of.get(f) in added},
    )
    for part in chunks(recount):
        recount_media(session, part)


def _lock(session: Session, model: type[Face] | type[Media], ids: Iterable[int]) -> None:
    """Locks rows (faces or media items) in id order until the transaction ends.

    Two transactions then refresh the same face (or recount the same media item) one after the other: the second
    reads what the first wrote.

    ``FOR NO KEY UPDATE`` on PostgreSQL, which does not conflict with the ``KEY SHARE`` locks a foreign key takes
    (annotations, predictions and faces inserted meanwhile); nothing on SQLite, whose writers are serialised anyway.
    Sorted ids, so that two transactions never wait on each other in a cycle.
    """
    if session.get_bind().dialect.name != "postgresql":
        return
    for part in chunks(ids):
        session.execute(select(model.id).where(model.id.in_(part)).order_by(model.id).with_for_update(key_share=True))


def _ensure_study(session: Session, study_id: int) -> bool:
    """Creates a study's :class:`StudyStatus` row unless there is one (two transactions may race to); True if new."""
    stmt = upsert(session)(StudyStatus).values(
        study_id=study_id, model=None, weights_hash=None, model_version=None, classes=[]
    )
    res = session.execute(stmt.on_conflict_do_nothing(index_elements=["study_id"]))
    return bool(res.rowcount)  # type: ignore[attr-defined]


def _studies_of_media(session: Session, media: set[int]) -> list[tuple[int]]:
    if not media:
        return []
    return [tuple(r) for r in session.execute(select(Media.study_id).where(Media.id.in_(sorted(media))).distinct())]  # type: ignore[misc]


def rebuild_tallies(session: Session, study_id: int | None = None) -> int:
    """Recomputes the statistics' tallies of one study (or every study) from its judged faces; returns those faces.

    The fill of the migration that introduced them (the rest of the read model is there already); it recounts the
    queue counts too, whose annotator rows count the faces each annotator judged from that revision on.
    """
    from db import labels

    studies = [study_id] if study_id is not None else list(session.scalars(select(Study.id)))
    n = 0
    for sid in studies:
        session.execute(delete(StudyTally).where(StudyTally.study_id == sid))
        session.execute(delete(FaceTally).where(FaceTally.study_id == sid))
        of_study = select(FaceStatus.face_id).where(FaceStatus.study_id == sid, FaceStatus.n_judges > 0)
        voted = select(Annotation.face_id).join(FaceStatus, FaceStatus.face_id == Annotation.face_id)
        by_track = (
            select(FaceStatus.face_id)
            .join(Annotation, Annotation.track_id == FaceStatus.track_id)
            .where(FaceStatus.study_id == sid)
        )
        found = [*session.scalars(of_study), *session.scalars(voted.where(FaceStatus.study_id == sid))]
        judged = sorted({int(f) for f in [*found, *session.scalars(by_track)] if f is not None})
        ids = {str(a): int(i) for a, i in session.execute(select(Annotator.name, Annotator.id))}
        for part in chunks(judged):
            write_tallies(session, sid, part, labels.face_labels(session, sid, face_ids=part)[0], ids)
        recount_queues(session, sid)
        n += len(judged)
    return n


def media_faces(session: Session, media_ids: Sequence[int]) -> dict[int, int] | None:
    """Faces per media item from the kept row counts (items without faces are left out).

    None inside a transaction whose writes are not refreshed yet (or one that writes without the read model): the
    kept counts do not hold those writes until it commits, so the caller counts.
    """
    if session.info.get(OFF) or _KEY in session.info:
        return None
    out: dict[int, int] = {}
    for part in chunks(media_ids):
        stmt = select(MediaTotals.media_id, MediaTotals.faces).where(MediaTotals.media_id.in_(part))
        out.update((int(m), int(n)) for m, n in session.execute(stmt) if n)
    return out


def media_face_counts(session: Session, study_id: int, media_ids: Sequence[int]) -> dict[int, int]:
    """Faces per media item of a study: the kept row counts (:class:`db.schema.MediaTotals`), a lookup per item.

    Inside a transaction whose writes the read model has not taken in yet (or one writing without it) the faces are
    counted instead, so that what it wrote shows.
    """
    ids = sorted({int(i) for i in media_ids})
    if not ids:
        return {}
    kept = media_faces(session, ids)
    if kept is not None:
        return kept
    mine = select(Media.id).where(Media.study_id == study_id, Media.id.in_(ids))
    stmt = select(Face.media_id, func.count()).where(Face.media_id.in_(mine)).group_by(Face.media_id)
    return {int(m): int(n) for m, n in session.execute(stmt)}


def list_media(session: Session, study: Study) -> list[MediaRow]:
    """The media items of ``study`` with their face counts (:func:`media_face_counts`), oldest first."""
    media = list(session.scalars(select(Media).where(Media.study_id == study.id).order_by(Media.id)))
    counts = media_face_counts(session, study.id, [m.id for m in media])
    return [media_row(m, study.name, counts.get(m.id, 0)) for m in media]


def rebuild(session: Session, study_id: int | None = None) -> int:
    """Recomputes the read model of one study (or every study) from scratch; returns the faces written.

    Used by the migration that introduced it, and by ``python -m db`` maintenance should the rows ever be doubted.
    """
    studies = [study_id] if study_id is not None else list(session.scalars(select(Study.id)))
    n = 0
    for sid in studies:
        session.execute(delete(StudyStatus).where(StudyStatus.study_id == sid))
        session.execute(delete(FaceStatus).where(FaceStatus.study_id == sid))
        session.execute(delete(FaceJudge).where(FaceJudge.study_id == sid))
        session.execute(delete(QueueCount).where(QueueCount.study_id == sid))
        session.execute(delete(MediaTotals).where(MediaTotals.study_id == sid))
        if not session.info.get(TALLIES_OFF):
            session.execute(delete(StudyTally).where(StudyTally.study_id == sid))
            session.execute(delete(FaceTally).where(FaceTally.study_id == sid))
        d = _Dirty(studies={sid})
        refresh(session, d)
        n += session.scalar(select(func.count()).select_from(FaceStatus).where(FaceStatus.study_id == sid)) or 0
    return n


def forget(session: Session, face_ids: Sequence[int]) -> None:
    """Takes faces about to be deleted out of the queue counts (a track's faces; a media item's go with its rows)."""
    if not face_ids:
        return
    study_id = session.scalar(select(FaceStatus.study_id).where(FaceStatus.face_id == face_ids[0]))
    if study_id is None:
        return
    share = float(session.scalar(select(Study.double_share).where(Study.id == study_id)) or 0.0)
    for part in chunks(face_ids):
        delta: dict[CountKey, CountVec] = defaultdict(lambda: [0, 0, 0, 0, 0])
        marks = judge_marks(session, part)
        for row in session.scalars(select(FaceStatus).where(FaceStatus.face_id.in_(part))):
            for key, vec in contributions(row, marks.get(row.face_id, []), share):
                acc = delta[key]
                for i, x in enumerate(vec):
                    acc[i] -= x
        apply_counts(session, study_id, delta)
        if not session.info.get(TALLIES_OFF):
            tally: dict[tuple[int, TallyKey], TallyVec] = defaultdict(lambda: [0, 0.0, 0.0, 0.0, 0.0, 0.0])
            take_out(session, part, tally)
            session.execute(delete(FaceTally).where(FaceTally.face_id.in_(part)))
            apply_tallies(session, study_id, tally)
