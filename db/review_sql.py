"""The review queue's SQL over the kept read model (:mod:`db.status`): filters, queue conditions, kept counts."""

from __future__ import annotations

import dataclasses
from collections import Counter
from collections.abc import Sequence
from typing import Any

from sqlalchemy import ColumnElement, and_, case, false, func, select
from sqlalchemy.orm import Session, aliased

from db.queues import ReviewOrder
from db.review_rules import ReviewFilter, StudySettings, annotator_id
from db.schema import FaceJudge, FaceStatus, QueueCount, ReviewSkip


def status_filter(
    session: Session, study_id: int, flt: ReviewFilter, *, lead: bool = True
) -> list[ColumnElement[bool]]:
    """The conditions on :class:`FaceStatus` rows of a study's faces that pass ``flt``."""
    fs = FaceStatus
    # With a track or an annotator's faces, the small set leads: the study's index must not (``+ 0`` keeps SQLite's
    # planner, which has no statistics, from walking the whole study in queue order). ``lead``: False when another
    # table's index leads anyway.
    small = flt.track_id is not None or flt.labelled_by is not None or not lead
    where: list[ColumnElement[bool]] = [(fs.study_id + 0 if small else fs.study_id) == study_id]
    if flt.media_id is not None:
        where.append(fs.media_id == flt.media_id)
    if flt.track_id is not None:
        where.append(fs.track_id == flt.track_id)
    if flt.model_label is not None:
        where.append(fs.model_label == flt.model_label)
    if flt.human_label is not None:
        where += [fs.n_judges > 0, fs.human_label == flt.human_label]
    if flt.labelled_by is not None:
        who = annotator_id(session, flt.labelled_by)
        judged = select(FaceJudge.face_id).where(
            FaceJudge.annotator_id == who, FaceJudge.study_id == study_id, FaceJudge.judged
        )
        where.append(fs.face_id.in_(judged) if who is not None else false())
    if flt.labelled is True:
        where += [fs.n_judges > 0, fs.human_label.is_not(None)]
    elif flt.labelled is False:
        where.append(fs.human_label.is_(None))
    return where


def queue_condition(by: ReviewOrder, settings: StudySettings) -> ColumnElement[bool]:
    """The condition on a :class:`FaceStatus` row of a face being in queue ``by`` (rules 2 and 3)."""
    fs = FaceStatus
    if by == "uncertainty":
        return fs.n_votes < case((fs.route < settings.double_share, 2), else_=1)
    if by == "disagreement":
        return fs.d_key.is_not(None)
    return fs.v_key.is_not(None)


def not_mine(me: int | None) -> list[ColumnElement[bool]]:
    """Neither judged nor skipped by ``me`` (nothing for nobody)."""
    if me is None:
        return []
    fs = FaceStatus
    marked = select(FaceJudge.face_id).where(FaceJudge.face_id == fs.face_id, FaceJudge.annotator_id == me)
    return [~marked.exists()]


def by_media(session: Session, where: Sequence[ColumnElement[bool]]) -> dict[int, int]:
    """Faces per media item of the :class:`FaceStatus` rows matching ``where`` (items without any left out)."""
    fs = FaceStatus
    stmt = select(fs.media_id, func.count()).where(*where).group_by(fs.media_id)
    return {int(m): int(n) for m, n in session.execute(stmt) if n}


def counts_matching(stmt: Any, flt: ReviewFilter) -> Any:
    """``stmt`` over :class:`QueueCount` rows narrowed to the rows of ``flt``'s file and classes (not its track)."""
    qc = QueueCount
    if flt.media_id is not None:
        stmt = stmt.where(qc.media_id == flt.media_id)
    if flt.model_label is not None:
        stmt = stmt.where(qc.model_label == flt.model_label)
    if flt.human_label is not None:
        stmt = stmt.where(qc.human_label == flt.human_label)
    if flt.labelled is True:
        stmt = stmt.where(qc.human_label != "")
    elif flt.labelled is False:
        stmt = stmt.where(qc.human_label == "")
    return stmt


