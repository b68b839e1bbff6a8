"""Frame geometry and timing for the decoder: display matrices (turns and mirrors) and timestamps that jump.

- Orientation: FFmpeg's display matrix maps a stored pixel ``(x, y)`` to ``(a x + c y, b x + d y)``; the eight
  matrices of quarter turns and mirrors become a transpose and two flips (:func:`orientation`, :func:`orient`). A
  mirror is applied as a mirror, not read as a 180 degree turn (PyAV's ``VideoFrame.rotation`` alone says 180 for a
  left-right mirror).
- Time: :class:`FrameClock` continues frame times across a jump back (joined MPEG-TS parts, a reset clock) and
  names stretches without frames or with damaged data in seconds (:mod:`models.decode` uses both).
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import suppress

import numpy as np


def norm_rotation(rot: float | int | None) -> int:
    """A rotation in degrees as the nearest quarter turn, 0, 90, 180 or 270."""
    if not rot:
        return 0
    return round(float(rot) / 90.0) % 4 * 90


Orientation = tuple[bool, bool, bool]
"""How a decoded picture is turned upright: transpose, then mirror left-right, then mirror top-bottom."""

_BY_ROTATION: dict[int, Orientation] = {
    0: (False, False, False),
    90: (True, False, True),  # np.rot90(image, 1)
    180: (False, True, True),
    270: (True, True, False),  # np.rot90(image, -1)
}
_ROTATION_MIRROR: dict[Orientation, tuple[int, bool]] = {
    **{o: (rot, False) for rot, o in _BY_ROTATION.items()},
    (False, True, False): (0, True),
    (False, False, True): (180, True),
    (True, False, False): (270, True),
    (True, True, True): (90, True),
}


def display_matrix(frame: object) -> tuple[int, ...] | None:
    """The 3 x 3 display matrix (FFmpeg's ``AV_FRAME_DATA_DISPLAYMATRIX``: 16.16 fixed point) of a decoded frame."""
    with suppress(Exception):
        for sd in frame.side_data:  # type: ignore[attr-defined]
            if str(getattr(sd.type, "name", sd.type)).endswith("DISPLAYMATRIX"):
                raw = bytes(sd)
                if len(raw) >= 36:
                    return tuple(int(v) for v in np.frombuffer(raw[:36], dtype=np.int32))
    return None


def orientation(matrix: Sequence[int] | None, rotation: float | int | None = None) -> Orientation:
    """How to turn a picture upright from its display matrix, mirroring included; else from its rotation.

    The matrix maps a stored pixel ``(x, y)`` to ``(a x + c y, b x + d y)`` (``a, b, c, d`` = entries 0, 1, 3, 4),
    as FFmpeg defines it; a mirror (a negative determinant) is a flip, not a turn. A matrix that is no multiple of
    90 degrees falls back to the nearest quarter turn of ``rotation``.
    """
    if matrix is not None and len(matrix) >= 5:
        a, b, c, d = (int(matrix[i]) for i in (0, 1, 3, 4))
        big = max(abs(a), abs(b), abs(c), abs(d))
        if big > 0:
            a, b, c, d = (0 if 2 * abs(v) < big else (1 if v > 0 else -1) for v in (a, b, c, d))
            if a == 0 and d == 0 and b and c:
                return (True, c < 0, b < 0)
            if b == 0 and c == 0 and a and d:
                return (False, a < 0, d < 0)
    return _BY_ROTATION[norm_rotation(rotation)]


def orient(image: np.ndarray, how: Orientation) -> np.ndarray:
    """``image`` turned upright as ``how`` says (a contiguous copy when anything changes)."""
    transpose, left_right, top_bottom = how
    if not (transpose or left_right or top_bottom):
        return image
    if transpose:
        image = image.transpose(1, 0, *range(2, image.ndim))
    if left_right:
        image = image[:, ::-1]
    if top_bottom:
        image = image[::-1]
    return np.ascontiguousarray(image)


def frame_orientation(frame: object) -> Orientation:
    """The :func:`orientation` of a decoded PyAV frame (its display matrix, else its rotation)."""
    return orientation(display_matrix(frame), getattr(frame, "rotation", 0))


def rotation_mirror(how: Orientation) -> tuple[int, bool]:
    """An orientation as a counter-clockwise quarter turn followed (when True) by a left-right mirror."""
    return _ROTATION_MIRROR[how]


class FrameClock:
    """Frame times that go on when the timestamps jump back (joined MPEG-TS parts, a reset clock), and gaps named.

    A frame more than ``limit`` seconds before the latest time starts a new part: it and the frames after it are
    timed on from one frame after the latest time, so a sampler at ``fps`` skips none of them. A stretch with no
    frame longer than ``max(0.5 s, 4 frames)`` is named too (data the demuxer dropped, or a pause), and one after
    packets the decoder refused is named as damage.
    """

    def __init__(self, rate: float, limit_s: float) -> None:
        self.step = 1.0 / rate
        self.limit = max(limit_s, 3.0 * self.step)
        self.offset = 0.0
        self.latest: float | None = None
        self.jumps: list[tuple[float, float, float]] = []  # (latest time, raw time, new time)
        self.damage_from: float | None = None
        self.damaged: list[tuple[float, float]] = []
        self.gap = max(0.5, 4.0 * self.step)
        self.gaps: list[tuple[float, float]] = []

    def time(self, raw: float) -> float:
        """The time of a frame whose timestamp says ``raw`` seconds (continued after a jump back)."""
        t = raw + self.offset
        if self.latest is not None and t < self.latest - self.limit:
            new = self.latest + self.step
            self.jumps.append((self.latest, raw, new))
            self.offset += new - t
            t = new
        if self.damage_from is not None:
            self.damaged.append((self.damage_from, t))
            self.damage_from = None
        elif self.latest is not None and t - self.latest > self.gap:
            self.gaps.append((self.latest, t))
        self.latest = t if self.latest is None else max(self.latest, t)
        return t

    def damage(self, after: float) -> None:
        """Notes a packet the decoder refused, ``after`` seconds: the stretch up to the next frame is damage."""
        if self.damage_from is None:
            self.damage_from = after

    def notes(self, end: float) -> list[str]:
        """The warnings: jumps, damaged stretches and stretches without frames, up to ``end`` seconds."""
        out = [
            f"timestamps jump back from {latest:.2f} s to {raw:.2f} s (joined recordings or a reset clock): the "
            f"frames after are timed on from {new:.2f} s"
            for latest, raw, new in self.jumps[:5]
        ]
        if len(self.jumps) > 5:
            out.append(f"{len(self.jumps)} timestamp jumps in all")
        if self.damage_from is not None:
            self.damaged.append((self.damage_from, max(end, self.damage_from)))
        if self.damaged:
            lost = sum(b - a for a, b in self.damaged)
            spans = ", ".join(f"{a:.2f}-{b:.2f} s" for a, b in self.damaged[:5])
            more = f" and {len(self.damaged) - 5} more" if len(self.damaged) > 5 else ""
            out.append(f"{lost:.2f} s of damaged video skipped ({spans}{more})")
        if self.gaps:
            lost = sum(b - a for a, b in self.gaps)
            spans = ", ".join(f"{a:.2f}-{b:.2f} s" for a, b in self.gaps[:5])
            more = f" and {len(self.gaps) - 5} more" if len(self.gaps) > 5 else ""
            out.append(f"no frames for {lost:.2f} s ({spans}{more}): data missing from the file, or a pause")
        return out
