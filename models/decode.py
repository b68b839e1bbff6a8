"""Video decoding: probing, streamed upright frames, single-frame seeks, and which files are videos.

PyAV / FFmpeg reads any container and codec it knows (mp4/h264, mov/hevc, webm/vp9, avi/mjpeg, animated GIF...).
Frames are decoded one at a time and only the sampled ones are converted to RGB.

- Rotation: phone videos store sideways frames plus a display matrix. PyAV 18 exposes its rotation on every decoded
  frame as ``VideoFrame.rotation`` (degrees counter-clockwise, from the ``DISPLAYMATRIX`` side data FFmpeg attaches
  to frames). The whole matrix is applied, mirroring included (:func:`orient`: a mirror image is not read as a
  180 degree turn): boxes refer to the upright picture (models/types.py).
- Time: ``(pts - stream start_time) * time_base`` of each frame, so variable frame rate is right. Timestamps that
  jump back (joined MPEG-TS parts, a reset clock) go on from the last frame's time with a warning that names the
  jump, so no part is sampled away; a stretch a decoder refuses is named with its seconds.
- Streams: the first video stream, or the one chosen (``stream``, ``--stream``); a file with more names the others
  in a warning.
- Sampling: at ``fps`` frames per second of video time, the first frame of each ``1/fps`` slot; ``fps`` 0 or None
  takes every frame. Frame indices count decoded frames from 0.
- Damage: a decoding error stops nothing: the bad packet is skipped with a warning and the frames before (and after)
  it are decoded; a stream ending well before the duration its header announces gives a "truncated" warning. An
  mp4/mov whose index (``moov``) is at the end cannot be opened once truncated: that is a BadInputError.
- Bad input: garbage, audio-only or zero-frame files raise :class:`BadInputError` naming the file and the reason.
- Which files are videos: :data:`VIDEO_SUFFIXES` (video containers) by name; a GIF is an image format, and an
  animated one is a video only by probing (:func:`is_video`, :func:`looks_like_video`).
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Generator, Iterable, Iterator
from contextlib import suppress
from dataclasses import dataclass, field
from fractions import Fraction
from itertools import pairwise
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import numpy as np

from models.errors import BadInputError
from models.frames import FrameClock, frame_orientation, orient, rotation_mirror
from models.images import MAX_FRAME_PIXELS, PixelBudget, check_pixels, file_budget
from models.seam import SEEK_BACK_S, Seam, packet_times, place_among_equal
from models.types import Face

if TYPE_CHECKING:
    from av.container import InputContainer
    from av.video.stream import VideoStream

T = TypeVar("T")

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


@dataclass(frozen=True, eq=False)
class DecodedFrame:
    """A sampled, upright frame.

    Attributes:
        index: Index among all decoded frames (0-based).
        sample: Index among the sampled frames.
        time_s: Presentation time in seconds from the stream start.
        image: RGB uint8 (H, W, 3), upright.
    """

    index: int
    sample: int
    time_s: float
    image: np.ndarray = field(repr=False)


@dataclass(frozen=True)
class ResumePoint:
    """The last frame a stopped analysis stored: a resumed run goes on after it.

    Attributes:
        time_s: Its time in seconds.
        index: Its number among the decoded frames.
        sample: Its number among the sampled frames.
        faces: Its faces (the detections that boxes after it are interpolated from when ``detect_every > 1``).
    """

    time_s: float
    index: int
    sample: int
    faces: tuple[Face, ...] = ()


def _open(path: str | Path, name: str, stream: int = 0) -> InputContainer:
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


def _rate(x: Fraction | float | None) -> float | None:
    if x is None:
        return None
    try:
        v = float(x)
    except (TypeError, ValueError, ZeroDivisionError):
        return None
    return v if v > 0 else None


def _duration(container: InputContainer, stream: VideoStream) -> float | None:
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
    container = _open(path, name, stream)
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
            duration=_duration(container, st),
            fps=_rate(st.average_rate),
            frames=int(st.frames or 0),
            mirrored=mirrored,
            stream=stream,
            warnings=tuple(n for n in [_stream_note(container, stream)] if n),
            times_may_jump=may_jump(container),
        )


def header_pixels(path: str | Path, name: str | None = None, stream: int = 0) -> int:
    """Pixels a video announces in its header: frames (or duration x rate) x width x height, nothing decoded.

    Raises:
        BadInputError: Not a video FFmpeg reads, a frame over the per-picture limit, or over the file's budget.
    """
    name = name or str(path)
    container = _open(path, name, stream)
    with container:
        st = container.streams.video[stream]
        width, height = int(st.codec_context.width or 0), int(st.codec_context.height or 0)
        frames = int(st.frames or 0) or (_duration(container, st) or 0.0) * (_rate(st.average_rate) or 0.0)
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
            return st.frames > 1 or bool(_duration(container, st))
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


def _stream_note(container: InputContainer, chosen: int) -> str | None:
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


class _End:
    """The end of a prefetched stream, with the producer's exception if it failed."""

    def __init__(self, exc: BaseException | None = None) -> None:
        self.exc = exc


