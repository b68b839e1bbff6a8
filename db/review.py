"""The review queue: which face an annotator should look at next, and what they may see of it.

Rules (the one place they are written):

1. A face is *done* for an annotator once they hold a current judgement on it, their own or their track-level one
   (see :mod:`db.labels`), and *skipped* while they have a skip row for it (:class:`db.schema.ReviewSkip`). Done and
   skipped faces are never in that annotator's queue. Skips are stored, so they hold across reloads and devices.
2. A face needs one vote, or two when the study routes it to a second annotator for agreement: a face is routed when
   ``route_value(study, face) < double_share``, a deterministic hash, so every annotator sees the same routing.
3. Queues: ``uncertainty`` (faces still needing a vote, least confident model first), ``disagreement`` (the
   annotators' class differs from the model's, confident model first) and ``valence`` (valence contradicts the
   class, strongest first). "Left" counts the faces of a queue that are still waiting for this annotator.
4. In an independent study an annotator sees only their own judgements of a face (:func:`visible_face`), and with
   ``hide_model`` not the model's prediction either; queue reasons then name no label.

Functions here take a session and never commit; :class:`db.services.LabelStore` owns the transactions.
"""

from __future__ import annotations

import dataclasses
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from db import repo
from db.errors import StoreError
from db.labels import choose_model, face_labels
from db.queues import REVIEW_ORDERS, ReviewOrder, queue_reason
from db.queues import route_value as route_value
from db.review_rules import ReviewFilter as ReviewFilter
from db.review_rules import StudySettings as StudySettings
from db.review_rules import annotator_id as annotator_id
from db.review_rules import same_annotator
from db.review_rules import set_study_settings as set_study_settings
from db.review_rules import skip as skip
from db.review_rules import skipped_faces as skipped_faces
from db.review_rules import study_settings as study_settings
from db.review_rules import unskip as unskip
from db.review_rules import visible_face as visible_face
from db.review_rules import votes_needed as votes_needed
from db.review_sql import (
    by_media,
    counts_matching,
    empty_by_counts,
    kept_counts,
    not_mine,
    queue_condition,
    status_filter,
)
from db.rows import FaceLabel, ReviewItem
from db.schema import Face, FaceJudge, FaceStatus, QueueCount


@dataclass(frozen=True)
class ReviewQueue:
    """An annotator's queue with its counts.

    Attributes:
        items: The faces waiting, most in need first (at most the requested number).
        left: Faces of the (filtered) study still waiting for this annotator in this queue.
        total: Faces of the (filtered) study.
        left_by_media: ``media_id -> faces still waiting`` in this queue.
        total_by_media: ``media_id -> faces`` of the (filtered) study.
        skipped: Faces this annotator skipped (in the filter).
    """

    items: tuple[ReviewItem, ...]
    left: int
    total: int
    left_by_media: dict[int, int]
    total_by_media: dict[int, int]
    skipped: int


@dataclass(frozen=True, slots=True)
class LabelsPage:
    """One page of the faces an annotator labelled ("my labels"), in the order they were stored (face id).

    Attributes:
        items: The page's faces, resolved (only they).
        total: Faces of the (filtered) study the annotator labelled (own vote or through a track vote).
        after: The last face id of the page, to pass for the next page; None on the last page.
    """

    items: tuple[FaceLabel, ...]
    total: int
    after: int | None


