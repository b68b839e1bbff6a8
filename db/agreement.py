"""Agreement statistics, written out with numpy (checked against scikit-learn in the tests).

- :func:`confusion_matrix` and :func:`cohen_kappa` for two raters (or the model against the humans);
- :func:`fleiss_kappa` for many raters, with a varying number of raters per item;
- :func:`krippendorff_alpha` (nominal or interval) for any raters with missing ratings;
- :func:`ccc`, Lin's concordance correlation coefficient, for valence, arousal and engagement.

Each function returns ``nan`` where the statistic is undefined (too few items, no variation).
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence

import numpy as np


def confusion_matrix(y_true: Sequence[Hashable], y_pred: Sequence[Hashable], labels: Sequence[Hashable]) -> np.ndarray:
    """Counts ``C[i, j]`` of items with true class ``labels[i]`` and predicted class ``labels[j]``.

    Pairs with a class outside ``labels`` are ignored.
    """
    index = {lab: i for i, lab in enumerate(labels)}
    cm = np.zeros((len(labels), len(labels)), dtype=np.int64)
    for t, p in zip(y_true, y_pred, strict=True):
        if t in index and p in index:
            cm[index[t], index[p]] += 1
    return cm


def cohen_kappa(a: Sequence[Hashable], b: Sequence[Hashable], labels: Sequence[Hashable] | None = None) -> float:
    """Cohen's kappa of two raters' labels on the same items: ``(p_o - p_e) / (1 - p_e)``."""
    if len(a) != len(b):
        raise ValueError(f"the raters labelled {len(a)} and {len(b)} items; give both ratings of each item")
    if labels is None:
        labels = sorted(set(a) | set(b), key=str)
    return kappa_of_matrix(confusion_matrix(a, b, labels))


def kappa_of_matrix(cm: np.ndarray) -> float:
    """Cohen's kappa of a confusion matrix of two raters (NaN when empty, or when chance agreement is certain)."""
    m = cm.astype(np.float64)
    n = m.sum()
    if n == 0:
        return float("nan")
    p_o = np.trace(m) / n
    p_e = float(m.sum(axis=1) @ m.sum(axis=0)) / n**2
    if p_e == 1.0:
        return float("nan")
    return float((p_o - p_e) / (1.0 - p_e))


def category_counts(ratings: Sequence[Sequence[Hashable | None]], labels: Sequence[Hashable]) -> np.ndarray:
    """Items x categories matrix of how many raters chose each category (None ratings are skipped)."""
    index = {lab: i for i, lab in enumerate(labels)}
    counts = np.zeros((len(ratings), len(labels)), dtype=np.int64)
    for i, item in enumerate(ratings):
        for r in item:
            if r is not None and r in index:
                counts[i, index[r]] += 1
    return counts


def fleiss_kappa(counts: np.ndarray) -> float:
    """Fleiss' kappa from an items x categories count matrix.

    Items rated by fewer than two raters are dropped; the number of raters may vary between items (per-item
    agreement ``P_i = (sum_j n_ij^2 - n_i) / (n_i (n_i - 1))``, category shares over all ratings).
    """
    counts = np.asarray(counts, dtype=np.float64)
    n_i = counts.sum(axis=1)
    counts, n_i = counts[n_i >= 2], n_i[n_i >= 2]
    if len(counts) == 0:
        return float("nan")
    p_i = ((counts**2).sum(axis=1) - n_i) / (n_i * (n_i - 1))
    p_bar = p_i.mean()
    p_j = counts.sum(axis=0) / n_i.sum()
    p_e = float((p_j**2).sum())
    if p_e == 1.0:
        return float("nan")
    return float((p_bar - p_e) / (1.0 - p_e))


def krippendorff_alpha(data: Sequence[Sequence[object]], level: str = "nominal") -> float:
    """Krippendorff's alpha of a units x raters table with None (or nan) for missing ratings.

    Args:
        data: One row per unit (item), one column per rater.
        level: ``nominal`` (classes) or ``interval`` (numbers).

    Returns:
        ``1 - D_o / D_e`` over the pairable values (units with at least two ratings).
    """
    if level not in ("nominal", "interval"):
        raise ValueError(f"level must be 'nominal' or 'interval', got {level!r}")
    units = []
    for row in data:
        vals = [v for v in row if v is not None and not (isinstance(v, float) and np.isnan(v))]
        if len(vals) >= 2:
            units.append(vals)
    if not units:
        return float("nan")
    all_vals = [v for u in units for v in u]
    n = len(all_vals)
    if level == "nominal":
        cats = {v: i for i, v in enumerate(sorted(set(all_vals), key=str))}

        def pair_sum(vals: list[object]) -> float:
            # Sum over ordered pairs i != j of [v_i != v_j] = m^2 - sum_c n_c^2.
            c = np.bincount([cats[v] for v in vals], minlength=len(cats)).astype(np.float64)
            return float(len(vals) ** 2 - (c**2).sum())

    else:

        def pair_sum(vals: list[object]) -> float:
            # Sum over ordered pairs of (v_i - v_j)^2 = 2 m sum (v - mean)^2.
            x = np.asarray(vals, dtype=np.float64)
            return float(2 * len(x) * ((x - x.mean()) ** 2).sum())

    d_o = sum(pair_sum(u) / (len(u) - 1) for u in units) / n
    d_e = pair_sum(all_vals) / (n * (n - 1))
    if d_e == 0:
        return float("nan")
    return float(1.0 - d_o / d_e)


def ccc(x: Sequence[float], y: Sequence[float]) -> float:
    """Lin's concordance correlation coefficient ``2 cov / (var_x + var_y + (mean_x - mean_y)^2)``.

    Population moments (ddof 0); pairs with a nan are dropped.
    """
    a = np.asarray(x, dtype=np.float64)
    b = np.asarray(y, dtype=np.float64)
    if a.shape != b.shape:
        raise ValueError(f"ccc needs paired values, got {a.shape} and {b.shape}")
    keep = ~(np.isnan(a) | np.isnan(b))
    a, b = a[keep], b[keep]
    if len(a) < 2:
        return float("nan")
    cov = ((a - a.mean()) * (b - b.mean())).mean()
    denom = a.var() + b.var() + (a.mean() - b.mean()) ** 2
    if denom == 0:
        return float("nan")
    return float(2 * cov / denom)
