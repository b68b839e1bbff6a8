"""Video throughput: the reference-style loop vs AffectLab's video pipeline, same random weights, one run.

Reference-style (what EmotiEffLib's video tutorial does): decode every frame, keep 5 fps, run
``MTCNN(keep_all=False, post_process=False, min_face_size=40).detect`` on each full-size frame, then each face alone
through the torch backbone with autograd on (``EmotiEffLibRecognizerTorch.extract_features`` has no ``no_grad``),
classifier as a NumPy dot.

AffectLab: ``analyze_video`` with one detector (frames downscaled to ``--max-side`` for detection), detection on
every ``--detect-every``-th sampled frame with boxes interpolated between, all crops of a chunk in one inference-mode
batch, tracking; ``--adaptive`` adds the adaptive frame rate.

Usage::

    .venv/bin/python -m bench.bench_video [--seconds 20] [--detect-every 3] [--max-side 320] [--threads 2]
    .venv/bin/python -m bench.bench_video --long-minutes 10   # resident memory on a synthetic 720p video
"""

from __future__ import annotations

import argparse
import resource
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import torch  # noqa: E402


def make_video(path: Path, seconds: float, size: tuple[int, int], fps: int = 30) -> Path:
    from models.faces import FaceDetector
    from tests import testdata
    from tests.videos import Placement, background, compose, face_patches, write_video

    det = FaceDetector()
    s = size[1] // 3
    patches = face_patches(det, testdata.astronaut(), size=s) + face_patches(det, testdata.pyfeat_file(
        "single_face.jpg"), size=s)
    bg = background(*size)
    n = int(seconds * fps)

    def frames():
        for i in range(n):
            ph = 2 * np.pi * i / (fps * 8)
            yield compose(bg, patches, [
                Placement(0, int(size[0] * (0.1 + 0.25 * (1 + np.sin(ph)))), size[1] // 10),
                Placement(1, int(size[0] * (0.55 - 0.1 * np.cos(ph))), size[1] // 2),
            ])

    return write_video(path, frames(), fps=fps, options={"preset": "ultrafast"})


def reference_loop(path: Path, backbone: torch.nn.Module, head: tuple[np.ndarray, np.ndarray], fps: float) -> int:
    import av
    from facenet_pytorch import MTCNN
    from PIL import Image
    from torchvision import transforms

    mtcnn = MTCNN(keep_all=False, post_process=False, min_face_size=40, device="cpu")
    tf = transforms.Compose([transforms.Resize((224, 224)), transforms.ToTensor(),
                             transforms.Normalize(mean=[0.485, 0.456, 0.406], std=[0.229, 0.224, 0.225])])
    n_faces = 0
    last_slot = -1
    with av.open(str(path)) as c:
        for frame in c.decode(video=0):
            slot = int(frame.time * fps + 1e-6)
            if slot <= last_slot:
                continue
            last_slot = slot
            img = frame.to_ndarray(format="rgb24")
            boxes, probs = mtcnn.detect(img, landmarks=False)
            if probs[0] is None:
                continue
            for box in boxes[probs > 0.9]:
                x1, y1, x2, y2 = box.astype(int)[0:4]
                crop = img[max(y1, 0):y2, max(x1, 0):x2]
                x = tf(Image.fromarray(crop)).unsqueeze(0)
                feats = backbone(x).data.cpu().numpy()  # autograd on, as the reference
                _ = np.dot(feats, head[0].T) + head[1]
                n_faces += 1
    return n_faces


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seconds", type=float, default=20.0)
    ap.add_argument("--fps", type=float, default=5.0)
    ap.add_argument("--detect-every", type=int, default=3)
    ap.add_argument("--max-side", type=int, default=320)
    ap.add_argument("--adaptive", action="store_true")
    ap.add_argument("--threads", type=int, default=0, help="torch intra-op threads (0: torch's default)")
    ap.add_argument("--long-minutes", type=float, default=0.0, help="memory check on a synthetic 720p video")
    ap.add_argument("--skip-reference", action="store_true")
    ap.add_argument("--classify-batch", type=int, default=8, help="crops per recognizer call (memory vs speed)")
    ap.add_argument("--backends", default="torch,onnx",
                    help="AffectLab backends to time (comma-separated: torch, onnx = ONNX Runtime, fp32)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    from models.adaptive import AdaptiveConfig
    from models.faces import DetectorConfig, FaceDetector
    from models.runtime import tune_malloc
    from models.video import VideoConfig, analyze_video
    from tests.videos import random_recognizer

    tune_malloc()
    rec = random_recognizer("enet_b0_8_best_vgaf", seed=0)
    tmp = Path(tempfile.mkdtemp(prefix="bench_video_"))
    cfg = VideoConfig(detect_every=args.detect_every, chunk_frames=16, classify_batch=args.classify_batch,
                      adaptive=AdaptiveConfig() if args.adaptive else None)
    det = FaceDetector(DetectorConfig(max_side=args.max_side or None))

    if args.long_minutes:
        t = time.perf_counter()
        path = make_video(tmp / "long720.mp4", args.long_minutes * 60, (1280, 720), fps=25)
        print(f"wrote {args.long_minutes:g} min 720p in {time.perf_counter() - t:.0f} s")
        t = time.perf_counter()
        a = analyze_video(path, path.name, det, rec, args.fps, config=cfg)
        dt = time.perf_counter() - t
        rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print(f"720p {a.duration:.0f} s: {a.frames_analyzed} frames, {len(a.faces)} faces, {len(a.tracks)} tracks in "
              f"{dt:.0f} s ({a.duration / dt:.1f}x real time); peak resident {rss:.0f} MB (limit 1536 MB)")
        return

    path = make_video(tmp / "bench360.mp4", args.seconds, (640, 360))
    print(f"video: 640x360, {args.seconds:g} s at 30 fps, sampling {args.fps:g} fps; torch threads "
          f"{torch.get_num_threads()}")
    timings: dict[str, float] = {}
    for backend in args.backends.split(","):
        used = rec._to_onnx_runtime(tmp, "cpu") if backend == "onnx" else rec
        ours_t = []
        for _ in range(2):  # first run warms up
            t = time.perf_counter()
            a = analyze_video(path, path.name, det, used, args.fps, config=cfg)
            ours_t.append(time.perf_counter() - t)
        ours = timings[backend] = min(ours_t)
        print(f"AffectLab ({backend}): {a.frames_analyzed}/{a.frames_sampled} frames, {len(a.faces)} faces, "
              f"{len(a.tracks)} tracks in {ours:.2f} s -> {a.frames_sampled / ours:.1f} sampled frames/s, "
              f"{args.seconds / ours:.1f}x real time (detect_every={args.detect_every}, max_side={args.max_side}, "
              f"adaptive={args.adaptive})")
    if args.skip_reference:
        return
    backbone = rec.backbone
    head = (rec.head.weight, rec.head.bias)
    for p in backbone.parameters():
        p.requires_grad_(True)  # as loaded by torch.load in the reference
    ref_t = []
    for _ in range(2):  # best of two, as for AffectLab
        t = time.perf_counter()
        n = reference_loop(path, backbone, head, args.fps)
        ref_t.append(time.perf_counter() - t)
    ref = min(ref_t)
    print(f"reference loop: {n} faces in {ref:.2f} s -> {a.frames_sampled / ref:.1f} sampled frames/s, "
          f"{args.seconds / ref:.1f}x real time")
    for backend, ours in timings.items():
        print(f"throughput ratio AffectLab ({backend}) / reference: {ref / ours:.2f}x")


if __name__ == "__main__":
    main()
