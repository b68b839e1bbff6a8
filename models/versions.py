"""Fine-tuned model versions: a base checkpoint plus new weights, with their provenance.

A version lives in ``<weights_dir>/finetuned/<name>.safetensors``. Its tensors are either a replacement head
(``kind="head"``: ``head.weight`` (K, F) and ``head.bias`` (K,), all outputs of the base head, with the fine-tuned rows
changed) or a whole state dict (``kind="full"``, from backbone fine-tuning). The safetensors metadata records the base
model and the git blob SHA-1 of its published weights, the target, a fingerprint of the training data, the creation
time and the before/after report, so any stored prediction can be traced to exactly what made it.

Version names contain ``@`` (``enet_b0_8_best_vgaf@study-emotion-20261128104501``) and never collide with registry
names.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from models import weights as weights_mod
from models.errors import AffectLabError, CheckpointFormatError
from models.registry import ModelSpec, get_spec

if TYPE_CHECKING:  # torch is imported where tensors are made, so that listing versions needs no torch
    import torch

VersionKind = Literal["head", "full"]
"""What a version stores: a replacement head, or a whole state dict."""
VERSION_KINDS: tuple[VersionKind, ...] = ("head", "full")


def versions_dir(weights_dir: Path) -> Path:
    """Where fine-tuned versions are kept: ``<weights_dir>/finetuned``."""
    return Path(weights_dir) / "finetuned"


def is_version(name: str) -> bool:
    """Whether ``name`` names a fine-tuned version rather than a registry entry (version names contain ``@``)."""
    return "@" in name


class ModelNotRunnableError(AffectLabError):
    """The name is registered but is not a PyTorch emotion model AffectLab can run."""


class VersionNotFoundError(AffectLabError):
    """No fine-tuned version of that name in the weights folder."""

    def __init__(self, name: str, weights_dir: Path) -> None:
        super().__init__(
            f"no fine-tuned version {name!r} in {versions_dir(weights_dir)}; "
            "`python -m models list` shows the versions there"
        )
        self.name = name


@dataclass(frozen=True)
class ModelVersion:
    """A fine-tuned version.

    Attributes:
        name: Version name (contains ``@``).
        base: Registry name of the base checkpoint.
        base_sha1: Git blob SHA-1 of the base's published weights.
        kind: ``head`` or ``full``.
        target: What was fine-tuned (``emotion``, ``va`` or ``engagement``; ``emotion`` for a ``full`` version).
        data_fingerprint: SHA-256 of the training data (face ids and labels).
        created_at: ISO timestamp (UTC).
        weights_hash: SHA-256 (first 16 hex digits) of the version's tensors, recorded with each prediction.
        report: The before/after report (JSON-able).
        path: The safetensors file.
    """

    name: str
    base: str
    base_sha1: str
    kind: VersionKind
    target: str
    data_fingerprint: str
    created_at: str
    weights_hash: str
    report: dict[str, Any]
    path: Path

    @property
    def spec(self) -> ModelSpec:
        """The base checkpoint's registry entry."""
        return get_spec(self.base)


def _tensor_hash(tensors: dict[str, torch.Tensor]) -> str:
    h = hashlib.sha256()
    for key in sorted(tensors):
        h.update(key.encode())
        h.update(tensors[key].detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


def save_version(
    name: str,
    base: str,
    base_sha1: str,
    kind: VersionKind,
    target: str,
    tensors: dict[str, torch.Tensor],
    data_fingerprint: str,
    report: dict[str, Any],
    created_at: str,
    weights_dir: Path,
) -> ModelVersion:
    """Writes a version atomically.

    Args:
        name: Version name (must contain ``@``).
        base: Base registry name.
        base_sha1: Hash of the base weights.
        kind: ``head`` or ``full``.
        target: What was fine-tuned.
        tensors: ``head.weight``/``head.bias`` or a whole state dict.
        data_fingerprint: Training-data fingerprint.
        report: Before/after report.
        created_at: ISO timestamp.
        weights_dir: The weights folder.

    Returns:
        The saved version.

    Raises:
        AffectLabError: ``name`` is not a valid version name.
        UnknownModelError: ``base`` is not registered.
    """
    from safetensors.torch import save_file

    if "@" not in name or "/" in name or name.startswith("."):
        raise AffectLabError(f"invalid version name {name!r}: it must contain '@' and no '/'")
    get_spec(base)
    folder = versions_dir(weights_dir)
    folder.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().cpu().contiguous() for k, v in tensors.items()}
    meta = {
        "name": name,
        "base": base,
        "base_sha1": base_sha1,
        "kind": kind,
        "target": target,
        "data_fingerprint": data_fingerprint,
        "created_at": created_at,
        "weights_hash": _tensor_hash(tensors),
        "report": json.dumps(report, default=float),
    }
    final = folder / f"{name}.safetensors"
    tmp = folder / f".{name}.{os.getpid()}.tmp"
    save_file(tensors, str(tmp), metadata=meta)
    os.replace(tmp, final)
    return _from_meta(meta, final)


def _from_meta(meta: dict[str, str], path: Path) -> ModelVersion:
    kind = next((k for k in VERSION_KINDS if k == meta["kind"]), None)
    if kind is None:
        raise CheckpointFormatError(
            f"{path}: unknown version kind {meta['kind']!r}; remove the version and fine-tune again"
        )
    return ModelVersion(
        name=meta["name"],
        base=meta["base"],
        base_sha1=meta.get("base_sha1", ""),
        kind=kind,
        target=meta.get("target", ""),
        data_fingerprint=meta.get("data_fingerprint", ""),
        created_at=meta.get("created_at", ""),
        weights_hash=meta.get("weights_hash", ""),
        report=json.loads(meta.get("report", "{}")),
        path=path,
    )


