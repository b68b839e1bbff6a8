"""Rewrites the read model rows of some faces of a study from the rules (the writer of :func:`db.status.refresh`)."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from db.queues import queue_reason, route_value
from db.schema import Annotation, Annotator, Face, FaceJudge, FaceStatus, Prediction, ReviewSkip, StudyStatus
from db.status_counts import CountKey, CountVec, ValuesRow, apply_counts, contributions, judge_marks
from db.status_sql import TALLIES_OFF, core_table, locked_study
from db.status_tallies import write_tallies


def status_values(face: Any, study_id: int) -> dict[str, Any]:
    """The :class:`FaceStatus` columns of one resolved face (a :class:`db.rows.FaceLabel`)."""
    u = queue_reason(face, "uncertainty", False)
    dis = queue_reason(face, "disagreement", False)
    val = queue_reason(face, "valence", False)
    return {
        "face_id": face.face_id,
        "study_id": study_id,
        "media_id": face.media_id,
        "track_id": face.track_id,
        "route": route_value(study_id, face.face_id),
        "model_label": face.model_label,
        "model_confidence": face.model_confidence,
        "u_key": -u[1] if u else -0.0,
        "human_label": face.label if face.label_source == "human" else None,
        "n_votes": face.label_annotators,
        "n_judges": len(face.judgements),
        "v_key": -val[1] if val else None,
        "d_key": -dis[1] if dis else None,
    }


@dataclass(frozen=True, slots=True)
class _ModelOnly:
    """What :func:`status_values` reads of a face nobody judged or skipped: its prediction alone (the model's label)."""

    face_id: int
    media_id: int
    track_id: int | None
    model_label: str | None
    model_confidence: float | None
    valence: float | None
    has_pred: bool
    judgements: tuple[()] = ()
    label_annotators: int = 0

    @property
    def label(self) -> str | None:
        return self.model_label

    @property
    def label_source(self) -> str:
        return "model" if self.has_pred else "none"


def _frame(frame: int | None) -> int:
    return -1 if frame is None else frame


def _people(session: Session, faces: dict[int, tuple[int, int | None, int | None, int]]) -> set[int]:
    """The faces of ``faces`` someone annotated (the face or its track) or skipped: those go through the rules."""
    ids = list(faces)
    out = set(session.scalars(select(Annotation.face_id).where(Annotation.face_id.in_(ids)).distinct()))
    out.update(session.scalars(select(ReviewSkip.face_id).where(ReviewSkip.face_id.in_(ids)).distinct()))
    tracks = sorted({t for _, t, _, _ in faces.values() if t is not None})
    if tracks:
        stmt = select(Annotation.track_id).where(Annotation.track_id.in_(tracks)).distinct()
        judged_tracks = set(session.scalars(stmt))
        out.update(f for f, (_, t, _, _) in faces.items() if t in judged_tracks)
    return {int(f) for f in out if f is not None}


def write_faces(session: Session, study_id: int, face_ids: Sequence[int], share: float, *, counts: bool) -> None:
    """Rewrites the rows of some faces of a study from the rules.

    Faces someone annotated (the face or its track) or skipped are resolved by :func:`db.labels.face_labels`; every
    other face (at ingest, all of them) takes its row from its prediction alone, read in one query per chunk, which is
    what the rules give a face without votes (:class:`_ModelOnly` through :func:`status_values`). With ``counts``,
    the queue counts move by the difference the faces make.
    """
    from db import labels

    delta: dict[CountKey, CountVec] = defaultdict(lambda: [0, 0, 0, 0, 0])
    if counts:
        old_marks = judge_marks(session, face_ids)
        for row in session.scalars(select(FaceStatus).where(FaceStatus.face_id.in_(face_ids))):
            _add(delta, contributions(row, old_marks.get(row.face_id, []), share), -1)
    # face id -> (media, track, frame, face index) of the faces still there
    faces = {
        int(f): (int(m), t, fr, fi)
        for f, m, t, fr, fi in session.execute(
            select(Face.id, Face.media_id, Face.track_id, Face.frame, Face.face_index).where(Face.id.in_(face_ids))
        )
    }
    session.execute(delete(FaceStatus).where(FaceStatus.face_id.in_(face_ids)))
    session.execute(delete(FaceJudge).where(FaceJudge.face_id.in_(face_ids)))
    if not faces:
        apply_counts(session, study_id, delta)
        if not session.info.get(TALLIES_OFF):
            write_tallies(session, study_id, face_ids, [], {})
        return
    chosen = _chosen_predictions(session, study_id, list(faces))
    people = _people(session, faces)
    rows = labels.face_labels(session, study_id, face_ids=sorted(people))[0] if people else []
    values = [status_values(r, study_id) for r in rows]
    for fid, (mid, tid, _, _) in faces.items():
        if fid in people:
            continue
        best = chosen.get(fid)
        face = _ModelOnly(
            fid,
            mid,
            tid,
            best.label if best is not None else None,
            best.confidence if best is not None else None,
            best.valence if best is not None else None,
            best is not None,
        )
        values.append(status_values(face, study_id))
    if values:
        session.execute(core_table(FaceStatus).insert(), values)
    ids, marks = _write_judges(session, study_id, rows, people)
    if counts:
        _add_new(delta, values, marks, share)
        apply_counts(session, study_id, delta)
    if not session.info.get(TALLIES_OFF):
        write_tallies(session, study_id, face_ids, rows, ids)
    # the classes in the order face_labels lists the faces (media, frame, face index, id), as the rules did
    order = sorted(chosen, key=lambda f: (faces[f][0], _frame(faces[f][2]), faces[f][3], f))
    _add_classes(session, study_id, dict.fromkeys(tuple(chosen[f].probs or {}) for f in order))


def _add(delta: dict[CountKey, CountVec], items: list[tuple[CountKey, CountVec]], sign: int) -> None:
    for key, vec in items:
        acc = delta[key]
        for i, x in enumerate(vec):
            acc[i] += sign * x


def _chosen_predictions(session: Session, study_id: int, face_ids: list[int]) -> dict[int, Any]:
    """The prediction :func:`db.labels.face_labels` takes per face: the latest of the primary run, else the latest."""
    from db import labels

    primary = labels.choose_model(session, study_id)
    p = Prediction
    chosen: dict[int, Any] = {}
    stmt = select(p.face_id, p.model, p.weights_hash, p.model_version, p.label, p.confidence, p.valence, p.probs).where(
        p.face_id.in_(face_ids)
    )
    for pr in session.execute(stmt.order_by(p.id)):
        cur = chosen.get(pr.face_id)
        run = (pr.model, pr.weights_hash, pr.model_version)
        if cur is None or run == primary or (cur.model, cur.weights_hash, cur.model_version) != primary:
            chosen[pr.face_id] = pr
    return chosen


def _write_judges(
    session: Session, study_id: int, rows: Sequence[Any], people: set[int]
) -> tuple[dict[str, int], dict[int, dict[int, list[bool]]]]:
    """Writes who judged or skipped the faces (:class:`FaceJudge`).

    Returns the annotators' ids by name and, per face, ``annotator id -> [judged, skipped]``.
    """
    names = sorted({j.annotator for r in rows for j in r.judgements})
    ids: dict[str, int] = {}
    if names:
        found = session.execute(select(Annotator.name, Annotator.id).where(Annotator.name.in_(names)))
        ids = {str(n): int(i) for n, i in found}
    marks: dict[int, dict[int, list[bool]]] = defaultdict(dict)
    for r in rows:
        for j in r.judgements:
            marks[r.face_id][ids[j.annotator]] = [True, False]
    if people:
        skips = select(ReviewSkip.face_id, ReviewSkip.annotator_id).where(ReviewSkip.face_id.in_(sorted(people)))
        for fid, a in session.execute(skips):
            marks[int(fid)].setdefault(int(a), [False, False])[1] = True
    judges = [
        {"face_id": fid, "annotator_id": a, "study_id": study_id, "judged": j, "skipped": sk}
        for fid, by in marks.items()
        for a, (j, sk) in by.items()
    ]
    if judges:
        session.execute(core_table(FaceJudge).insert(), judges)
    return ids, marks


def _add_new(
    delta: dict[CountKey, CountVec], values: list[dict[str, Any]], marks: dict[int, dict[int, list[bool]]], share: float
) -> None:
    """Adds what the rewritten rows ``values`` make of the queue counts to ``delta``."""
    for v in values:
        if v["face_id"] in marks or v["n_votes"]:
            mine = [(a, j, sk) for a, (j, sk) in marks.get(v["face_id"], {}).items()]
            _add(delta, contributions(ValuesRow(v), mine, share), 1)
        else:  # the study's row alone (grouped: most faces of a chunk share a few keys)
            key = (0, v["media_id"], v["model_label"] or "", v["human_label"] or "")
            acc = delta[key]
            acc[0] += 1
            acc[1] += int(v["n_votes"] < (2 if v["route"] < share else 1))
            acc[2] += int(v["v_key"] is not None)
            acc[3] += int(v["d_key"] is not None)


def _add_classes(session: Session, study_id: int, names: Iterable[Sequence[str]]) -> None:
    """Appends the classes a study's kept list lacks, in order.

    The row is locked and read afresh first when it changes, so that two transactions adding classes both keep theirs.
    """
    kept = session.get(StudyStatus, study_id)
    if kept is None:
        return
    have = set(kept.classes or [])
    wanted = [k for keys in names for k in keys]
    if all(k in have for k in wanted):
        return
    kept = locked_study(session, study_id)
    classes = list(kept.classes or [])
    for k in wanted:
        if k not in classes:
            classes.append(k)
    if classes != list(kept.classes or []):
        kept.classes = classes
