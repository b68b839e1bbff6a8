"""Export formats side by side on this CPU: file size, load time and ms per face, PyTorch and ONNX Runtime included.

    python bench/bench_export.py [--model mobilenet_7] [--weights-dir DIR] [--formats onnx,onnx-int8,litert,...]
        [--faces 16] [--calibration DIR]

Exports the model (random weights in the published format when ``--weights-dir`` is not given: speed does not
depend on the weights) to every format asked for, then, in one run, times each file in its own runtime on the same
face crops, one face at a time on one thread (the phone case): load time (best of 3) and ms per face (best of 3
passes after a warm-up). PyTorch (the model in this process) and ONNX Runtime on the fp32 ONNX file are the two
baselines: each row gives its speed relative to both (higher is faster). LiteRT and ExecuTorch files are timed by the
side environment's interpreter (``.venv-mobile``, ``make mobile-env``); formats whose converter is not installed are
listed as skipped with the reason. Every file is written by the exporters AffectLab ships, so each passed its check.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from core.settings import Settings  # noqa: E402

LABELS = {
    "onnx": "onnx (ONNX Runtime)",
    "onnx-int8": "onnx int8",
    "torchscript": "torchscript",
    "litert": "litert",
    "litert-int8": "litert int8",
    "executorch": "executorch (XNNPACK)",
}
"""The row label of each ``--formats`` value (the README's table is this script's output)."""

SIDE_TIMER = r"""
import json, sys, time
import numpy as np
fmt, path, xpath = sys.argv[1:4]
x = np.load(xpath)
def best(f, n=3):
    out = float("inf")
    for _ in range(n):
        t = time.perf_counter(); r = f(); out = min(out, time.perf_counter() - t)
    return out, r
