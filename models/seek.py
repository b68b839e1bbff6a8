"""Single frames of a video by time: :func:`frame_at` (one seek) and :func:`frames_at` (many, one decoding pass).

Split from :mod:`models.decode` (which re-exports both). The frames are those :class:`models.decode.FrameReader`
gives at the same times, pixel-equal (crops re-cut from a kept recording rely on it).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from itertools import pairwise
from pathlib import Path

import numpy as np

from models.errors import BadInputError
from models.images import file_budget
from models.probe import open_container, stream_rate, upright_rgb


def frame_at(path: str | Path, time_s: float, name: str | None = None, stream: int = 0) -> np.ndarray:
    """The upright RGB frame shown at ``time_s``, found by seeking to the keyframe before it (not decoding from 0).

    Raises:
        BadInputError: Not a readable video, or no frame at that time.
    """
    import av

    label = name or str(path)
    container = open_container(path, label, stream)
    try:
        st = container.streams.video[stream]
        tb = st.time_base
        start = st.start_time or 0
        rate = stream_rate(st.average_rate) or 25.0
        if tb is not None and time_s > 0:
            container.seek(int(start + time_s / tb), stream=st, backward=True, any_frame=False)
        best = None
        budget = file_budget(path, label)
        for frame in container.decode(st):
            budget.take(frame.width, frame.height)
            t = float((frame.pts - start) * tb) if frame.pts is not None and tb is not None else 0.0
            if best is not None and t > time_s + 0.5 / rate:
                break
            best = frame
            if t >= time_s - 0.5 / rate:
                break
    except av.FFmpegError as exc:
        raise BadInputError(label, f"cannot decode the frame at {time_s:.2f} s ({exc.strerror or exc})") from None
    finally:
        container.close()
    if best is None:
        raise BadInputError(label, f"no frame at {time_s:.2f} s")
    return upright_rgb(best)


def frames_at(
    path: str | Path, times: Iterable[float], name: str | None = None, *, seek_gap_s: float = 4.0
) -> Iterator[tuple[float, np.ndarray | None]]:
    """The upright RGB frames at each of ``times`` (ascending), decoding the file once in order.

    Each frame is the one whose time (``(pts - start) * time_base``, as :class:`FrameReader` computes it) is nearest
    the asked time within half a frame: a time that :class:`FrameReader` gave returns that very frame, pixel-equal
    (decoding is deterministic from the keyframe before). Decoding seeks like :func:`frame_at` to the keyframe before
    the first time and again wherever the next time lies more than ``seek_gap_s`` ahead; between them it decodes on
    and converts to RGB only the frames asked for. Yields ``(time, image)`` in the order given; ``image`` is None for
    a time with no frame near it.

    Raises:
        BadInputError: Not a readable video.
        ValueError: ``times`` not ascending.
    """
    import av

    label = name or str(path)
    wanted = list(times)
    if any(b < a for a, b in pairwise(wanted)):
        raise ValueError("frames_at needs ascending times")
    if not wanted:
        return
    container = open_container(path, label)
    try:
        st = container.streams.video[0]
        st.thread_type = "AUTO"
        tb = st.time_base
        start = st.start_time or 0
        rate = stream_rate(st.average_rate) or 25.0
        half = 0.5 / rate
        i = 0
        while i < len(wanted):
            sought = i  # the time this seek is for: decoding goes on (no new seek) until it is answered
            if tb is not None and wanted[i] > 0:
                container.seek(int(start + wanted[i] / tb), stream=st, backward=True, any_frame=False)
            prev: tuple[float, av.VideoFrame] | None = None
            reseek = False
            try:
                for frame in container.decode(st):
                    t = float((frame.pts - start) * tb) if frame.pts is not None and tb is not None else 0.0
                    # Answer every asked time that this frame (or the one before) settles.
                    while i < len(wanted) and t >= wanted[i] - 1e-9:
                        want = wanted[i]
                        best = frame if prev is None or abs(t - want) <= abs(prev[0] - want) else prev[1]
                        best_t = t if best is frame else (prev[0] if prev is not None else t)
                        yield want, upright_rgb(best) if abs(best_t - want) <= half else None
                        i += 1
                    if i >= len(wanted):
                        return
                    prev = (t, frame)
                    if i != sought and wanted[i] - t > seek_gap_s:
                        reseek = True
                        break
            except av.FFmpegError as exc:
                raise BadInputError(label, f"cannot decode the frames near {wanted[i]:.2f} s ({exc})") from None
            if not reseek:
                # The stream ended: the last frame may still answer the times just after it.
                while i < len(wanted):
                    ok = prev is not None and abs(prev[0] - wanted[i]) <= half
                    yield wanted[i], upright_rgb(prev[1]) if ok and prev is not None else None
                    i += 1
    finally:
        container.close()
