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
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import ColumnElement, and_, case, delete, false, func, select
from sqlalchemy.orm import Session, aliased

from db import repo, status
from db.errors import StoreError
from db.labels import choose_model, face_labels
from db.queues import (
    REVIEW_ORDERS,
    ReviewOrder,
    queue_reason,
    route_value,
)
from db.rows import FaceLabel, ReviewItem
from db.schema import Annotator, Face, FaceJudge, FaceStatus, Media, QueueCount, ReviewSkip, Study


@dataclass(frozen=True)
class StudySettings:
    """A study's labelling rules.

    Attributes:
        independent: Annotators see neither other annotators' labels nor the consensus.
        hide_model: In an independent study, annotators do not see the model's prediction either.
        double_share: Share of faces (0 to 1) that need a second annotator's vote, for agreement.
        blur_faces: Privacy for minors: the app blurs every face it shows to anyone but the study's owners
            (an annotator still sees the face being labelled).
    """

    independent: bool = False
    hide_model: bool = False
    double_share: float = 0.0
    blur_faces: bool = False


@dataclass(frozen=True)
class ReviewFilter:
    """Which faces a queue or a browse view covers (every field None: all faces of the study).

    Attributes:
        media_id: Faces of this media item.
        track_id: Faces of this track.
        model_label: Faces the model put in this class.
        human_label: Faces whose human (consensus) class is this one.
        labelled_by: Faces this annotator has a judgement on.
        labelled: True: faces with a human class; False: faces without one.
    """

    media_id: int | None = None
    track_id: int | None = None
    model_label: str | None = None
    human_label: str | None = None
    labelled_by: str | None = None
    labelled: bool | None = None

    def matches(self, face: FaceLabel) -> bool:
        """Whether ``face`` passes every set field."""
        human = face.label if face.label_source == "human" else None
        return (
            (self.media_id is None or face.media_id == self.media_id)
            and (self.track_id is None or face.track_id == self.track_id)
            and (self.model_label is None or face.model_label == self.model_label)
            and (self.human_label is None or human == self.human_label)
            and (self.labelled_by is None or any(_same(j.annotator, self.labelled_by) for j in face.judgements))
            and (self.labelled is None or (human is not None) == self.labelled)
        )


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
    where = [*_filter(session, st.id, flt, lead=False), fj.annotator_id == me, fj.study_id == st.id, fj.judged]
    stmt = select(fj.face_id).join(FaceStatus, FaceStatus.face_id == fj.face_id).where(*where)
    if after is not None:
        stmt = stmt.where(fj.face_id > after)
    ids = list(session.scalars(stmt.order_by(fj.face_id).limit(limit + 1)))
    more, ids = len(ids) > limit, ids[:limit]
    got = {f.face_id: f for f in face_labels(session, st.id, face_ids=ids)[0]} if ids else {}
    items = tuple(got[i] for i in ids if i in got)
    if flt.track_id is None:
        qc = QueueCount
        count = _counts_matching(select(func.sum(qc.faces)).where(qc.study_id == st.id, qc.annotator_id == me), flt)
    else:
        count = select(func.count()).select_from(fj).join(FaceStatus, FaceStatus.face_id == fj.face_id).where(*where)
    total = int(session.scalar(count) or 0)
    return LabelsPage(items, total, ids[-1] if more and ids else None)


def votes_needed(settings: StudySettings, study_id: int, face_id: int) -> int:
    """How many annotators' classes a face needs (rule 2)."""
    return 2 if route_value(study_id, face_id) < settings.double_share else 1


def study_settings(session: Session, study: str) -> StudySettings:
    """The labelling rules of a study (defaults for a study that does not exist yet)."""
    st = session.scalar(select(Study).where(Study.name == study))
    if st is None:
        return StudySettings()
    return StudySettings(
        independent=bool(st.independent),
        hide_model=bool(st.hide_model),
        double_share=float(st.double_share or 0.0),
        blur_faces=bool(st.blur_faces),
    )


def set_study_settings(session: Session, study: str, settings: StudySettings) -> StudySettings:
    """Stores a study's labelling rules (creating the study when new).

    Raises:
        StoreError: For a double share outside [0, 1].
    """
    if not 0.0 <= settings.double_share <= 1.0:
        raise StoreError(f"the share of faces for a second annotator must be from 0 to 1, not {settings.double_share}")
    st = repo.get_or_create_study(session, study)
    st.independent = settings.independent
    st.hide_model = settings.hide_model and settings.independent
    if float(st.double_share or 0.0) != float(settings.double_share):
        status.mark(session, counts=[st.id])
    st.double_share = float(settings.double_share)
    st.blur_faces = bool(settings.blur_faces)
    session.flush()
    return study_settings(session, study)


