"""Face detection settings of a run: the gallery preset, chosen from the frame size and the faces of the first minute.

Presets (:data:`PRESETS`):

- ``webcam``: one face filling much of the frame, the reference's settings (minimum face side 40 px, full frames);
- ``gallery``: a grid of small tiles (gallery view): full frames and a minimum face side from the frame size and
  the number of faces, ``min(height, width) / (tiles per side * 6)`` clamped to 12-40 px (5 x 5 tiles at 720p: 24),
  with 25 tiles assumed when the preset is asked for by name;
- ``auto``: the detector (minimum face side :data:`PROBE_MIN_FACE`) looks at :data:`PROBE_FRAMES` frames spread over
  the first minute (a still: the image); two or more faces in a frame make it ``gallery`` with that many tiles, else
  ``webcam``.

A minimum face size given by hand overrides the preset's (``custom`` without a preset). The settings are stored with
each recording (:mod:`db.detection`); a resumed run takes the stored ones.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING

from db.detection import DetectionSettings

if TYPE_CHECKING:
    from pathlib import Path

    import numpy as np

    from models.faces import FaceDetector

PRESETS = ("auto", "webcam", "gallery")
WEBCAM_MIN_FACE = 40
PROBE_MIN_FACE = 16
PROBE_FRAMES = 6
PROBE_SECONDS = 60.0
GALLERY_TILES = 25
"""Tiles assumed by ``gallery`` asked for by name (5 x 5)."""


def gallery_min_face(width: int | None, height: int | None, n_faces: int) -> int:
    """The gallery preset's minimum face side: ``min(height, width) / (tiles per side * 6)``, 12 to 40 px."""
    if not width or not height:
        return 20
    per_side = max(1, math.ceil(math.sqrt(max(1, n_faces))))
    return max(12, min(WEBCAM_MIN_FACE, round(min(width, height) / (per_side * 6))))


def choose(
    requested: str | None,
    min_face_size: int | None,
    width: int | None,
    height: int | None,
    probe_faces: int | None = None,
) -> DetectionSettings:
    """The settings of one file from what the run asked for and what the file shows.

    Args:
        requested: ``auto``, ``webcam``, ``gallery`` or None (webcam; ``custom`` with a minimum face size).
        min_face_size: A minimum face side given by hand (overrides the preset's), or None.
        width: The frame's width in pixels (None: unknown).
        height: The frame's height.
        probe_faces: Most faces in one probed frame of the first minute (needed for ``auto``).

    Raises:
        ValueError: An unknown preset, or ``auto`` without a probe.
    """
    if requested not in (None, *PRESETS):
        raise ValueError(f"unknown gallery preset {requested!r}: use one of {', '.join(PRESETS)}")
    if requested == "auto":
        if probe_faces is None:
            raise ValueError("the auto preset needs the faces of the first minute (probe_faces)")
        preset = "gallery" if probe_faces >= 2 else "webcam"
        tiles = probe_faces
    else:
        preset = requested or ("custom" if min_face_size is not None else "webcam")
        tiles = GALLERY_TILES
    size = WEBCAM_MIN_FACE if preset in ("webcam", "custom") else gallery_min_face(width, height, tiles)
    asked = requested or preset
    return DetectionSettings(
        preset=preset,
        requested=asked,
        min_face_size=min_face_size if min_face_size is not None else size,
        detect_max_side=None,
        probe_faces=probe_faces if requested == "auto" else None,
    )


def probe_faces(detector: FaceDetector, frames: Sequence[np.ndarray]) -> int:
    """Most faces the detector finds in one of ``frames`` (minimum face side :data:`PROBE_MIN_FACE`, full frames)."""
    from models.faces import DetectorConfig

    if not frames:
        return 0
    probe = detector.with_config(DetectorConfig(min_face_size=PROBE_MIN_FACE))
    return max(len(faces) for faces in probe.detect_batch(list(frames)))


def first_minute(path: Path, name: str, duration_s: float | None) -> list[np.ndarray]:
    """:data:`PROBE_FRAMES` frames spread over the first minute of a video (fewer when it is shorter)."""
    from models.decode import frames_at

    span = min(PROBE_SECONDS, duration_s or PROBE_SECONDS)
    times = [span * (i + 0.5) / PROBE_FRAMES for i in range(PROBE_FRAMES)]
    return [image for _, image in frames_at(path, times, name) if image is not None]


def still(data: bytes) -> list[np.ndarray]:
    """The upright RGB pixels of a still image (the probe of ``auto`` for a still); none for an unreadable file.

    An unreadable file is left to the analysis, which says why in its outcome.
    """
    import io

    import numpy as np
    from PIL import Image, ImageOps

    try:
        with Image.open(io.BytesIO(data)) as im:
            return [np.asarray(ImageOps.exif_transpose(im).convert("RGB"))]
    except Exception:  # any decoding error: the analysis reports the file
        return []
