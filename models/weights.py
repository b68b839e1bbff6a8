"""Model weights: hashing, verified downloads, imports, and the one-time pickle -> safetensors conversion.

Weights folder layout (see ``docs/ARCHITECTURE.md``):

- ``<name>.safetensors``: a converted PyTorch checkpoint; metadata ``name``, ``source_sha1`` (git blob SHA-1 of the
  file it was converted from), ``arch``, ``num_outputs``, ``verified`` (``"true"`` when ``source_sha1`` is the
  registry's, ``"false"`` when imported with ``trust_unverified``).
- ``<name>`` for ONNX and Keras entries (``enet_b0_8_best_vgaf.onnx``, ``engagement_single_attention``): the file
  itself; it needs no pickle.
- ``downloads/``: ``<file>.part`` of interrupted transfers, resumed with an HTTP Range request; never trusted before
  the whole file's hash matches the registry.

Security: the published ``.pt`` files are pickled ``nn.Module`` objects, and a plain unpickling can run any code.
This module unpickles in exactly one place, :func:`convert_checkpoint`, only files whose git blob SHA-1 matches the
registry or that the user explicitly vouched for (``import_checkpoint(trust_unverified=True)``), and even then
through :class:`RemappingUnpickler`, which resolves only an allowlist of globals (tensor rebuild functions, plain
containers, the ``torch.nn.Module`` classes of timm, torch and :mod:`models.mobilefacenet`) and refuses anything
else (``os.system``, ``builtins.eval``...) with :class:`models.errors.UnsafeCheckpointError` before it runs. Every
later run reads safetensors, which cannot run code. Every file is written to a temporary name and moved into place
with ``os.replace``, so a path that is trusted never holds a half-written file.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import pickle
import re
import shutil
import sys
import time
import types
from collections import OrderedDict
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any

from models.errors import (
    BadInputError,
    CheckpointFormatError,
    DownloadError,
    HashMismatchError,
    UnsafeCheckpointError,
    WeightsMissingError,
)
from models.registry import REGISTRY, ModelSpec, get_spec, mirrored_url

log = logging.getLogger(__name__)

DOWNLOADS = "downloads"
SAFETENSORS_SUFFIX = ".safetensors"
CHUNK = 1 << 20
NET_CHUNK = 1 << 16
ProgressHook = Callable[[int, int | None], None]
"""Called as ``hook(bytes_so_far, total_or_None)`` while a download runs (e.g. a web page's progress bar)."""
HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"


# --------------------------------------------------------------------------------------------------------- hashing


def git_blob_sha1(path: str | Path) -> str:
    r"""The git blob SHA-1 of a file: ``sha1(b"blob %d\0" % size + bytes)``, what ``git hash-object FILE`` prints.

    The file is streamed, never read whole into memory.

    Args:
        path: The file.

    Returns:
        40 lowercase hex digits.
    """
    path = Path(path)
    with path.open("rb") as f:
        size = os.fstat(f.fileno()).st_size
        h = hashlib.sha1(b"blob %d\0" % size)
        read = 0
        for chunk in iter(lambda: f.read(CHUNK), b""):
            h.update(chunk)
            read += len(chunk)
    if read != size:
        raise OSError(f"{path} changed size while being hashed ({size} -> {read} bytes)")
    return h.hexdigest()


# --------------------------------------------------------------------------------------------------------- paths


def resolve_weights_dir(flag: str | Path | None = None) -> Path:
    """The weights folder: ``flag`` if given, else ``AFFECTLAB_WEIGHTS_DIR``, else the per-user cache.

    Args:
        flag: The ``--weights-dir`` value, or None.

    Returns:
        The folder (not created).
    """
    if flag is not None and str(flag) != "":
        return Path(flag).expanduser()
    from affectlab.settings import Settings

    return Settings.from_env().weights_dir.expanduser()


def _mirror() -> str:
    from affectlab.settings import Settings

    return Settings.from_env().weights_mirror


def weights_path(name: str, weights_dir: str | Path) -> Path:
    """Where the weights of registry entry ``name`` live in ``weights_dir`` (whether or not they are there).

    ``<name>.safetensors`` for PyTorch checkpoints, ``<name>`` for ONNX and Keras files.

    Raises:
        UnknownModelError: If ``name`` is not registered.
    """
    spec = get_spec(name)
    wd = Path(weights_dir)
    if spec.fmt == "torch_pickle":
        return wd / f"{spec.name}{SAFETENSORS_SUFFIX}"
    return wd / spec.name


def is_present(name: str, weights_dir: str | Path) -> bool:
    """Whether the weights of ``name`` are in ``weights_dir`` (verified, or imported as unverified)."""
    return weights_path(name, weights_dir).is_file()


def _downloads_dir(weights_dir: Path) -> Path:
    return weights_dir / DOWNLOADS


# --------------------------------------------------------------------------------------------------------- download


class _Incomplete(Exception):
    """A transfer stopped early; the ``.part`` file keeps what arrived, for a resumed retry."""


_RETRYABLE_STATUS = frozenset({408, 429, 500, 502, 503, 504})


class _Restart(Exception):
    """The server would not resume the ``.part`` file (416 or an unexpected range): start again from zero."""


@contextlib.contextmanager
def _exclusive(lock_path: Path) -> Iterator[None]:
    """Holds an exclusive advisory lock, so that two processes never append to the same ``.part`` file."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - not POSIX
        yield
        return
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with lock_path.open("a+b") as fh:
        try:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise DownloadError(
                f"another process is downloading the same file (it holds {lock_path}); wait for it to finish, "
                "then run the command again"
            ) from None
        try:
            yield
        finally:
            fcntl.flock(fh.fileno(), fcntl.LOCK_UN)


def _unlink(path: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        path.unlink()


def _content_range_start(value: str | None) -> int | None:
    m = re.match(r"\s*bytes\s+(\d+)-\d+/(?:\d+|\*)\s*$", value or "")
    return int(m.group(1)) if m else None


def _transfer(session: Any, url: str, part: Path, name: str, *, progress: bool, timeout: float,
              on_progress: ProgressHook | None = None) -> None:
    """One HTTP request appending to ``part`` (resuming it with Range when it has bytes).

    Raises:
        _Incomplete: The connection broke, fewer bytes than announced arrived (``part`` keeps them), or the server
            answered a transient error status (5xx, 408, 429).
        _Restart: The server would not resume ``part``.
        DownloadError: The server answered a permanent error status (404...).
    """
    import requests
    from tqdm import tqdm

    offset = part.stat().st_size if part.exists() else 0
    headers = {"Accept-Encoding": "identity"}
    if offset:
        headers["Range"] = f"bytes={offset}-"
    try:
        resp = session.get(url, stream=True, timeout=timeout, headers=headers, allow_redirects=True)
    except requests.RequestException as exc:
        raise _Incomplete(f"{url}: {exc}") from exc
    with resp:
        status = resp.status_code
        if status == 416 and offset:  # the .part is as long as the file, or longer
            raise _Restart(f"{url}: HTTP 416 on resume from byte {offset}")
        if status == 206 and offset and _content_range_start(resp.headers.get("Content-Range")) == offset:
            mode = "ab"
        elif status == 206 and offset:
            raise _Restart(f"{url}: unexpected Content-Range {resp.headers.get('Content-Range')!r}")
        elif status in (200, 206):
            mode, offset = "wb", 0  # the whole file: nothing to resume, or the server ignored Range
        elif status in _RETRYABLE_STATUS:
            raise _Incomplete(f"{url}: HTTP {status} {resp.reason or ''}".rstrip())
        else:
            reason = f" {resp.reason}" if resp.reason else ""
            raise DownloadError(
                f"{url}: HTTP {status}{reason}. Check the network and the URL; if the file moved upstream, "
                f"download it by hand and run `python -m models import-checkpoint FILE --name {name}`."
            )
        length_header = resp.headers.get("Content-Length")
        expected = int(length_header) if length_header and length_header.isdigit() else None
        received = 0
        total = offset + expected if expected is not None else None
        bar = tqdm(
            total=total,
            initial=offset,
            unit="B",
            unit_scale=True,
            unit_divisor=1024,
            desc=name,
            file=sys.stderr,
            disable=not progress,
            leave=False,
        )
        try:
            with part.open(mode) as out:
                try:
                    for chunk in resp.iter_content(chunk_size=NET_CHUNK):
                        if chunk:
                            out.write(chunk)
                            received += len(chunk)
                            bar.update(len(chunk))
                            if on_progress is not None:
                                on_progress(offset + received, total)
                except requests.RequestException as exc:
                    raise _Incomplete(f"{url}: transfer broke after {offset + received} bytes ({exc})") from exc
                out.flush()
                os.fsync(out.fileno())
        finally:
            bar.close()
        if expected is not None and received != expected:
            raise _Incomplete(f"{url}: got {received} of {expected} announced bytes (from byte {offset})")


def download(
    url: str,
    dest: str | Path,
    expected_sha1: str,
    name: str,
    progress: bool = True,
    timeout: float = 60,
    retries: int = 3,
    *,
    part_dir: str | Path | None = None,
    backoff: float = 1.0,
    session: Any = None,
    on_progress: ProgressHook | None = None,
) -> Path:
    """Downloads ``url`` to ``dest``, resuming, verifying and moving it into place atomically.

    Bytes go to ``<part_dir>/<dest name>.part`` (``part_dir`` defaults to ``dest``'s folder's ``downloads/``). A
    leftover ``.part`` is resumed with an HTTP Range request; a server that ignores Range (answers 200) or refuses it
    (416) makes the transfer restart from zero. A transfer shorter than its Content-Length, a broken connection or a
    transient HTTP status (5xx, 408, 429) is retried ``retries`` times (resuming); after that :class:`DownloadError`
    is raised and the ``.part`` stays for the next run to resume. The complete file's git blob SHA-1 must equal
    ``expected_sha1``; otherwise the ``.part`` is deleted. Only then is it moved to ``dest`` (``os.replace``). A
    ``dest`` that already has the right hash is kept.

    Args:
        url: What to download.
        dest: Where the verified file goes.
        expected_sha1: Its git blob SHA-1.
        name: Model name, for messages and the progress bar.
        progress: Show a progress bar on stderr.
        on_progress: Called with (bytes so far, total or None) as bytes arrive.
        timeout: Seconds to wait for the connection and between bytes.
        retries: Extra attempts after a broken or short transfer (each resumes).
        part_dir: Folder for the ``.part`` file.
        backoff: Seconds to wait before the first retry (doubled each time).
        session: A ``requests.Session`` to use (a new one by default).

    Returns:
        ``dest``.

    Raises:
        DownloadError: HTTP error status, network failure or truncated transfer after the retries.
        HashMismatchError: The complete file is not the expected one (nothing is kept).
    """
    import requests

    dest = Path(dest)
    expected_sha1 = expected_sha1.lower()
    if dest.is_file() and git_blob_sha1(dest) == expected_sha1:
        return dest
    part_dir = Path(part_dir) if part_dir is not None else dest.parent / DOWNLOADS
    part_dir.mkdir(parents=True, exist_ok=True)
    part = part_dir / f"{dest.name}.part"
    own_session = session is None
    session = session or requests.Session()
    restarted_after_mismatch = False
    try:
        with _exclusive(part_dir / f".{dest.name}.lock"):
            attempt = restarts = 0
            while True:
                resumed = part.exists() and part.stat().st_size > 0
                try:
                    _transfer(session, url, part, name, progress=progress, timeout=timeout, on_progress=on_progress)
                except _Restart as exc:
                    if part.exists() and git_blob_sha1(part) == expected_sha1:
                        break  # 416: the leftover .part was already the complete, right file
                    restarts += 1
                    if restarts > 2:
                        raise DownloadError(f"{exc}; the server keeps refusing the transfer") from None
                    log.info("%s: %s; restarting from zero", name, exc)
                    _unlink(part)
                    continue
                except _Incomplete as exc:
                    if attempt >= retries:
                        kept = part.stat().st_size if part.exists() else 0
                        hint = (
                            f"{kept} bytes are kept in {part} (not trusted until the whole file's hash matches); "
                            "run the same command again to resume."
                            if kept
                            else f"Check the network and run the same command again, or download {url} by hand and run "
                            f"`python -m models import-checkpoint FILE --name {name}`."
                        )
                        raise DownloadError(f"{exc}. {hint}") from None
                    attempt += 1
                    log.warning("%s: %s; retry %d of %d", name, exc, attempt, retries)
                    if backoff > 0:
                        time.sleep(backoff * 2 ** (attempt - 1))
                    continue
                actual = git_blob_sha1(part)
                if actual == expected_sha1:
                    break
                _unlink(part)
                if resumed and not restarted_after_mismatch:
                    # The leftover bytes may have come from another version of the file: one fresh try.
                    restarted_after_mismatch = True
                    log.warning("%s: resumed file has the wrong hash; downloading again from zero", name)
                    continue
                raise HashMismatchError(name, expected_sha1, actual, url)
            dest.parent.mkdir(parents=True, exist_ok=True)
            os.replace(part, dest)
    finally:
        if own_session:
            session.close()
    return dest


# --------------------------------------------------------------------------------------------------------- unpickling

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


def _remapping_pickle_module() -> types.ModuleType:
    """A stand-in for the ``pickle`` module that ``torch.load(pickle_module=...)`` accepts."""
    mod = types.ModuleType("affectlab_remapping_pickle")

    def load(file: IO[bytes], **kwargs: Any) -> Any:
        return RemappingUnpickler(file, **kwargs).load()

    mod.Unpickler = RemappingUnpickler  # type: ignore[attr-defined]
    mod.load = load  # type: ignore[attr-defined]
    mod.UnpicklingError = pickle.UnpicklingError  # type: ignore[attr-defined]
    return mod


def _unpickle_checkpoint(src: Path) -> Any:
    """Unpickles a ``torch.save`` file on the CPU through :class:`RemappingUnpickler`'s allowlist.

    The only unpickling in AffectLab. ``weights_only=False`` because the published files are whole pickled modules,
    which torch's own weights-only loader refuses; the allowlist keeps the guarantee that no code of the file runs.

    Raises:
        UnsafeCheckpointError: The pickle names a global outside the allowlist (nothing of the file ran).
        CheckpointFormatError: The file is not a readable checkpoint.
    """
    import torch

    try:
        return torch.load(src, map_location="cpu", weights_only=False, pickle_module=_remapping_pickle_module())
    except UnsafeCheckpointError as exc:
        raise UnsafeCheckpointError(exc.global_name, str(src)) from None
    except CheckpointFormatError as exc:
        raise CheckpointFormatError(f"{src}: {exc}") from exc
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


def _atomic_target(final: Path) -> Path:
    return final.with_name(f".{final.name}.{os.getpid()}.tmp")


def convert_checkpoint(
    src: str | Path, spec: ModelSpec, weights_dir: str | Path, source_sha1: str, verified: bool
) -> Path:
    """Converts a pickled PyTorch checkpoint to ``<weights_dir>/<spec.name>.safetensors``.

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
    if spec.fmt != "torch_pickle":
        raise CheckpointFormatError(f"{spec.name} is a {spec.fmt} entry; only PyTorch checkpoints are converted")
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
    final = wd / f"{spec.name}{SAFETENSORS_SUFFIX}"
    tmp = _atomic_target(final)
    try:
        save_file(tensors, str(tmp), metadata=metadata)
        with tmp.open("rb") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, final)
    finally:
        _unlink(tmp)
    return final


