"""The training objective of full fine-tuning: sharpness-aware minimisation, class weights and smoothed cross-entropy.

These are the pieces of HSEmotion's ``train_emotions-pytorch`` recipe that :mod:`models.train_backbone` runs.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence

import numpy as np
import torch
from torch import nn


class SAM:
    """Sharpness-aware minimisation around Adam (the seed's ``RobustOptimizer``; Foret et al. 2021).

    Each step computes the gradient, moves the weights by ``rho`` along it (normalised), computes the gradient there
    and applies it with Adam at the original weights.
    """

    def __init__(self, params: Iterable[nn.Parameter], lr: float, rho: float) -> None:
        """Wraps Adam over ``params``."""
        self.params = [p for p in params if p.requires_grad]
        self.rho = rho
        self.base = torch.optim.Adam(self.params, lr=lr)

    def zero_grad(self) -> None:
        """Clears the gradients."""
        self.base.zero_grad(set_to_none=True)

    def step(self, closure: Callable[[], torch.Tensor]) -> torch.Tensor:
        """One update; ``closure`` computes the loss and its gradients (``backward``) and returns the loss."""
        self.zero_grad()
        loss = closure()
        if self.rho <= 0:
            self.base.step()
            return loss
        grads = [p.grad for p in self.params if p.grad is not None]
        if not grads:
            return loss
        norm = torch.norm(torch.stack([g.norm(2) for g in grads]), 2)
        scale = self.rho / (norm + 1e-12)
        moved: list[tuple[nn.Parameter, torch.Tensor]] = []
        with torch.no_grad():
            for p in self.params:
                if p.grad is not None:
                    e = p.grad * scale
                    p.add_(e)
                    moved.append((p, e))
        self.zero_grad()
        closure()
        with torch.no_grad():
            for p, e in moved:
                p.sub_(e)
        self.base.step()
        return loss


def class_weights(labels: Sequence[int], k: int) -> torch.Tensor:
    """``1 / count`` per class scaled so the most frequent weighs 1 (0 for classes without training images)."""
    counts = np.bincount(np.asarray(labels, dtype=np.int64), minlength=k).astype(np.float64)
    w = np.where(counts > 0, 1.0 / np.maximum(counts, 1), 0.0)
    present = w[counts > 0]
    return torch.from_numpy(w / present.min()).float() if present.size else torch.ones(k)


def smoothed_cross_entropy(
    logits: torch.Tensor, target: torch.Tensor, weight: torch.Tensor | None, smoothing: float
) -> torch.Tensor:
    """The reference's loss: mean over the batch of ``-sum_c w_c * q_c * log_softmax(logits)_c``.

    ``q`` is the one-hot target smoothed towards uniform (``(1 - s) * onehot + s / K``).
    """
    k = logits.shape[1]
    soft = torch.full_like(logits, smoothing / k)
    soft.scatter_(1, target[:, None], 1 - smoothing + smoothing / k)
    if weight is not None:
        soft = soft * weight[None, :]
    return -(soft * torch.log_softmax(logits, dim=1)).sum(1).mean()
