"""The resolution rules of the correction history: one value per face and field from every annotator's votes.

Resolution rules (the one place they are written):

1. History is kept per target (a face or a track) and annotator, in id order. A ``set`` row adds a correction; an
   ``undo`` row removes the row named by its ``reverts_id`` from that annotator's active corrections
   (:func:`active_corrections`, which :func:`resolve`, :func:`db.labels.undo` and :func:`db.labels.last_correction`
   all use).
2. An annotator's current value of a field (label, valence, arousal, engagement, note) is the field of their latest
   active row that sets it, so a row that only sets valence keeps the class set before it.
3. For a face, each annotator's own current value wins; a field the annotator never set on the face comes from their
   current value on the face's track (a track-level correction applies to each face without its own).
4. Across annotators the class is the majority vote (a tie goes to the class voted most recently) and the numbers
   are the mean. Without any annotator the model's prediction is used, and the provenance says ``model``.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

from db.rows import Judgement

FIELDS = ("label", "valence", "arousal", "engagement", "note")
NUMERIC_FIELDS = ("valence", "arousal", "engagement")
MAX_SD = {"valence": 1.0, "arousal": 1.0, "engagement": 0.5}
"""Largest possible standard deviation of each bounded field (half its range), for the agreement score."""


# ---------------------------------------------------------------------------------------------------- resolution


class Correction(Protocol):
    """What the active-correction rule reads of an annotation row (:class:`db.schema.Annotation` has it)."""

    @property
    def id(self) -> int:
        """The row's id (rows are applied in id order)."""
        ...

    @property
    def kind(self) -> str:
        """``set`` or ``undo``."""
        ...

    @property
    def reverts_id(self) -> int | None:
        """The row an ``undo`` reverts."""
        ...


C = TypeVar("C", bound=Correction)


def active_corrections(rows: Iterable[C]) -> dict[int, C]:
    """Rule 1: the rows of one annotator's history that are still active, by id (in id order).

    Args:
        rows: One annotator's rows, in any order: of one target, or of several (an undo names the id it reverts,
            and ids are unique, so targets cannot mix up).

    Returns:
        ``{id: row}`` of the ``set`` rows that no later ``undo`` row reverted; the newest active one is ``max``.
    """
    active: dict[int, C] = {}
    for a in sorted(rows, key=lambda r: r.id):
        if a.kind == "undo":
            if a.reverts_id is not None:
                active.pop(a.reverts_id, None)
        else:
            active[a.id] = a
    return active


@dataclass(frozen=True)
class _Value:
    value: Any
    annotation_id: int


Resolved = dict[tuple[str, int], dict[str, dict[str, _Value]]]
"""``{("face"|"track", id): {annotator: {field: value}}}``, what :func:`resolve` returns."""


def resolve(rows: Iterable[tuple[Any, str]]) -> Resolved:
    """Each annotator's current field values per target (rules 1 and 2), from history rows in any order.

    Args:
        rows: ``(annotation, annotator_name)`` pairs; an annotation (an ORM row, or a result row of the same
            columns) has ``id, face_id, track_id, kind, reverts_id`` and the fields of :data:`FIELDS`.

    Returns:
        ``{("face"|"track", id): {annotator: {field: value}}}``; a field no active row sets is absent.
    """
    history: dict[tuple[tuple[str, int], str], list[Any]] = {}
    for a, who in rows:
        target = ("face", a.face_id) if a.face_id is not None else ("track", int(a.track_id or 0))
        history.setdefault((target, who), []).append(a)
    out: Resolved = {}
    for (target, who), mine in history.items():
        rows_by_id = active_corrections(mine)
        current: dict[str, _Value] = {}
        for ident in sorted(rows_by_id, reverse=True):
            row = rows_by_id[ident]
            for f in FIELDS:
                v = getattr(row, f)
                if f not in current and v is not None:
                    current[f] = _Value(v, ident)
        if current:
            out.setdefault(target, {})[who] = current
    return out


def judgements_for_face(
    resolved: Resolved, face_id: int, track_id: int | None
) -> list[tuple[Judgement, dict[str, int]]]:
    """Each annotator's current values on a face (own first, then the track's), with the annotation id per field."""
    own = resolved.get(("face", face_id), {})
    trk = resolved.get(("track", track_id), {}) if track_id is not None else {}
    out = []
    for who in sorted(set(own) | set(trk)):
        values: dict[str, Any] = {}
        ids: dict[str, int] = {}
        from_track = set()
        for f in FIELDS:
            v = own.get(who, {}).get(f)
            if v is None:
                v = trk.get(who, {}).get(f)
                if v is not None:
                    from_track.add(f)
            if v is not None:
                values[f] = v.value
                ids[f] = v.annotation_id
        if values:
            out.append((Judgement(annotator=who, from_track=frozenset(from_track), **values), ids))
    return out


def majority(votes: Sequence[tuple[str, int]]) -> tuple[str, float] | None:
    """The majority class of ``(label, annotation_id)`` votes (ties: most recent vote) and its share."""
    if not votes:
        return None
    counts = Counter(v for v, _ in votes)
    latest = {v: max(i for w, i in votes if w == v) for v in counts}
    best = max(counts, key=lambda v: (counts[v], latest[v]))
    return best, counts[best] / len(votes)


def numeric_agreement(values: Sequence[float], field: str) -> float | None:
    """``1 - sd / max_sd`` of the annotators' values (None with fewer than two)."""
    if len(values) < 2:
        return None
    mean = sum(values) / len(values)
    sd = math.sqrt(sum((v - mean) ** 2 for v in values) / len(values))
    return max(0.0, 1.0 - sd / MAX_SD[field])
