"""The recording file a scale-bench study keeps, so that its video faces' crops are re-cut as the product re-cuts them.

The product keeps a video's file and stores no crop for its faces (``media.recut_crops``, :mod:`db.crops`): Review,
Library and the exports cut each crop again from the kept recording at the face's time and box. A study filled in
the product's layout (``scale_fill --layout product``) therefore needs a real, seekable video behind each recording,
or every page that shows a face shows "no crop". This module makes one: a 1280x720 25 fps H.264 gallery view of
``students`` synthetic faces (one per cell of the 4-column grid the fill's boxes use), ``minutes`` long, with the
encoder's default keyframe interval (250 frames), so a seek decodes what it decodes on a real lecture. The picture is
still (the frames differ in nothing), which keeps the file small (a few MB per hour) and the encode at ~2 ms a frame
(~3 minutes for 60 minutes of video on the 2-core machine); it is made once per shape and cached in ``folder``.

Every recording of a study keeps its own copy of the same picture (each under its own sha256, the fill's synthetic
one): the re-cut crops are the same faces in every recording, which the bench's timings do not depend on.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np

WIDTH, HEIGHT = 1280, 720
FPS = 25
FACE_W, FACE_H = 80, 96
"""A face's size in the picture (the fill's boxes are 70-90 px wide, 1.2 times as high)."""


def gallery_picture(students: int, seed: int, cols: int = 4) -> np.ndarray:
    """The still gallery view: a shaded background and one face-like tile at the centre of each student's cell."""
    rng = np.random.default_rng(seed + 3)
    yy, xx = np.mgrid[0:HEIGHT, 0:WIDTH].astype(np.float32)
    img = np.stack([40 + 60 * xx / WIDTH, 50 + 50 * yy / HEIGHT, np.full_like(xx, 70)], axis=-1)
    rows = max(1, math.ceil(students / cols))
    cw, ch = WIDTH / cols, HEIGHT / rows
    fy, fx = np.mgrid[0:FACE_H, 0:FACE_W].astype(np.float32)
    oval = ((fx - FACE_W / 2) / (FACE_W / 2)) ** 2 + ((fy - FACE_H / 2) / (FACE_H / 2)) ** 2 <= 1.0
    for student in range(students):
        cx, cy = int((student % cols + 0.5) * cw), int((student // cols + 0.5) * ch)
        skin = rng.uniform(90, 220, 3).astype(np.float32)
        shade = 50 * np.exp(-(((fx / FACE_W - 0.5) ** 2 + (fy / FACE_H - 0.45) ** 2) / 0.08))
        tile = skin[None, None, :] + shade[..., None]
        for ex in (0.32, 0.68):  # eyes and a mouth, so a crop reads as a face
            tile[int(FACE_H * 0.38) : int(FACE_H * 0.45), int(FACE_W * (ex - 0.07)) : int(FACE_W * (ex + 0.07))] = 30
        tile[int(FACE_H * 0.72) : int(FACE_H * 0.77), int(FACE_W * 0.35) : int(FACE_W * 0.65)] = (120, 40, 40)
        y0, x0 = cy - FACE_H // 2, cx - FACE_W // 2
        region = img[y0 : y0 + FACE_H, x0 : x0 + FACE_W]
        region[oval] = tile[oval]
    return np.clip(img, 0, 255).astype(np.uint8)


def gallery_video(folder: Path, students: int, minutes: float, seed: int) -> Path:
    """The cached gallery video of ``minutes`` minutes (made on first use; written under a temporary name first)."""
    import av

    frames = max(1, math.ceil(minutes * 60 * FPS))
    path = folder / f"gallery-{students}s-{frames}f-{seed}.mp4"
    if path.exists():
        return path
    folder.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.stem}.{os.getpid()}.part.mp4")
    with av.open(str(tmp), "w") as out:
        st = out.add_stream("libx264", rate=FPS)
        st.width, st.height, st.pix_fmt = WIDTH, HEIGHT, "yuv420p"
        st.options = {"preset": "ultrafast", "crf": "30"}
        frame = av.VideoFrame.from_ndarray(gallery_picture(students, seed), format="rgb24").reformat(format="yuv420p")
        for i in range(frames):
            frame.pts = i
            for packet in st.encode(frame):
                out.mux(packet)
        for packet in st.encode():
            out.mux(packet)
    os.replace(tmp, path)
    return path
