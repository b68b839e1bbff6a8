"""A study's statistics from the kept totals of the read model alone (a few hundred rows, whatever its size)."""

from __future__ import annotations

from collections import defaultdict
from typing import TYPE_CHECKING

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from db.schema import Annotator, Media, MediaTotals, QueueCount, Study, StudyStatus, StudyTally

if TYPE_CHECKING:
    from db.rows import StudyStats


def study_stats(session: Session, study: Study) -> StudyStats:
    """:func:`db.quality.compute_stats` of a study, from the kept totals alone (a few hundred rows, whatever its size).

    The class counts and the model-vs-human confusion come from the queue counts (annotator 0: every face by model
    class and human class), the agreement figures from the tallies (:func:`db.status_tallies.face_tallies`), the row
    counts from the media totals.
    """
    from db import labels, quality_totals

    qc = QueueCount
    by_pair = select(qc.model_label, qc.human_label, func.sum(qc.faces)).where(
        qc.study_id == study.id, qc.annotator_id == 0
    )
    by_pair = by_pair.group_by(qc.model_label, qc.human_label)
    cells = [(str(m), str(h), int(n or 0)) for m, h, n in session.execute(by_pair)]
    st_ = StudyTally
    sums = select(
        st_.kind,
        st_.k1,
        st_.k2,
        st_.k3,
        st_.k4,
        func.sum(st_.n),
        func.sum(st_.s1),
        func.sum(st_.s2),
        func.sum(st_.s3),
        func.sum(st_.s4),
        func.sum(st_.s5),
    ).where(st_.study_id == study.id)
    tally: dict[str, dict[tuple[str, ...], list[float]]] = defaultdict(dict)
    for kind, k1, k2, k3, k4, n, *rest in session.execute(sums.group_by(st_.kind, st_.k1, st_.k2, st_.k3, st_.k4)):
        if n:
            tally[str(kind)][(str(k1), str(k2), str(k3), str(k4))] = [int(n), *(float(x or 0.0) for x in rest)]
    kept = select(
        func.sum(MediaTotals.faces),
        func.sum(MediaTotals.predictions),
        func.sum(MediaTotals.tracks),
        func.sum(MediaTotals.crops),
        func.sum(MediaTotals.features),
    ).where(MediaTotals.study_id == study.id)
    faces, preds, tracks, crops, feats = session.execute(kept).one()
    ann_ids = sorted({int(k[0]) for k in tally["ann"]} | {int(k[x]) for k in tally["pair"] for x in (0, 1)})
    who = select(Annotator.id, Annotator.name).where(Annotator.id.in_(ann_ids))
    names = {int(i): str(n) for i, n in session.execute(who)} if ann_ids else {}
    counts = {
        "media": session.scalar(select(func.count()).select_from(Media).where(Media.study_id == study.id)) or 0,
        "faces": int(faces or 0),
        "predictions": int(preds or 0),
        "tracks": int(tracks or 0),
        "crops": int(crops or 0),
        "features": int(feats or 0),
        "annotations": int(tally["rows"].get(("", "", "", ""), [0])[0]),
    }
    partial = (
        select(func.count(Media.id), func.sum(MediaTotals.faces))
        .outerjoin(MediaTotals, MediaTotals.media_id == Media.id)
        .where(Media.study_id == study.id, Media.analysis_status == "partial")
    )
    n_partial, partial_faces = session.execute(partial).one()
    counts.update(partial_media=int(n_partial or 0), partial_faces=int(partial_faces or 0))
    st = session.get(StudyStatus, study.id)
    primary = labels.choose_model(session, study.id)
    return quality_totals.stats_from_totals(
        study.name, counts, primary, cells=cells, tally=tally, names=names, classes=list(st.classes or []) if st else []
    )
