"""The statistics' kept tallies: what each judged face adds to its study's statistics (:mod:`db.status`)."""

from __future__ import annotations

import itertools
from collections import defaultdict
from collections.abc import Sequence
from typing import Any

from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session

from db.schema import Annotation, Face, FaceTally, StudyTally
from db.status_sql import CHUNK, core_table, upsert

TallyKey = tuple[str, str, str, str, str]
"""``(kind, k1, k2, k3, k4)`` of a :class:`StudyTally` row."""
TallyVec = list[float]
"""``[n, s1, s2, s3, s4, s5]``."""


def face_tallies(face: Any, ids: dict[str, int]) -> list[tuple[TallyKey, TallyVec]]:
    """What one resolved face (a :class:`db.rows.FaceLabel`) adds to its study's statistics.

    The terms of :func:`db.quality.compute_stats` that are sums over faces, so that the statistics are a function
    of the totals alone (see :func:`db.status_stats.study_stats`): annotator ids (``ids``: name to id) stand for the
    names.

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
    out: list[tuple[TallyKey, TallyVec]] = [(("judged", "", "", "", ""), [1, 0.0, 0.0, 0.0, 0.0, 0.0])]

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


def write_tallies(
    session: Session, study_id: int, face_ids: Sequence[int], rows: Sequence[Any], ids: dict[str, int]
) -> None:
    """Replaces the tallies of some faces (their old share out, the new one in): ``rows`` are the resolved faces."""
    delta: dict[tuple[int, TallyKey], TallyVec] = defaultdict(lambda: [0, 0.0, 0.0, 0.0, 0.0, 0.0])
    take_out(session, face_ids, delta)
    session.execute(delete(FaceTally).where(FaceTally.face_id.in_(face_ids)))
    new = []
    stored = _annotation_rows(session, rows)
    for r in rows:
        items = face_tallies(r, ids)
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
        session.execute(core_table(FaceTally).insert(), new)
    apply_tallies(session, study_id, delta)


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


def _pack(items: list[tuple[TallyKey, TallyVec]]) -> list[list[Any]]:
    return [[*key, *vec] for key, vec in items]


def take_out(session: Session, face_ids: Sequence[int], delta: dict[tuple[int, TallyKey], TallyVec]) -> None:
    """Subtracts the kept tallies of some faces from ``delta``."""
    for mid, items in session.execute(
        select(FaceTally.media_id, FaceTally.items).where(FaceTally.face_id.in_(face_ids))
    ):
        for item in items:
            acc = delta[(int(mid), tuple(item[:5]))]
            for i, x in enumerate(item[5:]):
                acc[i] -= x


def apply_tallies(session: Session, study_id: int, delta: dict[tuple[int, TallyKey], TallyVec]) -> None:
    """Adds ``delta`` to the study's tallies, atomically and in key order (as :func:`db.status_counts.apply_counts`)."""
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
    table = core_table(StudyTally)
    stmt = upsert(session)(table)
    stmt = stmt.on_conflict_do_update(
        index_elements=["study_id", "media_id", "kind", "k1", "k2", "k3", "k4"],
        set_={n: table.c[n] + stmt.excluded[n] for n in names},
    )
    for i in range(0, len(values), CHUNK):
        session.execute(stmt, values[i : i + CHUNK])
