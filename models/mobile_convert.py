"""The LiteRT / ExecuTorch converter worker: runs inside the side environment (``.venv-mobile``), never in the app.

``models.mobile_export`` starts it as ``<mobile python> -m models.mobile_convert REQUEST.json [...]``
(``models.mobile_env``; several requests share one process) and reads each ``RESPONSE.json`` back; the converters
(litert-torch, executorch), their runtimes (ai-edge-litert, ExecuTorch's) and TensorFlow pin versions of their own,
so AffectLab's environment never imports them. The side
environment sees AffectLab's environment underneath (``make mobile-env``), so this worker loads the model with the
same code as every other path (``models.export.load_full_model``: safetensors, nothing unpickled).

What it does with a request (keys: ``name``, ``weights_dir``, ``format`` ``litert``/``executorch``, ``quantize``
``none``/``int8``, ``out`` (a temporary path the caller publishes), ``x`` and ``calib`` (``.npy`` model inputs: the
check crops and the calibration crops), ``meta`` (the metadata to embed), ``response``):

1. Converts ``LogitsAndFeatures`` (outputs ``logits``, ``features``; input ``[1, 3, S, S]`` preprocessed) with
   litert-torch (int8: PT2E static quantisation, per-channel symmetric weights, activations calibrated on ``calib``)
   or with ExecuTorch (``to_edge_transform_and_lower`` with the XNNPACK partitioner).
2. Runs the written file in its own runtime (``ai_edge_litert`` Interpreter, ``executorch.runtime``) on every check
   crop and compares with the PyTorch model: largest difference of the probabilities (softmax over the emotion
   logits), logits and features, top-class agreement, ms per face (and PyTorch's, side by side).
3. Embeds the metadata: LiteRT in the flatbuffer's ``metadata`` table under ``affectlab`` (JSON; with the int8
   figures), ExecuTorch as the constant method ``affectlab_metadata`` (a JSON string). A LiteRT file is run again
   after the metadata is added and must give the same outputs.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

LITERT_METADATA = "affectlab"
EXECUTORCH_METADATA = "affectlab_metadata"

Runner = Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]]


def _softmax(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z.max(axis=1, keepdims=True))
    out: np.ndarray = e / e.sum(axis=1, keepdims=True)
    return out


def litert_io(path: Path) -> dict[str, Any]:
    """Dtype and (scale, zero point) of a LiteRT file's input and outputs (int8 files may take and give int8)."""
    from ai_edge_litert.interpreter import Interpreter

    runner = Interpreter(model_path=str(path)).get_signature_runner()
    out: dict[str, Any] = {}
    for kind, details in (("input", runner.get_input_details()), ("output", runner.get_output_details())):
        for name, d in sorted(details.items()):
            scale, zero = d.get("quantization", (0.0, 0))
            out[f"{kind}:{name}"] = {"dtype": np.dtype(d["dtype"]).name, "scale": float(scale), "zero_point": int(zero)}
    return out


def litert_runner(path: Path) -> Runner:
    """Runs a LiteRT file on float inputs.

    An int8 input is quantised and int8 outputs dequantised with the file's own scale and zero point (what a phone
    app does with a fully integer model).
    """
    from ai_edge_litert.interpreter import Interpreter

    interp = Interpreter(model_path=str(path), num_threads=1)
    runner = interp.get_signature_runner()
    sig = interp.get_signature_list()["serving_default"]
    (inp,) = sig["inputs"]
    outs = sorted(sig["outputs"])  # output_0 = logits, output_1 = features
    in_d = runner.get_input_details()[inp]
    out_d = runner.get_output_details()
    in_scale, in_zero = in_d.get("quantization", (0.0, 0))
    in_dtype = np.dtype(in_d["dtype"])

    def run(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        x = np.ascontiguousarray(x, dtype=np.float32)
        if in_dtype.kind in "iu" and in_scale:
            info = np.iinfo(in_dtype)
            x = np.clip(np.round(x / in_scale) + in_zero, info.min, info.max).astype(in_dtype)
        res = runner(**{inp: x})
        got = []
        for name in outs:
            v = np.asarray(res[name])
            scale, zero = out_d[name].get("quantization", (0.0, 0))
            got.append((v.astype(np.float32) - zero) * scale if v.dtype.kind in "iu" and scale else v)
        return got[0], got[1]

    return run


def executorch_runner(path: Path) -> Runner:
    """Runs an ExecuTorch program's ``forward`` (one thread, XNNPACK) on float inputs."""
    import torch
    from executorch.runtime import Runtime

    method = Runtime.get().load_program(str(path)).load_method("forward")

    def run(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        logits, features = method.execute([torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))])
        return logits.numpy(), features.numpy()

    return run


