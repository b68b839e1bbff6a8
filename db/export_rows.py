"""What the column-wise export pages (:mod:`db.export_pages`) share with their row-by-row reference.

:class:`Tally` counts the dataset card's and the statistics' figures on the way, as
:meth:`quality.StatsAccumulator.add` and :meth:`dataset_card.CardCounts.add` count a row; the positions of a face
row's columns (``_HAS_CROP``, ``_LABELS_AT``) and ``_NO_LABELS``. The rows built face by face, as the CSV was written
before the column-wise pages, are now the tests' reference (``tests/export_reference.py``): the product writes only
the column-wise pages.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, NamedTuple

RowBuilder = Callable[[Any, Any, Any], list[Any]]
"""``(face_label, split, classes) -> values``: :func:`db.exports.row_values`, passed in (no import cycle)."""


class _Classes(NamedTuple):
    """What :meth:`db.quality.StatsAccumulator.add_classes` reads of a row."""

    model_probs: Mapping[str, Any] | None
    judgements: tuple[Any, ...]
    label: str | None


@dataclass
class Tally:
    """The card's and the statistics' counts of the rows written (the accumulators of :func:`export_stream`)."""

    acc: Any
    card: Any
    splits: Counter[Any] = field(default_factory=Counter)
    _keys: set[tuple[str, ...]] = field(default_factory=set)
    _labels: set[str] = field(default_factory=set)

    def add_unjudged(self, probs: Mapping[str, Any] | None, label: str | None, sources: tuple[str, ...]) -> None:
        """Counts a row nobody judged, as ``acc.add`` and ``card.add`` count it."""
        acc, card = self.acc, self.card
        if probs:
            keys = tuple(probs)
            if keys not in self._keys:
                self._keys.add(keys)
                acc.add_classes(_Classes(probs, (), None))
        if label:
            if label not in self._labels:
                self._labels.add(label)
                acc.add_classes(_Classes(None, (), label))
            acc.model_counts[label] += 1
            acc.label_counts[label] += 1
        card.n += 1
        src = card.sources
        src["label"][sources[0]] += 1
        src["valence"][sources[1]] += 1
        src["arousal"][sources[2]] += 1
        src["engagement"][sources[3]] += 1
        card.model_only += sources[0] == "model"

    def add_judged(self, r: Any) -> None:
        """Counts a row built by :func:`db.face_table.face_label`."""
        self.acc.add(r)
        self.card.add(r)


_LABELS_AT = 16
"""Where the four label fields (value, source, annotators, agreement each) start in a row of :func:`_unjudged_row`:
after its face and media columns (:func:`db.exports.export_columns` order)."""
_HAS_CROP = 11
"""Position of ``has_crop`` in a row of :func:`db.face_pages._face_select`."""
_NO_LABELS = (None, "none", 0, None) * 4
"""The four label fields (value, source, annotators, agreement) of a face with neither votes nor prediction."""
