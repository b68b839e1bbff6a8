"""Model weights: which are present and verified, fetching, importing, fine-tuning and removing versions.

Owner-only actions (fetch, import, fine-tune, remove) check :func:`webapp.services.who.require_owner` first.
"""

from __future__ import annotations

import re
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from db.services import LabelStore
from models.errors import AffectLabError
from models.registry import REGISTRY, app_models, emotion_models
from models.weights import weights_verified as stored_weights_verified
from webapp.services.analysis import SessionLoader
from webapp.services.who import require_owner

if TYPE_CHECKING:  # torch loads lazily: the first page paints before it is imported
    from db.training import FineTuneOutcome
    from models.finetune import FineTuneReport
    from models.finetune import Target as FineTuneTarget


def present_models(weights_dir: Path) -> list[str]:
    """The runnable emotion models whose weights are in ``weights_dir`` (default first), then fine-tuned versions."""
    from models.versions import list_versions
    from models.weights import is_present

    base = [s.name for s in emotion_models() if is_present(s.name, weights_dir)]
    return base + [v.name for v in list_versions(weights_dir) if v.base in base]


def model_versions(weights_dir: Path) -> list[Any]:
    """The fine-tuned versions in the weights folder, newest first (``models.versions.ModelVersion``)."""
    from models.versions import list_versions

    return list_versions(weights_dir)


def remove_version(name: str, weights_dir: Path, *, owner: bool) -> None:
    """Deletes a fine-tuned version; stored predictions keep its name and hash.

    Raises:
        NotAllowedError: For anyone but an owner.
    """
    from models.versions import remove_version as remove

    require_owner(owner, "removing a fine-tuned model version")
    remove(name, weights_dir)


def finetune(
    store: LabelStore, study: str, load_session: SessionLoader, target: str, weights_dir: Path, *, owner: bool
) -> FineTuneOutcome:
    """The Fine-tune button: a new head trained on the study's corrections (``db.training.finetune_study``).

    Args:
        store: The label store.
        study: The study whose corrections train the head.
        load_session: Loads the base model (``webapp.resources.analysis_session``), after the owner check.
        target: ``emotion``, ``va`` or ``engagement``.
        weights_dir: The weights folder (versions go to its ``finetuned/``).
        owner: Whether the caller owns the study.

    Returns:
        The before/after report, the saved version (None when too little data) and notes.

    Raises:
        NotAllowedError: For anyone but an owner.
        ValueError: For an unknown target.
        AffectLabError: The model could not be loaded, or training failed (the message says why).
    """
    from db.training import finetune_study

    require_owner(owner, "fine-tuning a model")
    chosen = next((t for t in FINETUNE_TARGETS if t == target), None)
    if chosen is None:
        raise ValueError(f"unknown fine-tuning target {target!r}: use one of {', '.join(FINETUNE_TARGETS)}")
    return finetune_study(store, study, load_session().recognizer, chosen, weights_dir)


def confusion_matrices(report: FineTuneReport) -> tuple[list[list[int]], list[list[int]]] | None:
    """The original and fine-tuned heads' confusion matrices on the held-out faces, None when the report has none."""
    before, after = report.before.get("confusion"), report.after.get("confusion")
    if before is None or after is None:
        return None
    return _matrix(before), _matrix(after)


def _matrix(value: object) -> list[list[int]]:
    return [[int(x) for x in row] for row in np.asarray(value).tolist()]


FINETUNE_TARGETS: tuple[FineTuneTarget, ...] = ("emotion", "va", "engagement")
"""What a head can be fine-tuned for."""


def model_status(weights_dir: Path) -> list[dict[str, Any]]:
    """Every registered checkpoint with presence and verification (``models.weights.list_models``)."""
    from models.weights import list_models

    return list_models(weights_dir)


def weights_verified(name: str, weights_dir: Path) -> bool | None:
    """Whether the stored weights of ``name`` match the registry's hash (None when absent or unreadable)."""
    return stored_weights_verified(name, weights_dir)


def missing_weights_help(name: str, weights_dir: Path) -> str:
    """What to do when no emotion model has weights (plain text, one paragraph)."""
    return (
        f"No weights for {name}. A global owner opens the Models page and presses Fetch, or runs "
        f"`python -m models fetch {name}` (set AFFECTLAB_WEIGHTS_DIR for another folder). Without weights the app "
        "makes no predictions."
    )


def missing_app_models(model: str, weights_dir: Path) -> list[str]:
    """The models the app uses by default (``models.registry.app_models``) whose weights are not in ``weights_dir``."""
    from models.weights import is_present

    return [n for n in app_models(model) if not is_present(n, weights_dir)]


def missing_app_models_help(model: str, weights_dir: Path) -> str | None:
    """What the Analyze page says when models the app uses are missing (plain text, one paragraph), None if none is."""
    missing = missing_app_models(model, weights_dir)
    if not missing:
        return None
    names = ", ".join(missing)
    return (
        f"Missing model weights: {names}. Without them the app shows no emotions or no engagement scores. An owner "
        "fetches them on the Models page, or run `python -m models fetch --defaults` where the app runs (the Docker "
        "image does at build; set AFFECTLAB_WEIGHTS_DIR for another folder)."
    )


@dataclass(frozen=True)
class FetchProgress:
    """Progress of a running download: bytes so far and, when the server said, the total."""

    received: int
    total: int | None