def prefetch(items: Iterable[T], depth: int) -> Generator[T, None, None]:
    """Yields ``items``, produced by a background thread that keeps at most ``depth`` of them ready.

    Decoding (PyAV releases the GIL) then overlaps detection and classification, which leave a core idle at times.
    An exception in the producer is raised here, in the consumer, when it reaches that point of the stream; when the
    consumer stops early the producer is stopped too (at most ``depth`` items are decoded in vain).
    """
    q: queue.Queue[T | _End] = queue.Queue(maxsize=max(1, depth))
    stop = threading.Event()

    def produce() -> None:
        try:
            for item in items:
                while not stop.is_set():
                    try:
                        q.put(item, timeout=0.1)
                        break
                    except queue.Full:
                        continue
                if stop.is_set():
                    return
            q.put(_End())
        except BaseException as exc:  # handed to the consumer, raised there
            q.put(_End(exc))

    worker = threading.Thread(target=produce, name="affectlab-decode", daemon=True)
    worker.start()
    try:
        while True:
            got = q.get()
            if isinstance(got, _End):
                if got.exc is not None:
                    raise got.exc
                return
            yield got
    finally:
        stop.set()
        while worker.is_alive():
            with suppress(queue.Empty):
                q.get(timeout=0.1)
        worker.join()


