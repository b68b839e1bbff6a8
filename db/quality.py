"""Study statistics: counts per class, model-vs-human confusion, inter-annotator agreement, CCC."""

from __future__ import annotations

import itertools
import math
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, NamedTuple

from db import agreement
from db.labels import NUMERIC_FIELDS, ModelKey
from db.rows import FaceLabel, Judgement, StudyStats
from models.registry import EMOTIONS_8

MIN_PAIR_ITEMS = 2
"""Faces two annotators must share before their pairwise kappa or CCC is computed at all."""
MIN_KAPPA_FACES = 10
"""Shared faces below which a kappa is not shown to people (the app, with the reason): on a handful of faces one vote
swings it from -1 to 1. Each figure's face count is in :class:`db.rows.StudyStats` (``*_faces``)."""


def clean_figure(x: float) -> float | None:
    """A figure as shown and stored: rounded to 6 decimals, None for none or NaN."""
    return None if x is None or (isinstance(x, float) and math.isnan(x)) else round(float(x), 6)


def class_order(rows: Sequence[FaceLabel]) -> tuple[str, ...]:
    """The classes of a study: the model's output order first, then any other class annotators used."""
    acc = StatsAccumulator()
    for r in rows:
        acc.add_classes(r)
    return acc.classes()


class _Judged(NamedTuple):
    """What the statistics read of a face people judged (a few hundred bytes, judgements shared between faces)."""

    label: str | None
    label_source: str
    model_label: str | None
    judgements: tuple[Judgement, ...]
    valence: float | None
    valence_source: str
    model_valence: float | None
    arousal: float | None
    arousal_source: str
    model_arousal: float | None
    engagement: float | None
    engagement_source: str
    model_engagement: float | None


class StatsAccumulator:
    """The statistics of a study fed one face row at a time (:func:`compute_stats` over a stream of pages).

    Only counters and the rows people judged are kept, so memory grows with the human labels, not the faces.
    """

    def __init__(self) -> None:
        self._labels: dict[str, None] = {}
        self._extra: set[str] = set()
        self.model_counts: Counter[str] = Counter()
        self.label_counts: Counter[str] = Counter()
        self.judged: list[_Judged] = []
        """The rows with at least one judgement (every human figure rests on them), slimmed."""
        self._shared: dict[Any, Any] = {}

    def add_classes(self, r: FaceLabel) -> None:
        """Notes the classes a row uses (:func:`class_order`)."""
        if r.model_probs:
            for k in r.model_probs:
                if k not in self._labels:
                    self._labels[k] = None
        self._extra.update(j.label for j in r.judgements if j.label)
        if r.label:
            self._extra.add(r.label)

    def add(self, r: FaceLabel) -> None:
        """Counts one face row."""
        self.add_classes(r)
        if r.model_label:
            self.model_counts[r.model_label] += 1
        if r.label:
            self.label_counts[r.label] += 1
        if r.judgements:
            share = self._shared.setdefault  # equal judgements (a track's vote on its faces) stored once
            judgements = tuple(share(j, j) for j in r.judgements)
            judgements = share(judgements, judgements)
            self.judged.append(
                _Judged(
                    r.label,
                    r.label_source,
                    r.model_label,
                    judgements,
                    r.valence,
                    r.valence_source,
                    r.model_valence,
                    r.arousal,
                    r.arousal_source,
                    r.model_arousal,
                    r.engagement,
                    r.engagement_source,
                    r.model_engagement,
                )
            )

    def merge(self, later: StatsAccumulator) -> None:
        """Adds the rows another accumulator saw (rows that come after these ones)."""
        for k in later._labels:
            self._labels.setdefault(k, None)
        self._extra |= later._extra
        self.model_counts.update(later.model_counts)
        self.label_counts.update(later.label_counts)
        self.judged += later.judged

    def use_totals(self, model_totals: Mapping[str, int], classes: Sequence[str]) -> None:
        """The rows added were only the judged faces: the whole study's model counts come from kept totals.

        Every face nobody judged keeps its model class, so the consensus counts are the model counts with each human
        label's face moved from its model class to the human one; the class order is the model's (``classes``).
        """
        human = [r for r in self.judged if r.label_source == "human"]
        self.model_counts = Counter({k: n for k, n in model_totals.items() if k and n})
        moved = Counter(str(r.model_label) for r in human if r.model_label)
        self.label_counts = self.model_counts - moved + Counter(str(r.label) for r in human)
        self._labels = dict.fromkeys(classes)
        self._extra |= set(self.label_counts)

    def classes(self) -> tuple[str, ...]:
        """The class order of the rows so far (:func:`class_order`)."""
        labels = list(self._labels) or list(EMOTIONS_8)
        return (*labels, *sorted(self._extra - set(labels)))

    def result(self, study: str, counts: dict[str, int], primary: ModelKey | None) -> StudyStats:
        """The statistics of the rows added (see :func:`compute_stats`)."""
        return _stats(study, self, counts, primary)


