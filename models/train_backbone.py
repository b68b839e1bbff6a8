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
from models.train_data import ImageFolderExport, check_enough
from models.train_loop import Recipe as Recipe
from models.train_loop import classification_metrics as classification_metrics
from models.train_loop import predict_classes as predict_classes
from models.train_loop import train_phases


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
    weights_dir: str | Path,
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
        weights_dir: The weights folder (the entry point passes ``Settings.weights_dir``).
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
    from models.export import load_full_model
    from models.registry import get_spec
    from models.versions import get_version, is_version

    started = time.perf_counter()
    recipe = recipe or Recipe()
    say = log or (lambda msg: print(msg, file=sys.stderr, flush=True))
    wdir = Path(weights_dir).expanduser()
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

    history = train_phases(net, data, train, val, spec, dev, recipe, workers, say)
    after = classification_metrics(truth, predict_classes(net, data, test, spec, dev, recipe.batch_size, workers), k)

    fingerprint = data.fingerprint(train + val + test)
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
    saved = _save(net, report, data_path, base, base_sha1, wdir)
    return replace(report, version=saved, seconds=time.perf_counter() - started)


def _save(net: nn.Module, report: TrainReport, data_path: str | Path, base: str, base_sha1: str, wdir: Path) -> str:
    """Saves the trained model as a ``full`` version with its report; returns the version's name."""
    from models.versions import save_version

    now = datetime.now(UTC)
    name = version_name_for(base, Path(data_path), now)
    tensors = {key: t.detach().to("cpu") for key, t in net.state_dict().items()}
    doc = report.to_json()
    doc.update(data=str(data_path), started_from=report.model)
    saved = save_version(
        name,
        base,
        base_sha1,
        "full",
        "emotion",
        tensors,
        report.data_fingerprint,
        doc,
        now.isoformat(timespec="seconds"),
        wdir,
    )
    return saved.name


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
