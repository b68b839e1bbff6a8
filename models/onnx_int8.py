"""The int8 ONNX export: the parity-checked fp32 ONNX file, quantised by ONNX Runtime and measured against it.

Static QDQ quantisation (per-channel int8 weights, uint8 activations) calibrated on face crops; the int8 file's size,
ms per face and agreement with fp32 are measured, returned and written into its ``metadata_props``, and a file whose
check fails (NaN, another top class beyond the tolerance) is not kept. Runs in the app's environment (the phone
formats' converters live in the side environment, :mod:`models.mobile_export`).
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from models.errors import AffectLabError
from models.mobile_export import MAX_CALIBRATION, MobileExportReport, check_inputs, default_out, softmax


def _ort_session(path: Path) -> Any:
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    opts.intra_op_num_threads = 1
    return ort.InferenceSession(str(path), sess_options=opts, providers=["CPUExecutionProvider"])


def _ms_per_face(session: Any, x: np.ndarray, repeat: int = 2) -> float:
    session.run(["logits"], {"input": x[:1]})
    best = float("inf")
    for _ in range(repeat):
        t = time.perf_counter()
        for row in x:
            session.run(["logits"], {"input": row[None]})
        best = min(best, (time.perf_counter() - t) / len(x))
    return best * 1000.0


def quantize_onnx_int8(
    fp32_path: Path,
    out_tmp: Path,
    calib_x: np.ndarray,
    check_x: np.ndarray,
    n_labels: int,
    meta: dict[str, str],
) -> dict[str, Any]:
    """Writes an int8 copy of an fp32 ONNX export (static QDQ, per-channel int8 weights, uint8 activations).

    Calibrated on ``calib_x`` (MinMax over the study's crops); compared with the fp32 file on ``check_x``; the
    figures are added to ``meta`` and written into the int8 file's ``metadata_props``.

    Returns:
        ``max_prob_diff``, ``max_logit_diff``, ``max_feature_diff``, ``top1_agreement``, ``ms_per_face``,
        ``fp32_ms_per_face``, ``size_bytes``, ``fp32_size_bytes``.
    """
    import onnx
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    class Reader(CalibrationDataReader):  # type: ignore[misc]
        def __init__(self) -> None:
            self.rows = iter(calib_x)

        def get_next(self) -> dict[str, np.ndarray] | None:
            row = next(self.rows, None)
            return None if row is None else {"input": row[None]}

    pre = out_tmp.with_name(out_tmp.name + ".pre.onnx")
    try:
        quant_pre_process(str(fp32_path), str(pre), skip_symbolic_shape=True)
        quantize_static(
            str(pre),
            str(out_tmp),
            Reader(),
            quant_format=QuantFormat.QDQ,
            per_channel=True,
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8,
        )
    finally:
        pre.unlink(missing_ok=True)
    fp32, int8 = _ort_session(fp32_path), _ort_session(out_tmp)
    want = [
        np.concatenate(a)
        for a in zip(*(fp32.run(["logits", "features"], {"input": r[None]}) for r in check_x), strict=True)
    ]
    got = [
        np.concatenate(a)
        for a in zip(*(int8.run(["logits", "features"], {"input": r[None]}) for r in check_x), strict=True)
    ]
    p_want, p_got = softmax(want[0][:, :n_labels]), softmax(got[0][:, :n_labels])
    res: dict[str, Any] = {
        "max_prob_diff": float(np.abs(p_got - p_want).max()),
        "max_logit_diff": float(np.abs(got[0] - want[0]).max()),
        "max_feature_diff": float(np.abs(got[1] - want[1]).max()),
        "top1_agreement": float(np.mean(p_got.argmax(1) == p_want.argmax(1))),
        "ms_per_face": _ms_per_face(int8, check_x),
        "fp32_ms_per_face": _ms_per_face(fp32, check_x),
        "fp32_size_bytes": fp32_path.stat().st_size,
    }
    meta = {
        **meta,
        "quantize": "int8",
        "int8_top1_agreement_vs_fp32": f"{res['top1_agreement']:.4f}",
        "int8_max_prob_diff_vs_fp32": f"{res['max_prob_diff']:.6f}",
        "int8_ms_per_face": f"{res['ms_per_face']:.2f}",
        "fp32_ms_per_face": f"{res['fp32_ms_per_face']:.2f}",
        "int8_check_crops": str(len(check_x)),
        "int8_calibration_crops": str(len(calib_x)),
    }
    model = onnx.load(str(out_tmp))
    del model.metadata_props[:]
    for key, value in meta.items():
        entry = model.metadata_props.add()
        entry.key, entry.value = key, value
    onnx.save(model, str(out_tmp))
    res["size_bytes"] = out_tmp.stat().st_size
    return res


def export_onnx_int8(
    name: str,
    out: str | Path | None,
    weights_dir: str | Path,
    *,
    crops: Sequence[np.ndarray] | None = None,
    check_images: Sequence[str | Path] | None = None,
    calibration: Sequence[np.ndarray] | None = None,
    opset: int = 17,
) -> MobileExportReport:
    """An int8 ONNX file: the fp32 export (``models.export``, parity-checked), quantised and measured against it.

    Raises:
        ExportError: As ``models.export.export_model``, or the fp32 export disagrees with PyTorch.
    """
    from models.export import ExportError, _tmp_for, crops_from_images, export_model, publish_checked, sample_crops
    from models.recognizer import preprocess_array
    from models.versions import resolve

    if crops is None:
        crops = crops_from_images(check_images) if check_images else sample_crops()
    checked = check_inputs(crops, "crop")[:8]
    if not checked:
        raise ExportError("no face found to check the export on; pass --check-images with photos showing faces")
    calib = check_inputs(calibration, "calibration crop") if calibration is not None else checked
    final = Path(out) if out is not None else default_out(name, "onnx", "int8")
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = _tmp_for(final)
    with tempfile.TemporaryDirectory(prefix="affectlab-int8-") as work:
        # Raises ExportCheckError when the fp32 file disagrees with PyTorch (then nothing is quantised or kept).
        fp32_rep = export_model(name, "onnx", Path(work) / "fp32.onnx", weights_dir, crops=checked, opset=opset)
        import onnx

        meta = {p.key: p.value for p in onnx.load(str(fp32_rep.path)).metadata_props}
        spec, _ = resolve(name, Path(weights_dir).expanduser())
        meta.update({"format": "onnx", "preprocessing": spec.preprocessing, "batch": "dynamic"})
        try:
            res = quantize_onnx_int8(
                fp32_rep.path,
                tmp,
                preprocess_array(calib[:MAX_CALIBRATION], spec),
                preprocess_array(checked, spec),
                len(spec.labels),
                meta,
            )
            # Measured, not gated: only a file giving no finite answer is refused.
            publish_checked(tmp, final, "onnx int8", lambda _: res["max_prob_diff"], None, what="probability")
        except AffectLabError:
            raise
        except Exception as exc:
            raise ExportError(f"quantising {name!r} to int8 ONNX failed: {exc}") from exc
        finally:
            tmp.unlink(missing_ok=True)
    return MobileExportReport(
        path=final,
        format="onnx",
        quantize="int8",
        size_bytes=int(res["size_bytes"]),
        max_prob_diff=res["max_prob_diff"],
        max_logit_diff=res["max_logit_diff"],
        max_feature_diff=res["max_feature_diff"],
        top1_agreement=res["top1_agreement"],
        n_crops=len(checked),
        ms_per_face=res["ms_per_face"],
        fp32_ms_per_face=res["fp32_ms_per_face"],
        fp32_size_bytes=int(res["fp32_size_bytes"]),
        n_calibration=min(len(calib), MAX_CALIBRATION),
        metadata={p.key: p.value for p in _onnx_props(final)},
    )


def _onnx_props(path: Path) -> list[Any]:
    import onnx

    return list(onnx.load(str(path)).metadata_props)
