"""Checkpoint conversion: a pickled PyTorch checkpoint becomes safetensors, through an allowlist unpickler.

A Keras emotion model (``mobilenet_7.h5``) becomes safetensors too, read with h5py (``models.keras_mobilenet``): an
HDF5 file holds arrays only, so nothing is unpickled or run.

Security: the published ``.pt`` files are pickled ``nn.Module`` objects, and a plain unpickling can run any code.
AffectLab unpickles in exactly one place, :func:`models.unpickle.unpickle_checkpoint`, called by
:func:`convert_checkpoint` only, on files whose git blob SHA-1 matches the
registry or that the user explicitly vouched for (``import_checkpoint(trust_unverified=True)``), and even then:
the container is told apart first (:func:`checkpoint_container`: a ``torch.save`` zip or legacy pickle; TorchScript,
which ``torch.load`` would hand to ``torch.jit.load`` and so run, is refused, as is anything else); every global its
pickle names is read without running it and must pass :class:`RemappingUnpickler`'s allowlist (tensor rebuild
functions, plain containers, the ``torch.nn.Module`` classes of timm, torch and :mod:`models.mobilefacenet`), else
:class:`models.errors.UnsafeCheckpointError` (``os.system``, ``builtins.eval``...); then torch's own
``weights_only=True`` loader reads it, allowed exactly those globals. Every
later run reads safetensors, which cannot run code. Every file is written to a temporary name and moved into place
with ``os.replace``, so a path that is trusted never holds a half-written file.
"""

from __future__ import annotations

import logging
import os
import shutil
from collections import OrderedDict
from pathlib import Path
from typing import Any

from models.download import CHUNK, DOWNLOADS, git_blob_sha1
from models.errors import BadInputError, CheckpointFormatError, HashMismatchError, UnsafeCheckpointError
from models.registry import ModelSpec, get_spec
from models.unpickle import unpickle_checkpoint
from models.weight_paths import warn_if_not_runnable, weights_path

log = logging.getLogger(__name__)

HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"
"""The first bytes of every HDF5 (Keras ``.h5``) file."""


def _extract_state_dict(obj: Any, src: Path) -> dict[str, Any]:
    import torch
    from torch import nn

    if isinstance(obj, nn.Module):
        for sub in obj.modules():  # hooks are callables from the file: never call them
            for attr in ("_state_dict_hooks", "_state_dict_pre_hooks"):
                vars(sub)[attr] = OrderedDict()
        state = obj.state_dict()
    elif isinstance(obj, dict):
        for key in ("state_dict", "model_state_dict", "model"):
            inner = obj.get(key)
            if isinstance(inner, nn.Module):
                return _extract_state_dict(inner, src)
            if isinstance(inner, dict):
                obj = inner
                break
        state = obj
    else:
        raise CheckpointFormatError(f"{src}: holds a {type(obj).__name__}, not a model or a state dict")
    if not state or not all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in state.items()):
        raise CheckpointFormatError(f"{src}: holds no tensors keyed by parameter names")
    if all(k.startswith("module.") for k in state):  # saved from DataParallel
        state = {k[len("module.") :]: v for k, v in state.items()}
    return dict(state)


def _rename_published_keys(state: dict[str, Any], spec: ModelSpec) -> dict[str, Any]:
    """``classifier.0.*`` -> ``classifier.*`` (the published head is ``Sequential(Linear)``); same for other heads."""
    from models.backbones import head_path

    old, new = f"{head_path(spec)}.0.", f"{head_path(spec)}."
    return {(new + k[len(old) :] if k.startswith(old) else k): v for k, v in state.items()}


def convert_checkpoint(
    src: str | Path, spec: ModelSpec, weights_dir: str | Path, source_sha1: str, verified: bool
) -> Path:
    """Converts a pickled PyTorch checkpoint (or a Keras MobileNet ``.h5``) to ``<weights_dir>/<name>.safetensors``.

    The file is unpickled on the CPU (CUDA-saved files load too) with module paths of old timm releases and of
    EmotiEffLib's ``mobilefacenet`` mapped to today's; its state dict (``classifier.0.*`` renamed ``classifier.*``)
    must load with ``strict=True`` into :func:`models.backbones.build_model`'s model; that model's state dict is
    written as safetensors, atomically.

    Warning:
        This unpickles ``src``: call it only on a file whose hash matches the registry, or that the user explicitly
        trusted. The allowlist of :class:`RemappingUnpickler` refuses any global that could run code, but a pickle
        can still build large objects.

    Args:
        src: The ``torch.save`` file (a whole ``nn.Module`` as published, or a state dict).
        spec: Registry entry it is converted for.
        weights_dir: The weights folder.
        source_sha1: git blob SHA-1 of ``src``, recorded in the metadata.
        verified: Whether ``source_sha1`` matches the registry.

    Returns:
        The safetensors path.

    Raises:
        UnsafeCheckpointError: ``src``'s pickle names a global outside the allowlist (nothing of it ran).
        CheckpointFormatError: ``src`` cannot be unpickled, or its tensors do not fit ``spec``'s architecture.
    """
    from safetensors.torch import save_file

    from models.backbones import build_model

    src = Path(src)
    if not spec.stores_safetensors:
        raise CheckpointFormatError(
            f"{spec.name} is a {spec.fmt} entry; only PyTorch checkpoints and Keras emotion models are converted"
        )
    if spec.fmt == "keras_h5":  # read with h5py: nothing in the file runs, nothing is unpickled
        from models.keras_mobilenet import keras_state_dict

        _check_hdf5(src)
        state = keras_state_dict(src, spec.num_outputs)
    else:
        state = _rename_published_keys(_extract_state_dict(unpickle_checkpoint(src), src), spec)
    model = build_model(spec)
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        detail = str(exc).split("\n")
        short = "\n".join(detail[:6]) + ("\n..." if len(detail) > 6 else "")
        raise CheckpointFormatError(
            f"{src}: its weights do not fit {spec.name!r} ({spec.arch}, {spec.num_outputs} outputs): {short}\n"
            "Check that the file is the one published for this model (`python -m models list` shows the names)."
        ) from exc
    tensors = {k: v.detach().to("cpu").contiguous() for k, v in model.state_dict().items()}
    metadata = {
        "name": spec.name,
        "source_sha1": source_sha1,
        "arch": spec.arch,
        "num_outputs": str(spec.num_outputs),
        "verified": "true" if verified else "false",
        "format": "affectlab-safetensors-1",
    }
    wd = Path(weights_dir)
    wd.mkdir(parents=True, exist_ok=True)
    final = weights_path(spec.name, wd)
    tmp = final.with_name(f".{final.name}.{os.getpid()}.tmp")
    try:
        save_file(tensors, str(tmp), metadata=metadata)
        with tmp.open("rb") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, final)
    finally:
        tmp.unlink(missing_ok=True)
    return final


