"""Study statistics: counts per class, model-vs-human confusion, inter-annotator agreement, CCC."""

from __future__ import annotations

import itertools
import math
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, NamedTuple

import numpy as np

from db import agreement
from db.labels import NUMERIC_FIELDS, ModelKey
from db.rows import FaceLabel, Judgement, StudyStats
from models.registry import EMOTIONS_8

MIN_PAIR_ITEMS = 2
"""Faces two annotators must share before their pairwise kappa or CCC is computed at all."""
MIN_KAPPA_FACES = 10
"""Shared faces below which a kappa is not shown to people (the app, with the reason): on a handful of faces one vote
swings it from -1 to 1. Each figure's face count is in :class:`db.rows.StudyStats` (``*_faces``)."""


def _clean(x: float) -> float | None:
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
    pair_kappa: dict[str, float | None] = {}
    pair_faces: dict[str, int] = {}
    for a, b in itertools.combinations(annotators, 2):
        common = [t for t in table if a in t and b in t]
        if common:
            pair_faces[f"{a} | {b}"] = len(common)
        if len(common) >= MIN_PAIR_ITEMS:
            pair_kappa[f"{a} | {b}"] = _clean(agreement.cohen_kappa([t[a] for t in common], [t[b] for t in common]))
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
        pairs: list[float] = []
        for a, b in itertools.combinations(annotators, 2):
            both_values = [v for v in values if a in v and b in v]
            if len(both_values) >= MIN_PAIR_ITEMS:
                pairs.append(agreement.ccc([v[a] for v in both_values], [v[b] for v in both_values]))
        pairs = [p for p in pairs if not math.isnan(p)]
        model_attr = f"model_{f}"
        vs_model = [
            (getattr(r, f), getattr(r, model_attr))
            for r in judged
            if getattr(r, f"{f}_source") == "human" and getattr(r, model_attr) is not None
        ]
        ccc[f] = {
            "annotators": _clean(sum(pairs) / len(pairs)) if pairs else None,
            "model": _clean(agreement.ccc([h for h, _ in vs_model], [m for _, m in vs_model])) if vs_model else None,
            "n": sum(1 for r in judged if getattr(r, f"{f}_source") == "human"),
        }

    return _assemble(
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


def _assemble(
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

    One place for both :func:`compute_stats` and :func:`stats_from_totals`: it rounds the figures and names the model.
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
        model_accuracy=_clean(accuracy) if accuracy is not None else None,
        model_kappa=_clean(model_kappa) if model_kappa is not None else None,
        annotator_kappa=pair_kappa,
        fleiss_kappa=_clean(fleiss) if fleiss is not None else None,
        krippendorff_alpha=_clean(alpha) if alpha is not None else None,
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


def stats_from_totals(
    study: str,
    counts: dict[str, int],
    primary: ModelKey | None,
    *,
    cells: Sequence[tuple[str, str, int]],
    tally: Mapping[str, Mapping[tuple[str, ...], Sequence[float]]],
    names: Mapping[int, str],
    classes: Sequence[str] = (),
) -> StudyStats:
    """What :func:`compute_stats` gives, from kept totals instead of face rows (:func:`db.status.study_stats`).

    Args:
        study: The study's name.
        counts: Row counts (:func:`db.repo.count_rows`).
        primary: The model run the rows follow.
        cells: ``(model class, human class, faces)`` over the whole study (``""``: none).
        tally: The summed tallies per kind and keys (:func:`db.status_tallies.face_tallies` says what each holds).
        names: Annotator id to name.
        classes: The model's classes in output order.
    """
    model_counts: Counter[str] = Counter()
    human_counts: Counter[str] = Counter()
    label_counts: Counter[str] = Counter()
    for ml, hl, n in cells:
        if n <= 0:
            continue
        if ml:
            model_counts[ml] += n
        if hl:
            human_counts[hl] += n
        if hl or ml:
            label_counts[hl or ml] += n
    order = list(classes) or list(EMOTIONS_8)
    extra = {k[0] for k in tally.get("jl", {})} | set(label_counts)
    labels = (*order, *sorted(extra - set(order)))
    index = {lab: i for i, lab in enumerate(labels)}
    cm = np.zeros((len(labels), len(labels)), dtype=np.int64)
    for ml, hl, n in cells:
        if n > 0 and ml and hl and ml in index and hl in index:
            cm[index[hl], index[ml]] += n
    n_both = int(cm.sum())
    accuracy = float(np.trace(cm)) / n_both if n_both else None
    model_kappa = agreement.kappa_of_matrix(cm) if n_both else None

    annotators = sorted(names[int(k[0])] for k in tally.get("ann", {}))
    by_pair: dict[str, Counter[tuple[str, str]]] = defaultdict(Counter)
    for (a, b, ca, cb), v in tally.get("pair", {}).items():
        na, nb = names[int(a)], names[int(b)]
        key, cell = (f"{na} | {nb}", (ca, cb)) if na < nb else (f"{nb} | {na}", (cb, ca))
        by_pair[key][cell] += int(v[0])
    pair_kappa: dict[str, float | None] = {}
    pair_faces: dict[str, int] = {}
    for a, b in itertools.combinations(annotators, 2):
        got = by_pair.get(f"{a} | {b}")
        common = sum(got.values()) if got else 0
        if common:
            pair_faces[f"{a} | {b}"] = common
        if got and common >= MIN_PAIR_ITEMS:
            cats = sorted({c for pair in got for c in pair}, key=str)
            at = {c: i for i, c in enumerate(cats)}
            pm = np.zeros((len(cats), len(cats)), dtype=np.int64)
            for (ca, cb), n in got.items():
                pm[at[ca], at[cb]] += n
            pair_kappa[f"{a} | {b}"] = _clean(agreement.kappa_of_matrix(pm))
    multi = int(sum(v[0] for v in tally.get("multi", {}).values()))
    fleiss = alpha = None
    if multi:
        cat = {k[0]: int(v[0]) for k, v in tally.get("cat", {}).items()}
        total = sum(cat.values())
        p_bar = sum(v[0] / (int(k[0]) * (int(k[0]) - 1)) for k, v in tally.get("fl", {}).items()) / multi
        p_e = sum((n / total) ** 2 for n in cat.values())
        fleiss = float("nan") if p_e == 1.0 else (p_bar - p_e) / (1.0 - p_e)
        d_o = sum(v[0] / (int(k[0]) - 1) for k, v in tally.get("ka", {}).items()) / total
        d_e = (total**2 - sum(n * n for n in cat.values())) / (total * (total - 1))
        alpha = float("nan") if d_e == 0 else 1.0 - d_o / d_e

    ccc: dict[str, dict[str, float | None]] = {}
    for f in NUMERIC_FIELDS:
        moments: dict[str, Sequence[float]] = {}
        for (field, a, b, _), v in tally.get("ccc", {}).items():
            if field == f:
                na, nb = names[int(a)], names[int(b)]
                moments[f"{na} | {nb}" if na < nb else f"{nb} | {na}"] = v
        pairs: list[float] = []
        for a, b in itertools.combinations(annotators, 2):
            mom = moments.get(f"{a} | {b}")
            if mom is not None and mom[0] >= MIN_PAIR_ITEMS:
                pairs.append(_ccc_of(mom))
        pairs = [p for p in pairs if not math.isnan(p)]
        vsm = tally.get("vsm", {}).get((f, "", "", ""))
        nf = tally.get("nf", {}).get((f, "", "", ""))
        ccc[f] = {
            "annotators": _clean(sum(pairs) / len(pairs)) if pairs else None,
            "model": _clean(_ccc_of(vsm)) if vsm else None,
            "n": int(nf[0]) if nf else 0,
        }

    judged = tally.get("judged", {}).get(("", "", "", ""))
    n_judged = int(judged[0]) if judged else 0
    return _assemble(
        study,
        counts,
        primary,
        labels,
        annotators=len(annotators),
        judged=n_judged,
        counts_by_class=(model_counts, human_counts, label_counts),
        cm=cm,
        accuracy=accuracy,
        model_kappa=model_kappa,
        pair_kappa=pair_kappa,
        fleiss=fleiss,
        alpha=alpha,
        ccc=ccc,
        pair_faces=pair_faces,
        model_faces=n_both,
        multi_faces=multi,
    )


def _ccc_of(v: Sequence[float]) -> float:
    """Lin's CCC (as :func:`db.agreement.ccc`) from ``[n, sum x, sum y, sum x^2, sum y^2, sum xy]``.

    A denominator within rounding of zero (every value the same) is zero: the running sums of a constant are not
    exactly its square.
    """
    n, sx, sy, sxx, syy, sxy = (float(x) for x in v)
    if n < 2:
        return float("nan")
    mx, my = sx / n, sy / n
    var_x, var_y = max(sxx / n - mx * mx, 0.0), max(syy / n - my * my, 0.0)
    cov = sxy / n - mx * my
    denom = var_x + var_y + (mx - my) ** 2
    if denom <= 1e-12 * max(sxx / n + syy / n, 1e-300):
        return float("nan")
    return float(2 * cov / denom)