# --------------------------------------------------------------------------------------------------------- fetch/import


def _warn_not_runnable(spec: ModelSpec) -> None:
    if not spec.runnable:
        log.warning("%s is stored but cannot run in AffectLab: %s", spec.name, spec.note)


def _stored_is_verified(spec: ModelSpec, path: Path) -> bool:
    if not path.is_file():
        return False
    try:
        if spec.fmt == "torch_pickle":
            meta = read_metadata(spec.name, path.parent)
            return meta.get("verified") == "true" and meta.get("source_sha1") == spec.git_blob_sha1
        return git_blob_sha1(path) == spec.git_blob_sha1
    except Exception:  # unreadable: fetch again
        return False


def fetch(
    name: str,
    weights_dir: str | Path | None = None,
    progress: bool = True,
    *,
    url: str | None = None,
    timeout: float = 60,
    retries: int = 3,
    backoff: float = 1.0,
    on_progress: ProgressHook | None = None,
) -> Path:
    """Downloads a registered checkpoint, verifies its hash and stores it (converted to safetensors for PyTorch).

    Nothing is done when verified weights are already there. Weights imported with ``trust_unverified`` are replaced.

    Args:
        name: Registry name.
        weights_dir: The weights folder (None: :func:`resolve_weights_dir`).
        progress: Show a progress bar on stderr.
        on_progress: Called with (bytes so far, total or None) as bytes arrive.
        url: Download from here instead of the registry's pinned URL; the hash is still the registry's. None: the
            pinned URL, on the host of ``AFFECTLAB_WEIGHTS_MIRROR`` when that is set.
        timeout: Network timeout in seconds.
        retries: Extra attempts after a broken transfer.
        backoff: Seconds before the first retry.

    Returns:
        Path of the stored weights (``weights_path(name, weights_dir)``).

    Raises:
        UnknownModelError: Unknown name.
        DownloadError: Network or HTTP failure (a partial file is kept for the next run to resume).
        HashMismatchError: The downloaded file is not the registered one (nothing is kept).
        CheckpointFormatError: The verified file could not be converted.
    """
    spec = get_spec(name)
    wd = resolve_weights_dir(weights_dir)
    final = weights_path(name, wd)
    if _stored_is_verified(spec, final):
        _warn_not_runnable(spec)
        return final
    source = url or mirrored_url(spec.url, _mirror())
    kw: dict[str, Any] = {"progress": progress, "timeout": timeout, "retries": retries, "backoff": backoff,
                          "on_progress": on_progress}
    if spec.fmt != "torch_pickle":
        path = download(source, final, spec.git_blob_sha1, name, part_dir=_downloads_dir(wd), **kw)
        _warn_not_runnable(spec)
        return path
    raw = download(source, _downloads_dir(wd) / spec.filename, spec.git_blob_sha1, name,
                   part_dir=_downloads_dir(wd), **kw)  # fmt: skip
    try:
        out = convert_checkpoint(raw, spec, wd, spec.git_blob_sha1, verified=True)
    finally:
        _unlink(raw)
    _warn_not_runnable(spec)
    return out


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
        weights_dir: The weights folder (None: :func:`resolve_weights_dir`).
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
    dl = _downloads_dir(wd)
    dl.mkdir(parents=True, exist_ok=True)
    copy = dl / f".import-{spec.name}.{os.getpid()}.tmp"
    try:
        actual = _copy_hashing(src, copy)
        verified = actual == spec.git_blob_sha1
        if not verified and not trust_unverified:
            raise HashMismatchError(name, spec.git_blob_sha1, actual, str(src))
        if not verified:
            log.warning("%s: importing %s with git blob SHA-1 %s, not the registry's %s (unverified)",
                        name, src, actual, spec.git_blob_sha1)  # fmt: skip
        if spec.fmt == "torch_pickle":
            try:
                out = convert_checkpoint(copy, spec, wd, actual, verified)
            except UnsafeCheckpointError as exc:
                raise UnsafeCheckpointError(exc.global_name, str(src)) from None
        else:
            if spec.fmt == "keras_h5":
                with copy.open("rb") as fh:
                    if fh.read(len(HDF5_SIGNATURE)) != HDF5_SIGNATURE:
                        raise CheckpointFormatError(f"{src}: not an HDF5 (Keras .h5) file")
            out = weights_path(name, wd)
            os.replace(copy, out)
    finally:
        _unlink(copy)
    _warn_not_runnable(spec)
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
    if spec.fmt != "torch_pickle":
        sha = git_blob_sha1(path)
        return {"name": name, "source_sha1": sha, "verified": "true" if sha == spec.git_blob_sha1 else "false"}
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="numpy") as f:  # metadata only: no torch needed
            return dict(f.metadata() or {})
    except Exception as exc:
        raise CheckpointFormatError(
            f"{path}: unreadable safetensors file ({exc}); delete it and run `python -m models fetch {name}`"
        ) from exc


