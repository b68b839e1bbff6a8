"""Opening and probing video files: which files are videos, their header, their first frame.

Split from :mod:`models.decode` (which re-exports these names): :func:`probe_video`, :func:`header_pixels`,
:func:`is_video`, :func:`looks_like_video`, :data:`VIDEO_SUFFIXES`, :func:`may_jump`, and the opening of a container
that every reader goes through (``open_container``: bad input raises :class:`BadInputError` naming the file and why).
"""

from __future__ import annotations

from contextlib import suppress
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from models.errors import BadInputError
from models.frames import frame_orientation, orient, rotation_mirror
from models.images import MAX_FRAME_PIXELS, check_pixels, file_budget

if TYPE_CHECKING:
    from av.container import InputContainer
    from av.video.stream import VideoStream

VIDEO_SUFFIXES = frozenset(
    {".mp4", ".m4v", ".mov", ".avi", ".mkv", ".webm", ".mpg", ".mpeg", ".wmv", ".flv", ".3gp", ".ts", ".mts", ".ogv"}
)
"""Video container suffixes: files picked from folders and offered in file pickers (with the image suffixes, GIF
among them), and files analysed as videos even when they cannot be read (so the error says why). A ``.gif`` is not
here: an animated GIF is a video by probing (:func:`is_video`), a still one an image."""

_STILL_FORMATS = (
    "image2",
    "png_pipe",
    "jpeg_pipe",
    "bmp_pipe",
    "tiff_pipe",
    "webp_pipe",
    "gif_pipe",
    "pam_pipe",
    "ppm_pipe",
    "pgm_pipe",
    "j2k_pipe",
    "jpegxl_pipe",
    "qoi_pipe",
    "svg_pipe",
    "psd_pipe",
)


@dataclass(frozen=True)
class VideoInfo:
    """What probing a video tells.

    Attributes:
        file: The name given by the user.
        container: FFmpeg demuxer name(s).
        codec: Video codec name.
        width: Upright frame width (after rotation).
        height: Upright frame height.
        rotation: Display rotation, degrees counter-clockwise (0 for none).
        duration: Duration in seconds, or None when unknown.
        fps: Average frame rate, or None.
        frames: Frame count from the header (0 when unknown).
        mirrored: The display matrix mirrors the picture (applied after ``rotation``).
        stream: The video stream read (index among the video streams).
        warnings: What a reader should know (other video streams left out).
        times_may_jump: The container allows timestamps to go back (MPEG-TS/PS: joined parts): the times after a
            jump are continued by the reader, so a seek by time does not find them (see :func:`may_jump`).
    """

    file: str
    container: str
    codec: str
    width: int
    height: int
    rotation: int
    duration: float | None
    fps: float | None
    frames: int
    mirrored: bool = False
    stream: int = 0
    warnings: tuple[str, ...] = ()
    times_may_jump: bool = False


def open_container(path: str | Path, name: str, stream: int = 0) -> InputContainer:
    """Opens a video file for reading; raises BadInputError naming the file and why when it cannot be read."""
    import av

    p = Path(path)
    if not p.exists():
        raise BadInputError(name, "no such file")
    if p.is_dir():
        raise BadInputError(name, "is a directory")
    if p.stat().st_size == 0:
        raise BadInputError(name, "empty file")
    try:
        container = av.open(str(p), mode="r")
    except av.FFmpegError as exc:
        raise BadInputError(name, f"not a video FFmpeg can read ({exc.strerror or exc})") from None
    except OSError as exc:  # a symlink loop, a permission, a name the system cannot encode
        raise BadInputError(name, f"cannot be read ({exc.strerror or exc})") from None
    if not container.streams.video:
        kinds = sorted({s.type for s in container.streams})
        container.close()
        what = "audio only" if "audio" in kinds else ("no streams" if not kinds else ", ".join(kinds))
        raise BadInputError(name, f"no video stream ({what})")
    try:  # the frame size the header declares (a GIF's canvas), before a frame is decoded
        n = len(container.streams.video)
        if not 0 <= stream < n:
            raise BadInputError(name, f"has {n} video stream(s): choose a stream from 0 to {n - 1}")
        cc = container.streams.video[stream].codec_context
        check_pixels(name, int(cc.width or 0), int(cc.height or 0), "frame")
    except BadInputError:
        container.close()
        raise
    return container


def stream_rate(x: Fraction | float | None) -> float | None:
    """A frame rate as a positive float, or None when absent or not positive."""
    if x is None:
        return None
    try:
        v = float(x)
    except (TypeError, ValueError, ZeroDivisionError):
        return None
    return v if v > 0 else None


def stream_duration(container: InputContainer, stream: VideoStream) -> float | None:
    """The stream's duration in seconds (else the container's), or None."""
    if stream.duration and stream.time_base:
        return float(stream.duration * stream.time_base)
    if container.duration:
        return container.duration / 1_000_000
    return None


