"""Fine-tuning a model's linear head on human-corrected faces, with an honest before/after.

The backbone stays frozen: the stored backbone features of corrected faces are the training data, as in the seed
author's own adaptation of the EfficientNet features with light classifiers. The new head starts from the original
one and is pulled towards it by an L2 penalty, so a handful of corrections nudges it rather than replacing it.

The before/after figure comes from group-disjoint cross-validation: no media item (or, when tracks exist, no person
track) is in both the training and the test part of a fold, so the figure says how the head does on people it has not
seen. Both heads are scored on the same held-out faces.

Targets:
    emotion: the class rows of the head (multinomial logistic regression, class-weighted for rare classes);
        accuracy, macro-F1 and the confusion matrix.
    va: the valence/arousal rows (``*_va_mtl`` models; ridge regression); CCC of each.
    engagement: a new single-output head on the features predicting EngageWild's levels (0, 0.33, 0.66, 1); MSE and
        accuracy of the nearest level, against the engagement model's per-face score.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Literal, SupportsFloat

import numpy as np
import numpy.typing as npt
import torch

from models import registry

Target = Literal["emotion", "va", "engagement"]
ENGAGEMENT_LEVELS = np.array(registry.ENGAGEMENT_LEVELS)
MIN_FACES = 20
"""Fewest corrected faces for a judgement (and for saving a head)."""
MAIN_METRIC: dict[str, tuple[str, str, bool]] = {
    "emotion": ("macro_f1", "macro-F1", True),
    "va": ("ccc_mean", "mean CCC", True),
    "engagement": ("mse", "MSE", False),
}
"""Per target: the metric that decides whether a head is better, its name for people, and whether higher is better."""
MIN_GROUPS = 3
"""Fewest distinct groups (media items or tracks): cross-validation needs held-out people."""


@dataclass(frozen=True)
class TrainingSet:
    """Corrected faces of one study, ready for a head.

    Attributes:
        features: (N, F) float32 backbone features.
        targets: Class indices (N,) for ``emotion``; (N, 2) valence/arousal for ``va``; (N,) levels for ``engagement``.
        groups: (N,) group keys (``media:ID`` or ``track:ID``): never split across train and test.
        baseline: The original model's output for each face, in the target's form (class index, (V, A), P(engaged)).
        classes: Class names (emotion target).
        face_ids: The faces' ids, for the data fingerprint.
    """

    features: np.ndarray
    targets: np.ndarray
    groups: np.ndarray
    baseline: np.ndarray
    classes: tuple[str, ...] = ()
    face_ids: tuple[int, ...] = ()

    def fingerprint(self) -> str:
        """SHA-256 over the face ids and targets: identifies the training data of a head."""
        h = hashlib.sha256()
        h.update(json.dumps(list(self.face_ids)).encode())
        h.update(np.ascontiguousarray(self.targets, dtype=np.float64).tobytes())
        return h.hexdigest()


@dataclass(frozen=True)
class FineTuneReport:
    """Before/after figures of a fine-tuning run.

    Attributes:
        target: ``emotion``, ``va`` or ``engagement``.
        n_faces: Corrected faces used.
        n_groups: Distinct groups among them.
        n_folds: Cross-validation folds (0 when there was too little data).
        enough: Whether there was enough data to judge (and so to save).
        message: A sentence for people: the verdict, or how many more corrections are needed.
        before: Metrics of the original head on the held-out faces.
        after: Metrics of the fine-tuned head on the same faces.
        classes: Class names of the confusion matrices.
    """

    target: str
    n_faces: int
    n_groups: int
    n_folds: int
    enough: bool
    message: str
    before: dict[str, object] = field(default_factory=dict)
    after: dict[str, object] = field(default_factory=dict)
    classes: tuple[str, ...] = ()

    def to_json(self) -> dict[str, object]:
        """A JSON-able dict."""
        return asdict(self)

    @property
    def improved(self) -> bool:
        """Whether the new head beat the original on the main metric."""
        key, _, higher = MAIN_METRIC[self.target]
        if not self.enough or key not in self.before:
            return False
        b, a = self.before[key], self.after[key]
        if not (isinstance(b, SupportsFloat) and isinstance(a, SupportsFloat)):
            return False
        return float(a) > float(b) if higher else float(a) < float(b)


# ---------------------------------------------------------------- metrics


def confusion(y_true: np.ndarray, y_pred: np.ndarray, k: int) -> np.ndarray:
    """The k x k confusion matrix (rows: truth, columns: prediction)."""
    m = np.zeros((k, k), dtype=np.int64)
    np.add.at(m, (y_true.astype(int), y_pred.astype(int)), 1)
    return m


def macro_f1(cm: np.ndarray) -> float:
    """Macro-F1 over the classes present in truth or prediction."""
    tp = np.diag(cm).astype(float)
    support, predicted = cm.sum(1), cm.sum(0)
    present = (support + predicted) > 0
    f1 = np.divide(2 * tp, support + predicted, out=np.zeros_like(tp), where=(support + predicted) > 0)
    return float(f1[present].mean()) if present.any() else 0.0


def ccc(x: np.ndarray, y: np.ndarray) -> float:
    """Lin's concordance correlation coefficient."""
    x, y = np.asarray(x, float), np.asarray(y, float)
    if len(x) < 2:
        return float("nan")
    mx, my = x.mean(), y.mean()
    cov = ((x - mx) * (y - my)).mean()
    denom = x.var() + y.var() + (mx - my) ** 2
    return float(2 * cov / denom) if denom > 0 else float("nan")