def load_weights(name: str, weights_dir: str | Path | None = None) -> tuple[dict[str, Any], dict[str, str]]:
    """Loads the converted weights of a PyTorch checkpoint from safetensors (never unpickles).

    Args:
        name: Registry name of a ``torch_pickle`` entry.
        weights_dir: The weights folder (None: :func:`resolve_weights_dir`).

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
    if spec.fmt != "torch_pickle":
        raise CheckpointFormatError(
            f"{name!r} is a {spec.fmt} file, not converted weights; open weights_path({name!r}) with its own runtime"
        )
    wd = resolve_weights_dir(weights_dir)
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


def list_models(weights_dir: str | Path | None = None) -> list[dict[str, Any]]:
    """Every registered model and whether its weights are stored.

    Args:
        weights_dir: The weights folder (None: :func:`resolve_weights_dir`).

    Returns:
        One dict per registry entry, registry order: ``name``, ``fmt``, ``arch``, ``input_size``, ``classes``
        (number of emotion classes), ``labels`` (their names), ``has_va``, ``runnable``, ``present``, ``verified``
        (None when absent), ``sha1`` (registry hash), ``path`` (where the weights are or would be), ``note``.
    """
    wd = resolve_weights_dir(weights_dir)
    rows: list[dict[str, Any]] = []
    for spec in REGISTRY.values():
        path = weights_path(spec.name, wd)
        present = path.is_file()
        verified: bool | None = None
        notes = [spec.note] if spec.note else []
        if present:
            try:
                meta = read_metadata(spec.name, wd)
                verified = meta.get("verified") == "true" and meta.get("source_sha1") == spec.git_blob_sha1
            except Exception as exc:
                verified = False
                notes.append(f"unreadable: {exc}")
            if not verified:
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