def labels_page(
    session: Session,
    study: str,
    annotator: str,
    flt: ReviewFilter = ReviewFilter(),
    *,
    after: int | None = None,
    limit: int = 50,
) -> LabelsPage:
    """A page of the faces ``annotator`` labelled in a study, after face id ``after``, with their count.

    The page comes by a keyset over the annotator's kept marks (``face_judges`` by annotator, study, face id), so
    that it costs the same whatever the study's size; the count comes from the kept queue counts (the annotator's
    rows count the faces they judged), or for a track from the track's faces. ``flt.labelled_by`` is ignored: the
    annotator's identity (:func:`db.repo.annotator_key`) decides.

    Raises:
        StudyNotFoundError: For a study that does not exist.
    """
    st = repo.get_study(session, study)
    me = annotator_id(session, annotator)
    if me is None:
        return LabelsPage((), 0, None)
    flt = dataclasses.replace(flt, labelled_by=None)
    fj = FaceJudge
    where = [*status_filter(session, st.id, flt, lead=False), fj.annotator_id == me, fj.study_id == st.id, fj.judged]
    stmt = select(fj.face_id).join(FaceStatus, FaceStatus.face_id == fj.face_id).where(*where)
    if after is not None:
        stmt = stmt.where(fj.face_id > after)
    ids = list(session.scalars(stmt.order_by(fj.face_id).limit(limit + 1)))
    more, ids = len(ids) > limit, ids[:limit]
    got = {f.face_id: f for f in face_labels(session, st.id, face_ids=ids)[0]} if ids else {}
    items = tuple(got[i] for i in ids if i in got)
    if flt.track_id is None:
        qc = QueueCount
        count = counts_matching(select(func.sum(qc.faces)).where(qc.study_id == st.id, qc.annotator_id == me), flt)
    else:
        count = select(func.count()).select_from(fj).join(FaceStatus, FaceStatus.face_id == fj.face_id).where(*where)
    total = int(session.scalar(count) or 0)
    return LabelsPage(items, total, ids[-1] if more and ids else None)


def build_queue(
    faces: Iterable[FaceLabel],
    by: ReviewOrder,
    *,
    annotator: str | None,
    skipped: set[int],
    settings: StudySettings,
    study_id: int,
    flt: ReviewFilter = ReviewFilter(),
    limit: int = 50,
) -> ReviewQueue:
    """The queue of ``annotator`` from a study's faces (rules 1 to 3), as a pure function.

    Args:
        faces: The study's faces with their labels (:func:`db.labels.face_labels`).
        by: The queue.
        annotator: Who reviews (None: nobody known yet; nothing is done or skipped).
        skipped: Faces this annotator skipped.
        settings: The study's labelling rules.
        study_id: The study (for the routing of rule 2).
        flt: Which faces the queue covers.
        limit: How many items to return.
    """
    if by not in REVIEW_ORDERS:
        raise StoreError(f"unknown review order {by!r}; use one of {', '.join(REVIEW_ORDERS)}")
    waiting: list[ReviewItem] = []
    total_by_media: Counter[int] = Counter()
    left_by_media: Counter[int] = Counter()
    n_skipped = 0
    for f in faces:
        if not flt.matches(f):
            continue
        total_by_media[f.media_id] += 1
        if annotator is not None and any(same_annotator(j.annotator, annotator) for j in f.judgements):
            continue
        if f.face_id in skipped:
            n_skipped += 1
            continue
        if by == "uncertainty":
            votes = sum(1 for j in f.judgements if j.label is not None)
            if votes >= votes_needed(settings, study_id, f.face_id):
                continue
        reason = queue_reason(f, by, settings.independent)
        if reason is None:
            continue
        left_by_media[f.media_id] += 1
        waiting.append(_item(f, reason))
    waiting.sort(key=lambda i: (-i.score, i.face_id))
    return ReviewQueue(
        items=tuple(waiting[:limit]),
        left=len(waiting),
        total=sum(total_by_media.values()),
        left_by_media=dict(left_by_media),
        total_by_media=dict(total_by_media),
        skipped=n_skipped,
    )