def nearest_level(v: np.ndarray) -> np.ndarray:
    """Index of the nearest EngageWild level for each value."""
    nearest: npt.NDArray[np.intp] = np.abs(np.asarray(v, float)[:, None] - ENGAGEMENT_LEVELS[None]).argmin(1)
    return nearest


# ---------------------------------------------------------------- fitting


def fit_emotion_head(
    x: np.ndarray,
    y: np.ndarray,
    w0: np.ndarray,
    b0: np.ndarray,
    *,
    l2: float = 1e-2,
    balanced: bool = True,
    max_iter: int = 200,
) -> tuple[np.ndarray, np.ndarray]:
    """Multinomial logistic regression started at, and pulled towards, the original head.

    Args:
        x: (N, F) features.
        y: (N,) class indices.
        w0: (K, F) original class weights.
        b0: (K,) original biases.
        l2: Strength of the penalty ``l2 * ||W - W0||^2`` (per sample).
        balanced: Weight classes inversely to their frequency (rare classes count as much as common ones).
        max_iter: L-BFGS iterations.

    Returns:
        The new (W, b).
    """
    k = w0.shape[0]
    xt = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)).double()
    yt = torch.from_numpy(y.astype(np.int64))
    counts = np.bincount(y, minlength=k).astype(float)
    cw = np.where(counts > 0, len(y) / (k * np.maximum(counts, 1)), 0.0) if balanced else np.ones(k)
    weight = torch.from_numpy(cw)
    w_init = torch.from_numpy(w0.astype(np.float64))
    b_init = torch.from_numpy(b0.astype(np.float64))
    w = w_init.clone().requires_grad_(True)
    b = b_init.clone().requires_grad_(True)
    opt = torch.optim.LBFGS([w, b], max_iter=max_iter, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        opt.zero_grad()
        logits = xt @ w.T + b
        loss = torch.nn.functional.cross_entropy(logits, yt, weight=weight)
        loss = loss + l2 * ((w - w_init) ** 2).sum()
        loss.backward()
        return loss

    with torch.enable_grad():
        opt.step(closure)
    return w.detach().float().numpy(), b.detach().float().numpy()


def fit_ridge(x: np.ndarray, y: np.ndarray, w0: np.ndarray | None, *, l2: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """Ridge regression towards an initial head: argmin ||X W^T + b - Y||^2 + l2 ||W - W0||^2.

    Args:
        x: (N, F) features.
        y: (N, M) targets.
        w0: (M, F) initial weights, or None for zeros (the bias needs no prior: it is fitted in closed form).
        l2: Penalty strength.

    Returns:
        (W, b) with W (M, F) and b (M,).
    """
    y = y.reshape(len(y), -1).astype(np.float64)
    m = y.shape[1]
    w0 = np.zeros((m, x.shape[1])) if w0 is None else w0.astype(np.float64)
    xm, ym = x.mean(0), y.mean(0)
    xc, yc = x - xm, y - ym
    # Solve for D = W - W0: (Xc^T Xc + l2 I) D^T = Xc^T (Yc - Xc W0^T)
    a = xc.T @ xc + l2 * np.eye(x.shape[1])
    d = np.linalg.solve(a, xc.T @ (yc - xc @ w0.T)).T
    w = w0 + d
    b = ym - w @ xm
    return w.astype(np.float32), b.astype(np.float32)


# ---------------------------------------------------------------- cross-validation


def _folds(groups: np.ndarray, n_folds: int) -> list[np.ndarray]:
    """Group-disjoint folds, balanced by size (largest groups first, each to the smallest fold)."""
    uniq, counts = np.unique(groups, return_counts=True)
    order = np.argsort(-counts, kind="stable")
    sizes = np.zeros(n_folds, dtype=int)
    fold_of: dict[str, int] = {}
    for i in order:
        f = int(np.argmin(sizes))
        fold_of[str(uniq[i])] = f
        sizes[f] += counts[i]
    assignment = np.array([fold_of[str(g)] for g in groups])
    return [np.flatnonzero(assignment == f) for f in range(n_folds)]


def _check_enough(data: TrainingSet, target: Target) -> tuple[bool, str]:
    n = len(data.targets)
    n_groups = len(np.unique(data.groups))
    if n < MIN_FACES or n_groups < MIN_GROUPS:
        return False, (
            f"Not enough corrections to judge a new head: {n} corrected faces in {n_groups} media items or tracks; "
            f"at least {MIN_FACES} faces in {MIN_GROUPS} different media items or tracks are needed "
            f"({max(0, MIN_FACES - n)} more faces, {max(0, MIN_GROUPS - n_groups)} more media items). "
            "Nothing was saved."
        )
    if target == "emotion" and len(np.unique(data.targets)) < 2:
        return False, (
            "All corrections name the same class: a classifier cannot be judged on one class. Nothing was saved."
        )
    return True, ""


def cross_validate(
    data: TrainingSet,
    target: Target,
    head_w: np.ndarray,
    head_b: np.ndarray,
    *,
    n_folds: int = 5,
    l2: float | None = None,
) -> FineTuneReport:
    """Scores the original head and a head fine-tuned on the other folds, on each held-out fold.

    Args:
        data: The corrected faces.
        target: What to fine-tune.
        head_w: The original head rows for the target ((K, F) classes, (2, F) V/A; ignored for engagement).
        head_b: Their biases.
        n_folds: At most this many folds (fewer when there are fewer groups).
        l2: Penalty strength; None for the target's default.

    Returns:
        The report; ``enough`` is False (with the reason) when the data cannot support a judgement.
    """
    n, n_groups = len(data.targets), len(np.unique(data.groups))
    ok, why = _check_enough(data, target)
    if not ok:
        return FineTuneReport(target, n, n_groups, 0, False, why, classes=data.classes)
    k_folds = min(n_folds, n_groups)
    folds = _folds(data.groups, k_folds)
    pred_after = np.zeros_like(data.targets, dtype=np.float64)
    for test in folds:
        train = np.setdiff1d(np.arange(n), test)
        w, b = fit_head(data.features[train], data.targets[train], target, head_w, head_b, l2=l2)
        pred_after[test] = predict_head(data.features[test], w, b, target)
    before = _metrics(data.targets, data.baseline, target, len(data.classes))
    after = _metrics(data.targets, pred_after, target, len(data.classes))
    report = FineTuneReport(target, n, n_groups, k_folds, True, "", before, after, data.classes)
    verdict = "better than" if report.improved else "not better than"
    key, main, _ = MAIN_METRIC[target]
    msg = (
        f"On {n} corrected faces held out by {k_folds}-fold group cross-validation the fine-tuned head is {verdict} "
        f"the original ({main} {after[key]:.3f} vs {before[key]:.3f})."
    )
    return FineTuneReport(target, n, n_groups, k_folds, True, msg, before, after, data.classes)


def fit_head(
    x: np.ndarray,
    y: np.ndarray,
    target: Target,
    head_w: np.ndarray | None,
    head_b: np.ndarray | None,
    *,
    l2: float | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Fits the target's head rows on features (see the module docstring)."""
    if target == "emotion":
        assert head_w is not None and head_b is not None
        return fit_emotion_head(x, y.astype(int), head_w, head_b, l2=1e-2 if l2 is None else l2)
    if target == "va":
        return fit_ridge(x, y, head_w, l2=1.0 if l2 is None else l2)
    return fit_ridge(x, y, None, l2=1.0 if l2 is None else l2)


def predict_head(x: np.ndarray, w: np.ndarray, b: np.ndarray, target: Target) -> np.ndarray:
    """Predictions of head rows in the target's form (class index, (V, A) clipped, level value clipped)."""
    out: npt.NDArray[np.float64] = x.astype(np.float64) @ w.T.astype(np.float64) + b
    if target == "emotion":
        classes: npt.NDArray[np.intp] = out.argmax(1)  # argmax over an axis is typed Any
        return classes
    if target == "va":
        return np.clip(out, -1, 1)
    return np.clip(out[:, 0], 0, 1)


def _metrics(truth: np.ndarray, pred: np.ndarray, target: Target, k: int) -> dict[str, object]:
    if target == "emotion":
        cm = confusion(truth, pred, k)
        return {"accuracy": float(np.trace(cm) / max(cm.sum(), 1)), "macro_f1": macro_f1(cm), "confusion": cm.tolist()}
    if target == "va":
        cv, ca = ccc(truth[:, 0], pred[:, 0]), ccc(truth[:, 1], pred[:, 1])
        return {"ccc_valence": cv, "ccc_arousal": ca, "ccc_mean": float(np.nanmean([cv, ca]))}
    mse = float(np.mean((truth - pred) ** 2))
    acc = float(np.mean(nearest_level(truth) == nearest_level(pred)))
    return {"mse": mse, "accuracy": acc}


# ---------------------------------------------------------------- versions


def version_name(base: str, study: str, target: Target, when: datetime | None = None) -> str:
    """A readable, unique-enough name: ``<base>@<study>-<target>-<UTC timestamp>``."""
    when = when or datetime.now(UTC)
    slug = re.sub(r"[^A-Za-z0-9_-]+", "-", study).strip("-")[:40] or "study"
    return f"{base}@{slug}-{target}-{when.strftime('%Y%m%d%H%M%S')}"