def _convert_litert(wrapper: Any, example: Any, out: Path, quantize: str, calib: np.ndarray | None) -> None:
    import litert_torch
    import torch

    if quantize == "int8":
        from litert_torch.quantize.pt2e_quantizer import PT2EQuantizer, get_symmetric_quantization_config
        from litert_torch.quantize.quant_config import QuantConfig
        from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e

        quantizer = PT2EQuantizer().set_global(get_symmetric_quantization_config(is_per_channel=True))
        module = torch.export.export(wrapper, (example,)).module()
        module = prepare_pt2e(module, quantizer)
        assert calib is not None
        with torch.no_grad():
            for row in calib:
                module(torch.from_numpy(row[None]))
        module = convert_pt2e(module, fold_quantize=False)
        model = litert_torch.convert(module, (example,), quant_config=QuantConfig(pt2e_quantizer=quantizer))
    else:
        model = litert_torch.convert(wrapper, (example,))
    model.export(str(out))


def _convert_executorch(wrapper: Any, example: Any, out: Path, meta: dict[str, str]) -> None:
    import torch
    from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
    from executorch.exir import to_edge_transform_and_lower

    program = torch.export.export(wrapper, (example,))
    edge = to_edge_transform_and_lower(
        program, partitioner=[XnnpackPartitioner()], constant_methods={EXECUTORCH_METADATA: json.dumps(meta)}
    )
    out.write_bytes(edge.to_executorch().buffer)


def embed_litert_metadata(path: Path, meta: dict[str, str]) -> None:
    """Adds (or replaces) the ``affectlab`` entry of a LiteRT flatbuffer's metadata table, in place."""
    from ai_edge_litert import schema_py_generated as schema
    from ai_edge_litert.tools import flatbuffer_utils

    model = flatbuffer_utils.read_model(path)
    model.metadata = [m for m in (model.metadata or []) if m.name != LITERT_METADATA]
    buf = schema.BufferT()
    buf.data = list(json.dumps(meta).encode())
    model.buffers.append(buf)
    entry = schema.MetadataT()
    entry.name, entry.buffer = LITERT_METADATA, len(model.buffers) - 1
    model.metadata.append(entry)
    flatbuffer_utils.write_model(model, path)


def read_litert_metadata(path: Path) -> dict[str, str]:
    """The ``affectlab`` metadata of a LiteRT file (empty when absent)."""
    from ai_edge_litert.tools import flatbuffer_utils

    model = flatbuffer_utils.read_model(path)
    for m in model.metadata or []:
        name = m.name.decode() if isinstance(m.name, bytes) else m.name
        if name == LITERT_METADATA:
            meta: dict[str, str] = json.loads(bytes(model.buffers[m.buffer].data).decode())
            return meta
    return {}


def read_executorch_metadata(path: Path) -> dict[str, str]:
    """The ``affectlab_metadata`` constant method of an ExecuTorch program (empty when absent)."""
    from executorch.runtime import Runtime

    program = Runtime.get().load_program(str(path))
    if EXECUTORCH_METADATA not in program.method_names:
        return {}
    meta: dict[str, str] = json.loads(program.load_method(EXECUTORCH_METADATA).execute([])[0])
    return meta


def _timed(fn: Callable[[np.ndarray], Any], xs: np.ndarray, repeat: int = 2) -> float:
    """Milliseconds per face of ``fn`` over the rows of ``xs``, one at a time, best of ``repeat`` passes."""
    fn(xs[:1])
    best = float("inf")
    for _ in range(repeat):
        t = time.perf_counter()
        for row in xs:
            fn(row[None])
        best = min(best, (time.perf_counter() - t) / len(xs))
    return best * 1000.0