def compute_stats(
    study: str,
    rows: Iterable[FaceLabel],
    counts: dict[str, int],
    primary: ModelKey | None,
    *,
    model_totals: Mapping[str, int] | None = None,
    classes: Sequence[str] = (),
) -> StudyStats:
    """Statistics of a study from its face rows (see :func:`db.labels.face_labels`).

    Args:
        study: The study's name.
        rows: Every face row of the study; or, with ``model_totals``, only the faces someone judged (every other
            face counts by its model class alone).
        counts: Row counts (:func:`db.repo.count_rows`).
        primary: The model run the rows follow.
        model_totals: Faces of the whole study per model class (kept counts), when ``rows`` are the judged ones.
        classes: The model's classes in output order, when ``rows`` are the judged ones.
    """
    acc = StatsAccumulator()
    for r in rows:
        acc.add(r)
    if model_totals is not None:
        acc.use_totals(model_totals, classes)
    return acc.result(study, counts, primary)


def _stats(study: str, acc: StatsAccumulator, counts: dict[str, int], primary: ModelKey | None) -> StudyStats:
    labels = acc.classes()
    judged = acc.judged
    human = [r for r in judged if r.label_source == "human"]
    annotators = sorted({j.annotator for r in judged for j in r.judgements})
    model_counts = acc.model_counts
    human_counts = Counter(r.label for r in human)
    label_counts = acc.label_counts

    both = [r for r in human if r.model_label]
    cm = agreement.confusion_matrix([r.label for r in both], [r.model_label for r in both], labels)
    accuracy = sum(r.label == r.model_label for r in both) / len(both) if both else None
    model_kappa = (
        agreement.cohen_kappa([r.label for r in both], [r.model_label for r in both], labels) if both else None
    )

    # Inter-annotator agreement on classes.
    table = [{j.annotator: j.label for j in r.judgements if j.label} for r in judged]

    def kappa_pair(a: str, b: str) -> tuple[float, Callable[[], float]]:
        common = [t for t in table if a in t and b in t]
        return len(common), lambda: agreement.cohen_kappa([t[a] for t in common], [t[b] for t in common])

    pair_faces, pair_kappa = pair_kappas(pair_figures(annotators, kappa_pair))
    multi = [t for t in table if len(t) >= 2]
    fleiss = (
        agreement.fleiss_kappa(agreement.category_counts([list(t.values()) for t in multi], labels)) if multi else None
    )
    alpha = agreement.krippendorff_alpha([[t.get(a) for a in annotators] for t in multi], "nominal") if multi else None

    # CCC of valence, arousal, engagement (a human value needs a judgement, so the judged rows hold them all).
    ccc: dict[str, dict[str, float | None]] = {}
    for f in NUMERIC_FIELDS:
        values: list[dict[str, float]] = [
            {j.annotator: getattr(j, f) for j in r.judgements if getattr(j, f) is not None} for r in judged
        ]

        def ccc_pair(a: str, b: str, values: list[dict[str, float]] = values) -> tuple[float, Callable[[], float]]:
            both_values = [v for v in values if a in v and b in v]
            return len(both_values), lambda: agreement.ccc([v[a] for v in both_values], [v[b] for v in both_values])

        model_attr = f"model_{f}"
        vs_model = [
            (getattr(r, f), getattr(r, model_attr))
            for r in judged
            if getattr(r, f"{f}_source") == "human" and getattr(r, model_attr) is not None
        ]
        ccc[f] = {
            "annotators": mean_ccc(pair_figures(annotators, ccc_pair)),
            "model": clean_figure(agreement.ccc([h for h, _ in vs_model], [m for _, m in vs_model]))
            if vs_model
            else None,
            "n": sum(1 for r in judged if getattr(r, f"{f}_source") == "human"),
        }

    return assemble_stats(
        study,
        counts,
        primary,
        labels,
        annotators=len(annotators),
        judged=len(judged),
        counts_by_class=(model_counts, human_counts, label_counts),
        cm=cm,
        accuracy=accuracy,
        model_kappa=model_kappa,
        pair_kappa=pair_kappa,
        fleiss=fleiss,
        alpha=alpha,
        ccc=ccc,
        pair_faces=pair_faces,
        model_faces=len(both),
        multi_faces=len(multi),
    )


