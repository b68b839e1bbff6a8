"""Agreement of the fast defaults with the exact reference path, on the test videos and images (random weights).

Exact path: torch backend (facenet-pytorch's nets, the torch classifier), detection on every sampled frame at full
resolution. Candidates: ONNX Runtime (the torch-free default) with detection on every k-th sampled frame
(k = 1, 2, 3, 4) and the boxes of the frames between interpolated along the tracks. Every candidate is scored against
the exact path's faces, frame by frame:

- kept: exact faces with a candidate face in the same frame at box IoU >= 0.8;
- same class: kept faces whose top class is the exact one's;
- max |logit diff|: over the kept faces (and, for images, over every face).

A candidate is acceptable when, on every video, kept >= 99 % and same class >= 98 % (and ONNX logits on the images
stay within 1e-4 of torch's); the default is the largest k that passes with every smaller k passing too.
``--readme`` rewrites the table between the README's ``agreement`` markers.

``--gallery G ...``: the gallery stride (``VideoConfig.gallery_every``, detection every 2nd sampled frame) forced onto
these one-face videos (``gallery_faces=1``), where faces move: its default is the largest G passing with every
smaller G passing here and on the gallery recording (``bench/bench_gallery_speed.py --agreement``).

Usage: python bench/bench_agreement.py [--fps 5] [--k 1 2 3 4] [--gallery 4 6 8] [--readme]
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402

from models.analysis import AnalysisSession  # noqa: E402
from models.tracking import iou_matrix  # noqa: E402
from tests import testdata  # noqa: E402
from tests.checkpoints import install_random_weights  # noqa: E402

NAME = "enet_b0_8_best_vgaf"
VIDEOS = ("WolfgangLanger_Pexels.mp4", "single_face.mp4", "face_noface.mov", "noface_face.mov")
IMAGES = ("multi_face.jpg", "single_face.jpg")
MARK_START = "<!-- agreement:start -->"
MARK_END = "<!-- agreement:end -->"


def faces_by_frame(session: AnalysisSession, path: Path, fps: float) -> tuple[dict[int, list], float]:
    t = time.perf_counter()
    result = session.analyze_video(path, path.name, fps=fps)
    elapsed = time.perf_counter() - t
    out: dict[int, list] = {}
    for f in result.faces:
        out.setdefault(int(f.frame), []).append(f)
    return out, elapsed


def compare(exact: dict[int, list], cand: dict[int, list]) -> dict[str, float]:
    n = kept = same = 0
    worst = 0.0
    for frame, ref in exact.items():
        n += len(ref)
        got = cand.get(frame, [])
        if not got:
            continue
        iou = iou_matrix(np.array([f.face.box for f in ref]), np.array([g.face.box for g in got]))
        for i, r in enumerate(ref):
            j = int(np.argmax(iou[i]))
            if iou[i, j] >= 0.8:
                kept += 1
                g = got[j]
                same += int(np.argmax(r.prediction.logits) == np.argmax(g.prediction.logits))
                worst = max(worst, float(np.abs(r.prediction.logits - g.prediction.logits).max()))
    extra = sum(len(v) for v in cand.values()) - kept
    return {
        "faces": n,
        "kept": kept / n if n else 1.0,
        "same": same / kept if kept else 1.0,
        "logit": worst,
        "extra": extra,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--fps", type=float, default=5.0)
    ap.add_argument("--k", type=int, nargs="+", default=[1, 2, 3, 4])
    ap.add_argument("--readme", action="store_true", help="rewrite the README's agreement table")
    ap.add_argument("--gallery", type=int, nargs="*", default=[], help="gallery strides forced onto the videos")
    args = ap.parse_args()

    wdir = Path(tempfile.mkdtemp(prefix="affectlab-agree-"))
    install_random_weights([NAME], wdir, seed=3)
    exact = AnalysisSession.open(NAME, wdir, backend="torch", detect_every=1)
    cands = {k: AnalysisSession.open(NAME, wdir, backend="onnx", detect_every=k) for k in args.k}
    forced = {}
    for g in args.gallery:  # every face counts as a gallery: the stride where faces move
        base = AnalysisSession.open(NAME, wdir, backend="onnx", detect_every=2)
        video = dataclasses.replace(base.video, gallery_every=g, gallery_faces=1)
        forced[g] = dataclasses.replace(base, video=video)
    gallery_ok = dict.fromkeys(args.gallery, True)

    lines = [
        "| file | faces (exact) | path | kept (IoU >= 0.8) | same top class | max abs logit diff | "
        "extra faces | seconds (exact / this) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    ok = dict.fromkeys(args.k, True)
    for name in IMAGES:
        path = testdata.pyfeat_file(name)
        a = exact.analyze_image(path, name).faces
        b = cands[args.k[0]].analyze_image(path, name).faces
        diff = max(float(np.abs(x.prediction.logits - y.prediction.logits).max()) for x, y in zip(a, b, strict=True))
        boxes = max(float(np.abs(np.array(x.face.box) - np.array(y.face.box)).max()) for x, y in zip(a, b, strict=True))
        same = sum(np.argmax(x.prediction.logits) == np.argmax(y.prediction.logits) for x, y in zip(a, b, strict=True))
        lines.append(
            f"| {name} | {len(a)} | onnx | {len(b)}/{len(a)} (boxes within {boxes:.1e} px) | "
            f"{same}/{len(a)} | {diff:.1e} | 0 | - |"
        )
        if diff > 1e-4:
            ok = dict.fromkeys(args.k, False)
    for name in VIDEOS:
        path = testdata.pyfeat_file(name)
        ref, t_ref = faces_by_frame(exact, path, args.fps)
        for k in args.k:
            got, t = faces_by_frame(cands[k], path, args.fps)
            c = compare(ref, got)
            ok[k] &= c["kept"] >= 0.99 and c["same"] >= 0.98
            lines.append(
                f"| {name} | {c['faces']} | onnx, detect every {k} | {100 * c['kept']:.1f} % | "
                f"{100 * c['same']:.1f} % | {c['logit']:.1e} | {c['extra']} | {t_ref:.1f} / {t:.1f} |"
            )
            print(lines[-1], flush=True)
        for g, session in forced.items():
            got, t = faces_by_frame(session, path, args.fps)
            c = compare(ref, got)
            gallery_ok[g] &= c["kept"] >= 0.99 and c["same"] >= 0.98
            lines.append(
                f"| {name} | {c['faces']} | onnx, detect every 2, gallery every {g} forced | {100 * c['kept']:.1f} % | "
                f"{100 * c['same']:.1f} % | {c['logit']:.1e} | {c['extra']} | {t_ref:.1f} / {t:.1f} |"
            )
            print(lines[-1], flush=True)
    passing = [k for k in args.k if ok[k]]
    best = 1  # the largest k that passes with every smaller k passing too (one lucky k is not enough)
    for k in sorted(args.k):
        if not ok[k]:
            break
        best = k
    summary = (
        f"Passing (kept >= 99 %, same class >= 98 % on every video, ONNX logits within 1e-4 on the images): "
        f"detect every {', '.join(map(str, passing)) or 'none'}; default: detect every {best}, the largest k "
        f"passing with every smaller k "
        f"(`DEFAULT_DETECT_EVERY` in core/settings.py). Sampling {args.fps:g} fps, random-weight "
        f"{NAME}, this machine."
    )
    if args.gallery:
        g_best = 2
        for g in sorted(args.gallery):
            if not gallery_ok[g]:
                break
            g_best = g
        summary += (
            f" Gallery stride forced onto these videos: passing {[g for g in args.gallery if gallery_ok[g]]}; the "
            f"largest passing with every smaller: {g_best} (`DEFAULT_GALLERY_EVERY`, with the gallery recording's)."
        )
    table = "\n".join([*lines, "", summary])
    print(table)
    if args.readme:
        readme = ROOT / "README.md"
        text = readme.read_text(encoding="utf-8")
        if MARK_START in text and MARK_END in text:
            head, rest = text.split(MARK_START, 1)
            _, tail = rest.split(MARK_END, 1)
            readme.write_text(f"{head}{MARK_START}\n{table}\n{MARK_END}{tail}", encoding="utf-8")
            print("README.md updated")
        else:
            print(f"README.md has no {MARK_START} / {MARK_END} markers; table not written")


if __name__ == "__main__":
    main()