def _read(path: Path) -> ModelVersion:
    from safetensors import safe_open

    with safe_open(str(path), framework="numpy") as f:  # metadata only: no torch needed
        meta = f.metadata() or {}
    return _from_meta(meta, path)


def list_versions(weights_dir: Path) -> list[ModelVersion]:
    """Every fine-tuned version in the weights folder, newest first."""
    folder = versions_dir(weights_dir)
    if not folder.is_dir():
        return []
    out = []
    for path in folder.glob("*.safetensors"):
        try:
            out.append(_read(path))
        except Exception:  # a damaged file must not hide the others
            continue
    return sorted(out, key=lambda v: v.created_at, reverse=True)


def get_version(name: str, weights_dir: Path) -> ModelVersion:
    """The version called ``name``.

    Raises:
        VersionNotFoundError: No such version.
    """
    path = versions_dir(weights_dir) / f"{name}.safetensors"
    if "/" in name or not path.is_file():
        raise VersionNotFoundError(name, weights_dir)
    return _read(path)


def resolve(name: str, weights_dir: Path) -> tuple[ModelSpec, ModelVersion | None]:
    """The base registry entry of a model name, and the fine-tuned version when the name is one.

    Raises:
        UnknownModelError: No such registry entry.
        VersionNotFoundError: No such fine-tuned version.
    """
    if is_version(name):
        version = get_version(name, weights_dir)
        return version.spec, version
    return get_spec(name), None


def load_tensors(version: ModelVersion) -> dict[str, torch.Tensor]:
    """The version's tensors (safetensors; nothing is unpickled)."""
    from safetensors.torch import load_file

    return load_file(str(version.path))


def remove_version(name: str, weights_dir: Path) -> None:
    """Deletes a version (predictions already stored keep its name and hash).

    Raises:
        VersionNotFoundError: No such version.
    """
    get_version(name, weights_dir).path.unlink()


def head_tensors(weight: np.ndarray, bias: np.ndarray) -> dict[str, torch.Tensor]:
    """The tensors of a ``head`` version."""
    import torch

    return {
        "head.weight": torch.from_numpy(np.ascontiguousarray(weight, dtype=np.float32)),
        "head.bias": torch.from_numpy(np.ascontiguousarray(bias, dtype=np.float32)),
    }


@dataclass(frozen=True, eq=False)
class LoadedModel:
    """A complete PyTorch emotion model (backbone and head) ready to run, with where its weights came from.

    Attributes:
        name: Registry name or fine-tuned version name.
        spec: Registry entry of the architecture (the base model's for a version).
        model: ``build_model(spec)`` with the weights loaded (and a version's head or state), in evaluation mode:
            ``model(x)`` returns the ``spec.num_outputs`` raw outputs.
        base_sha1: Git blob SHA-1 recorded with the base weights.
        weights_hash: Identifies the weights (the base's hash, plus the version's for a version).
        engagement: A version's per-face engagement head ``(weight (1, F), bias (1,))``, or None.
    """

    name: str
    spec: ModelSpec
    model: torch.nn.Module
    base_sha1: str
    weights_hash: str
    engagement: tuple[np.ndarray, np.ndarray] | None = None


def load_model(name: str, weights_dir: str | Path) -> LoadedModel:
    """Builds the whole PyTorch model of a registered emotion model or fine-tuned version (safetensors only).

    Args:
        name: Registry name of a PyTorch emotion checkpoint, or a fine-tuned version name (contains ``@``).
        weights_dir: The weights folder (the entry point passes ``Settings.weights_dir``).

    Raises:
        UnknownModelError: No such registry entry.
        VersionNotFoundError: No such fine-tuned version.
        ModelNotRunnableError: Not a PyTorch emotion model AffectLab can run.
        WeightsMissingError: The base weights are not in the folder; the message says how to get them.
        CheckpointFormatError: A version's tensors do not fit its base.
    """
    import torch

    from models.backbones import build_model, find_head

    wdir = Path(weights_dir).expanduser()
    spec, version = resolve(name, wdir)
    if not spec.is_emotion_model or not spec.stores_safetensors or not spec.runnable:
        why = f" ({spec.note})" if spec.note else " (ONNX entries are already ONNX files)"
        raise ModelNotRunnableError(
            f"{name!r} is not a runnable PyTorch emotion model{why}; pick one from `python -m models list`"
        )
    state, meta = weights_mod.load_weights(spec.name, wdir)
    base_sha1 = meta.get("source_sha1", "")
    model = build_model(spec)
    if version is None:
        model.load_state_dict(state, strict=True)
        return LoadedModel(name, spec, model.eval(), base_sha1, base_sha1)
    tensors = load_tensors(version)
    engagement = None
    try:
        model.load_state_dict(tensors if version.kind == "full" else state, strict=True)
        if version.kind == "head":
            linear = find_head(model, spec)[2]
            with torch.no_grad():
                linear.weight.copy_(tensors["head.weight"])
                linear.bias.copy_(tensors["head.bias"])
        if "engagement.weight" in tensors:
            engagement = (tensors["engagement.weight"].numpy(), tensors["engagement.bias"].numpy())
    except (RuntimeError, KeyError) as exc:
        raise CheckpointFormatError(
            f"{name!r}: its stored tensors do not fit {spec.name} ({spec.arch}): {exc}; "
            "remove the version and fine-tune again"
        ) from exc
    return LoadedModel(name, spec, model.eval(), base_sha1, f"{base_sha1[:12]}+{version.weights_hash}", engagement)
