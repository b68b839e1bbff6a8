"""Stored weights: where they live, fetching them, and reading them back without unpickling.

Weights folder layout (see ``docs/ARCHITECTURE.md``):

- ``<name>.safetensors``: a converted PyTorch checkpoint or Keras emotion model
  (:mod:`models.convert`); metadata ``name``, ``source_sha1``
  (git blob SHA-1 of the file it was converted from), ``arch``, ``num_outputs``, ``verified`` (``"true"`` when
  ``source_sha1`` is the registry's, ``"false"`` when imported with ``trust_unverified``).
- ``<name>`` for ONNX entries and the engagement model (``enet_b0_8_best_vgaf.onnx``,
  ``engagement_single_attention``): the file
  itself; it needs no pickle.
- ``downloads/``: ``<file>.part`` of interrupted transfers (:mod:`models.download`), resumed with an HTTP Range
  request; never trusted before the whole file's hash matches the registry.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from models.convert import convert_checkpoint
from models.download import DOWNLOADS, ProgressHook, download, git_blob_sha1
from models.errors import CheckpointFormatError, WeightsMissingError
from models.registry import REGISTRY, get_spec, mirrored_url
from models.weight_paths import SAFETENSORS_SUFFIX as SAFETENSORS_SUFFIX  # the paths, named here as before
from models.weight_paths import is_present as is_present
from models.weight_paths import resolve_weights_dir as resolve_weights_dir
from models.weight_paths import warn_if_not_runnable
from models.weight_paths import weights_path as weights_path

log = logging.getLogger(__name__)

# --------------------------------------------------------------------------------------------------------- fetch


def fetch(
    name: str,
    weights_dir: str | Path,
    progress: bool = True,
    *,
    url: str | None = None,
    timeout: float = 60,
    retries: int = 3,
    backoff: float = 1.0,
    on_progress: ProgressHook | None = None,
    mirror: str = "",
) -> Path:
    """Downloads a registered checkpoint, verifies its hash and stores it (converted to safetensors for PyTorch).

    Nothing is done when verified weights are already there. Weights imported with ``trust_unverified`` are replaced.

    Args:
        name: Registry name.
        weights_dir: The weights folder (the entry point passes ``Settings.weights_dir``).
        progress: Show a progress bar on stderr.
        on_progress: Called with (bytes so far, total or None) as bytes arrive.
        url: Download from here instead of the registry's pinned URL; the hash is still the registry's. None: the
            pinned URL, on the host of ``mirror`` when that is given.
        timeout: Network timeout in seconds.
        retries: Extra attempts after a broken transfer.
        backoff: Seconds before the first retry.
        mirror: A host serving the pinned URLs' paths instead of their own (``Settings.weights_mirror``,
            ``AFFECTLAB_WEIGHTS_MIRROR``, passed by the entry point); "" for the pinned hosts.

    Returns:
        Path of the stored weights (``weights_path(name, weights_dir)``).

    Raises:
        UnknownModelError: Unknown name.
        DownloadError: Network or HTTP failure (a partial file is kept for the next run to resume).
        HashMismatchError: The downloaded file is not the registered one (nothing is kept).
        CheckpointFormatError: The verified file could not be converted.
    """
    spec = get_spec(name)
    wd = Path(weights_dir).expanduser()
    final = weights_path(name, wd)
    if weights_verified(name, wd):
        warn_if_not_runnable(spec)
        return final
    source = url or mirrored_url(spec.url, mirror)
    part_dir = wd / DOWNLOADS

    def get(dest: Path) -> Path:
        return download(
            source,
            dest,
            spec.git_blob_sha1,
            name,
            progress,
            timeout,
            retries,
            part_dir=part_dir,
            backoff=backoff,
            on_progress=on_progress,
        )

    if not spec.stores_safetensors:
        path = get(final)
        warn_if_not_runnable(spec)
        return path
    raw = get(part_dir / spec.filename)
    try:
        out = convert_checkpoint(raw, spec, wd, spec.git_blob_sha1, verified=True)
    finally:
        raw.unlink(missing_ok=True)
    warn_if_not_runnable(spec)
    return out


# --------------------------------------------------------------------------------------------------------- reading


def read_metadata(name: str, weights_dir: str | Path) -> dict[str, str]:
    """Metadata of stored weights, without loading tensors.

    For safetensors files, the stored metadata. For ONNX and Keras files, ``name``, ``source_sha1`` (the file's git
    blob SHA-1) and ``verified`` (whether it matches the registry).

    Raises:
        WeightsMissingError: Nothing stored for ``name``.
        CheckpointFormatError: The stored file is unreadable.
    """
    spec = get_spec(name)
    path = weights_path(name, weights_dir)
    if not path.is_file():
        raise WeightsMissingError(name, str(weights_dir))
    if not spec.stores_safetensors:
        try:
            sha = git_blob_sha1(path)
        except OSError as exc:
            raise CheckpointFormatError(
                f"{path}: unreadable ({exc}); delete it and run `python -m models fetch {name}`"
            ) from exc
        return {"name": name, "source_sha1": sha, "verified": "true" if sha == spec.git_blob_sha1 else "false"}
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="numpy") as f:  # metadata only: no torch needed
            return dict(f.metadata() or {})
    except Exception as exc:
        raise CheckpointFormatError(
            f"{path}: unreadable safetensors file ({exc}); delete it and run `python -m models fetch {name}`"
        ) from exc


def weights_verified(name: str, weights_dir: str | Path) -> bool | None:
    """Whether the stored weights of ``name`` are the registry's file.

    The one test of verification (fetch, ``python -m models list`` and the web app use it): the metadata
    (:func:`read_metadata`) says ``verified`` ``"true"`` and its ``source_sha1`` is the registry's git blob SHA-1.

    Args:
        name: Registry name.
        weights_dir: The weights folder.

    Returns:
        True or False; None when nothing is stored for ``name`` or the stored file is unreadable.

    Raises:
        UnknownModelError: Unknown name.
    """
    spec = get_spec(name)
    try:
        meta = read_metadata(name, weights_dir)
    except (WeightsMissingError, CheckpointFormatError):
        return None
    return meta.get("verified") == "true" and meta.get("source_sha1") == spec.git_blob_sha1


def load_weights(name: str, weights_dir: str | Path) -> tuple[dict[str, Any], dict[str, str]]:
    """Loads the converted weights of a PyTorch checkpoint from safetensors (never unpickles).

    Args:
        name: Registry name of a ``torch_pickle`` entry.
        weights_dir: The weights folder (the entry point passes ``Settings.weights_dir``).

    Returns:
        ``(state_dict, metadata)``: CPU tensors for ``build_model(spec).load_state_dict(..., strict=True)``, and the
        metadata (``name``, ``source_sha1``, ``arch``, ``num_outputs``, ``verified``).

    Raises:
        UnknownModelError: Unknown name.
        WeightsMissingError: Not fetched or imported yet; the message says how.
        CheckpointFormatError: Not a PyTorch entry, or the stored file is damaged or belongs to another model.
    """
    from safetensors.torch import load_file

    spec = get_spec(name)
    if not spec.stores_safetensors:
        raise CheckpointFormatError(
            f"{name!r} is a {spec.fmt} file, not converted weights; open weights_path({name!r}) with its own runtime"
        )
    wd = Path(weights_dir).expanduser()
    path = weights_path(name, wd)
    if not path.is_file():
        raise WeightsMissingError(name, str(wd))
    meta = read_metadata(name, wd)
    if meta.get("name") != name or meta.get("num_outputs") != str(spec.num_outputs):
        raise CheckpointFormatError(
            f"{path}: holds weights for {meta.get('name')!r} with {meta.get('num_outputs')} outputs, not {name!r}; "
            f"delete it and run `python -m models fetch {name}`"
        )
    try:
        state = load_file(str(path), device="cpu")
    except Exception as exc:
        raise CheckpointFormatError(
            f"{path}: unreadable safetensors file ({exc}); delete it and run `python -m models fetch {name}`"
        ) from exc
    return state, meta


def list_models(weights_dir: str | Path) -> list[dict[str, Any]]:
    """Every registered model and whether its weights are stored.

    Args:
        weights_dir: The weights folder (the entry point passes ``Settings.weights_dir``).

    Returns:
        One dict per registry entry, registry order: ``name``, ``fmt``, ``arch``, ``input_size``, ``classes``
        (number of emotion classes), ``labels`` (their names), ``has_va``, ``runnable``, ``present``, ``verified``
        (None when absent), ``sha1`` (registry hash), ``path`` (where the weights are or would be), ``note``.
    """
    wd = Path(weights_dir).expanduser()
    rows: list[dict[str, Any]] = []
    for spec in REGISTRY.values():
        path = weights_path(spec.name, wd)
        present = path.is_file()
        verified = weights_verified(spec.name, wd) if present else None
        notes = [spec.note] if spec.note else []
        if present and verified is None:
            verified = False
            notes.append(f"unreadable: delete {path} and run `python -m models fetch {spec.name}`")
        elif verified is False:
            notes.append("unverified: its hash differs from the registry's (imported with --trust-unverified)")
        rows.append(
            {
                "name": spec.name,
                "fmt": spec.fmt,
                "arch": spec.arch,
                "input_size": spec.input_size,
                "classes": len(spec.labels),
                "labels": list(spec.labels),
                "has_va": spec.has_va,
                "runnable": spec.runnable,
                "present": present,
                "verified": verified,
                "sha1": spec.git_blob_sha1,
                "path": str(path),
                "note": " ".join(notes),
            }
        )
    return rows