def assemble_stats(
    study: str,
    counts: dict[str, int],
    primary: ModelKey | None,
    labels: Sequence[str],
    *,
    annotators: int,
    judged: int,
    counts_by_class: tuple[Mapping[Any, int], Mapping[Any, int], Mapping[Any, int]],
    cm: Any,
    accuracy: float | None,
    model_kappa: float | None,
    pair_kappa: dict[str, float | None],
    fleiss: float | None,
    alpha: float | None,
    ccc: dict[str, dict[str, float | None]],
    pair_faces: dict[str, int],
    model_faces: int,
    multi_faces: int,
) -> StudyStats:
    """The :class:`StudyStats` of figures computed from face rows or from kept totals.

    One place for both :func:`compute_stats` and :func:`db.quality_totals.stats_from_totals`: it rounds the figures
    and names the model.
    """
    model_counts, human_counts, label_counts = counts_by_class
    all_counts = dict(counts)
    all_counts["annotators"] = annotators
    all_counts["corrected_faces"] = judged
    return StudyStats(
        study=study,
        counts=all_counts,
        model={
            "name": primary[0] if primary else None,
            "weights_hash": primary[1] if primary else None,
            "version": primary[2] if primary else None,
        },
        predictions_only=not judged,
        labels=tuple(labels),
        model_counts={k: model_counts.get(k, 0) for k in labels},
        human_counts={k: human_counts.get(k, 0) for k in labels},
        label_counts={k: label_counts.get(k, 0) for k in labels},
        confusion=tuple(tuple(int(v) for v in row) for row in cm),
        model_accuracy=clean_figure(accuracy) if accuracy is not None else None,
        model_kappa=clean_figure(model_kappa) if model_kappa is not None else None,
        annotator_kappa=pair_kappa,
        fleiss_kappa=clean_figure(fleiss) if fleiss is not None else None,
        krippendorff_alpha=clean_figure(alpha) if alpha is not None else None,
        ccc=ccc,
        annotator_pair_faces=pair_faces,
        model_faces=model_faces,
        multi_faces=multi_faces,
    )


def format_stats(s: StudyStats) -> str:
    """A human-readable summary of :class:`StudyStats` (what ``python -m db stats`` prints)."""
    c = s.counts
    lines = [
        f"study {s.study!r}: {c['media']} media, {c['faces']} faces, {c['predictions']} predictions, "
        f"{c['tracks']} tracks, {c['annotations']} annotations by {c['annotators']} annotators "
        f"({c['corrected_faces']} faces corrected)",
        f"crops stored: {c['crops']}/{c['faces']}, features stored: {c['features']}/{c['faces']}",
    ]
    if c.get("partial_media"):
        lines.append(
            f"partial: {c['partial_media']} recordings not analysed to the end (stopped, or running now); their "
            f"{c.get('partial_faces', 0)} faces are counted, have no tracks yet, and show media_status=partial in "
            "exports; run `affectlab analyze` on those files again to finish them"
        )
    if s.model["name"]:
        lines.append(f"model: {s.model['name']} (weights {s.model['weights_hash'] or 'unknown'})")
    if s.predictions_only:
        lines.append("no human corrections yet: labels are model predictions only")
    width = max([len(k) for k in s.labels] + [5])
    lines.append(f"{'class':<{width}}  model  human  label")
    for k in s.labels:
        lines.append(f"{k:<{width}}  {s.model_counts[k]:>5}  {s.human_counts[k]:>5}  {s.label_counts[k]:>5}")
    if not s.predictions_only:
        lines.append(f"model vs human: accuracy {_fmt(s.model_accuracy)}, Cohen's kappa {_fmt(s.model_kappa)}")
        for pair, kappa in s.annotator_kappa.items():
            lines.append(f"Cohen's kappa {pair}: {_fmt(kappa)}")
        lines.append(f"Fleiss' kappa {_fmt(s.fleiss_kappa)}, Krippendorff's alpha {_fmt(s.krippendorff_alpha)}")
        for f, v in s.ccc.items():
            if v["n"]:
                lines.append(f"CCC {f}: annotators {_fmt(v['annotators'])}, vs model {_fmt(v['model'])} (n={v['n']})")
    return "\n".join(lines)


def _fmt(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.3f}"


def pair_figures(
    annotators: Sequence[str], pair: Callable[[str, str], tuple[float, Callable[[], float]]]
) -> dict[str, tuple[float, float | None]]:
    """One figure per pair of annotators, from face rows or from kept totals alike.

    ``pair(a, b)`` gives the faces two annotators share and how to compute their figure over them; the result holds,
    per pair ``"a | b"`` sharing any face, that number and the figure once they share :data:`MIN_PAIR_ITEMS`.
    """
    out: dict[str, tuple[float, float | None]] = {}
    for a, b in itertools.combinations(annotators, 2):
        n, figure = pair(a, b)
        if n:
            out[f"{a} | {b}"] = (n, figure() if n >= MIN_PAIR_ITEMS else None)
    return out


def pair_kappas(pairs: Mapping[str, tuple[float, float | None]]) -> tuple[dict[str, int], dict[str, float | None]]:
    """The faces each pair shares and the Cohen's kappas of those that share enough (:func:`pair_figures`)."""
    faces = {key: int(n) for key, (n, _) in pairs.items()}
    return faces, {key: clean_figure(k) for key, (_, k) in pairs.items() if k is not None}


def mean_ccc(pairs: Mapping[str, tuple[float, float | None]]) -> float | None:
    """The mean CCC over the pairs of annotators that have one (:func:`pair_figures`; NaN ones left out)."""
    values = [c for _, c in pairs.values() if c is not None and not math.isnan(c)]
    return clean_figure(sum(values) / len(values)) if values else None