def probe_video(path: str | Path, name: str | None = None, stream: int = 0) -> VideoInfo:
    """Reads a video's header and the first frame of its ``stream``-th video stream.

    Raises:
        BadInputError: Not a video with a decodable frame, or no such stream.
    """
    name = name or str(path)
    container = open_container(path, name, stream)
    with container:
        st = container.streams.video[stream]
        first = None
        try:
            for frame in container.decode(st):
                first = frame
                break
        except Exception:
            first = None
        if first is None:
            raise BadInputError(name, "no decodable video frame")
        how = frame_orientation(first)
        rot, mirrored = rotation_mirror(how)
        w, h = first.width, first.height
        if how[0]:
            w, h = h, w
        return VideoInfo(
            file=name,
            container=container.format.name,
            codec=st.codec_context.name,
            width=w,
            height=h,
            rotation=rot,
            duration=stream_duration(container, st),
            fps=stream_rate(st.average_rate),
            frames=int(st.frames or 0),
            mirrored=mirrored,
            stream=stream,
            warnings=tuple(n for n in [stream_note(container, stream)] if n),
            times_may_jump=may_jump(container),
        )


def header_pixels(path: str | Path, name: str | None = None, stream: int = 0) -> int:
    """Pixels a video announces in its header: frames (or duration x rate) x width x height, nothing decoded.

    Raises:
        BadInputError: Not a video FFmpeg reads, a frame over the per-picture limit, or over the file's budget.
    """
    name = name or str(path)
    container = open_container(path, name, stream)
    with container:
        st = container.streams.video[stream]
        width, height = int(st.codec_context.width or 0), int(st.codec_context.height or 0)
        frames = int(st.frames or 0) or (stream_duration(container, st) or 0.0) * (stream_rate(st.average_rate) or 0.0)
        file_budget(path, name).plan(frames, width, height)
        return int(max(1.0, frames)) * width * height


def is_video(path: str | Path) -> bool:
    """Whether FFmpeg reads ``path`` as a moving picture (a still image or a one-frame GIF is not), by probing.

    Never raises: unreadable files are not videos.
    """
    import av

    try:
        with av.open(str(path), mode="r") as container:
            if not container.streams.video:
                return False
            if any(n in _STILL_FORMATS for n in container.format.name.split(",")):
                return False
            st = container.streams.video[0]
            if int(st.codec_context.width or 0) * int(st.codec_context.height or 0) > MAX_FRAME_PIXELS:
                return True  # never decoded to find out: read as a video, its reader refuses it by name
            if st.codec_context.name == "gif" or not st.frames:
                return any(n > 0 for n, _ in enumerate(container.decode(st)))
            return st.frames > 1 or bool(stream_duration(container, st))
    except Exception:
        return False


def may_jump(container: InputContainer) -> bool:
    """Whether the container format allows timestamp discontinuities (FFmpeg's ``AVFMT_TS_DISCONT``: MPEG-TS/PS).

    The reader times frames after a jump on from the last time (:class:`FrameReader`); a seek by such a time lands
    elsewhere, so a resumed reading of such a file decodes from its start instead (frames before the resume point
    decoded, not sampled), and its crops cannot be re-cut by time.
    """
    import av

    try:
        flags = int(container.format.flags)
        return bool(flags & int(av.format.Flags.ts_discont.value))  # type: ignore[call-overload]
    except Exception:
        return False


def stream_note(container: InputContainer, chosen: int) -> str | None:
    """A warning naming the video streams other than ``chosen`` (cover pictures left out), or None."""
    import av

    def desc(i: int, st: VideoStream) -> str:
        cc = st.codec_context
        return f"stream {i} ({cc.name} {cc.width}x{cc.height})"

    others = []
    for i, st in enumerate(container.streams.video):
        with suppress(Exception):
            if st.disposition & av.stream.Disposition.attached_pic:
                continue
        if i != chosen:
            others.append(desc(i, st))
    if not others:
        return None
    this = desc(chosen, container.streams.video[chosen])
    return (
        f"it has {len(others) + 1} video streams: {this} is analysed, not {', '.join(others)}; "
        "analyse another with --stream N"
    )


def upright_rgb(frame: object) -> np.ndarray:
    """A decoded PyAV frame as upright RGB uint8 (its display matrix applied)."""
    img: np.ndarray = frame.to_ndarray(format="rgb24")  # type: ignore[attr-defined]
    return orient(img, frame_orientation(frame))


def looks_like_video(path: str | Path) -> bool:
    """A video by its suffix (:data:`VIDEO_SUFFIXES`), else by probing (an animated GIF is a video; a still is not)."""
    return Path(path).suffix.lower() in VIDEO_SUFFIXES or is_video(path)