def _import_next_step(spec: ModelSpec) -> str:
    """What to do after a file could not be imported as ``spec``: the file to import, or the command that fetches it."""
    return (
        f"Import the file published for {spec.name} ({spec.filename}, {spec.url}), or let AffectLab download and "
        f"verify it: `python -m models fetch {spec.name}`"
    )


def _check_hdf5(path: Path, shown: Path | None = None) -> None:
    """Raises CheckpointFormatError unless ``path`` starts with the HDF5 signature (``shown``: the name to report)."""
    with path.open("rb") as fh:
        if fh.read(len(HDF5_SIGNATURE)) != HDF5_SIGNATURE:
            raise CheckpointFormatError(f"{shown or path}: not an HDF5 (Keras .h5) file")


def _copy_hashing(src: Path, dst: Path) -> str:
    """Copies ``src`` to ``dst`` and returns the git blob SHA-1 of the bytes written (the copy is what gets used)."""
    with src.open("rb") as fin, dst.open("wb") as fout:
        shutil.copyfileobj(fin, fout, CHUNK)
        fout.flush()
        os.fsync(fout.fileno())
    return git_blob_sha1(dst)


def import_checkpoint(file: str | Path, name: str, weights_dir: str | Path, trust_unverified: bool = False) -> Path:
    """Stores a local copy of a published checkpoint under the registry name ``name``.

    The file is copied into ``<weights_dir>/downloads/`` first and the copy is hashed and used, so the source cannot
    change between the check and the use. PyTorch checkpoints are converted to safetensors; ONNX and Keras files are
    stored as they are.

    Args:
        file: The downloaded file.
        name: Registry name it is imported as.
        weights_dir: The weights folder (the entry point passes ``Settings.weights_dir``).
        trust_unverified: Accept a file whose hash differs from the registry's (its metadata then says
            ``verified: false``). This skips the hash check only: a PyTorch file is still unpickled through the
            allowlist of :class:`RemappingUnpickler`, so no code from the file runs.

    Returns:
        Path of the stored weights.

    Raises:
        UnknownModelError: Unknown name.
        BadInputError: ``file`` does not exist or is not a file.
        HashMismatchError: The hash differs and ``trust_unverified`` is False (nothing is stored).
        UnsafeCheckpointError: The file's pickle asks for a global outside the allowlist, whether or not its hash
            matched (nothing ran, nothing is stored).
        CheckpointFormatError: The file could not be converted (nothing is stored).
    """
    spec = get_spec(name)
    src = Path(file)
    if not src.is_file():
        raise BadInputError(str(file), "no such file")
    wd = Path(weights_dir).expanduser()
    dl = wd / DOWNLOADS
    dl.mkdir(parents=True, exist_ok=True)
    copy = dl / f".import-{spec.name}.{os.getpid()}.tmp"
    try:
        actual = _copy_hashing(src, copy)
        verified = actual == spec.git_blob_sha1
        if not verified and not trust_unverified:
            raise HashMismatchError(name, spec.git_blob_sha1, actual, str(src))
        if not verified:
            log.warning(
                "%s: importing %s with git blob SHA-1 %s, not the registry's %s (unverified)",
                name,
                src,
                actual,
                spec.git_blob_sha1,
            )
        try:
            if spec.fmt == "keras_h5":
                _check_hdf5(copy, src)
            if spec.stores_safetensors:
                out = convert_checkpoint(copy, spec, wd, actual, verified)
            else:
                out = weights_path(name, wd)
                os.replace(copy, out)
        except UnsafeCheckpointError as exc:
            raise UnsafeCheckpointError(exc.global_name, str(src)) from None
        except CheckpointFormatError as exc:  # name the user's file, not the private copy; say what to do next
            raise CheckpointFormatError(f"{str(exc).replace(str(copy), str(src))}. {_import_next_step(spec)}") from None
    finally:
        copy.unlink(missing_ok=True)
    warn_if_not_runnable(spec)
    return out
