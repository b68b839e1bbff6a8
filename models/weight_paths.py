"""Where stored weights live: the weights folder, each entry's file name in it, and the download mirror."""

from __future__ import annotations

import logging
from pathlib import Path

from models.registry import ModelSpec, get_spec

log = logging.getLogger("models.weights")

SAFETENSORS_SUFFIX = ".safetensors"


def resolve_weights_dir(flag: str | Path | None, default: str | Path) -> Path:
    """The weights folder an entry point uses: its ``--weights-dir`` flag if given, else ``default``.

    ``models/`` never reads the environment: the entry points (the CLIs, the app, workers) read
    :class:`core.settings.Settings` once and pass ``settings.weights_dir`` down as ``default``; every function below
    them takes the folder as an argument.

    Args:
        flag: The ``--weights-dir`` value, or None / "" when not given.
        default: The configured folder (``Settings.weights_dir``: ``AFFECTLAB_WEIGHTS_DIR`` or the per-user cache).

    Returns:
        The folder, ``~`` expanded (not created).
    """
    if flag is not None and str(flag) != "":
        return Path(flag).expanduser()
    return Path(default).expanduser()


def weights_path(name: str, weights_dir: str | Path) -> Path:
    """Where the weights of registry entry ``name`` live in ``weights_dir`` (whether or not they are there).

    ``<name>.safetensors`` for PyTorch checkpoints and Keras emotion models (``spec.stores_safetensors``),
    ``<name>`` for ONNX files and the Keras engagement model.

    Raises:
        UnknownModelError: If ``name`` is not registered.
    """
    spec = get_spec(name)
    wd = Path(weights_dir)
    if spec.stores_safetensors:
        return wd / f"{spec.name}{SAFETENSORS_SUFFIX}"
    return wd / spec.name


def is_present(name: str, weights_dir: str | Path) -> bool:
    """Whether the weights of ``name`` are in ``weights_dir`` (verified, or imported as unverified)."""
    return weights_path(name, weights_dir).is_file()


def warn_if_not_runnable(spec: ModelSpec) -> None:
    """Logs a warning when ``spec`` is stored for its hash only and AffectLab cannot run it."""
    if not spec.runnable:
        log.warning("%s is stored but cannot run in AffectLab: %s", spec.name, spec.note)
