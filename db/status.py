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

import itertools
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from sqlalchemy import Table, and_, case, delete, event, func, insert, literal, select
from sqlalchemy.orm import Session

from db.queues import queue_reason, route_value
from db.repo import media_row
from db.rows import MediaRow
from db.schema import (
    Annotation,
    Annotator,
    Base,
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

if TYPE_CHECKING:
    from db.rows import StudyStats

_KEY = "affectlab_status"
OFF = "affectlab_status_off"
"""``session.info`` key: set to True on a session that writes a database without the read model (migrations)."""
TALLIES_OFF = "affectlab_tallies_off"
"""``session.info`` key: set to True on a session that refreshes the read model of a database without the statistics'
tallies yet (migration 0008, which runs before the revision creating them)."""
CHUNK = 500


@dataclass
class _Dirty:
    faces: set[int] = field(default_factory=set)
    tracks: set[int] = field(default_factory=set)
    recount_faces: set[int] = field(default_factory=set)
    """Faces whose media item's kept counts change (new faces or predictions)."""
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
        if isinstance(obj, Face | Prediction | Annotation | Track):
            d = d or _dirty(session)
            if isinstance(obj, Face):
                d.faces.add(obj.id)
                d.recount_faces.add(obj.id)
            elif isinstance(obj, Prediction):
                d.faces.add(obj.face_id)
                d.recount_faces.add(obj.face_id)
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


def _chunks(ids: Iterable[int]) -> Iterable[list[int]]:
    items = sorted(ids)
    for i in range(0, len(items), CHUNK):
        yield items[i : i + CHUNK]


def refresh(session: Session, d: _Dirty) -> None:
    """Recomputes the read model of what ``d`` names (see the module docstring)."""
    from db import labels

    faces = set(d.faces)
    for part in _chunks(d.tracks):
        faces.update(session.scalars(select(Face.id).where(Face.track_id.in_(part))))
    _lock(session, Face, faces | d.recount_faces)
    by_study: dict[int, set[int]] = defaultdict(set)
    media_of: dict[int, int] = {}
    for part in _chunks(faces | d.recount_faces):
        stmt = select(Face.id, Face.media_id, Media.study_id).join(Media, Face.media_id == Media.id)
        for fid, mid, sid in session.execute(stmt.where(Face.id.in_(part))):
            by_study[sid].add(fid)
            media_of[fid] = mid
    recount = set(d.media) | {media_of[f] for f in d.recount_faces if f in media_of}
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
        kept = _locked_study(session, sid)  # one transaction at a time decides a study's model run
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
        share = float(session.scalar(select(Study.double_share).where(Study.id == sid)) or 0.0)
        for part in _chunks(ids):
            _write(session, sid, part, share, counts=sid not in full)
    for sid in sorted(full):
        _recount_queues(session, sid)
    _lock(session, Media, recount)
    for part in _chunks(recount):
        _recount(session, part)


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
    for part in _chunks(ids):
        session.execute(select(model.id).where(model.id.in_(part)).order_by(model.id).with_for_update(key_share=True))


def _upsert(session: Session) -> Any:
    """The dialect's ``INSERT`` (``ON CONFLICT`` clauses)."""
    if session.get_bind().dialect.name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert as pg_insert

        return pg_insert
    from sqlalchemy.dialects.sqlite import insert as sqlite_insert

    return sqlite_insert


def _ensure_study(session: Session, study_id: int) -> bool:
    """Creates a study's :class:`StudyStatus` row unless there is one (two transactions may race to); True if new."""
    stmt = _upsert(session)(StudyStatus).values(
        study_id=study_id, model=None, weights_hash=None, model_version=None, classes=[]
    )
    res = session.execute(stmt.on_conflict_do_nothing(index_elements=["study_id"]))
    return bool(res.rowcount)  # type: ignore[attr-defined]


def _locked_study(session: Session, study_id: int) -> StudyStatus:
    """A study's :class:`StudyStatus` row, read afresh and locked until the transaction ends (PostgreSQL)."""
    stmt = select(StudyStatus).where(StudyStatus.study_id == study_id).with_for_update(key_share=True)
    kept = session.scalars(stmt.execution_options(populate_existing=True)).one()
    return kept


def _studies_of_media(session: Session, media: set[int]) -> list[tuple[int]]:
    if not media:
        return []
    return [tuple(r) for r in session.execute(select(Media.study_id).where(Media.id.in_(sorted(media))).distinct())]  # type: ignore[misc]


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


_Key = tuple[int, int, str, str]
"""``(annotator_id, media_id, model_label, human_label)`` of a :class:`QueueCount` row (annotator 0: the study)."""
_Vec = list[int]
"""``[faces, uncertainty, valence, disagreement, skipped]``."""


def _contributions(row: Any, marks: Sequence[tuple[int, bool, bool]], share: float) -> list[tuple[_Key, _Vec]]:
    """What one face adds to the queue counts (see :class:`db.schema.QueueCount`).

    One to the study's row, and to the row of each annotator who judged or skipped it (their ``faces``: judged).
    """
    u = int(row.n_votes < (2 if row.route < share else 1))
    v = int(row.v_key is not None)
    dis = int(row.d_key is not None)
    labels = (row.model_label or "", row.human_label or "")
    out: list[tuple[_Key, _Vec]] = [((0, row.media_id, *labels), [1, u, v, dis, 0])]
    for annotator, judged, skipped in marks:
        out.append(((annotator, row.media_id, *labels), [int(judged), u, v, dis, int(skipped and not judged)]))
    return out


def _marks(session: Session, face_ids: Sequence[int]) -> dict[int, list[tuple[int, bool, bool]]]:
    out: dict[int, list[tuple[int, bool, bool]]] = defaultdict(list)
    stmt = select(FaceJudge.face_id, FaceJudge.annotator_id, FaceJudge.judged, FaceJudge.skipped)
    for fid, a, j, sk in session.execute(stmt.where(FaceJudge.face_id.in_(face_ids))):
        out[fid].append((int(a), bool(j), bool(sk)))
    return out


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


def _write(session: Session, study_id: int, face_ids: Sequence[int], share: float, *, counts: bool) -> None:
    """Rewrites the rows of some faces of a study from the rules.

    Faces someone annotated (the face or its track) or skipped are resolved by :func:`db.labels.face_labels`; every
    other face (at ingest, all of them) takes its row from its prediction alone, read in one query per chunk, which is
    what the rules give a face without votes (:class:`_ModelOnly` through :func:`status_values`). With ``counts``,
    the queue counts move by the difference the faces make.
    """
    from db import labels

    delta: dict[_Key, _Vec] = defaultdict(lambda: [0, 0, 0, 0, 0])

    def add(items: list[tuple[_Key, _Vec]], sign: int) -> None:
        for key, vec in items:
            acc = delta[key]
            for i, x in enumerate(vec):
                acc[i] += sign * x

    if counts:
        old_marks = _marks(session, face_ids)
        for row in session.scalars(select(FaceStatus).where(FaceStatus.face_id.in_(face_ids))):
            add(_contributions(row, old_marks.get(row.face_id, []), share), -1)
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
        _apply(session, study_id, delta)
        if not session.info.get(TALLIES_OFF):
            _write_tallies(session, study_id, face_ids, [], {})
        return
    primary = labels.choose_model(session, study_id)
    p = Prediction
    chosen: dict[int, Any] = {}  # the prediction face_labels takes: the latest of the primary run, else the latest
    stmt = select(p.face_id, p.model, p.weights_hash, p.model_version, p.label, p.confidence, p.valence, p.probs).where(
        p.face_id.in_(list(faces))
    )
    for pr in session.execute(stmt.order_by(p.id)):
        cur = chosen.get(pr.face_id)
        run = (pr.model, pr.weights_hash, pr.model_version)
        if cur is None or run == primary or (cur.model, cur.weights_hash, cur.model_version) != primary:
            chosen[pr.face_id] = pr
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
        session.execute(_table(FaceStatus).insert(), values)
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
        session.execute(_table(FaceJudge).insert(), judges)
    if counts:
        for v in values:
            if v["face_id"] in marks or v["n_votes"]:
                mine = [(a, j, sk) for a, (j, sk) in marks.get(v["face_id"], {}).items()]
                add(_contributions(_Row(v), mine, share), 1)
            else:  # the study's row alone (grouped: most faces of a chunk share a few keys)
                key = (0, v["media_id"], v["model_label"] or "", v["human_label"] or "")
                acc = delta[key]
                acc[0] += 1
                acc[1] += int(v["n_votes"] < (2 if v["route"] < share else 1))
                acc[2] += int(v["v_key"] is not None)
                acc[3] += int(v["d_key"] is not None)
        _apply(session, study_id, delta)
    if not session.info.get(TALLIES_OFF):
        _write_tallies(session, study_id, face_ids, rows, ids)
    # the classes in the order face_labels lists the faces (media, frame, face index, id), as the rules did
    order = sorted(chosen, key=lambda f: (faces[f][0], _frame(faces[f][2]), faces[f][3], f))
    _add_classes(session, study_id, dict.fromkeys(tuple(chosen[f].probs or {}) for f in order))


_TKey = tuple[str, str, str, str, str]
"""``(kind, k1, k2, k3, k4)`` of a :class:`StudyTally` row."""
_TVec = list[float]
"""``[n, s1, s2, s3, s4, s5]``."""


def _tallies(face: Any, ids: dict[str, int]) -> list[tuple[_TKey, _TVec]]:
    """What one resolved face (a :class:`db.rows.FaceLabel`) adds to its study's statistics.

    The terms of :func:`db.quality.compute_stats` that are sums over faces, so that the statistics are a function
    of the totals alone (see :func:`study_stats`): annotator ids (``ids``: name to id) stand for the names.

    - ``judged``: a face someone judged; ``ann a``: faces annotator ``a`` judged; ``jl c``: judgements of class ``c``;
    - ``multi``: a face with two or more annotators' classes, and for it ``cat c`` (its ``n_c`` votes of class
      ``c``), ``fl m`` (``sum n_c^2 - m`` of its ``m`` votes, Fleiss' per-face agreement times ``m (m - 1)``) and
      ``ka m`` (``m^2 - sum n_c^2``, Krippendorff's disagreeing ordered pairs);
    - ``pair a b ca cb``: annotators ``a < b`` (ids) gave classes ``ca`` and ``cb``;
    - ``ccc f a b``: both gave field ``f`` values ``x`` and ``y``: ``n`` 1, sums ``x, y, x^2, y^2, xy``;
    - ``nf f``: the face's ``f`` is human; ``vsm f``: and the model gives one: sums of human mean and model value.
    """
    from db.labels import NUMERIC_FIELDS

    if not face.judgements:
        return []
    out: list[tuple[_TKey, _TVec]] = [(("judged", "", "", "", ""), [1, 0.0, 0.0, 0.0, 0.0, 0.0])]

    def one(kind: str, *keys: object, n: int = 1, sums: Sequence[float] = (0.0, 0.0, 0.0, 0.0, 0.0)) -> None:
        k = (*(str(x) for x in keys), "", "", "", "")[:4]
        out.append(((kind, *k), [n, *sums]))  # type: ignore[arg-type]

    for a in sorted({ids[j.annotator] for j in face.judgements}):
        one("ann", a)
    table = {ids[j.annotator]: j.label for j in face.judgements if j.label}
    for c in table.values():
        one("jl", c)
    if len(table) >= 2:
        per: dict[str, int] = defaultdict(int)
        for c in table.values():
            per[c] += 1
        m, sq = len(table), sum(v * v for v in per.values())
        one("multi")
        for c, k in sorted(per.items()):
            one("cat", c, n=k)
        one("fl", m, n=sq - m)
        one("ka", m, n=m * m - sq)
        for a, b in itertools.combinations(sorted(table), 2):
            one("pair", a, b, table[a], table[b])
    for f in NUMERIC_FIELDS:
        vals = {ids[j.annotator]: float(getattr(j, f)) for j in face.judgements if getattr(j, f) is not None}
        for a, b in itertools.combinations(sorted(vals), 2):
            x, y = vals[a], vals[b]
            one("ccc", f, a, b, sums=(x, y, x * x, y * y, x * y))
        if getattr(face, f"{f}_source") == "human":
            one("nf", f)
            model = getattr(face, f"model_{f}")
            if model is not None:
                h, mv = float(getattr(face, f)), float(model)
                one("vsm", f, sums=(h, mv, h * h, mv * mv, h * mv))
    return out


def _write_tallies(
    session: Session, study_id: int, face_ids: Sequence[int], rows: Sequence[Any], ids: dict[str, int]
) -> None:
    """Replaces the tallies of some faces (their old share out, the new one in): ``rows`` are the resolved faces."""
    delta: dict[tuple[int, _TKey], _TVec] = defaultdict(lambda: [0, 0.0, 0.0, 0.0, 0.0, 0.0])
    _take_out(session, face_ids, delta)
    session.execute(delete(FaceTally).where(FaceTally.face_id.in_(face_ids)))
    new = []
    stored = _annotation_rows(session, rows)
    for r in rows:
        items = _tallies(r, ids)
        if stored.get(r.face_id):
            items.append((("rows", "", "", "", ""), [stored[r.face_id], 0.0, 0.0, 0.0, 0.0, 0.0]))
        if not items:
            continue
        new.append({"face_id": r.face_id, "study_id": study_id, "media_id": r.media_id, "items": _pack(items)})
        for key, vec in items:
            acc = delta[(r.media_id, key)]
            for i, x in enumerate(vec):
                acc[i] += x
    if new:
        session.execute(_table(FaceTally).insert(), new)
    _apply_tallies(session, study_id, delta)


def _annotation_rows(session: Session, rows: Sequence[Any]) -> dict[int, int]:
    """Annotation rows each face stands for in the study's count: its own, and a track's on the track's first face.

    Every annotation insert refreshes the faces it targets (a track's: all of them), so each count is current.
    """
    if not rows:
        return {}
    fids = {int(r.face_id) for r in rows}
    a = Annotation
    stmt = select(a.face_id, func.count()).where(a.face_id.in_(sorted(fids))).group_by(a.face_id)
    out = {int(f): int(n) for f, n in session.execute(stmt) if f is not None}
    tracks = sorted({int(r.track_id) for r in rows if r.track_id is not None})
    if tracks:
        per_track = select(a.track_id, func.count()).where(a.track_id.in_(tracks)).group_by(a.track_id)
        counts = {int(t): int(n) for t, n in session.execute(per_track) if t is not None}
        if counts:
            firsts = select(Face.track_id, func.min(Face.id)).where(Face.track_id.in_(sorted(counts)))
            for t, f in session.execute(firsts.group_by(Face.track_id)):
                if t is not None and f is not None and int(f) in fids:
                    out[int(f)] = out.get(int(f), 0) + counts[int(t)]
    return out


def _pack(items: list[tuple[_TKey, _TVec]]) -> list[list[Any]]:
    return [[*key, *vec] for key, vec in items]


def _take_out(session: Session, face_ids: Sequence[int], delta: dict[tuple[int, _TKey], _TVec]) -> None:
    """Subtracts the kept tallies of some faces from ``delta``."""
    for mid, items in session.execute(
        select(FaceTally.media_id, FaceTally.items).where(FaceTally.face_id.in_(face_ids))
    ):
        for item in items:
            acc = delta[(int(mid), tuple(item[:5]))]
            for i, x in enumerate(item[5:]):
                acc[i] -= x


def _apply_tallies(session: Session, study_id: int, delta: dict[tuple[int, _TKey], _TVec]) -> None:
    """Adds ``delta`` to the study's tallies, atomically and in key order (as :func:`_apply`)."""
    delta = {k: v for k, v in delta.items() if any(v)}
    if not delta:
        return
    names = ("n", "s1", "s2", "s3", "s4", "s5")
    values = [
        {
            "study_id": study_id,
            "media_id": mid,
            **dict(zip(("kind", "k1", "k2", "k3", "k4"), key, strict=True)),
            **dict(zip(names, (int(vec[0]), *vec[1:]), strict=True)),
        }
        for (mid, key), vec in sorted(delta.items())
    ]
    table = _table(StudyTally)
    stmt = _upsert(session)(table)
    stmt = stmt.on_conflict_do_update(
        index_elements=["study_id", "media_id", "kind", "k1", "k2", "k3", "k4"],
        set_={n: table.c[n] + stmt.excluded[n] for n in names},
    )
    for i in range(0, len(values), CHUNK):
        session.execute(stmt, values[i : i + CHUNK])


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
        for part in _chunks(judged):
            _write_tallies(session, sid, part, labels.face_labels(session, sid, face_ids=part)[0], ids)
        _recount_queues(session, sid)
        n += len(judged)
    return n


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
    kept = _locked_study(session, study_id)
    classes = list(kept.classes or [])
    for k in wanted:
        if k not in classes:
            classes.append(k)
    if classes != list(kept.classes or []):
        kept.classes = classes


def _table(model: type[Base]) -> Table:
    """The Core table of a model (a plain ``executemany`` insert, without the ORM's bulk machinery)."""
    return Base.metadata.tables[model.__tablename__]


class _Row:
    """Attribute access to a :class:`FaceStatus` value dict."""

    def __init__(self, values: dict[str, Any]) -> None:
        self.__dict__.update(values)

    def __getattr__(self, name: str) -> Any:
        raise AttributeError(name)


def _apply(session: Session, study_id: int, delta: dict[_Key, _Vec]) -> None:
    """Adds ``delta`` to the kept queue counts, atomically.

    One ``INSERT ... ON CONFLICT DO UPDATE`` adds to the row there is (or creates it), so that concurrent
    transactions never lose each other's changes; rows in key order, so that two never wait on each other in a cycle.
    """
    delta = {k: v for k, v in delta.items() if any(v)}
    if not delta:
        return
    names = ("faces", "uncertainty", "valence", "disagreement", "skipped")
    values = [
        {
            "study_id": study_id,
            "annotator_id": key[0],
            "media_id": key[1],
            "model_label": key[2],
            "human_label": key[3],
            **dict(zip(names, vec, strict=True)),
        }
        for key, vec in sorted(delta.items())
    ]
    table = _table(QueueCount)
    stmt = _upsert(session)(table)
    stmt = stmt.on_conflict_do_update(
        index_elements=["study_id", "annotator_id", "media_id", "model_label", "human_label"],
        set_={n: table.c[n] + stmt.excluded[n] for n in names},
    )
    for i in range(0, len(values), CHUNK):
        session.execute(stmt, values[i : i + CHUNK])


def _recount_queues(session: Session, study_id: int) -> None:
    """Recomputes a study's queue counts from its rows (a double share change, a track deleted, a model change)."""
    session.execute(delete(QueueCount).where(QueueCount.study_id == study_id))
    share = float(session.scalar(select(Study.double_share).where(Study.id == study_id)) or 0.0)
    fs, fj = FaceStatus, FaceJudge
    u = case((fs.n_votes < case((fs.route < share, 2), else_=1), 1), else_=0)
    v = case((fs.v_key.is_not(None), 1), else_=0)
    dis = case((fs.d_key.is_not(None), 1), else_=0)
    ml, hl = func.coalesce(fs.model_label, ""), func.coalesce(fs.human_label, "")
    study = select(
        literal(0), fs.media_id, ml, hl, func.count(), func.sum(u), func.sum(v), func.sum(dis), literal(0)
    ).where(fs.study_id == study_id)
    sk = case((and_(fj.skipped, ~fj.judged), 1), else_=0)
    judged = case((fj.judged, 1), else_=0)
    mine = (
        select(
            fj.annotator_id,
            fs.media_id,
            ml,
            hl,
            func.sum(judged),
            func.sum(u),
            func.sum(v),
            func.sum(dis),
            func.sum(sk),
        )
        .join(fs, fs.face_id == fj.face_id)
        .where(fj.study_id == study_id)
    )
    rows = [
        *session.execute(study.group_by(fs.media_id, ml, hl)),
        *session.execute(mine.group_by(fj.annotator_id, fs.media_id, ml, hl)),
    ]
    names = ("annotator_id", "media_id", "model_label", "human_label", "faces", "uncertainty", "valence")
    values = [
        {
            "study_id": study_id,
            **dict(
                zip(
                    (*names, "disagreement", "skipped"),
                    (int(r[0]), int(r[1]), str(r[2]), str(r[3]), *(int(x or 0) for x in r[4:])),
                    strict=True,
                )
            ),
        }
        for r in rows
    ]
    if values:
        session.execute(insert(QueueCount), values)


def _recount(session: Session, media_ids: Sequence[int]) -> None:
    """Recomputes the row counts of media items."""
    session.execute(delete(MediaTotals).where(MediaTotals.media_id.in_(media_ids)))
    totals = []
    stmt = select(Media.id, Media.study_id, Media.recut_crops).where(Media.id.in_(media_ids))
    for mid, sid, recut in session.execute(stmt):
        faces = select(func.count()).select_from(Face).where(Face.media_id == mid)
        n_faces = session.scalar(faces) or 0
        totals.append(
            {
                "media_id": mid,
                "study_id": sid,
                "faces": n_faces,
                "predictions": session.scalar(
                    select(func.count()).select_from(Prediction).join(Face).where(Face.media_id == mid)
                )
                or 0,
                "tracks": session.scalar(select(func.count()).select_from(Track).where(Track.media_id == mid)) or 0,
                # a crop stored or re-cut from the kept recording (db.crops.crop_available)
                "crops": n_faces if recut else session.scalar(faces.where(Face.crop_png.is_not(None))) or 0,
                "features": session.scalar(faces.where(Face.features.is_not(None))) or 0,
            }
        )
    if totals:
        session.execute(insert(MediaTotals), totals)


def media_faces(session: Session, media_ids: Sequence[int]) -> dict[int, int] | None:
    """Faces per media item from the kept row counts (items without faces are left out).

    None inside a transaction whose writes are not refreshed yet (or one that writes without the read model): the
    kept counts do not hold those writes until it commits, so the caller counts.
    """
    if session.info.get(OFF) or _KEY in session.info:
        return None
    out: dict[int, int] = {}
    for part in _chunks(media_ids):
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


def study_stats(session: Session, study: Study) -> StudyStats:
    """:func:`db.quality.compute_stats` of a study, from the kept totals alone (a few hundred rows, whatever its size).

    The class counts and the model-vs-human confusion come from the queue counts (annotator 0: every face by model
    class and human class), the agreement figures from the tallies (:func:`_tallies`), the row counts from the
    media totals.
    """
    from db import labels, quality

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
    return quality.stats_from_totals(
        study.name,
        counts,
        primary,
        cells=cells,
        tally=tally,
        names=names,
        classes=list(st.classes or []) if st else [],
    )


def forget(session: Session, face_ids: Sequence[int]) -> None:
    """Takes faces about to be deleted out of the queue counts (a track's faces; a media item's go with its rows)."""
    if not face_ids:
        return
    study_id = session.scalar(select(FaceStatus.study_id).where(FaceStatus.face_id == face_ids[0]))
    if study_id is None:
        return
    share = float(session.scalar(select(Study.double_share).where(Study.id == study_id)) or 0.0)
    for part in _chunks(face_ids):
        delta: dict[_Key, _Vec] = defaultdict(lambda: [0, 0, 0, 0, 0])
        marks = _marks(session, part)
        for row in session.scalars(select(FaceStatus).where(FaceStatus.face_id.in_(part))):
            for key, vec in _contributions(row, marks.get(row.face_id, []), share):
                acc = delta[key]
                for i, x in enumerate(vec):
                    acc[i] -= x
        _apply(session, study_id, delta)
        if not session.info.get(TALLIES_OFF):
            tally: dict[tuple[int, _TKey], _TVec] = defaultdict(lambda: [0, 0.0, 0.0, 0.0, 0.0, 0.0])
            _take_out(session, part, tally)
            session.execute(delete(FaceTally).where(FaceTally.face_id.in_(part)))
            _apply_tallies(session, study_id, tally)