def skipped_faces(session: Session, study_id: int, annotator: str) -> set[int]:
    """Ids of the faces of a study that ``annotator`` skipped."""
    stmt = (
        select(ReviewSkip.face_id)
        .join(Annotator, ReviewSkip.annotator_id == Annotator.id)
        .join(Face, ReviewSkip.face_id == Face.id)
        .join(Media, Face.media_id == Media.id)
        .where(Annotator.key == repo.annotator_key(annotator), Media.study_id == study_id)
    )
    return set(session.scalars(stmt))


def skip(session: Session, face_id: int, annotator: str) -> None:
    """Records that ``annotator`` skipped a face (idempotent).

    Raises:
        NotFoundError: If the face does not exist.
    """
    repo.get_row(session, Face, face_id, "face")
    who = repo.get_or_create_annotator(session, annotator)
    exists = session.scalar(
        select(ReviewSkip.id).where(ReviewSkip.face_id == face_id, ReviewSkip.annotator_id == who.id)
    )
    if exists is None:
        session.add(ReviewSkip(face_id=face_id, annotator_id=who.id))
        session.flush()


def unskip(
    session: Session, annotator: str, face_ids: Sequence[int] | None = None, *, study_id: int | None = None
) -> int:
    """Puts skipped faces back into ``annotator``'s queue (the given ones, or every skip of a study); counts them."""
    who = session.scalar(select(Annotator).where(Annotator.key == repo.annotator_key(annotator)))
    if who is None:
        return 0
    stmt = select(ReviewSkip.face_id).where(ReviewSkip.annotator_id == who.id)
    if face_ids is not None:
        stmt = stmt.where(ReviewSkip.face_id.in_(list(face_ids)))
    elif study_id is not None:
        mine = select(FaceJudge.face_id).where(
            FaceJudge.annotator_id == who.id, FaceJudge.study_id == study_id, FaceJudge.skipped
        )
        stmt = stmt.where(ReviewSkip.face_id.in_(mine))
    ids = list(session.scalars(stmt))
    for i in range(0, len(ids), 500):
        part = ids[i : i + 500]
        session.execute(delete(ReviewSkip).where(ReviewSkip.annotator_id == who.id, ReviewSkip.face_id.in_(part)))
    status.mark(session, faces=ids)
    return len(ids)


def _same(name: str, other: str) -> bool:
    """Whether two annotator names are one person (:func:`db.repo.annotator_key`)."""
    return name == other or repo.annotator_key(name) == repo.annotator_key(other)


def annotator_id(session: Session, name: str | None) -> int | None:
    """The id of the annotator with the identity of ``name`` (case- and space-insensitive), None for none."""
    if not name:
        return None
    return session.scalar(select(Annotator.id).where(Annotator.key == repo.annotator_key(name)))