def fetch_weights(
    name: str,
    weights_dir: Path,
    on_progress: Callable[[FetchProgress], None] | None = None,
    *,
    owner: bool,
    mirror: str,
    url: str | None = None,
) -> Path:
    """Downloads, verifies and stores a registered checkpoint (``models.weights.fetch``), reporting bytes received.

    ``mirror`` is ``Settings.weights_mirror`` ("" for the pinned hosts).

    Raises:
        NotAllowedError: For anyone but an owner.
        DownloadError, HashMismatchError, CheckpointFormatError: As ``fetch``.
    """
    from models.weights import fetch

    require_owner(owner, "fetching model weights")
    hook = None if on_progress is None else (lambda received, total: on_progress(FetchProgress(received, total)))
    return fetch(name, weights_dir, progress=False, url=url, on_progress=hook, mirror=mirror)


def import_weights(
    data: bytes, filename: str, name: str, weights_dir: Path, *, trust_unverified: bool, owner: bool
) -> Path:
    """Stores an uploaded checkpoint under registry name ``name`` after checking its hash.

    Raises:
        NotAllowedError: For anyone but an owner.
        HashMismatchError: The file is not the registered one and ``trust_unverified`` is False (nothing stored).
        CheckpointFormatError: The file could not be converted.
    """
    from models.convert import import_checkpoint

    require_owner(owner, "importing model weights")
    weights_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=weights_dir, prefix=".upload-") as tmp:
        src = Path(tmp) / (_safe_suffix_name(filename) or "checkpoint")
        src.write_bytes(data)
        try:
            return import_checkpoint(src, name, weights_dir, trust_unverified=trust_unverified)
        except AffectLabError as exc:  # the messages name the server's temporary copy: name the upload instead
            exc.args = tuple(str(a).replace(str(src), Path(filename).name) for a in exc.args)
            raise


def _safe_suffix_name(filename: str) -> str:
    stem = re.sub(r"[^A-Za-z0-9._-]+", "_", Path(filename).name)[:100].lstrip(".")
    return stem


def registry_names() -> list[str]:
    """Every registered checkpoint's name, registry order."""
    return list(REGISTRY)


PHONE_FORMATS: tuple[str, ...] = ("onnx", "torchscript", "litert", "executorch")
"""What the Models page exports (``python -m models export --format``); int8 for ``onnx`` and ``litert``."""


@dataclass(frozen=True)
class PhoneExport:
    """An exported, checked file ready to download.

    Attributes:
        filename: Its file name.
        data: Its bytes.
        lines: What the export reported (size, check, int8 agreement and speed).
    """

    filename: str
    data: bytes
    lines: list[str]


def export_for_phone(
    store: LabelStore,
    study: str,
    name: str,
    fmt: str,
    int8: bool,
    weights_dir: Path,
    *,
    owner: bool,
    python: Path,
) -> PhoneExport:
    """The Export button: the model in a phone format, checked against PyTorch; int8 calibrated on the study's crops.

    ``python`` is the converters' side interpreter (``Settings.mobile_python``).

    Check crops: the study's first stored face crops (else the built-in sample face). Nothing is kept on the server.

    Raises:
        NotAllowedError: For anyone but an owner.
        AffectLabError: Unknown format, converter not installed (the message says how), a failed check.
    """
    import io

    from PIL import Image

    from models.export import ExportError, export_model
    from models.mobile_export import default_out, export_mobile
    from models.onnx_int8 import export_onnx_int8

    require_owner(owner, "exporting a model")
    if fmt not in PHONE_FORMATS:
        raise ExportError(f"unknown format {fmt!r}; use one of {', '.join(PHONE_FORMATS)}")
    from db.errors import StudyNotFoundError

    try:
        stored = store.recordings.study_crops(study, 64)
    except StudyNotFoundError:  # nothing ingested yet: the built-in sample face is used, and the report says so
        stored = []
    crops = [np.asarray(Image.open(io.BytesIO(b)).convert("RGB")) for b in stored]
    check = crops[:8] or None
    calibration = crops or None
    with tempfile.TemporaryDirectory(prefix="affectlab-phone-") as work:
        out = Path(work) / default_out(
            name, fmt if fmt != "torchscript" else "torchscript.pt", "int8" if int8 else "none"
        )
        if int8 and fmt == "onnx":
            lines = export_onnx_int8(name, out, weights_dir, crops=check, calibration=calibration).lines()
        elif fmt in ("litert", "executorch"):
            rep = export_mobile(
                name,
                "litert" if fmt == "litert" else "executorch",
                out,
                weights_dir,
                crops=check,
                quantize="int8" if int8 else "none",
                calibration=calibration,
                python=python,
            )
            lines = rep.lines()
        elif int8:
            raise ExportError(f"int8 is offered for onnx and litert, not {fmt}")
        else:
            plain = export_model(name, fmt, out, weights_dir, crops=check)  # type: ignore[arg-type]
            lines = [
                f"{fmt} written, {plain.size_bytes} bytes; max |diff| {plain.max_abs_diff:.3g} on {plain.n_crops} crops"
            ]
        if int8 and calibration is None:
            lines.append("calibrated on the built-in sample face: this study has no stored face crops yet")
        return PhoneExport(out.name, out.read_bytes(), lines)
