"""Full fine-tuning of an emotion model (backbone and head) on an ImageFolder export of the label store.

``python -m models.train_backbone --data EXPORT.zip|DIR --model NAME [--epochs N] [--device auto|cpu|cuda]
--weights-dir DIR``

Data: the ``imagefolder`` export of ``python -m db export`` (a zip or a folder) holding
``{train,validation,test}/<Class>/<file>.png``, read by :mod:`models.train_data` (class folders matched to the
model's labels ignoring case; other names reported and skipped). The ``train`` split trains, ``validation`` picks the
best epoch of each phase (the last epoch when it is empty) and ``test`` is only used for the before/after figures, so
they come from faces the training never saw (the export keeps a media item or a person track within one split).

Recipe (the default): the one that trained the published checkpoints, as HSEmotion's ``train_emotions-pytorch``
notebook runs it:

- Input: the reference preprocessing (PIL ``Resize((S, S))`` bilinear, ``ToTensor``, ``Normalize(mean, std)``;
  ``models.recognizer.preprocess``), plus a random horizontal flip (p = 0.5) of training crops, a light augmentation
  the notebook does not use (on a few hundred faces it matters).
- Loss (:mod:`models.sam`): cross-entropy with label smoothing 0.1 and class weights ``1 / count`` scaled so the
  most frequent class weighs 1 (the notebook's ``cross_entropy_with_label_smoothing``: the weights multiply the
  smoothed targets), on the emotion logits. The valence/arousal outputs of ``*_va_mtl`` models get no loss (the
  export has no V/A labels); their head rows are kept, but they move with the backbone.
- Optimiser: SAM (sharpness-aware minimisation, the seed's ``RobustOptimizer``, rho 0.05) around Adam, no weight
  decay, no schedule; batches of 64.
- Phase 1: the classifier only, 3 epochs at lr 1e-3 (``--head-epochs``, ``--head-lr``); phase 2: all layers, 6 epochs
  at lr 1e-4 (``--epochs``, ``--lr``). Each phase keeps its epoch with the best validation accuracy (the notebook
  selects on its test set; here the test split stays untouched).
- BatchNorm: the notebook leaves it in training mode in both phases; here its running statistics stay frozen in
  phase 1, where the backbone is frozen anyway and a few small batches would only add noise, and update in phase 2.

It runs on the CPU for small data and on a GPU when one is present (``--device auto``). The result is saved as a
fine-tuned version (``kind="full"``: the whole state dict, ``models.versions``) named ``<model>@<data>-full-<UTC
time>``, with the data fingerprint (SHA-256 of the used files' names and labels) and the report: accuracy, macro-F1
and confusion matrix of the original and the fine-tuned model on the test split. Too little data (an empty train or
test split, fewer than two known classes in train) is refused before anything is trained, and nothing is saved.
"""

from __future__ import annotations

import argparse
import copy
import functools
import json
import os
import re
import sys
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from models.errors import AffectLabError, BadInputError
from models.registry import ModelSpec
from models.sam import SAM, class_weights, smoothed_cross_entropy
from models.train_data import ImageFolderExport, Sample, check_enough


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


@dataclass(frozen=True)
class TrainReport:
    """The outcome of a full fine-tuning run.

    Attributes:
        model: The model that was fine-tuned (registry name or version).
        version: Name of the saved version ("" when not saved).
        device: Where it trained.
        n_images: Images used per split.
        classes: The model's labels (the confusion matrices' order).
        class_counts: Training images per class name.
        skipped: Images skipped per unknown class folder name (``split/name``).
        before: Accuracy, macro-F1 and confusion matrix of the original model on the test split.
        after: The same for the fine-tuned model.
        history: One entry per epoch: phase, epoch, train loss and accuracy, validation accuracy.
        recipe: The settings used.
        data_fingerprint: SHA-256 of the used files' names and labels.
        seconds: Wall time of the run.
    """

    model: str
    version: str
    device: str
    n_images: dict[str, int]
    classes: tuple[str, ...]
    class_counts: dict[str, int]
    skipped: dict[str, int]
    before: dict[str, Any]
    after: dict[str, Any]
    history: list[dict[str, Any]] = field(default_factory=list)
    recipe: dict[str, Any] = field(default_factory=dict)
    data_fingerprint: str = ""
    seconds: float = 0.0

    def to_json(self) -> dict[str, Any]:
        """A JSON-able dict."""
        return asdict(self)

    def summary(self) -> str:
        """A few lines for people."""
        b, a = self.before, self.after
        lines = [
            f"model {self.model} fine-tuned on {self.device} in {self.seconds:.1f} s; images: "
            + ", ".join(f"{k} {v}" for k, v in self.n_images.items()),
            "training images per class: " + ", ".join(f"{k} {v}" for k, v in self.class_counts.items()),
        ]
        if not self.n_images.get("validation"):
            lines.append("no validation split: each phase kept its last epoch")
        if self.skipped:
            lines.append(
                "skipped (class not in the model's labels): " + ", ".join(f"{k} ({v})" for k, v in self.skipped.items())
            )
        lines.append(
            f"test split ({self.n_images.get('test', 0)} faces): accuracy {b['accuracy']:.3f} -> "
            f"{a['accuracy']:.3f}, macro-F1 {b['macro_f1']:.3f} -> {a['macro_f1']:.3f} (original -> "
            "fine-tuned)"
        )
        lines.append(f"saved as version {self.version}" if self.version else "not saved")
        return "\n".join(lines)


