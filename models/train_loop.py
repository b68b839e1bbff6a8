"""The training loop of full fine-tuning: the recipe, the crops dataset, the two phases (SAM), predictions, metrics."""

from __future__ import annotations

import copy
import functools
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from models.registry import ModelSpec
from models.sam import SAM, class_weights, smoothed_cross_entropy
from models.train_data import ImageFolderExport, Sample


@dataclass(frozen=True)
class Recipe:
    """Training settings; the defaults are the reference's (see the module docstring).

    Attributes:
        head_epochs: Epochs of phase 1 (classifier only).
        head_lr: Adam learning rate of phase 1.
        epochs: Epochs of phase 2 (all layers).
        lr: Adam learning rate of phase 2.
        batch_size: Crops per step.
        sam_rho: SAM neighbourhood size; 0 for plain Adam.
        label_smoothing: Label smoothing of the cross-entropy.
        class_weights: Weight classes by ``1 / count`` (rare classes count more).
        flip: Random horizontal flips of training crops.
        seed: Seed of the shuffling, the flips and the weights' random state.
    """

    head_epochs: int = 3
    head_lr: float = 1e-3
    epochs: int = 6
    lr: float = 1e-4
    batch_size: int = 64
    sam_rho: float = 0.05
    label_smoothing: float = 0.1
    class_weights: bool = True
    flip: bool = True
    seed: int = 0


class Crops(torch.utils.data.Dataset[tuple[torch.Tensor, int]]):
    """Preprocessed crops of an export's samples (decoded on access; flipped at random when ``flip``)."""

    def __init__(self, data: ImageFolderExport, samples: Sequence[Sample], spec: ModelSpec, flip: bool) -> None:
        self.data, self.samples, self.spec, self.flip = data, list(samples), spec, flip

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        from models.recognizer import preprocess

        s = self.samples[i]
        img = self.data.load(s)
        if self.flip and bool(torch.rand(()) < 0.5):
            img = np.ascontiguousarray(img[:, ::-1])
        return preprocess([img], self.spec)[0], s.label


def _batches(n: int, batch_size: int, gen: torch.Generator | None) -> list[list[int]]:
    """Index batches (shuffled when ``gen`` is given); a trailing batch of one joins the previous one (BatchNorm)."""
    order = torch.randperm(n, generator=gen).tolist() if gen is not None else list(range(n))
    out = [order[i : i + batch_size] for i in range(0, n, batch_size)]
    if len(out) > 1 and len(out[-1]) == 1:
        out[-2] += out.pop()
    return out


def _set_bn_eval(model: nn.Module) -> None:
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.eval()


@torch.no_grad()
def predict_classes(
    model: nn.Module,
    data: ImageFolderExport,
    samples: Sequence[Sample],
    spec: ModelSpec,
    device: torch.device,
    batch_size: int,
    workers: int = 0,
) -> np.ndarray:
    """The model's predicted class (argmax of the emotion logits) for each sample, in order."""
    model.eval()
    ds = Crops(data, samples, spec, flip=False)
    loader = torch.utils.data.DataLoader(ds, batch_sampler=_batches(len(ds), batch_size, None), num_workers=workers)
    out = [model(x.to(device))[:, : len(spec.labels)].argmax(1).cpu().numpy() for x, _ in loader]
    return np.concatenate(out) if out else np.zeros(0, dtype=np.int64)


def classification_metrics(truth: np.ndarray, pred: np.ndarray, k: int) -> dict[str, Any]:
    """Accuracy, macro-F1 and the confusion matrix (``models.finetune``'s definitions)."""
    from models.finetune import confusion, macro_f1

    cm = confusion(truth, pred, k)
    return {"accuracy": float(np.trace(cm) / max(cm.sum(), 1)), "macro_f1": macro_f1(cm), "confusion": cm.tolist()}