class FrameReader:
    """Streams the sampled, upright frames of a video.

    Attributes after iteration: ``frames_decoded``, ``frames_sampled``, ``warnings``, ``last_time``, ``width``,
    ``height``, ``rotation``, ``mirrored``, ``time_jumps`` (timestamps that went back, see the module docstring).
    """

    JUMP_BACK_S = 1.0
    """A timestamp this far (or three frames, if longer) before the last one starts a new part (joined files)."""

    def __init__(
        self,
        path: str | Path,
        name: str | None = None,
        fps: float | None = 5.0,
        max_decode_errors: int = 50,
        *,
        resume: ResumePoint | None = None,
        stream: int = 0,
    ) -> None:
        """Opens the file (header only).

        Args:
            path: The video.
            name: Name for messages (default: the path).
            fps: Sampling rate; 0 or None for every frame.
            max_decode_errors: Packets that fail to decode before the rest of the file is given up.
            resume: Continue after this already analysed frame: decoding seeks to the keyframe before it, the
                frames up to it are decoded but not sampled, and frame and sample numbers go on from it, as in a
                run from the start.
            stream: The video stream to read (index among the video streams); the others are named in a warning.

        Raises:
            BadInputError: Not a readable video, or no such stream.
        """
        self.name = name or str(path)
        self.path = path
        self.fps = fps if fps and fps > 0 else None
        self.max_decode_errors = max_decode_errors
        self._container = _open(path, self.name, stream)
        self.stream = stream
        st = self._container.streams.video[stream]
        self.duration = _duration(self._container, st)
        self.avg_fps = _rate(st.average_rate)
        self.frames_decoded = 0
        self.frames_sampled = 0
        self.warnings: list[str] = []
        self.last_time = 0.0
        self.width = int(st.codec_context.width or 0)
        self.height = int(st.codec_context.height or 0)
        self.rotation = 0
        self.mirrored = False
        self.time_jumps = 0
        note = _stream_note(self._container, stream)
        if note:
            self.warnings.append(note)
        self.resume = resume
        self._errors = 0
        self._clock: FrameClock | None = None
        self.budget: PixelBudget = file_budget(path, self.name)
        """Every decoded frame is taken from it, sampled or not (a pixel bomb is stopped as it decodes)."""
        announced = int(st.frames or 0) or (self.duration or 0.0) * (self.avg_fps or 0.0)
        try:
            self.budget.plan(announced, self.width, self.height)  # from the header, before a frame is decoded
        except BadInputError:
            self._container.close()
            raise

    def close(self) -> None:
        """Closes the file."""
        self._container.close()

    def __enter__(self) -> FrameReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _reopen(self) -> None:
        self._container.close()
        self._container = _open(self.path, self.name)

    def _decoded(self, seek_s: float | None) -> Iterator[tuple[float | None, Any]]:
        """Every decoded frame of the chosen stream with its time, after a seek to the keyframe before ``seek_s``.

        Times come through a fresh :class:`models.frames.FrameClock` (kept as ``self._clock``): after a timestamp that
        goes back (joined MPEG-TS), frames are timed on from the latest time. None: a frame without a timestamp.
        """
        import av

        st = self._container.streams.video[self.stream]
        st.thread_type = "AUTO"
        tb = st.time_base
        start = st.start_time or 0
        clock = self._clock = FrameClock(self.avg_fps or 25.0, self.JUMP_BACK_S)
        if seek_s is not None and tb is not None and seek_s > 0:
            self._container.seek(int(start + seek_s / tb), stream=st, backward=True, any_frame=False)
        packets = self._container.demux(st)
        while True:
            try:
                packet = next(packets)
            except StopIteration:
                break
            except av.FFmpegError as exc:
                self.warnings.append(f"demuxing stopped after {self.last_time:.2f} s: {exc.strerror or exc}")
                break
            try:
                frames = packet.decode()
            except av.FFmpegError as exc:
                self._errors += 1
                clock.damage(self.last_time)
                if self._errors == 1:
                    self.warnings.append(f"damaged data after {self.last_time:.2f} s skipped ({exc.strerror or exc})")
                if self._errors >= self.max_decode_errors:
                    self.warnings.append(f"gave up after {self._errors} undecodable packets at {self.last_time:.2f} s")
                    break
                continue
            for frame in frames:
                self.frames_decoded += 1
                self.budget.take(frame.width, frame.height)  # decoded already: no further frame once over
                if frame.pts is not None and tb is not None:
                    yield clock.time(float((frame.pts - start) * tb)), frame
                else:
                    yield None, frame

    def _numbered(self) -> Iterator[tuple[int, float | None, Any]]:
        """The frames to sample, numbered as in a run from the start: after the resume frame when resuming.

        The resume frame is found exactly (:mod:`models.seam`); when a seek cannot place it, or the container allows
        timestamp jumps (:func:`may_jump`: a seek by time lands elsewhere), the file is decoded from the start and
        frames are counted up to its number.
        """
        resume = self.resume
        if resume is None:
            for i, (t, frame) in enumerate(self._decoded(None)):
                yield i, t, frame
            return
        if not may_jump(self._container):
            tb = self._container.streams.video[self.stream].time_base
            eps = float(tb) / 2 if tb is not None else 1e-6

            def place() -> int | None:
                return place_among_equal(packet_times(self.path, self.stream), resume.index, resume.time_s, eps)

            for back in SEEK_BACK_S:
                target = resume.time_s - back
                seam = Seam(resume.time_s, resume.index, eps, place)
                for t, frame in self._decoded(target if target > 0 else None):
                    yield from seam.feed(t, frame)
                    if seam.lost:
                        break
                yield from seam.end()
                if not seam.lost:
                    return
                self._reopen()
                if target <= 0:
                    break
        for i, (t, frame) in enumerate(self._decoded(None)):
            if i > resume.index:
                yield i, t, frame

    def __iter__(self) -> Iterator[DecodedFrame]:
        rate = self.avg_fps or 25.0
        last_slot = -1
        self._errors = 0
        resume = self.resume
        if resume is not None:
            self.last_time = resume.time_s
            if self.fps is not None:
                last_slot = int(np.floor(resume.time_s * self.fps + 1e-6))
            self.frames_sampled = resume.sample + 1
        for idx, clock_t, frame in self._numbered():
            t = clock_t if clock_t is not None else idx / rate
            self.last_time = max(self.last_time, t)
            if self.fps is not None:
                slot = int(np.floor(t * self.fps + 1e-6))
                if slot <= last_slot:
                    continue
                last_slot = slot
            how = frame_orientation(frame)
            img = orient(frame.to_ndarray(format="rgb24"), how)
            self.rotation, self.mirrored = rotation_mirror(how)
            self.height, self.width = int(img.shape[0]), int(img.shape[1])
            sample = self.frames_sampled
            self.frames_sampled += 1
            yield DecodedFrame(index=idx, sample=sample, time_s=t, image=img)
        self._conclude(rate, resume is None)

    def _conclude(self, rate: float, from_start: bool) -> None:
        """The warnings of a whole reading (damaged packets, time jumps, a truncated stream); no frame at all: error."""
        if self._errors > 1:
            self.warnings.append(f"{self._errors} damaged packets skipped in all")
        if self._clock is not None:
            self.warnings += self._clock.notes(self.last_time)
            self.time_jumps = len(self._clock.jumps)
        if self.frames_decoded == 0 and from_start:
            reason = "no decodable video frame"
            if self.warnings:
                reason += f" ({self.warnings[0]})"
            raise BadInputError(self.name, reason)
        if self.duration:
            frame_dur = 1.0 / rate
            if self.last_time + frame_dur < self.duration - max(0.5, 3 * frame_dur):
                self.warnings.append(
                    f"the stream ends at {self.last_time:.2f} s but its header announces "
                    f"{self.duration:.2f} s: the file looks truncated; analysed up to the damage"
                )


