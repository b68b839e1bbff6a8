"""Mobile and edge export of an emotion model (ONNX or TorchScript), checked against PyTorch on real face crops.

The seed converts its models for the mobile demo with ``to_pytorchlite.py`` (``torch.jit.trace`` then
``optimize_for_mobile``) and ``convert_pt_to_onnx.py`` (opset 11, input ``input``, dynamic batch). AffectLab does the
same for any registered PyTorch emotion model or fine-tuned version (``base@...``), with these differences:

- The exported graph returns two outputs: ``logits`` (the raw head outputs: emotion logits, then valence and arousal
  for ``*_va_mtl``; no softmax, no clipping) and ``features`` (the backbone's pooled features, as
  ``EmotionRecognizer.extract_features`` gives them). ONNX names them so; TorchScript returns the tuple
  ``(logits, features)``.
- Input ``input``: ``[N, 3, S, S]`` float32, already normalised (``models.recognizer.preprocess``); the batch is
  dynamic.
- A fine-tuned ``head`` version exports its base backbone with the version's head; a ``full`` version its whole state.
- The file is written to a temporary name, loaded back (onnxruntime / ``torch.jit.load``) and compared with the
  PyTorch model on real face crops: the largest absolute difference over both outputs, for the whole batch and for a
  batch of one (which checks the dynamic batch). Within :data:`TOLERANCE` it is renamed into place; otherwise it is
  deleted and :class:`ExportCheckError` gives the difference. :func:`publish_checked` is that rule, for every format
  (the phone formats of ``models.mobile_export`` too).
- The model's name, labels, input size, mean/std and weights hash travel inside the file (ONNX ``metadata_props``;
  TorchScript extra file ``affectlab.json``), so a mobile app needs nothing else to use it.

Weights are read from safetensors; nothing is unpickled.
"""

from __future__ import annotations

import json
import os
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import numpy as np
import torch
from torch import nn

from models.backbones import split_head
from models.errors import AffectLabError, BadInputError, CheckpointFormatError
from models.registry import ModelSpec
from models.versions import LoadedModel, ModelNotRunnableError, load_model

if TYPE_CHECKING:
    from models.faces import FaceDetector

ExportFormat = Literal["onnx", "torchscript"]
FORMATS: tuple[str, ...] = ("onnx", "torchscript")
DEFAULT_OPSET = 17
"""ONNX opset of exported files (the published files use 11; 17 runs in every current onnxruntime, mobile too)."""
TOLERANCE = 1e-4
"""Largest accepted absolute difference between the exported file and the PyTorch model."""
MAX_CHECK_CROPS = 8
"""Face crops used by the parity check at most."""
SUFFIXES = {"onnx": ".onnx", "torchscript": ".torchscript.pt"}
METADATA_FILE = "affectlab.json"


class ExportError(AffectLabError):
    """A model could not be exported, or the exported file could not be checked."""


class ExportCheckError(ExportError):
    """The written file failed its agreement check with the PyTorch model: it was deleted, nothing was published.

    Raised by :func:`publish_checked` for every format; the CLI exits 2 and the Models page shows it with ``st.error``.

    Attributes:
        format: The export format (``onnx``, ``torchscript``, ``litert``, ``executorch``, ``onnx int8``...).
        max_diff: The largest difference found (``inf`` when a shape differed, ``nan`` when a value was not finite).
        tolerance: The accepted largest difference (None for int8 files: measured, only required to be finite).
    """

    def __init__(self, fmt: str, max_diff: float, tolerance: float | None, what: str) -> None:
        self.format, self.max_diff, self.tolerance = fmt, max_diff, tolerance
        limit = f"> {tolerance:g}" if tolerance is not None and np.isfinite(max_diff) else "(not a finite number)"
        super().__init__(
            f"the {fmt} file disagrees with the PyTorch model: largest {what} difference {max_diff:.3g} {limit}; "
            "it was not kept. Try another format (or opset), and report the model if it persists."
        )


@dataclass(frozen=True)
class ExportReport:
    """What an export wrote and how well it agrees with the PyTorch model.

    Attributes:
        path: The exported file.
        format: ``onnx`` or ``torchscript``.
        size_bytes: Its size in bytes.
        max_abs_diff: Largest absolute difference of ``logits`` and ``features`` from the PyTorch model's, over the
            check crops (as one batch and as a batch of one).
        n_crops: Number of real face crops the check ran on.
        note: What differs from the request (e.g. TorchScript written without ``optimize_for_mobile`` because this
            torch build lacks XNNPACK); empty otherwise.
    """

    path: Path
    format: str
    size_bytes: int
    max_abs_diff: float
    n_crops: int
    note: str = ""

    def agrees(self, tolerance: float = TOLERANCE) -> bool:
        """Whether the exported file agrees with the PyTorch model within ``tolerance``."""
        return bool(np.isfinite(self.max_abs_diff)) and self.max_abs_diff <= tolerance