def convert(req: dict[str, Any]) -> dict[str, Any]:
    """Converts, checks and annotates one model as the module docstring says; returns the response."""
    import torch

    from models.export import LogitsAndFeatures, load_full_model

    torch.set_num_threads(1)
    loaded = load_full_model(req["name"], req["weights_dir"])
    wrapper = LogitsAndFeatures(loaded.model, loaded.spec).eval()
    for p in wrapper.parameters():
        p.requires_grad_(False)
    x = np.load(req["x"])
    calib = np.load(req["calib"]) if req.get("calib") else None
    example = torch.from_numpy(x[:1])
    out = Path(req["out"])
    fmt, quantize, meta = req["format"], req.get("quantize", "none"), dict(req["meta"])
    t0 = time.perf_counter()
    if fmt == "litert":
        _convert_litert(wrapper, example, out, quantize, calib)
        run = litert_runner(out)
    elif fmt == "executorch":
        if quantize != "none":
            raise ValueError("ExecuTorch export is fp32 only here; int8 is offered for ONNX and LiteRT")
        _convert_executorch(wrapper, example, out, meta)
        run = executorch_runner(out)
    else:
        raise ValueError(f"unknown format {fmt!r}")
    convert_s = time.perf_counter() - t0
    with torch.no_grad():
        want_logits, want_features = (t.numpy() for t in wrapper(torch.from_numpy(x)))
    got = [run(row[None]) for row in x]
    got_logits = np.concatenate([g[0] for g in got])
    got_features = np.concatenate([g[1] for g in got])
    k = len(loaded.spec.labels)
    probs, want_probs = _softmax(got_logits[:, :k]), _softmax(want_logits[:, :k])

    def torch_run(row: np.ndarray) -> Any:
        with torch.no_grad():
            return wrapper(torch.from_numpy(row))

    res: dict[str, Any] = {
        "max_prob_diff": float(np.abs(probs - want_probs).max()),
        "max_logit_diff": float(np.abs(got_logits - want_logits).max()),
        "max_feature_diff": float(np.abs(got_features - want_features).max()),
        "top1_agreement": float(np.mean(probs.argmax(1) == want_probs.argmax(1))),
        "n_crops": len(x),
        "ms_per_face": _timed(lambda r: run(r), x),
        "torch_ms_per_face": _timed(torch_run, x),
        "convert_s": convert_s,
    }
    if fmt == "litert":
        import litert_torch

        meta["converter"] = f"litert-torch {litert_torch.__version__}"
        meta["io"] = json.dumps(litert_io(out))
        if quantize == "int8":
            meta.update(
                {
                    "int8_top1_agreement_vs_fp32": f"{res['top1_agreement']:.4f}",
                    "int8_max_prob_diff_vs_fp32": f"{res['max_prob_diff']:.6f}",
                    "int8_ms_per_face": f"{res['ms_per_face']:.2f}",
                    "fp32_torch_ms_per_face": f"{res['torch_ms_per_face']:.2f}",
                    "int8_check_crops": str(len(x)),
                }
            )
        before = run(x[:1])
        embed_litert_metadata(out, meta)
        after = litert_runner(out)(x[:1])
        if any(not np.array_equal(a, b) for a, b in zip(before, after, strict=True)):
            raise RuntimeError("the LiteRT file gives other outputs once its metadata is added")
        res["metadata"] = read_litert_metadata(out)
    else:
        res["metadata"] = read_executorch_metadata(out)
    res["size_bytes"] = out.stat().st_size
    return res


def main(argv: list[str]) -> int:
    """``python -m models.mobile_convert REQUEST.json [...]``: each response (or error) goes to its ``response``.

    Several requests share one process, so the converters are imported once; each is handled on its own.
    """
    failed = 0
    for path in argv:
        req = json.loads(Path(path).read_text(encoding="utf-8"))
        try:
            resp: dict[str, Any] = {"ok": True, **convert(req)}
        except Exception as exc:  # every failure goes back to the caller, which names it and removes the file
            resp = {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
            failed += 1
        Path(req["response"]).write_text(json.dumps(resp), encoding="utf-8")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