def visible_face(face: FaceLabel, annotator: str | None, settings: StudySettings) -> FaceLabel:
    """What ``annotator`` may see of a face (rule 4): in an independent study only their own judgement.

    The label fields then hold the annotator's own values (``label_source`` ``human``) or, without them, the model's
    (``model``), or nothing when the model is hidden too.
    """
    if not settings.independent:
        return face
    mine = tuple(j for j in face.judgements if annotator is not None and _same(j.annotator, annotator))
    own = mine[0] if mine else None
    show_model = not settings.hide_model
    out: dict[str, object] = {"judgements": mine, "note": own.note if own else None}
    model = {
        "label": face.model_label,
        "valence": face.model_valence,
        "arousal": face.model_arousal,
        "engagement": face.model_engagement,
    }
    for f in ("label", "valence", "arousal", "engagement"):
        mine_v = getattr(own, f) if own else None
        if mine_v is not None:
            out[f], out[f"{f}_source"], out[f"{f}_annotators"] = mine_v, "human", 1
        elif show_model and model[f] is not None:
            out[f], out[f"{f}_source"], out[f"{f}_annotators"] = model[f], "model", 0
        else:
            out[f], out[f"{f}_source"], out[f"{f}_annotators"] = None, "none", 0
        out[f"{f}_agreement"] = None
    if not show_model:
        out.update(
            model_label=None,
            model_confidence=None,
            model_probs=None,
            model_valence=None,
            model_arousal=None,
            model_engagement=None,
        )
    return dataclasses.replace(face, **out)  # type: ignore[arg-type]


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
        if annotator is not None and any(_same(j.annotator, annotator) for j in f.judgements):
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
        waiting.append(
            ReviewItem(
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
        )
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
        empty = _empty_by_counts(session, st.id, flt, by, settings, me)
        if empty is not None:  # nothing of that annotator's is waiting: counts only, no walk over their faces
            return ReviewQueue((), 0, sum(empty[0].values()), {}, empty[0], empty[1])
    fs = FaceStatus
    where = _filter(session, st.id, flt)
    mine = _not_mine(me)
    waiting = [*where, _in_queue(by, settings), *mine]
    key = {"uncertainty": fs.u_key, "disagreement": fs.d_key, "valence": fs.v_key}[by]
    ids = list(session.scalars(select(fs.face_id).where(*waiting).order_by(key, fs.face_id).limit(limit)))
    by_id = {f.face_id: f for f in face_labels(session, st.id, face_ids=ids)[0]} if ids else {}
    items = tuple(_item(by_id[i], by, settings.independent) for i in ids if i in by_id)
    if flt.track_id is None and flt.labelled_by is None:
        total_by_media, left_by_media, n_skipped = _kept_counts(session, st.id, flt, by, me)
    else:
        total_by_media = _by_media(session, where)
        left_by_media = _by_media(session, waiting)
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


def _filter(session: Session, study_id: int, flt: ReviewFilter, *, lead: bool = True) -> list[ColumnElement[bool]]:
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


def _in_queue(by: ReviewOrder, settings: StudySettings) -> ColumnElement[bool]:
    fs = FaceStatus
    if by == "uncertainty":
        return fs.n_votes < case((fs.route < settings.double_share, 2), else_=1)
    if by == "disagreement":
        return fs.d_key.is_not(None)
    return fs.v_key.is_not(None)


def _not_mine(me: int | None) -> list[ColumnElement[bool]]:
    """Neither judged nor skipped by ``me`` (nothing for nobody)."""
    if me is None:
        return []
    fs = FaceStatus
    marked = select(FaceJudge.face_id).where(FaceJudge.face_id == fs.face_id, FaceJudge.annotator_id == me)
    return [~marked.exists()]


def _by_media(session: Session, where: Sequence[ColumnElement[bool]]) -> dict[int, int]:
    fs = FaceStatus
    stmt = select(fs.media_id, func.count()).where(*where).group_by(fs.media_id)
    return {int(m): int(n) for m, n in session.execute(stmt) if n}


def _counts_matching(stmt: Any, flt: ReviewFilter) -> Any:
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


def _kept_counts(
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
    stmt = _counts_matching(stmt, flt)
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


def _empty_by_counts(
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
    for m, n, q in session.execute(_counts_matching(stmt, flt).group_by(qc.media_id)):
        total[int(m)] = total.get(int(m), 0) + int(n or 0)
        in_queue += int(q or 0)
    rest = _filter(session, study_id, dataclasses.replace(flt, labelled_by=None), lead=False)
    # the skips lead (``+ 0``: not every face the annotator judged, by the annotator index)
    xj = aliased(FaceJudge)
    only_skipped = (
        select(func.count())
        .select_from(ReviewSkip)
        .join(fs, fs.face_id == ReviewSkip.face_id)
        .join(xj, and_(xj.face_id == ReviewSkip.face_id, xj.annotator_id + 0 == who))
        .where(ReviewSkip.annotator_id == who, ~xj.judged, _in_queue(by, settings), *rest)
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


def _item(f: FaceLabel, by: ReviewOrder, independent: bool) -> ReviewItem:
    reason = queue_reason(f, by, independent) or ("", 0.0)
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
        .where(*_filter(session, st.id, flt))
        .order_by(Face.media_id, Face.frame, Face.face_index, Face.id)
    )
    ids = list(session.scalars(stmt.limit(limit) if limit is not None else stmt))
    out: list[FaceLabel] = []
    for i in range(0, len(ids), 500):
        part = ids[i : i + 500]
        got = {f.face_id: f for f in face_labels(session, st.id, face_ids=part)[0]}
        out += [got[f] for f in part if f in got]
    return out