def review_queue(
    session: Session,
    study: str,
    by: ReviewOrder = "uncertainty",
    *,
    annotator: str | None = None,
    flt: ReviewFilter = ReviewFilter(),
    model: str | None = None,
    limit: int = 50,
) -> ReviewQueue:
    """``annotator``'s queue in a study: what :func:`build_queue` returns, read from the kept review state.

    The faces come by a keyset over the queue's index (:class:`db.schema.FaceStatus`), skipping those this annotator
    judged or skipped; the counts are the kept per-media counts corrected by the faces anyone judged or this
    annotator skipped (bounded by people's work, not by the study's size). Following another model run than the
    study's own (``model``) resolves the whole study instead.

    Raises:
        StudyNotFoundError: For a study that does not exist.
    """
    if by not in REVIEW_ORDERS:
        raise StoreError(f"unknown review order {by!r}; use one of {', '.join(REVIEW_ORDERS)}")
    st = repo.get_study(session, study)
    settings = study_settings(session, study)
    if model is not None and choose_model(session, st.id, model) != choose_model(session, st.id):
        rows, _ = face_labels(session, st.id, model)
        skipped = skipped_faces(session, st.id, annotator) if annotator else set()
        return build_queue(
            rows, by, annotator=annotator, skipped=skipped, settings=settings, study_id=st.id, flt=flt, limit=limit
        )
    me = annotator_id(session, annotator)
    if flt.labelled_by is not None and flt.track_id is None:
        empty = empty_by_counts(session, st.id, flt, by, settings, me)
        if empty is not None:  # nothing of that annotator's is waiting: counts only, no walk over their faces
            return ReviewQueue((), 0, sum(empty[0].values()), {}, empty[0], empty[1])
    fs = FaceStatus
    where = status_filter(session, st.id, flt)
    mine = not_mine(me)
    waiting = [*where, queue_condition(by, settings), *mine]
    key = {"uncertainty": fs.u_key, "disagreement": fs.d_key, "valence": fs.v_key}[by]
    ids = list(session.scalars(select(fs.face_id).where(*waiting).order_by(key, fs.face_id).limit(limit)))
    by_id = {f.face_id: f for f in face_labels(session, st.id, face_ids=ids)[0]} if ids else {}
    items = tuple(_item(by_id[i], queue_reason(by_id[i], by, settings.independent)) for i in ids if i in by_id)
    if flt.track_id is None and flt.labelled_by is None:
        total_by_media, left_by_media, n_skipped = kept_counts(session, st.id, flt, by, me)
    else:
        total_by_media = by_media(session, where)
        left_by_media = by_media(session, waiting)
        n_skipped = 0
        if me is not None:
            skips = select(FaceJudge.face_id).where(
                FaceJudge.annotator_id == me, FaceJudge.skipped, ~FaceJudge.judged, FaceJudge.face_id == fs.face_id
            )
            n_skipped = session.scalar(select(func.count()).where(*where, skips.exists())) or 0
    return ReviewQueue(
        items=items,
        left=sum(left_by_media.values()),
        total=sum(total_by_media.values()),
        left_by_media=left_by_media,
        total_by_media=total_by_media,
        skipped=int(n_skipped),
    )


def _item(f: FaceLabel, reason: tuple[str, float] | None) -> ReviewItem:
    """The queue's row of face ``f``, with why it waits (:func:`queue_reason`; none: an empty reason)."""
    reason = reason or ("", 0.0)
    return ReviewItem(
        face_id=f.face_id,
        media_id=f.media_id,
        filename=f.filename,
        frame=f.frame,
        time_s=f.time_s,
        track_id=f.track_id,
        model_label=f.model_label,
        model_confidence=f.model_confidence,
        label=f.label,
        label_source=f.label_source,
        valence=f.valence,
        arousal=f.arousal,
        reason=reason[0],
        score=reason[1],
    )


def browse(
    session: Session, study: str, flt: ReviewFilter, *, model: str | None = None, limit: int | None = None
) -> list[FaceLabel]:
    """The faces of a study that pass ``flt`` (e.g. ``labelled_by`` for "the faces I labelled"), in media order.

    The faces are found in the kept review state and only they (the first ``limit``, default all) are resolved;
    following another model run than the study's own (``model``) resolves the whole study instead.
    """
    st = repo.get_study(session, study)
    if model is not None and choose_model(session, st.id, model) != choose_model(session, st.id):
        rows, _ = face_labels(session, st.id, model)
        return [r for r in rows if flt.matches(r)][:limit]
    fs = FaceStatus
    stmt = (
        select(fs.face_id)
        .join(Face, Face.id == fs.face_id)
        .where(*status_filter(session, st.id, flt))
        .order_by(Face.media_id, Face.frame, Face.face_index, Face.id)
    )
    ids = list(session.scalars(stmt.limit(limit) if limit is not None else stmt))
    out: list[FaceLabel] = []
    for i in range(0, len(ids), 500):
        part = ids[i : i + 500]
        got = {f.face_id: f for f in face_labels(session, st.id, face_ids=part)[0]}
        out += [got[f] for f in part if f in got]
    return out
