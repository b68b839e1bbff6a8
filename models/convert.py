"""Checkpoint conversion: a pickled PyTorch checkpoint becomes safetensors, through an allowlist unpickler.

A Keras emotion model (``mobilenet_7.h5``) becomes safetensors too, read with h5py (``models.keras_mobilenet``): an
HDF5 file holds arrays only, so nothing is unpickled or run.

Security: the published ``.pt`` files are pickled ``nn.Module`` objects, and a plain unpickling can run any code.
AffectLab unpickles in exactly one place, :func:`convert_checkpoint`, only files whose git blob SHA-1 matches the
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
import pickle
import shutil
import types
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

from models.download import CHUNK, DOWNLOADS, git_blob_sha1
from models.errors import BadInputError, CheckpointFormatError, HashMismatchError, UnsafeCheckpointError
from models.registry import ModelSpec, get_spec
from models.weight_paths import resolve_weights_dir, warn_if_not_runnable, weights_path

log = logging.getLogger(__name__)

HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"
"""The first bytes of every HDF5 (Keras ``.h5``) file."""


_MODULE_RENAMES: dict[str, str] = {
    # timm 0.6 -> timm >= 0.9 (private module names); the public shims of timm 1.0 may disappear.
    "timm.models.efficientnet_blocks": "timm.models._efficientnet_blocks",
    "timm.models.efficientnet_builder": "timm.models._efficientnet_builder",
    "timm.models.helpers": "timm.models._helpers",
    "timm.models.builder": "timm.models._builder",
    "timm.models.features": "timm.models._features",
    "timm.models.features_fx": "timm.models._features_fx",
    "timm.models.factory": "timm.models._factory",
    "timm.models.hub": "timm.models._hub",
    "timm.models.manipulate": "timm.models._manipulate",
    "timm.models.pretrained": "timm.models._pretrained",
    "timm.models.registry": "timm.models._registry",
    "timm.models.layers": "timm.layers",
    # EmotiEffLib's MobileFaceNet, pickled as the top-level module ``mobilefacenet``.
    "mobilefacenet": "models.mobilefacenet",
    "backbones.mobilefacenet": "models.mobilefacenet",
    "emotiefflib.backbones.mobilefacenet": "models.mobilefacenet",
}
_PREFIX_RENAMES: tuple[tuple[str, str], ...] = (("timm.models.layers.", "timm.layers."),)


def remap_module(module: str) -> str:
    """The module that holds, in this environment, what a checkpoint pickled under the name ``module``.

    ``timm.models.layers.conv2d_same`` -> ``timm.layers.conv2d_same``, ``timm.models.efficientnet_blocks`` ->
    ``timm.models._efficientnet_blocks``, ``mobilefacenet`` -> ``models.mobilefacenet``; anything else is unchanged.
    """
    if module in _MODULE_RENAMES:
        return _MODULE_RENAMES[module]
    for old, new in _PREFIX_RENAMES:
        if module.startswith(old):
            return new + module[len(old) :]
    return module


_ALLOWED_GLOBALS: frozenset[str] = frozenset(
    {
        # containers and plain values (calling them with any arguments runs no code of the file)
        "collections.OrderedDict",
        "builtins.set",
        "builtins.frozenset",
        "builtins.dict",
        "builtins.list",
        "builtins.tuple",
        "builtins.int",
        "builtins.float",
        "builtins.complex",
        "builtins.bool",
        "builtins.str",
        "builtins.bytes",
        "builtins.bytearray",
        "builtins.slice",
        # how torch.save rebuilds tensors and parameters
        "torch._utils._rebuild_tensor",
        "torch._utils._rebuild_tensor_v2",
        "torch._utils._rebuild_tensor_v3",
        "torch._utils._rebuild_parameter",
        "torch._utils._rebuild_parameter_with_state",
        "torch._tensor._rebuild_from_type_v2",
        "torch.nn.parameter.Parameter",
        "torch.Tensor",
        "torch.Size",
        "torch.device",
        "torch.storage.UntypedStorage",
        "torch.storage.TypedStorage",
        "torch.serialization._get_layout",
        # numpy scalars and dtypes (state dicts saved with numpy metrics)
        "numpy.core.multiarray.scalar",
        "numpy._core.multiarray.scalar",
        "numpy.dtype",
        # pure helpers of timm's EfficientNet builder that old pickles may reference
        "timm.models._efficientnet_builder.round_channels",
        "timm.layers.helpers.make_divisible",
    }
)
"""``module.name`` globals a checkpoint may ask for, besides those :func:`_allowed_by_kind` accepts."""

_MODULE_CLASS_PREFIXES: tuple[str, ...] = ("timm.", "torch.nn.modules.", "models.mobilefacenet")
"""Modules whose ``torch.nn.Module`` subclasses a whole pickled model may name (after :func:`remap_module`)."""

_ACTIVATION_MODULES: frozenset[str] = frozenset(
    {"timm.layers.activations", "timm.layers.activations_me", "torch.nn.functional"}
)
"""Modules whose plain tensor functions (activations) old timm pickles keep as attributes, e.g. ``gate_fn``."""


def _py3_name(module: str, name: str) -> tuple[str, str]:
    """The Python 3 name of a global of a protocol 0-2 pickle (``__builtin__.set`` -> ``builtins.set``)."""
    import _compat_pickle

    if (module, name) in _compat_pickle.NAME_MAPPING:
        return _compat_pickle.NAME_MAPPING[(module, name)]
    return _compat_pickle.IMPORT_MAPPING.get(module, module), name


def _allowed_by_kind(module: str, name: str, obj: Any) -> bool:
    """Whether a resolved global is of a kind a checkpoint may name: a model class, a dtype, a storage class."""
    import torch

    if module == "torch":
        if isinstance(obj, torch.dtype | torch.layout | torch.memory_format):
            return True
        return isinstance(obj, type) and name.endswith("Storage") and obj.__module__.startswith("torch")
    if module == "numpy.dtypes":
        import numpy as np

        return isinstance(obj, type) and issubclass(obj, np.dtype)
    if module in _ACTIVATION_MODULES and isinstance(obj, types.FunctionType):
        return obj.__module__ == module
    if module.startswith(_MODULE_CLASS_PREFIXES):
        return isinstance(obj, type) and issubclass(obj, torch.nn.Module)
    return False


def _may_resolve(module: str) -> bool:
    """Whether importing ``module`` to look a global up is harmless (only torch, numpy, timm and our model code)."""
    return (
        module in ("torch", "numpy.dtypes")
        or module in _ACTIVATION_MODULES
        or module.startswith(_MODULE_CLASS_PREFIXES)
    )


class RemappingUnpickler(pickle.Unpickler):
    """An Unpickler that resolves only an allowlist of globals, under today's module paths.

    Classes pickled by timm 0.6 / 0.9 and EmotiEffLib are found where they live now (:func:`remap_module`).

    A pickle runs code only through the globals it names (it calls them, or their ``__setstate__``), so every global
    goes through :meth:`find_class`, which accepts only: the tensor/storage rebuild functions of ``torch.save``,
    plain containers (``collections.OrderedDict``, ``set``...), torch dtypes and storage classes, numpy scalars, the
    ``torch.nn.Module`` subclasses of ``timm``, ``torch.nn.modules`` and :mod:`models.mobilefacenet`, and timm's
    activation functions. Anything else (``os.system``, ``subprocess.Popen``, ``builtins.eval``, a class of another
    package) raises :class:`UnsafeCheckpointError` before it is imported or called, whatever the file's hash.
    """

    def find_class(self, module: str, name: str) -> Any:
        """Resolves ``module.name`` if allowed, trying the remapped module first and the original second.

        Raises:
            UnsafeCheckpointError: The global is not on the allowlist.
            CheckpointFormatError: An allowed module or class is missing from this environment.
        """
        module, name = _py3_name(module, name)
        asked = f"{module}.{name}"
        if not isinstance(name, str) or not name.isidentifier():
            raise UnsafeCheckpointError(asked)
        target = remap_module(module)
        if f"{target}.{name}" in _ALLOWED_GLOBALS or asked in _ALLOWED_GLOBALS:
            found = f"{target}.{name}" if f"{target}.{name}" in _ALLOWED_GLOBALS else asked
            mod, _, attr = found.rpartition(".")
            try:
                return super().find_class(mod, attr)
            except (ImportError, AttributeError) as exc:
                raise CheckpointFormatError(
                    f"the checkpoint needs {asked}, which this environment does not have ({exc})"
                ) from exc
        if not _may_resolve(target) and not _may_resolve(module):
            raise UnsafeCheckpointError(asked)
        try:
            obj = super().find_class(target, name)
            where = target
        except (ImportError, AttributeError) as first:
            if target == module:
                raise CheckpointFormatError(
                    f"the checkpoint needs {module}.{name}, which this environment does not have ({first})"
                ) from first
            try:
                obj = super().find_class(module, name)
                where = module
            except (ImportError, AttributeError):
                raise CheckpointFormatError(
                    f"the checkpoint needs {module}.{name} (looked in {target} too), which this environment "
                    f"does not have ({first})"
                ) from first
        if not _allowed_by_kind(where, name, obj):
            raise UnsafeCheckpointError(asked)
        return obj


ZIP_SIGNATURE = b"PK\x03\x04"
PICKLE_PROTO = b"\x80"


def checkpoint_container(src: Path) -> str:
    """Tells a ``torch.save`` file's container apart before anything reads it as a checkpoint.

    Returns:
        ``"zip"`` (``torch.save`` since PyTorch 1.6: one ``data.pkl`` plus tensor records) or ``"legacy"`` (the older
        pickle stream).

    Raises:
        UnsafeCheckpointError: A TorchScript archive (``constants.pkl``/``code/``): loading it runs its code, so it
            is refused whatever its hash.
        CheckpointFormatError: Anything else (a tar of PyTorch < 0.4, a zip of another kind, not a checkpoint).
    """
    import zipfile

    with src.open("rb") as fh:
        head = fh.read(512)
    if head.startswith(ZIP_SIGNATURE):
        try:
            with zipfile.ZipFile(src) as zf:
                names = zf.namelist()
        except (zipfile.BadZipFile, OSError) as exc:
            raise CheckpointFormatError(f"{src}: a damaged zip file ({exc})") from exc
        parts = [n.split("/", 1)[1] if "/" in n else n for n in names]
        if any(p == "constants.pkl" or p.startswith("code/") or p.endswith(".py") for p in parts):
            raise UnsafeCheckpointError(
                "TorchScript code (a torch.jit archive; loading it runs the code it holds)", str(src)
            )
        if parts.count("data.pkl") != 1:
            raise CheckpointFormatError(f"{src}: a zip file, but not one written by torch.save (no single data.pkl)")
        return "zip"
    if head.startswith(PICKLE_PROTO):
        return "legacy"
    if head[257:262] == b"ustar":
        raise CheckpointFormatError(f"{src}: a tar archive (PyTorch < 0.4 format), which AffectLab does not read")
    raise CheckpointFormatError(f"{src}: not a PyTorch checkpoint (neither a torch.save zip nor a pickle)")


def _pickle_globals(stream: IO[bytes], pickles: int = 1) -> set[tuple[str, str]]:
    """The ``(module, name)`` globals named by the next ``pickles`` pickles of ``stream``, read without running them.

    Raises:
        UnsafeCheckpointError: A global named in a way that cannot be read without running the pickle
            (``STACK_GLOBAL`` built from anything but two plain strings).
    """
    import pickletools

    found: set[tuple[str, str]] = set()
    for _ in range(pickles):
        pushed: list[str | None] = []  # what each op pushed: a plain string, or something else
        for op, arg, _pos in pickletools.genops(stream):
            if op.name == "GLOBAL":
                module, _, name = str(arg).partition(" ")
                found.add((module, name))
                pushed.append(None)
            elif op.name == "STACK_GLOBAL":
                module_, name_ = (pushed[-2], pushed[-1]) if len(pushed) >= 2 else (None, None)
                if module_ is None or name_ is None:
                    raise UnsafeCheckpointError("a global built at run time (STACK_GLOBAL)")
                found.add((module_, name_))
                pushed.append(None)
            elif op.name in ("MEMOIZE", "PUT", "BINPUT", "LONG_BINPUT"):
                continue
            else:
                pushed.append(arg if isinstance(arg, str) and "UNICODE" in op.name else None)
    return found


def _checkpoint_globals(src: Path, container: str) -> set[tuple[str, str]]:
    """Every global the checkpoint's pickles name (the zip's ``data.pkl``, or the legacy stream's pickles)."""
    import zipfile

    try:
        if container == "zip":
            with zipfile.ZipFile(src) as zf:
                data = next(n for n in zf.namelist() if n.endswith("data.pkl") and n.count("/") <= 1)
                with zf.open(data) as fh:
                    return _pickle_globals(fh)
        with src.open("rb") as fh:  # magic number, protocol version, system info, the object
            return _pickle_globals(fh, pickles=4)
    except UnsafeCheckpointError:
        raise
    except Exception as exc:
        raise CheckpointFormatError(f"{src}: its pickle cannot be read ({type(exc).__name__}: {exc})") from exc


