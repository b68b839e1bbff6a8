"""Study statistics from the read model's kept totals, not face rows (as :func:`db.quality.compute_stats` gives)."""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from db import agreement
from db.labels import NUMERIC_FIELDS, ModelKey
from db.quality import assemble_stats, clean_figure, mean_ccc, pair_figures, pair_kappas
from db.rows import StudyStats
from models.registry import EMOTIONS_8


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
    counts_by_class, labels, cm = _classes_from_totals(cells, tally, classes)
    n_both = int(cm.sum())
    accuracy = float(np.trace(cm)) / n_both if n_both else None
    model_kappa = agreement.kappa_of_matrix(cm) if n_both else None
    annotators = sorted(names[int(k[0])] for k in tally.get("ann", {}))
    pair_faces, pair_kappa = pair_kappas(pair_figures(annotators, _kappa_from_totals(tally, names)))
    multi = int(sum(v[0] for v in tally.get("multi", {}).values()))
    fleiss, alpha = _fleiss_alpha_from_totals(tally, multi) if multi else (None, None)
    judged = tally.get("judged", {}).get(("", "", "", ""))
    return assemble_stats(
        study,
        counts,
        primary,
        labels,
        annotators=len(annotators),
        judged=int(judged[0]) if judged else 0,
        counts_by_class=counts_by_class,
        cm=cm,
        accuracy=accuracy,
        model_kappa=model_kappa,
        pair_kappa=pair_kappa,
        fleiss=fleiss,
        alpha=alpha,
        ccc=_ccc_from_totals(tally, names, annotators),
        pair_faces=pair_faces,
        model_faces=n_both,
        multi_faces=multi,
    )


def _classes_from_totals(
    cells: Sequence[tuple[str, str, int]],
    tally: Mapping[str, Mapping[tuple[str, ...], Sequence[float]]],
    classes: Sequence[str],
) -> tuple[tuple[Counter[str], Counter[str], Counter[str]], tuple[str, ...], Any]:
    """The model, human and label counts per class, the classes in order and the model-vs-human confusion."""
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
    return (model_counts, human_counts, label_counts), labels, cm


def _kappa_from_totals(
    tally: Mapping[str, Mapping[tuple[str, ...], Sequence[float]]], names: Mapping[int, str]
) -> Callable[[str, str], tuple[float, Callable[[], float]]]:
    """:func:`pair_figures`' ``pair`` of Cohen's kappa from the kept class pairs of two annotators."""
    by_pair: dict[str, Counter[tuple[str, str]]] = defaultdict(Counter)
    for (a, b, ca, cb), v in tally.get("pair", {}).items():
        na, nb = names[int(a)], names[int(b)]
        key, cell = (f"{na} | {nb}", (ca, cb)) if na < nb else (f"{nb} | {na}", (cb, ca))
        by_pair[key][cell] += int(v[0])

    def kappa(got: Counter[tuple[str, str]]) -> float:
        cats = sorted({c for pair in got for c in pair}, key=str)
        at = {c: i for i, c in enumerate(cats)}
        pm = np.zeros((len(cats), len(cats)), dtype=np.int64)
        for (ca, cb), n in got.items():
            pm[at[ca], at[cb]] += n
        return agreement.kappa_of_matrix(pm)

    def pair(a: str, b: str) -> tuple[float, Callable[[], float]]:
        got = by_pair.get(f"{a} | {b}")
        return (sum(got.values()), lambda: kappa(got)) if got else (0, lambda: float("nan"))

    return pair


def _fleiss_alpha_from_totals(
    tally: Mapping[str, Mapping[tuple[str, ...], Sequence[float]]], multi: int
) -> tuple[float, float]:
    """Fleiss' kappa and Krippendorff's alpha from the kept per-face category counts of ``multi`` faces (1 or more)."""
    cat = {k[0]: int(v[0]) for k, v in tally.get("cat", {}).items()}
    total = sum(cat.values())
    p_bar = sum(v[0] / (int(k[0]) * (int(k[0]) - 1)) for k, v in tally.get("fl", {}).items()) / multi
    p_e = sum((n / total) ** 2 for n in cat.values())
    fleiss = float("nan") if p_e == 1.0 else (p_bar - p_e) / (1.0 - p_e)
    d_o = sum(v[0] / (int(k[0]) - 1) for k, v in tally.get("ka", {}).items()) / total
    d_e = (total**2 - sum(n * n for n in cat.values())) / (total * (total - 1))
    alpha = float("nan") if d_e == 0 else 1.0 - d_o / d_e
    return fleiss, alpha


def _ccc_from_totals(
    tally: Mapping[str, Mapping[tuple[str, ...], Sequence[float]]], names: Mapping[int, str], annotators: Sequence[str]
) -> dict[str, dict[str, float | None]]:
    """The CCC figures of each numeric field from the kept moments (as :func:`_stats` from face rows)."""
    ccc: dict[str, dict[str, float | None]] = {}
    for f in NUMERIC_FIELDS:
        moments: dict[str, Sequence[float]] = {}
        for (field, a, b, _), v in tally.get("ccc", {}).items():
            if field == f:
                na, nb = names[int(a)], names[int(b)]
                moments[f"{na} | {nb}" if na < nb else f"{nb} | {na}"] = v

        def pair(a: str, b: str, moments: dict[str, Sequence[float]] = moments) -> tuple[float, Callable[[], float]]:
            mom = moments.get(f"{a} | {b}")
            return (mom[0], lambda: _ccc_of(mom)) if mom is not None else (0, lambda: float("nan"))

        vsm = tally.get("vsm", {}).get((f, "", "", ""))
        nf = tally.get("nf", {}).get((f, "", "", ""))
        ccc[f] = {
            "annotators": mean_ccc(pair_figures(annotators, pair)),
            "model": clean_figure(_ccc_of(vsm)) if vsm else None,
            "n": int(nf[0]) if nf else 0,
        }
    return ccc


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