def load_full_model(name: str, weights_dir: str | Path) -> LoadedModel:
    """:func:`models.versions.load_model`, with the errors of an export.

    Raises:
        UnknownModelError, VersionNotFoundError, WeightsMissingError: As ``load_model``.
        ExportError: Not a runnable PyTorch emotion model, or a version's tensors do not fit its base.
    """
    try:
        return load_model(name, weights_dir)
    except (ModelNotRunnableError, CheckpointFormatError) as exc:
        raise ExportError(str(exc)) from exc


class LogitsAndFeatures(nn.Module):
    """``x -> (logits, features)``: the backbone's pooled features and the raw head outputs computed from them."""

    def __init__(self, model: nn.Module, spec: ModelSpec) -> None:
        """Splits ``model`` (in place, see ``backbones.split_head``) into its backbone and head."""
        super().__init__()
        self.backbone, self.head = split_head(model, spec)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Runs the model.

        Args:
            x: ``[N, 3, S, S]`` normalised input.

        Returns:
            ``(logits, features)``: ``[N, num_outputs]`` and ``[N, feature_dim]``.
        """
        features = self.backbone(x)
        return self.head(features), features


# ---------------------------------------------------------------- check crops


def crops_from_images(paths: Sequence[str | Path], detector: FaceDetector | None = None) -> list[np.ndarray]:
    """Detects faces in images and returns their crops (reference detector settings, tight boxes).

    Args:
        paths: Image files.
        detector: A ``models.faces.FaceDetector`` (None: a new one).

    Returns:
        The face crops, in file order, largest face first within a file.

    Raises:
        BadInputError: An image cannot be read.
    """
    from models.faces import FaceDetector, crop_face
    from models.images import load_image

    det = detector if detector is not None else FaceDetector()
    crops: list[np.ndarray] = []
    for path in paths:
        img = load_image(Path(path))
        crops += [c for c in (crop_face(img, f.box) for f in det.detect(img)) if c.size]
    return crops


def sample_crops(detector: FaceDetector | None = None) -> list[np.ndarray]:
    """The built-in check sample: the face of scikit-image's astronaut photograph (a real face, shipped offline).

    Raises:
        ExportError: scikit-image is not installed or no face is found.
    """
    try:
        import skimage.data
    except ImportError as exc:
        raise ExportError(
            "the built-in check image needs scikit-image; pass --check-images FILE... with photos of faces instead"
        ) from exc
    from models.faces import FaceDetector, crop_face

    det = detector if detector is not None else FaceDetector()
    img = np.ascontiguousarray(skimage.data.astronaut()[..., :3])
    return [c for c in (crop_face(img, f.box) for f in det.detect(img)) if c.size]


# ---------------------------------------------------------------- writing


def _tmp_for(final: Path) -> Path:
    return final.with_name(f".{final.name}.{os.getpid()}.tmp")


def _metadata(loaded: LoadedModel) -> dict[str, str]:
    spec = loaded.spec
    return {
        "name": loaded.name,
        "base": spec.name,
        "arch": spec.arch,
        "weights_hash": loaded.weights_hash,
        "labels": json.dumps(list(spec.labels)),
        "has_va": "true" if spec.has_va else "false",
        "input_size": str(spec.input_size),
        "mean": json.dumps(list(spec.mean)),
        "std": json.dumps(list(spec.std)),
        "outputs": json.dumps(["logits", "features"]),
        "producer": "affectlab models.export",
    }


def _write_onnx(wrapper: nn.Module, example: torch.Tensor, tmp: Path, meta: dict[str, str], opset: int) -> None:
    import onnx

    with warnings.catch_warnings():  # the TorchScript-based exporter warns that it is deprecated; it is what runs here
        warnings.simplefilter("ignore")
        torch.onnx.export(
            wrapper,
            (example,),
            str(tmp),
            opset_version=opset,
            input_names=["input"],
            output_names=["logits", "features"],
            dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}, "features": {0: "batch"}},
            do_constant_folding=True,
            export_params=True,
            dynamo=False,
        )
    model = onnx.load(str(tmp))
    onnx.checker.check_model(model)
    for key, value in meta.items():
        entry = model.metadata_props.add()
        entry.key, entry.value = key, value
    onnx.save(model, str(tmp))


def _write_torchscript(wrapper: nn.Module, example: torch.Tensor, tmp: Path, meta: dict[str, str], mobile: bool) -> str:
    """Traces (and mobile-optimises when this torch can); returns a note when the optimisation was skipped."""
    note = ""
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # deprecation, and TracerWarnings about sizes used as numbers (SAME padding)
        module: torch.jit.ScriptModule = torch.jit.trace(wrapper, (example,), check_trace=False)
        if mobile:
            try:
                from torch.utils.mobile_optimizer import optimize_for_mobile

                module = optimize_for_mobile(module)
            except Exception as exc:  # builds without XNNPACK cannot run the mobile passes: keep the plain trace
                why = "it needs XNNPACK" if "XNNPACK" in str(exc) else f"{type(exc).__name__}: {str(exc)[:120]}"
                note = f"optimize_for_mobile is not available in this torch build ({why}); plain trace written"
        torch.jit.save(module, str(tmp), _extra_files={METADATA_FILE: json.dumps(meta)})
    return note


def _publish(tmp: Path, final: Path) -> None:
    with tmp.open("rb") as fh:
        os.fsync(fh.fileno())
    os.replace(tmp, final)


def publish_checked(
    tmp: Path,
    final: Path,
    fmt: str,
    check: Callable[[Path], float],
    tolerance: float | None,
    what: str = "absolute",
) -> float:
    """The one way every export (ONNX, TorchScript, LiteRT, ExecuTorch, int8) puts its file in place.

    ``tmp`` (already written) is checked by ``check``, which returns its largest difference from the PyTorch model
    (computed from outputs of the file run in its own runtime). Within ``tolerance`` the file is fsynced and renamed to
    ``final``; otherwise, or when the check raises, ``tmp`` is deleted and ``final`` is left as it was: a file that
    failed its check is never kept. ``tolerance`` None: the difference is measured, not gated (int8 files, which are
    never presented as equal), but it must still be finite (a file giving NaN or a wrong shape is broken).

    Returns:
        The largest difference.

    Raises:
        ExportCheckError: The difference is over ``tolerance`` or not finite (the message gives it).
        ExportError: The check could not run the file.
    """
    try:
        diff = float(check(tmp))
        if not np.isfinite(diff) or (tolerance is not None and diff > tolerance):
            raise ExportCheckError(fmt, diff, tolerance, what)
        _publish(tmp, final)
    finally:
        tmp.unlink(missing_ok=True)
    return diff


# ---------------------------------------------------------------- parity


def _max_diff(got: Sequence[np.ndarray], want: Sequence[np.ndarray]) -> float:
    worst = 0.0
    for g, w in zip(got, want, strict=True):
        if g.shape != w.shape:
            return float("inf")
        worst = max(worst, float(np.max(np.abs(g.astype(np.float64) - w.astype(np.float64)))) if g.size else 0.0)
    return worst


def _runner(path: Path, fmt: str) -> Callable[[torch.Tensor], list[np.ndarray]]:
    if fmt == "onnx":
        import onnxruntime as ort

        opts = ort.SessionOptions()
        opts.log_severity_level = 3
        session = ort.InferenceSession(str(path), sess_options=opts, providers=["CPUExecutionProvider"])

        def run_onnx(x: torch.Tensor) -> list[np.ndarray]:
            return [np.asarray(a) for a in session.run(["logits", "features"], {"input": x.numpy()})]

        return run_onnx
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # "torch.jit.load is deprecated"
        module = torch.jit.load(str(path), map_location="cpu")
    module.eval()

    def run_ts(x: torch.Tensor) -> list[np.ndarray]:
        with torch.no_grad():
            logits, features = module(x)
        return [logits.numpy(), features.numpy()]

    return run_ts


def check_parity(path: str | Path, fmt: str, wrapper: nn.Module, x: torch.Tensor) -> float:
    """Largest absolute difference between an exported file and the PyTorch model on the inputs ``x``.

    The file runs on the whole batch and on its first item alone (the batch dimension must be dynamic).

    Args:
        path: The exported file.
        fmt: ``onnx`` or ``torchscript``.
        wrapper: The :class:`LogitsAndFeatures` model that was exported.
        x: Normalised inputs ``[N, 3, S, S]``, N >= 1.

    Returns:
        The largest absolute difference over both outputs (``inf`` when a shape differs).

    Raises:
        ExportError: The file cannot be loaded or run.
    """
    with torch.inference_mode():
        want = [t.numpy() for t in wrapper(x)]
    try:
        run = _runner(Path(path), fmt)
        diff = _max_diff(run(x), want)
        if len(x) > 1:
            diff = max(diff, _max_diff(run(x[:1]), [w[:1] for w in want]))
    except AffectLabError:
        raise
    except Exception as exc:
        raise ExportError(f"{path}: the exported {fmt} file could not be loaded or run ({exc})") from exc
    return diff


# ---------------------------------------------------------------- entry point


def default_out(name: str, fmt: str) -> Path:
    """``<name>.onnx`` or ``<name>.torchscript.pt`` in the current folder."""
    return Path(f"{name}{SUFFIXES[fmt]}")


def export_model(
    name: str,
    fmt: ExportFormat,
    out: str | Path | None,
    weights_dir: str | Path,
    *,
    check_images: Sequence[str | Path] | None = None,
    crops: Sequence[np.ndarray] | None = None,
    opset: int = DEFAULT_OPSET,
    mobile: bool = True,
) -> ExportReport:
    """Exports a model to ONNX or TorchScript, atomically, and checks the file against PyTorch on real faces.

    Args:
        name: Registry name of a PyTorch emotion model, or a fine-tuned version name.
        fmt: ``onnx`` or ``torchscript``.
        out: Output file (None: :func:`default_out`); its folder is created.
        weights_dir: The weights folder (the entry point passes ``Settings.weights_dir``).
        check_images: Photos whose detected faces are the check crops (None: the built-in astronaut face).
        crops: RGB uint8 face crops to check on instead (takes precedence over ``check_images``).
        opset: ONNX opset (11 or higher).
        mobile: Run ``torch.utils.mobile_optimizer.optimize_for_mobile`` on the TorchScript trace, as the seed's
            ``to_pytorchlite.py`` does (skipped silently where this torch build cannot).

    Returns:
        The report (``max_abs_diff`` is within :data:`TOLERANCE`).

    Raises:
        ExportCheckError: The file disagrees with PyTorch beyond :data:`TOLERANCE`: it was not kept
            (:func:`publish_checked`, the rule of every format).
        ExportError: Unknown format, opset below 11, no face among the check crops, or the export failed.
        BadInputError: A check image cannot be read.
        UnknownModelError, VersionNotFoundError, WeightsMissingError: As :func:`load_full_model`.
    """
    if fmt not in FORMATS:
        raise ExportError(f"unknown export format {fmt!r}; use one of {', '.join(FORMATS)}")
    if opset < 11:
        raise ExportError(f"opset {opset} is too old: use 11 (the published files') or higher")
    loaded = load_full_model(name, weights_dir)
    spec = loaded.spec
    if crops is None:
        crops = crops_from_images(check_images) if check_images else sample_crops()
        if not crops:
            where = ", ".join(str(p) for p in check_images) if check_images else "the built-in sample"
            raise ExportError(f"no face found in {where}; pass --check-images with photos showing faces")
    crops = [np.ascontiguousarray(c, dtype=np.uint8) for c in crops if c.size][:MAX_CHECK_CROPS]
    if not crops:
        raise ExportError("no non-empty face crop to check the export on")
    for i, c in enumerate(crops):
        if c.ndim != 3 or c.shape[2] != 3:
            raise BadInputError(f"crop {i}", f"expected an RGB array (h, w, 3), got shape {c.shape}")

    from models.recognizer import preprocess

    x = preprocess(crops, spec)
    wrapper = LogitsAndFeatures(loaded.model, spec).eval()
    for p in wrapper.parameters():
        p.requires_grad_(False)
    final = Path(out) if out is not None else default_out(name, fmt)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = _tmp_for(final)
    example = x[:2] if len(x) >= 2 else torch.cat([x, x])  # a batch of 2: batch-dependent shapes stay symbolic
    meta = _metadata(loaded)
    note = ""
    try:
        if fmt == "onnx":
            _write_onnx(wrapper, example, tmp, meta, opset)
        else:
            note = _write_torchscript(wrapper, example, tmp, meta, mobile)
    except Exception as exc:
        tmp.unlink(missing_ok=True)
        if isinstance(exc, AffectLabError):
            raise
        raise ExportError(f"exporting {name!r} to {fmt} failed: {exc}") from exc
    diff = publish_checked(tmp, final, fmt, lambda p: check_parity(p, fmt, wrapper, x), TOLERANCE)
    return ExportReport(
        path=final, format=fmt, size_bytes=final.stat().st_size, max_abs_diff=diff, n_crops=len(crops), note=note
    )


def read_torchscript_metadata(path: str | Path) -> dict[str, str]:
    """The metadata an exported TorchScript file carries (``affectlab.json``), read from the zip without loading it.

    Loading a TorchScript archive runs the code it holds; reading one zip entry does not.
    """
    import zipfile

    with zipfile.ZipFile(path) as zf:
        entry = next((n for n in zf.namelist() if n.endswith(f"/extra/{METADATA_FILE}")), None)
        raw = zf.read(entry).decode() if entry else ""
    meta: dict[str, str] = json.loads(raw or "{}")  # written by _write_torchscript: str to str
    return meta