def _unpickle_checkpoint(src: Path) -> Any:
    """Loads a ``torch.save`` file on the CPU with ``weights_only=True``, its globals allowed one by one.

    The only unpickling in AffectLab. First the container is told apart (:func:`checkpoint_container`: TorchScript,
    which ``torch.load`` would hand to ``torch.jit.load`` and so run, is refused); then every global its pickle names
    is read without running anything and looked up through :class:`RemappingUnpickler`'s allowlist (a global outside
    it refuses the file before any of it loads); then torch's weights-only unpickler loads it, allowed exactly
    those globals (the published files are whole pickled modules, whose classes it needs).

    Raises:
        UnsafeCheckpointError: TorchScript, or a global outside the allowlist (nothing of the file ran).
        CheckpointFormatError: The file is not a readable checkpoint.
    """
    import io

    import torch

    try:
        container = checkpoint_container(src)
        resolver = RemappingUnpickler(io.BytesIO(b""))
        allowed: list[Callable[..., Any] | tuple[Callable[..., Any], str]] = [
            (resolver.find_class(module, name), f"{module}.{name}")
            for module, name in sorted(_checkpoint_globals(src, container))
        ]
        with torch.serialization.safe_globals(allowed):
            return torch.load(src, map_location="cpu", weights_only=True)
    except UnsafeCheckpointError as exc:
        raise UnsafeCheckpointError(exc.global_name, str(src)) from None
    except CheckpointFormatError as exc:
        raise CheckpointFormatError(f"{src}: {exc}" if str(src) not in str(exc) else str(exc)) from exc
    except Exception as exc:
        raise CheckpointFormatError(
            f"{src}: cannot be read as a PyTorch checkpoint ({type(exc).__name__}: {exc}). Is it the published "
            "file for this model?"
        ) from exc


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
        state = _rename_published_keys(_extract_state_dict(_unpickle_checkpoint(src), src), spec)
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


def import_checkpoint(
    file: str | Path, name: str, weights_dir: str | Path | None = None, trust_unverified: bool = False
) -> Path:
    """Stores a local copy of a published checkpoint under the registry name ``name``.

    The file is copied into ``<weights_dir>/downloads/`` first and the copy is hashed and used, so the source cannot
    change between the check and the use. PyTorch checkpoints are converted to safetensors; ONNX and Keras files are
    stored as they are.

    Args:
        file: The downloaded file.
        name: Registry name it is imported as.
        weights_dir: The weights folder (None: :func:`models.weights.resolve_weights_dir`).
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
    wd = resolve_weights_dir(weights_dir)
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