def kept_counts(
    session: Session, study_id: int, flt: ReviewFilter, by: ReviewOrder, me: int | None
) -> tuple[dict[int, int], dict[int, int], int]:
    """Totals, faces left per media item and faces skipped, from the kept :class:`db.schema.QueueCount` rows.

    For a filter over media, model class and human class (or labelled or not): the study's faces in the queue less
    the ones this annotator judged or skipped.
    """
    qc = QueueCount
    column = {"uncertainty": qc.uncertainty, "valence": qc.valence, "disagreement": qc.disagreement}[by]
    stmt = select(qc.annotator_id, qc.media_id, func.sum(qc.faces), func.sum(column), func.sum(qc.skipped)).where(
        qc.study_id == study_id, qc.annotator_id.in_([0] if me is None else [0, me])
    )
    stmt = counts_matching(stmt, flt)
    total: Counter[int] = Counter()
    left: Counter[int] = Counter()
    skipped = 0
    for who, m, n, q, sk in session.execute(stmt.group_by(qc.annotator_id, qc.media_id)):
        if who == 0:
            total[int(m)] += int(n or 0)
            left[int(m)] += int(q or 0)
        else:
            left[int(m)] -= int(q or 0)
            skipped += int(sk or 0)
    return {m: n for m, n in total.items() if n}, {m: n for m, n in left.items() if n}, skipped


def empty_by_counts(
    session: Session, study_id: int, flt: ReviewFilter, by: ReviewOrder, settings: StudySettings, me: int | None
) -> tuple[dict[int, int], int] | None:
    """For a queue filtered by an annotator's labels: ``(total_by_media, skipped)`` when none of them is waiting.

    From the kept counts of that annotator (``faces``: the faces they judged; the queue's column: those they judged
    or skipped that are in the queue) less the faces in the queue they only skipped (driven by their skips), so the
    usual case, e.g. the ``uncertainty`` queue where a voted face needs no more vote, costs the same whatever their
    number of faces. None when some are waiting: the caller walks their faces.
    """
    who = annotator_id(session, flt.labelled_by)
    if who is None:
        return {}, 0
    qc, fs = QueueCount, FaceStatus
    column = {"uncertainty": qc.uncertainty, "valence": qc.valence, "disagreement": qc.disagreement}[by]
    stmt = select(qc.media_id, func.sum(qc.faces), func.sum(column)).where(
        qc.study_id == study_id, qc.annotator_id == who
    )
    total: dict[int, int] = {}
    in_queue = 0
    for m, n, q in session.execute(counts_matching(stmt, flt).group_by(qc.media_id)):
        total[int(m)] = total.get(int(m), 0) + int(n or 0)
        in_queue += int(q or 0)
    rest = status_filter(session, study_id, dataclasses.replace(flt, labelled_by=None), lead=False)
    # the skips lead (``+ 0``: not every face the annotator judged, by the annotator index)
    xj = aliased(FaceJudge)
    only_skipped = (
        select(func.count())
        .select_from(ReviewSkip)
        .join(fs, fs.face_id == ReviewSkip.face_id)
        .join(xj, and_(xj.face_id == ReviewSkip.face_id, xj.annotator_id + 0 == who))
        .where(ReviewSkip.annotator_id == who, ~xj.judged, queue_condition(by, settings), *rest)
    )
    if in_queue > 0 and in_queue - int(session.scalar(only_skipped) or 0) > 0:
        return None
    skipped = 0
    if me is not None and me != who:
        mj = aliased(FaceJudge)
        mine = (
            select(func.count())
            .select_from(ReviewSkip)
            .join(fs, fs.face_id == ReviewSkip.face_id)
            .join(mj, and_(mj.face_id == ReviewSkip.face_id, mj.annotator_id + 0 == me))
            .join(xj, and_(xj.face_id == ReviewSkip.face_id, xj.annotator_id + 0 == who))
            .where(ReviewSkip.annotator_id == me, ~mj.judged, xj.judged, *rest)
        )
        skipped = int(session.scalar(mine) or 0)
    return {m: n for m, n in total.items() if n}, skipped