def iter_frames(path: str | Path, name: str | None = None, fps: float | None = 5.0) -> Iterator[DecodedFrame]:
    """Sampled upright frames of a video (see :class:`FrameReader`)."""
    with FrameReader(path, name, fps) as reader:
        yield from reader


def frame_at(path: str | Path, time_s: float, name: str | None = None, stream: int = 0) -> np.ndarray:
    """The upright RGB frame shown at ``time_s``, found by seeking to the keyframe before it (not decoding from 0).

    Raises:
        BadInputError: Not a readable video, or no frame at that time.
    """
    import av

    label = name or str(path)
    container = _open(path, label, stream)
    try:
        st = container.streams.video[stream]
        tb = st.time_base
        start = st.start_time or 0
        rate = _rate(st.average_rate) or 25.0
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
    return _upright(best)


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
    container = _open(path, label)
    try:
        st = container.streams.video[0]
        st.thread_type = "AUTO"
        tb = st.time_base
        start = st.start_time or 0
        rate = _rate(st.average_rate) or 25.0
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
                        yield want, _upright(best) if abs(best_t - want) <= half else None
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
                    yield wanted[i], _upright(prev[1]) if ok and prev is not None else None
                    i += 1
    finally:
        container.close()


def _upright(frame: object) -> np.ndarray:
    img: np.ndarray = frame.to_ndarray(format="rgb24")  # type: ignore[attr-defined]
    return orient(img, frame_orientation(frame))


def looks_like_video(path: str | Path) -> bool:
    """A video by its suffix (:data:`VIDEO_SUFFIXES`), else by probing (an animated GIF is a video; a still is not)."""
    return Path(path).suffix.lower() in VIDEO_SUFFIXES or is_video(path)
