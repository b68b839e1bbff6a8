"""The one unpickling in AffectLab: a ``torch.save`` checkpoint read through an allowlist, nothing of it run.

:func:`unpickle_checkpoint` tells the container apart (:func:`checkpoint_container`: TorchScript, which ``torch.load``
would hand to ``torch.jit.load`` and so run, is refused), reads every global its pickle names without running it and
checks each against :class:`RemappingUnpickler`'s allowlist (tensor rebuild functions, plain containers, the
``torch.nn.Module`` classes of timm, torch and :mod:`models.mobilefacenet`; old module names remapped by
:func:`remap_module`), then lets torch's ``weights_only=True`` loader read it, allowed exactly those globals. Only
:mod:`models.convert` calls it, on files whose hash the registry names or that the user vouched for.
"""

from __future__ import annotations

import pickle
import types
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

from models.errors import CheckpointFormatError, UnsafeCheckpointError

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


def unpickle_checkpoint(src: Path) -> Any:
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