def _run_phase(
    model: nn.Module,
    phase: int,
    epochs: int,
    lr: float,
    *,
    head_only: bool,
    head: nn.Module,
    train_ds: Crops,
    val: Sequence[Sample],
    data: ImageFolderExport,
    spec: ModelSpec,
    device: torch.device,
    recipe: Recipe,
    weight: torch.Tensor | None,
    gen: torch.Generator,
    workers: int,
    log: Callable[[str], None],
    history: list[dict[str, Any]],
) -> None:
    if epochs <= 0:
        return
    for p in model.parameters():
        p.requires_grad_(not head_only)
    for p in head.parameters():
        p.requires_grad_(True)
    opt = SAM(model.parameters(), lr=lr, rho=recipe.sam_rho)
    k = len(spec.labels)
    best_acc, best_state = -1.0, None
    for epoch in range(1, epochs + 1):
        model.train()
        if head_only:
            _set_bn_eval(model)
        batches = _batches(len(train_ds), recipe.batch_size, gen)
        loader = torch.utils.data.DataLoader(
            train_ds, batch_sampler=batches, num_workers=workers, pin_memory=device.type == "cuda"
        )
        total_loss, correct, seen = 0.0, 0, 0
        for x, y in loader:
            x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
            logits_holder: list[torch.Tensor] = []

            def closure(
                x: torch.Tensor = x, y: torch.Tensor = y, hold: list[torch.Tensor] = logits_holder
            ) -> torch.Tensor:
                logits = model(x)[:, :k]
                loss = smoothed_cross_entropy(logits, y, weight, recipe.label_smoothing)
                torch.autograd.backward(loss)
                hold.append(logits.detach())
                return loss.detach()

            loss = opt.step(closure)
            total_loss += float(loss) * len(y)
            correct += int((logits_holder[0].argmax(1) == y).sum())
            seen += len(y)
        entry: dict[str, Any] = {
            "phase": phase,
            "epoch": epoch,
            "train_loss": total_loss / max(seen, 1),
            "train_accuracy": correct / max(seen, 1),
            "val_accuracy": None,
        }
        if val:
            pred = predict_classes(model, data, val, spec, device, recipe.batch_size, workers)
            acc = float(np.mean(pred == np.array([s.label for s in val])))
            entry["val_accuracy"] = acc
            if acc > best_acc:
                best_acc, best_state = acc, copy.deepcopy(model.state_dict())
        history.append(entry)
        val_txt = "-" if entry["val_accuracy"] is None else f"{entry['val_accuracy']:.3f}"
        log(
            f"phase {phase} ({'classifier' if head_only else 'all layers'}) epoch {epoch}/{epochs}: "
            f"loss {entry['train_loss']:.4f}, train acc {entry['train_accuracy']:.3f}, val acc {val_txt}"
        )
    if best_state is not None:
        model.load_state_dict(best_state)


def train_phases(
    net: nn.Module,
    data: ImageFolderExport,
    train: list[Sample],
    val: list[Sample],
    spec: ModelSpec,
    dev: torch.device,
    recipe: Recipe,
    workers: int,
    say: Callable[[str], None],
) -> list[dict[str, Any]]:
    """Trains the head, then every layer (the recipe's two phases); freezes the model; returns the epochs' history."""
    from models.backbones import find_head

    torch.manual_seed(recipe.seed)
    gen = torch.Generator().manual_seed(recipe.seed)
    k = len(spec.labels)
    weight = class_weights([s.label for s in train], k).to(dev) if recipe.class_weights else None
    train_ds = Crops(data, train, spec, flip=recipe.flip)
    head = find_head(net, spec)[2]
    history: list[dict[str, Any]] = []
    run_phase = functools.partial(
        _run_phase,
        net,
        head=head,
        train_ds=train_ds,
        val=val,
        data=data,
        spec=spec,
        device=dev,
        recipe=recipe,
        weight=weight,
        gen=gen,
        workers=workers,
        log=say,
        history=history,
    )
    run_phase(1, recipe.head_epochs, recipe.head_lr, head_only=True)
    run_phase(2, recipe.epochs, recipe.lr, head_only=False)
    for p in net.parameters():
        p.requires_grad_(False)
    return history
