"""Phone exports: LiteRT (``.tflite``) and ExecuTorch (``.pte``) files, and int8 files for ONNX and LiteRT.

The successors of the seed's ``to_tflite.py`` (TFLite is now LiteRT, written by litert-torch) and
``to_pytorchlite.py`` (PyTorch Lite is replaced by ExecuTorch), for any registered emotion model or fine-tuned
version. The converters live in the side environment (``models.mobile_env``); :func:`export_mobile` prepares the
check and calibration inputs here, runs ``models.mobile_convert`` there, and publishes the file only when its check
passed:

- fp32: the file, run in its own runtime on real face crops, must give the PyTorch model's probabilities within
  :data:`PROB_TOLERANCE`; otherwise it is deleted and :class:`models.export.ExportCheckError` gives the largest
  difference. Every format is published by ``models.export.publish_checked`` (temporary name, check, rename).
- int8 (ONNX: ONNX Runtime static QDQ quantisation, per-channel weights; LiteRT: PT2E static quantisation): calibrated
  on face crops (the study's, ``--calibration DIR`` of crops such as its ImageFolder export), then measured, never
  presented as equal: size, ms per face on this CPU and its agreement with fp32 (top-class agreement, largest
  probability difference) are returned, printed by the CLI and written into the file's metadata.

Inputs and outputs match the ONNX/TorchScript exports (``models.export``): input ``[1, 3, S, S]`` preprocessed as the
metadata says (batch 1: a phone classifies one face at a time), outputs ``logits`` then ``features``. Metadata (name,
labels, input size, mean/std, preprocessing, weights hash...): LiteRT in the flatbuffer metadata entry ``affectlab``,
ExecuTorch as the constant method ``affectlab_metadata``, ONNX in ``metadata_props``; all JSON values.
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from models import mobile_env
from models.errors import AffectLabError, BadInputError

MobileFormat = Literal["litert", "executorch"]
MOBILE_FORMATS: tuple[str, ...] = ("litert", "executorch")
SUFFIXES = {"litert": ".tflite", "executorch": ".pte"}
Quantize = Literal["none", "int8"]
PROB_TOLERANCE = 1e-4
"""Largest accepted probability difference of an fp32 file from the PyTorch model."""
MAX_CALIBRATION = 64
"""Calibration crops used at most."""
TIMEOUT_S = 1800.0


@dataclass(frozen=True)
class MobileExportReport:
    """What a LiteRT / ExecuTorch / int8 export wrote, and how it compares with fp32 PyTorch.

    Attributes:
        path: The published file.
        format: ``litert``, ``executorch`` or ``onnx``.
        quantize: ``none`` or ``int8``.
        size_bytes: Its size.
        max_prob_diff: Largest probability difference from the fp32 PyTorch model over the check crops.
        max_logit_diff: Largest raw-output difference.
        max_feature_diff: Largest feature difference.
        top1_agreement: Share of check crops whose top class is PyTorch's.
        n_crops: Check crops.
        ms_per_face: This file in its runtime, one face at a time, on this CPU (one thread).
        fp32_ms_per_face: The fp32 reference measured in the same run (fp32 ONNX for ONNX int8, else PyTorch).
        fp32_size_bytes: Size of the fp32 counterpart (the fp32 ONNX file; PyTorch's parameters for LiteRT int8).
        n_calibration: Calibration crops (int8).
        metadata: The metadata read back from the written file.
    """

    path: Path
    format: str
    quantize: str
    size_bytes: int
    max_prob_diff: float
    max_logit_diff: float
    max_feature_diff: float
    top1_agreement: float
    n_crops: int
    ms_per_face: float
    fp32_ms_per_face: float
    fp32_size_bytes: int = 0
    n_calibration: int = 0
    metadata: dict[str, str] = field(default_factory=dict)

    def lines(self) -> list[str]:
        """What the CLI prints."""
        out = [
            f"{self.format} ({self.quantize if self.quantize != 'none' else 'fp32'}) written to {self.path}",
            f"size: {self.size_bytes} bytes ({self.size_bytes / 2**20:.1f} MiB)",
        ]
        if self.quantize == "int8":
            ref = "fp32 ONNX" if self.format == "onnx" else "fp32 PyTorch"
            out += [
                f"int8 vs fp32 on {self.n_crops} face crops (calibrated on {self.n_calibration}): top-class "
                f"agreement {self.top1_agreement:.1%}, max probability difference {self.max_prob_diff:.4f} "
                "(not the same model: check it on your data)",
                f"size {self.size_bytes / 2**20:.1f} MiB vs {self.fp32_size_bytes / 2**20:.1f} MiB fp32; "
                f"{self.ms_per_face:.1f} ms per face vs {self.fp32_ms_per_face:.1f} ms ({ref}, this CPU, 1 thread)",
            ]
        else:
            out.append(
                f"check on {self.n_crops} face crops in its own runtime: max |diff| probabilities "
                f"{self.max_prob_diff:.3g} (tolerance {PROB_TOLERANCE:g}), logits {self.max_logit_diff:.3g}; "
                f"{self.ms_per_face:.1f} ms per face vs PyTorch {self.fp32_ms_per_face:.1f} ms (this CPU, 1 thread)"
            )
        return out


def softmax(z: np.ndarray) -> np.ndarray:
    """Row-wise softmax of logits ``[N, C]``."""
    e = np.exp(z - z.max(axis=1, keepdims=True))
    out: np.ndarray = e / e.sum(axis=1, keepdims=True)
    return out


def load_calibration(folder: str | Path, limit: int = MAX_CALIBRATION) -> list[np.ndarray]:
    """Face crops for int8 calibration: every image under ``folder`` (e.g. a study's ImageFolder export), sorted.

    Raises:
        BadInputError: ``folder`` is not a folder, holds no image, or an image cannot be read.
    """
    from models.images import IMAGE_SUFFIXES, load_image

    root = Path(folder)
    if not root.is_dir():
        raise BadInputError(str(folder), "not a folder of face crops")
    files = sorted(p for p in root.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and not p.name.startswith("."))
    if not files:
        raise BadInputError(str(folder), "holds no image; pass a folder of face crops (the study's ImageFolder export)")
    step = max(1, len(files) // limit)
    return [load_image(p) for p in files[::step][:limit]]


def metadata(loaded: Any, fmt: str, quantize: str) -> dict[str, str]:
    """The metadata every exported file carries (``models.export``'s, plus format, preprocessing and layout)."""
    from models.export import _metadata

    spec = loaded.spec
    meta = _metadata(loaded)
    meta.update(
        {
            "format": fmt,
            "quantize": quantize,
            "preprocessing": spec.preprocessing,
            "channel_order": "BGR" if spec.preprocessing == "caffe" else "RGB",
            "pixel_scale": "1" if spec.preprocessing == "caffe" else "1/255",
            "input_layout": "NCHW",
            "batch": "1",
            "probabilities": "softmax of the first len(labels) logits",
        }
    )
    return meta


def check_inputs(crops: Sequence[np.ndarray], what: str) -> list[np.ndarray]:
    """The non-empty crops as contiguous uint8 RGB arrays; a crop of another shape is refused (``what`` names it)."""
    out = [np.ascontiguousarray(c, dtype=np.uint8) for c in crops if c.size]
    for i, c in enumerate(out):
        if c.ndim != 3 or c.shape[2] != 3:
            raise BadInputError(f"{what} {i}", f"expected an RGB array (h, w, 3), got shape {c.shape}")
    return out


@dataclass(frozen=True)
class MobileJob:
    """One phone file to write: a model (or fine-tuned version) in one format.

    Attributes:
        name: Registry name of an emotion model or a fine-tuned version.
        fmt: ``litert`` or ``executorch``.
        out: Output file (None: ``<name>.tflite`` / ``<name>.pte``, ``-int8`` before the suffix when quantised).
        quantize: ``none`` or ``int8`` (LiteRT only).
        calibration: int8 calibration crops (None: the check crops, which the report then says).
    """

    name: str
    fmt: MobileFormat
    out: str | Path | None = None
    quantize: Quantize = "none"
    calibration: Sequence[np.ndarray] | None = None


def export_mobile(
    name: str,
    fmt: MobileFormat,
    out: str | Path | None,
    weights_dir: str | Path,
    *,
    crops: Sequence[np.ndarray] | None = None,
    check_images: Sequence[str | Path] | None = None,
    quantize: Quantize = "none",
    calibration: Sequence[np.ndarray] | None = None,
    python: Path,
) -> MobileExportReport:
    """Exports to LiteRT or ExecuTorch in the side environment, checks the file in its runtime, publishes it.

    Args:
        name: Registry name of an emotion model or a fine-tuned version.
        fmt: ``litert`` or ``executorch``.
        out: Output file (None: ``<name>.tflite`` / ``<name>.pte``, ``-int8`` before the suffix when quantised).
        weights_dir: The weights folder.
        crops: Face crops to check on (None: faces of ``check_images``, else the built-in sample face).
        check_images: Photos whose faces are the check crops.
        quantize: ``none`` or ``int8`` (LiteRT only).
        calibration: int8 calibration crops (None: the check crops, which the report then says).
        python: The side interpreter (the entry point passes ``Settings.mobile_python``).

    Returns:
        The report.

    Raises:
        ExportCheckError: The file failed its check (fp32: over :data:`PROB_TOLERANCE` on probabilities; int8: no
            finite answer): it is not kept, the message gives the largest difference.
        ExportError: Unknown format, int8 asked for ExecuTorch, no face, or the conversion failed.
        ConverterMissingError: The side environment or the converter is not installed (the message says how).
        UnknownModelError, VersionNotFoundError, WeightsMissingError: As ``models.export.load_full_model``.
    """
    job = MobileJob(name, fmt, out, quantize, calibration)
    (rep,) = export_mobile_many([job], weights_dir, crops=crops, check_images=check_images, python=python)
    return rep


def export_mobile_many(
    jobs: Sequence[MobileJob],
    weights_dir: str | Path,
    *,
    crops: Sequence[np.ndarray] | None = None,
    check_images: Sequence[str | Path] | None = None,
    python: Path,
) -> list[MobileExportReport]:
    """:func:`export_mobile` for several files in one side process (the converters are imported once).

    Each file is checked and published on its own (``models.export.publish_checked``), in the order given.

    Returns:
        The reports, in the order of ``jobs``.

    Raises:
        As :func:`export_mobile`, for the first job that failed, once every job was handled (the files that passed
        their checks are in place).
    """
    from models.export import ExportError, _tmp_for, crops_from_images, load_full_model, sample_crops
    from models.recognizer import preprocess_array

    for job in jobs:
        if job.fmt not in MOBILE_FORMATS:
            raise ExportError(f"unknown phone format {job.fmt!r}; use one of {', '.join(MOBILE_FORMATS)}")
        if job.quantize not in ("none", "int8"):
            raise ExportError(f"unknown quantisation {job.quantize!r}; use none or int8")
        if job.quantize == "int8" and job.fmt != "litert":
            raise ExportError("int8 is offered for ONNX and LiteRT; ExecuTorch files are fp32")
    py = python
    for fmt in dict.fromkeys(job.fmt for job in jobs):
        py = mobile_env.require(fmt, python)
    if crops is None:
        crops = crops_from_images(check_images) if check_images else sample_crops()
    checked = check_inputs(crops, "crop")[:8]
    if not checked:
        raise ExportError("no face found to check the export on; pass --check-images with photos showing faces")
    prepared = []
    for job in jobs:
        loaded = load_full_model(job.name, weights_dir)
        calib = check_inputs(job.calibration, "calibration crop") if job.calibration is not None else checked
        final = Path(job.out) if job.out is not None else default_out(job.name, job.fmt, job.quantize)
        final.parent.mkdir(parents=True, exist_ok=True)
        prepared.append((job, loaded, calib, final, _tmp_for(final)))
    reports: list[MobileExportReport] = []
    errors: list[AffectLabError] = []
    with tempfile.TemporaryDirectory(prefix="affectlab-mobile-") as work:
        w = Path(work)
        requests = []
        for i, (job, loaded, calib, _final, tmp) in enumerate(prepared):
            np.save(w / f"x{i}.npy", preprocess_array(checked, loaded.spec))
            np.save(w / f"calib{i}.npy", preprocess_array(calib[:MAX_CALIBRATION], loaded.spec))
            request = {
                "name": job.name,
                "weights_dir": str(Path(weights_dir).expanduser()),
                "format": job.fmt,
                "quantize": job.quantize,
                "out": str(tmp),
                "x": str(w / f"x{i}.npy"),
                "calib": str(w / f"calib{i}.npy") if job.quantize == "int8" else "",
                "meta": metadata(loaded, job.fmt, job.quantize),
                "response": str(w / f"response{i}.json"),
            }
            (w / f"request{i}.json").write_text(json.dumps(request), encoding="utf-8")
            requests.append(str(w / f"request{i}.json"))
        try:
            assert py is not None
            proc = mobile_env.run(py, ["-m", "models.mobile_convert", *requests], TIMEOUT_S * len(jobs))
            for i, (job, loaded, calib, final, tmp) in enumerate(prepared):
                try:
                    reports.append(_publish_response(w / f"response{i}.json", proc, job, loaded, calib, final, tmp))
                except AffectLabError as exc:
                    errors.append(exc)
        finally:
            for *_, tmp in prepared:
                tmp.unlink(missing_ok=True)
    if errors:
        raise errors[0]
    return reports


def _publish_response(
    resp_path: Path, proc: Any, job: MobileJob, loaded: Any, calib: Sequence[np.ndarray], final: Path, tmp: Path
) -> MobileExportReport:
    """Reads one job's answer from the side process and publishes its file when its check passed."""
    from models.export import ExportError, publish_checked

    fmt, quantize = job.fmt, job.quantize
    try:
        if not resp_path.is_file():
            tail = (proc.stderr or proc.stdout or "").strip().splitlines()[-5:]
            raise ExportError(f"the {fmt} converter stopped without an answer (exit {proc.returncode}): {tail}")
        resp = json.loads(resp_path.read_text(encoding="utf-8"))
        if not resp.get("ok"):
            raise ExportError(f"converting {job.name!r} to {fmt} failed: {resp.get('error')}")
        # fp32: gated on the probabilities the file gave in its own runtime; int8: measured, not gated (only a
        # file giving no finite answer is refused).
        publish_checked(
            tmp,
            final,
            f"{fmt} int8" if quantize == "int8" else fmt,
            lambda _: float(resp["max_prob_diff"]),
            PROB_TOLERANCE if quantize == "none" else None,
            what="probability",
        )
    finally:
        tmp.unlink(missing_ok=True)
    fp32_size = sum(int(p.numel()) * 4 for p in loaded.model.state_dict().values())
    return MobileExportReport(
        path=final,
        format=fmt,
        quantize=quantize,
        size_bytes=final.stat().st_size,
        max_prob_diff=float(resp["max_prob_diff"]),
        max_logit_diff=float(resp["max_logit_diff"]),
        max_feature_diff=float(resp["max_feature_diff"]),
        top1_agreement=float(resp["top1_agreement"]),
        n_crops=int(resp["n_crops"]),
        ms_per_face=float(resp["ms_per_face"]),
        fp32_ms_per_face=float(resp["torch_ms_per_face"]),
        fp32_size_bytes=fp32_size,
        n_calibration=min(len(calib), MAX_CALIBRATION) if quantize == "int8" else 0,
        metadata={str(k): str(v) for k, v in resp.get("metadata", {}).items()},
    )


def default_out(name: str, fmt: str, quantize: str = "none") -> Path:
    """``<name>.tflite``, ``<name>.pte`` or ``<name>.onnx`` here (``<name>-int8.<suffix>`` when quantised)."""
    suffix = SUFFIXES.get(fmt, f".{fmt}")
    return Path(f"{name}{'-int8' if quantize == 'int8' else ''}{suffix}")