# ---------------------------------------------------------------- data


class _Crops(torch.utils.data.Dataset[tuple[torch.Tensor, int]]):
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


# ---------------------------------------------------------------- training


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
    ds = _Crops(data, samples, spec, flip=False)
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
    train_ds: _Crops,
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


def resolve_train_device(device: str) -> torch.device:
    """``auto``: the GPU when CUDA is present, else the CPU; otherwise as ``recognizer.resolve_device``."""
    from models.recognizer import resolve_device

    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(resolve_device(device))  # training always runs on torch: a device object, never "cpu"


def version_name_for(base: str, data: Path, when: datetime) -> str:
    """``<base>@<data file stem>-full-<UTC time>``."""
    stem = data.name[: -len(".zip")] if data.name.lower().endswith(".zip") else data.name
    slug = re.sub(r"[^A-Za-z0-9_-]+", "-", stem).strip("-")[:40] or "data"
    return f"{base}@{slug}-full-{when.strftime('%Y%m%d%H%M%S')}"


def train_backbone(
    data_path: str | Path,
    model: str,
    weights_dir: str | Path | None = None,
    *,
    device: str = "auto",
    recipe: Recipe | None = None,
    save: bool = True,
    log: Callable[[str], None] | None = None,
) -> TrainReport:
    """Fine-tunes all layers of a model on an ImageFolder export and saves it as a ``full`` version.

    Args:
        data_path: The export (zip or folder).
        model: Registry name of a PyTorch emotion model, or a fine-tuned version to continue from.
        weights_dir: The weights folder (None: ``weights.resolve_weights_dir``).
        device: ``auto``, ``cpu``, ``cuda`` or ``cuda:N``.
        recipe: Training settings (None: the reference's, :class:`Recipe`).
        save: Save the version (False: only report).
        log: Progress lines go here (None: stderr).

    Returns:
        The report (the before/after on the test split, the version name).

    Raises:
        BadInputError: The export cannot be read, or an image in it is damaged.
        NotEnoughDataError: Too little data (nothing is trained or saved).
        UnknownModelError, VersionNotFoundError, WeightsMissingError, ExportError: The model cannot be loaded.
        DeviceUnavailableError: CUDA was asked for and is not available.
    """
    from models import weights as weights_mod
    from models.backbones import find_head
    from models.export import load_full_model
    from models.registry import get_spec
    from models.versions import get_version, is_version, save_version

    started = time.perf_counter()
    recipe = recipe or Recipe()
    say = log or (lambda msg: print(msg, file=sys.stderr, flush=True))
    wdir = weights_mod.resolve_weights_dir(weights_dir)
    version = get_version(model, wdir) if is_version(model) else None
    spec = version.spec if version is not None else get_spec(model)
    data = ImageFolderExport(data_path, spec.labels)
    check_enough(data)
    dev = resolve_train_device(device)
    loaded = load_full_model(model, wdir)
    net = loaded.model.to(dev)
    base = version.base if version is not None else spec.name
    base_sha1 = version.base_sha1 if version is not None else loaded.base_sha1

    train, val, test = data.split("train"), data.split("validation"), data.split("test")
    k = len(spec.labels)
    truth = np.array([s.label for s in test])
    say(f"{model}: {len(train)} train, {len(val)} validation, {len(test)} test images on {dev}")
    workers = min(4, os.cpu_count() or 1) if dev.type == "cuda" else 0
    before = classification_metrics(truth, predict_classes(net, data, test, spec, dev, recipe.batch_size, workers), k)

    torch.manual_seed(recipe.seed)
    gen = torch.Generator().manual_seed(recipe.seed)
    weight = class_weights([s.label for s in train], k).to(dev) if recipe.class_weights else None
    train_ds = _Crops(data, train, spec, flip=recipe.flip)
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
    after = classification_metrics(truth, predict_classes(net, data, test, spec, dev, recipe.batch_size, workers), k)

    used = train + val + test
    fingerprint = data.fingerprint(used)
    counts = Counter(spec.labels[s.label] for s in train)
    report = TrainReport(
        model=model,
        version="",
        device=str(dev),
        n_images={"train": len(train), "validation": len(val), "test": len(test)},
        classes=spec.labels,
        class_counts={c: counts[c] for c in spec.labels if counts[c]},
        skipped=data.skipped,
        before=before,
        after=after,
        history=history,
        recipe=asdict(recipe),
        data_fingerprint=fingerprint,
        seconds=time.perf_counter() - started,
    )
    if not save:
        return report
    now = datetime.now(UTC)
    name = version_name_for(base, Path(data_path), now)
    tensors = {key: t.detach().to("cpu") for key, t in net.state_dict().items()}
    doc = report.to_json()
    doc.update(data=str(data_path), started_from=model)
    saved = save_version(
        name, base, base_sha1, "full", "emotion", tensors, fingerprint, doc, now.isoformat(timespec="seconds"), wdir
    )
    return replace(report, version=saved.name, seconds=time.perf_counter() - started)