import torch
torch.set_num_threads(1)
from models.mobile_convert import executorch_runner, litert_runner  # int8 I/O quantised as a phone app does
make = litert_runner if fmt == "litert" else executorch_runner
load_s, run = best(lambda: make(__import__("pathlib").Path(path)))
one = lambda r: run(r[None])
one(x[0])
ms, _ = best(lambda: [one(r) for r in x])
print(json.dumps({"load_s": load_s, "ms_per_face": ms * 1000 / len(x)}))
"""


def _best(fn, n: int = 3):  # type: ignore[no-untyped-def]
    out, res = float("inf"), None
    for _ in range(n):
        t = time.perf_counter()
        res = fn()
        out = min(out, time.perf_counter() - t)
    return out, res


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    p.add_argument("--model", default="mobilenet_7")
    p.add_argument("--weights-dir")
    p.add_argument("--formats", default="onnx,onnx-int8,torchscript,litert,litert-int8,executorch")
    p.add_argument("--faces", type=int, default=16)
    p.add_argument("--calibration", help="folder of face crops for the int8 files (default: the timed crops)")
    args = p.parse_args()

    import onnxruntime as ort
    import torch

    from models import export, mobile_env, mobile_export, onnx_int8
    from models.export import LogitsAndFeatures, load_full_model
    from models.recognizer import preprocess_array
    from tests.checkpoints import install_random_weights

    torch.set_num_threads(1)
    work = Path(tempfile.mkdtemp(prefix="bench-export-"))
    wdir = Path(args.weights_dir) if args.weights_dir else work / "weights"
    if not args.weights_dir:
        install_random_weights([args.model], wdir, seed=0)
    from skimage import data

    photo = data.astronaut()
    rng = np.random.default_rng(0)
    crops = []
    for _ in range(args.faces):  # face-sized crops of a real photograph (speed does not depend on the content)
        s = int(rng.integers(90, 200))
        y, x0 = int(rng.integers(0, 512 - s)), int(rng.integers(0, 512 - s))
        crops.append(np.ascontiguousarray(photo[y : y + s, x0 : x0 + s]))
    calib = mobile_export.load_calibration(args.calibration) if args.calibration else crops
    loaded = load_full_model(args.model, wdir)
    spec = loaded.spec
    x = preprocess_array(crops, spec)
    np.save(work / "x.npy", x)
    # label, MiB, load s, ms per face (None: skipped or failed, with the reason in the last field)
    rows: list[tuple[str, str, str, float | None, str]] = []

    model = LogitsAndFeatures(loaded.model, spec).eval()
    with torch.no_grad():
        t_load, _ = _best(lambda: load_full_model(args.model, wdir))
        model(torch.from_numpy(x[:1]))
        t, _ = _best(lambda: [model(torch.from_numpy(r[None])) for r in x])
    torch_ms = t * 1000 / len(x)
    params = sum(int(v.numel()) * 4 for v in loaded.model.state_dict().values())
    rows.append(("pytorch (safetensors)", f"{params / 2**20:.1f}", f"{t_load:.2f}", torch_ms, ""))
    side = Settings.from_env().mobile_python
    for fmt in [f.strip() for f in args.formats.split(",") if f.strip()]:
        base, _, q = fmt.partition("-")
        out = work / f"{args.model}-{fmt}{mobile_export.SUFFIXES.get(base, '.' + base)}"
        try:
            if base in ("onnx", "torchscript") and not q:
                export.export_model(args.model, base, out, wdir, crops=crops[:4])  # type: ignore[arg-type]
            elif base == "onnx":
                onnx_int8.export_onnx_int8(args.model, out, wdir, crops=crops[:4], calibration=calib)
            else:
                mobile_export.export_mobile(
                    args.model,
                    base,
                    out,
                    wdir,
                    crops=crops[:4],
                    quantize="int8" if q else "none",
                    calibration=calib,  # type: ignore[arg-type]
                    python=side,
                )
        except Exception as exc:  # a missing converter is a row, not a crash
            rows.append((LABELS.get(fmt, fmt), "-", "-", None, f"skipped: {str(exc)[:90]}"))
            continue
        size = f"{out.stat().st_size / 2**20:.1f}"
        if base == "onnx":
            opts = ort.SessionOptions()
            opts.intra_op_num_threads = 1
            load_s, sess = _best(
                lambda out=out, opts=opts: ort.InferenceSession(str(out), opts, providers=["CPUExecutionProvider"])
            )
            sess.run(None, {"input": x[:1]})
            t, _ = _best(lambda sess=sess: [sess.run(None, {"input": r[None]}) for r in x])
            ms = t * 1000 / len(x)
        elif base == "torchscript":
            load_s, mod = _best(lambda out=out: torch.jit.load(str(out)))
            with torch.no_grad():
                mod(torch.from_numpy(x[:1]))
                t, _ = _best(lambda mod=mod: [mod(torch.from_numpy(r[None])) for r in x])
            ms = t * 1000 / len(x)
        else:
            proc = subprocess.run(
                [str(side), "-c", SIDE_TIMER, base, str(out), str(work / "x.npy")],
                capture_output=True,
                text=True,
                timeout=900,
                env=mobile_env.side_env(),
                cwd=ROOT,
            )
            if proc.returncode != 0:
                rows.append((LABELS.get(fmt, fmt), size, "-", None, f"failed: {proc.stderr.strip()[-90:]}"))
                continue
            got = json.loads(proc.stdout.strip().splitlines()[-1])
            load_s, ms = got["load_s"], got["ms_per_face"]
        rows.append((LABELS.get(fmt, fmt), size, f"{load_s:.2f}", ms, ""))
    ort_ms = next((r[3] for r in rows if r[0] == LABELS["onnx"]), None)
    print(f"model {args.model}, {len(x)} face crops, one at a time, 1 thread, this CPU ({os.cpu_count()} cores)")
    print("| format | MiB | load s | ms/face | speed vs PyTorch | speed vs ONNX Runtime |")
    print("|---|---|---|---|---|---|")
    for label, size, load, ms, why in rows:
        if ms is None:
            print(f"| {label} | {size} | {load} | - | {why} | - |")
            continue
        vs_ort = f"{ort_ms / ms:.2f}" if ort_ms else "-"
        print(f"| {label} | {size} | {load} | {ms:.1f} | {torch_ms / ms:.2f} | {vs_ort} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
