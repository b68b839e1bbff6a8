"""How a video is cut into time ranges (:mod:`models.ranges` analyses them): the plan, from the packets' timestamps.

Split from :mod:`models.ranges` (which re-exports it).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from models.decode import ResumePoint, may_jump
from models.seam import packet_times

MIN_RANGE_S = 8.0
"""A range shorter than this many seconds of video is not worth a process (each loads its models, ~1-2 s)."""


@dataclass(frozen=True)
class VideoRange:
    """A stretch of a video analysed on its own.

    Attributes:
        number: Its place among the ranges (0 first).
        start: The frame just before the range, where a run from the start would resume (None: the video's start).
        stop_index: The first frame of the next range (not analysed here), or None for the last range.
        start_s: The time of the range's first frame.
        end_s: The time of the next range's first frame, or None for the last range.
    """

    number: int
    start: ResumePoint | None
    stop_index: int | None
    start_s: float
    end_s: float | None


def frame_times(path: str | Path) -> list[float]:
    """Every frame's presentation time in seconds, in display order, from the packets (no decoding).

    Returns:
        The times, or an empty list when some packet has no timestamp (such a file is not cut into ranges).
    """
    return packet_times(path) or []


def sampled_frames(times: Sequence[float], fps: float | None) -> list[int]:
    """The frame numbers the sampling takes (the first frame of each ``1/fps`` slot, as :class:`FrameReader`)."""
    if not fps or fps <= 0:
        return list(range(len(times)))
    out: list[int] = []
    last_slot = -1
    for i, t in enumerate(times):
        slot = int(np.floor(t * fps + 1e-6))
        if slot > last_slot:
            last_slot = slot
            out.append(i)
    return out


def _times_may_jump(path: str | Path) -> bool:
    import av

    try:
        with av.open(str(path), mode="r") as container:
            return may_jump(container)
    except (av.FFmpegError, OSError):
        return False  # the reader says what is wrong with the file


def plan_ranges(
    path: str | Path,
    fps: float | None,
    parts: int,
    *,
    detect_every: int = 1,
    min_range_s: float = MIN_RANGE_S,
    times: Sequence[float] | None = None,
) -> list[VideoRange]:
    """Cuts a video into at most ``parts`` ranges of about equal numbers of sampled frames.

    Args:
        path: The video.
        fps: The sampling rate (0 or None: every frame), as given to the analysis.
        parts: Ranges wanted (the number of worker processes).
        detect_every: The analysis's detection stride: every range starts on a detected sample.
        min_range_s: Fewer ranges when each would be shorter than this.
        times: The frames' times (:func:`frame_times`), when already read.

    Returns:
        The ranges in time order; one range (the whole video) when it is too short to cut, its packets lack
        timestamps, or its container allows timestamp jumps (MPEG-TS/PS: a range seeks by time, which lands elsewhere
        after a jump).
    """
    whole = [VideoRange(number=0, start=None, stop_index=None, start_s=0.0, end_s=None)]
    if parts <= 1 or _times_may_jump(path):
        return whole
    times = frame_times(path) if times is None else times
    if len(times) < 2:
        return whole
    sampled = sampled_frames(times, fps)
    span = times[-1] - times[0]
    n = max(1, min(parts, int(span // max(min_range_s, 1e-9))))
    k = max(1, detect_every)
    cuts: list[int] = []  # sample number of each range's first frame
    for r in range(1, n):
        c = (len(sampled) * r // n) // k * k
        if c > (cuts[-1] if cuts else 0):
            cuts.append(c)
    if not cuts:
        return whole
    out: list[VideoRange] = []
    starts = [0, *cuts]
    for r, c in enumerate(starts):
        first = sampled[c]
        nxt = sampled[starts[r + 1]] if r + 1 < len(starts) else None
        start = None if c == 0 else ResumePoint(time_s=times[first - 1], index=first - 1, sample=c - 1)
        out.append(
            VideoRange(
                number=r,
                start=start,
                stop_index=nxt,
                start_s=times[first],
                end_s=None if nxt is None else times[nxt],
            )
        )
    return out