# ---------------------------------------------------------------- command line


def build_parser() -> argparse.ArgumentParser:
    """The ``python -m models.train_backbone`` argument parser."""
    r = Recipe()
    p = argparse.ArgumentParser(
        prog="python -m models.train_backbone",
        description="Fine-tune all layers of an emotion model on an ImageFolder export.",
    )
    p.add_argument("--data", required=True, help="the ImageFolder export: zip or folder")
    p.add_argument("--model", required=True, help="registry name (or a fine-tuned version) to start from")
    p.add_argument("--weights-dir", help="weights folder (default: $AFFECTLAB_WEIGHTS_DIR or the user cache)")
    p.add_argument("--device", default="auto", help="auto (GPU when present), cpu, cuda or cuda:N")
    p.add_argument("--epochs", type=int, default=r.epochs, help=f"all-layer epochs (default {r.epochs})")
    p.add_argument(
        "--head-epochs", type=int, default=r.head_epochs, help=f"classifier-only epochs first (default {r.head_epochs})"
    )
    p.add_argument("--lr", type=float, default=r.lr, help=f"all-layer learning rate (default {r.lr})")
    p.add_argument("--head-lr", type=float, default=r.head_lr, help=f"classifier learning rate (default {r.head_lr})")
    p.add_argument("--batch-size", type=int, default=r.batch_size)
    p.add_argument("--no-sam", action="store_true", help="plain Adam instead of sharpness-aware minimisation")
    p.add_argument("--no-flip", action="store_true", help="no random horizontal flips")
    p.add_argument("--seed", type=int, default=r.seed)
    p.add_argument("--no-save", action="store_true", help="report only; save no version")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Runs the command; returns 0 on success, 1 for an unreadable input, 2 for too little data or a setup problem."""
    args = build_parser().parse_args(argv)
    if min(args.epochs, args.head_epochs) < 0 or args.batch_size < 1 or args.epochs + args.head_epochs < 1:
        print("error: epochs must be >= 0 (at least one in all), the batch size >= 1", file=sys.stderr)
        return 2
    recipe = Recipe(
        head_epochs=args.head_epochs,
        head_lr=args.head_lr,
        epochs=args.epochs,
        lr=args.lr,
        batch_size=args.batch_size,
        sam_rho=0.0 if args.no_sam else Recipe.sam_rho,
        flip=not args.no_flip,
        seed=args.seed,
    )
    try:
        report = train_backbone(
            args.data, args.model, args.weights_dir, device=args.device, recipe=recipe, save=not args.no_save
        )
    except BadInputError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except AffectLabError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(report.to_json(), indent=2, default=float))
    else:
        print(report.summary())
    return 0


if __name__ == "__main__":
    sys.exit(main())
