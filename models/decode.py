"""Video decoding: streamed upright frames (probing in :mod:`models.probe`, seeks in :mod:`models.seek`).

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
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import numpy as np

from models.errors import BadInputError
from models.frames import FrameClock, frame_orientation, orient, rotation_mirror
from models.images import PixelBudget, file_budget
from models.probe import (
    VIDEO_SUFFIXES,
    VideoInfo,
    header_pixels,
    is_video,
    looks_like_video,
    may_jump,
    open_container,
    probe_video,
    stream_duration,
    stream_note,
    stream_rate,
)
from models.seam import SEEK_BACK_S, Seam, packet_times, place_among_equal
from models.seek import frame_at, frames_at
from models.types import Face

__all__ = [
    "VIDEO_SUFFIXES",
    "DecodedFrame",
    "FrameReader",
    "ResumePoint",
    "VideoInfo",
    "frame_at",
    "frames_at",
    "header_pixels",
    "is_video",
    "iter_frames",
    "looks_like_video",
    "may_jump",
    "prefetch",
    "probe_video",
]

if TYPE_CHECKING:
    pass

T = TypeVar("T")


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
        self._container = open_container(path, self.name, stream)
        self.stream = stream
        st = self._container.streams.video[stream]
        self.duration = stream_duration(self._container, st)
        self.avg_fps = stream_rate(st.average_rate)
        self.frames_decoded = 0
        self.frames_sampled = 0
        self.warnings: list[str] = []
        self.last_time = 0.0
        self.width = int(st.codec_context.width or 0)
        self.height = int(st.codec_context.height or 0)
        self.rotation = 0
        self.mirrored = False
        self.time_jumps = 0
        note = stream_note(self._container, stream)
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
        self._container = open_container(self.path, self.name)

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
