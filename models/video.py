"""Video analysis: streamed PyAV decoding, batched detection and classification across frames, tracks, engagement.

Decoding (PyAV / FFmpeg): any container and codec FFmpeg reads (mp4/h264, mov/hevc, webm/vp9, avi/mjpeg, animated
GIF...). Frames are decoded one at a time and only the sampled ones are converted to RGB; at most ``chunk_frames``
sampled frames are held in memory at once, so memory does not grow with the video's length.

- Rotation: phone videos store sideways frames plus a display matrix. PyAV 18 exposes its rotation on every decoded
  frame as ``VideoFrame.rotation`` (degrees counter-clockwise, from the ``DISPLAYMATRIX`` side data FFmpeg attaches
  to frames); frames are turned upright with ``np.rot90(image, rotation // 90)``, so boxes refer to the upright
  picture (models/types.py). Mirroring flags of the matrix are not applied (phones do not write them).
- Time: ``(pts - stream start_time) * time_base`` of each frame, so variable frame rate is right.
- Sampling: at ``fps`` frames per second of video time, the first frame of each ``1/fps`` slot; ``fps`` 0 or None
  takes every frame. Frame indices count decoded frames from 0.
- Damage: a decoding error stops nothing: the bad packet is skipped with a warning and the frames before (and after)
  it are analysed; a stream ending well before the duration its header announces gives a "truncated" warning. An
  mp4/mov whose index (``moov``) is at the end cannot be opened once truncated: that is a BadInputError.
- Bad input: garbage, audio-only or zero-frame files raise :class:`BadInputError` naming the file and the reason.
  A video without faces is not an error: the result has no faces.

Inference: one :class:`FaceDetector` for the whole video, ``detect_batch`` on groups of frames; the crops of all
faces of a chunk go through the recognizer together. With ``detect_every = k > 1`` faces are detected on every k-th
sampled frame only; in the frames between, each face's box is interpolated between the two detections it is matched
to (by IoU), and a face seen at only one end is kept for the half of the gap nearest to it. With an
:class:`AdaptiveConfig`, frames are analysed at a coarse stride first and refined only where needed (adaptive.py).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import closing, suppress
from dataclasses import dataclass, field
from itertools import pairwise
from pathlib import Path
from typing import TypeVar

import numpy as np

from models.adaptive import AdaptiveConfig, FrameState, coarse_positions, refine
from models.engagement import FEATURE_DIM, EngagementModel, EngagementResult
from models.errors import BadInputError
from models.faces import FaceDetector, crop_face
from models.persons import PersonConfig, TrackProfile, link_tracks, profiles
from models.recognizer import EmotionRecognizer
from models.summary import VideoSummary, summarize_video
from models.tracking import Track, Tracker, TrackerConfig, iou_matrix
from models.types import Face, FaceResult

Progress = Callable[[float, float | None], None]
"""Called as ``progress(seconds_done, duration_seconds_or_None)`` after each chunk."""
T = TypeVar("T")

VIDEO_EXTENSIONS = frozenset({".mp4", ".m4v", ".mov", ".avi", ".mkv", ".webm", ".gif", ".mpg", ".mpeg", ".wmv",
                              ".flv", ".3gp", ".ts", ".mts", ".ogv"})
"""Extensions shown in file pickers; :func:`is_video` decides by probing, not by these."""

_STILL_FORMATS = ("image2", "png_pipe", "jpeg_pipe", "bmp_pipe", "tiff_pipe", "webp_pipe", "gif_pipe", "pam_pipe",
                  "ppm_pipe", "pgm_pipe", "j2k_pipe", "jpegxl_pipe", "qoi_pipe", "svg_pipe", "psd_pipe")


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


@dataclass(frozen=True, eq=False)
class VideoChunk:
    """Faces of a stretch of a video analysed by :func:`analyze_video_chunks`, ready to be stored.

    Attributes:
        faces: The faces of the stretch, in time order, without track (``track`` None; see :class:`FaceReplay`).
        until: The last frame analysed so far: a run stopped after storing this chunk resumes from it.
        frames_analyzed: Frames analysed in this run so far.
        frames_decoded: Frames decoded in this run so far.
        done: Whether this is the last chunk (the video is analysed to its end).
        duration: The video's duration, seconds (header, else the last frame's time at the end).
        fps: Average frame rate of the stream, or None.
        width: Upright frame width.
        height: Upright frame height.
        warnings: Problems that did not stop the analysis (complete in the last chunk).
    """

    faces: list[FaceResult]
    until: ResumePoint | None
    frames_analyzed: int
    frames_decoded: int
    done: bool
    duration: float | None
    fps: float | None
    width: int
    height: int
    warnings: tuple[str, ...] = ()


@dataclass(frozen=True)
class VideoConfig:
    """Video analysis settings.

    Attributes:
        detect_every: Detect faces on every k-th sampled frame and interpolate boxes between (1: every frame).
            Frames between two detected frames whose faces disagree (another count, or a pair below
            ``refine_iou``: a face came, left or moved fast) are detected too instead of interpolated.
        refine_iou: With ``detect_every > 1``, the IoU every face must keep from one detected frame to the next for
            the frames between to be interpolated.
        chunk_frames: Sampled frames held in memory and processed together.
        detect_batch: Frames per ``detect_batch`` call.
        classify_batch: Crops per recognizer call (bounds the activations' memory: batch 32 of a 224 px model
            peaks near 1.8 GB resident on CPU, batch 8 well under 1.5 GB).
        tracker: Tracking settings.
        adaptive: Adaptive frame rate settings, or None for full sampling.
        keep_crops: Keep each face's crop in its result.
        persons: How tracks are joined into persons (models/persons.py), or None for one person per track.
    """

    detect_every: int = 1
    refine_iou: float = 0.7
    chunk_frames: int = 16
    detect_batch: int = 8
    classify_batch: int = 8
    tracker: TrackerConfig = field(default_factory=TrackerConfig)
    adaptive: AdaptiveConfig | None = None
    keep_crops: bool = False
    persons: PersonConfig | None = field(default_factory=PersonConfig)


@dataclass(frozen=True, eq=False)
class VideoAnalysis:
    """The result of analysing one video.

    Attributes:
        file: The name given by the user.
        faces: Every face found, in time order, each with ``frame``, ``time_s`` and ``track`` set.
        tracks: The face tracks, by id.
        summary: Per-track and per-video summaries (emotions, engagement, face shares, descriptors).
        frames_sampled: Frames the sampling selected.
        frames_analyzed: Frames actually analysed (fewer than sampled with the adaptive rate).
        frames_decoded: Frames decoded.
        duration: Duration in seconds (header, else last frame time).
        fps: Average frame rate of the stream, or None.
        sample_fps: Sampling rate asked for (None: every frame).
        width: Upright frame width.
        height: Upright frame height.
        rotation: Display rotation applied, degrees counter-clockwise.
        warnings: Problems that did not stop the analysis (damaged or truncated data).
        engagement_status: ``ok``, or why there is no engagement.
        persons: Track id to person number: the tracks of one student joined across the recording.
    """

    file: str
    faces: list[FaceResult]
    tracks: list[Track]
    summary: VideoSummary
    frames_sampled: int
    frames_analyzed: int
    frames_decoded: int
    duration: float | None
    fps: float | None
    sample_fps: float | None
    width: int
    height: int
    rotation: int
    warnings: list[str]
    engagement_status: str
    persons: dict[int, int] = field(default_factory=dict)

    def person(self, track: int | None) -> int | None:
        """The person number of a track (the track number itself when tracks were not joined)."""
        return None if track is None else self.persons.get(track, track)

    def engagement(self, track: int) -> EngagementResult | None:
        """The engagement of a track, or None."""
        return next((t.engagement for t in self.summary.tracks if t.track == track), None)


def _open(path: str | Path, name: str):
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
    if not container.streams.video:
        kinds = sorted({s.type for s in container.streams})
        container.close()
        what = "audio only" if "audio" in kinds else ("no streams" if not kinds else ", ".join(kinds))
        raise BadInputError(name, f"no video stream ({what})")
    return container


def _rate(x: object) -> float | None:
    try:
        v = float(x)  # type: ignore[arg-type]
    except (TypeError, ValueError, ZeroDivisionError):
        return None
    return v if v > 0 else None


def _duration(container: object, stream: object) -> float | None:
    if stream.duration and stream.time_base:  # type: ignore[attr-defined]
        return float(stream.duration * stream.time_base)  # type: ignore[attr-defined]
    if container.duration:  # type: ignore[attr-defined]
        return container.duration / 1_000_000  # type: ignore[attr-defined]
    return None


def probe_video(path: str | Path, name: str | None = None) -> VideoInfo:
    """Reads a video's header and its first frame.

    Raises:
        BadInputError: Not a video with a decodable frame.
    """
    name = name or str(path)
    container = _open(path, name)
    with container:
        st = container.streams.video[0]
        first = None
        try:
            for frame in container.decode(st):
                first = frame
                break
        except Exception:
            first = None
        if first is None:
            raise BadInputError(name, "no decodable video frame")
        rot = _norm_rotation(first.rotation)
        w, h = first.width, first.height
        if rot % 180:
            w, h = h, w
        return VideoInfo(file=name, container=container.format.name, codec=st.codec_context.name, width=w, height=h,
                         rotation=rot, duration=_duration(container, st), fps=_rate(st.average_rate),
                         frames=int(st.frames or 0))


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
            if st.codec_context.name == "gif" or not st.frames:
                return any(n > 0 for n, _ in enumerate(container.decode(st)))
            return st.frames > 1 or bool(_duration(container, st))
    except Exception:
        return False


def _norm_rotation(rot: float | int | None) -> int:
    if not rot:
        return 0
    return round(float(rot) / 90.0) % 4 * 90


def prefetch(items: Iterable[T], depth: int) -> Iterator[T]:
    """Yields ``items``, produced by a background thread that keeps at most ``depth`` of them ready.

    Decoding (PyAV releases the GIL) then overlaps detection and classification, which leave a core idle at times.
    An exception in the producer is raised here, in the consumer, when it reaches that point of the stream; when the
    consumer stops early the producer is stopped too (at most ``depth`` items are decoded in vain).
    """
    import queue
    import threading

    q: queue.Queue = queue.Queue(maxsize=max(1, depth))
    stop = threading.Event()
    end = object()

    def produce() -> None:
        try:
            for item in items:
                while not stop.is_set():
                    try:
                        q.put((item, None), timeout=0.1)
                        break
                    except queue.Full:
                        continue
                if stop.is_set():
                    return
            q.put((end, None))
        except BaseException as exc:  # handed to the consumer, raised there
            q.put((end, exc))

    worker = threading.Thread(target=produce, name="affectlab-decode", daemon=True)
    worker.start()
    try:
        while True:
            item, exc = q.get()
            if item is end:
                if exc is not None:
                    raise exc
                return
            yield item
    finally:
        stop.set()
        while worker.is_alive():
            with suppress(queue.Empty):
                q.get(timeout=0.1)
        worker.join()


class FrameReader:
    """Streams the sampled, upright frames of a video.

    Attributes after iteration: ``frames_decoded``, ``frames_sampled``, ``warnings``, ``last_time``, ``width``,
    ``height``, ``rotation``.
    """

    def __init__(self, path: str | Path, name: str | None = None, fps: float | None = 5.0,
                 max_decode_errors: int = 50, *, resume: ResumePoint | None = None) -> None:
        """Opens the file (header only).

        Args:
            path: The video.
            name: Name for messages (default: the path).
            fps: Sampling rate; 0 or None for every frame.
            max_decode_errors: Packets that fail to decode before the rest of the file is given up.
            resume: Continue after this already analysed frame: decoding seeks to the keyframe before it, the
                frames up to it are decoded but not sampled, and frame and sample numbers go on from it, as in a
                run from the start.

        Raises:
            BadInputError: Not a readable video.
        """
        self.name = name or str(path)
        self.path = path
        self.fps = fps if fps and fps > 0 else None
        self.max_decode_errors = max_decode_errors
        self._container = _open(path, self.name)
        st = self._container.streams.video[0]
        self.duration = _duration(self._container, st)
        self.avg_fps = _rate(st.average_rate)
        self.frames_decoded = 0
        self.frames_sampled = 0
        self.warnings: list[str] = []
        self.last_time = 0.0
        self.width = int(st.codec_context.width or 0)
        self.height = int(st.codec_context.height or 0)
        self.rotation = 0
        self.resume = resume

    def close(self) -> None:
        """Closes the file."""
        self._container.close()

    def __enter__(self) -> FrameReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __iter__(self) -> Iterator[DecodedFrame]:
        import av

        st = self._container.streams.video[0]
        st.thread_type = "AUTO"
        tb = st.time_base
        start = st.start_time or 0
        rate = self.avg_fps or 25.0
        last_slot = -1
        errors = 0
        index = 0  # the next decoded frame's number
        resume = self.resume
        seeking = resume is not None
        if resume is not None:
            self.last_time = resume.time_s
            if self.fps is not None:
                last_slot = int(np.floor(resume.time_s * self.fps + 1e-6))
            self.frames_sampled = resume.sample + 1
            if tb is not None and resume.time_s > 0:
                self._container.seek(int(start + resume.time_s / tb), stream=st, backward=True, any_frame=False)
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
                errors += 1
                if errors == 1:
                    self.warnings.append(f"damaged data after {self.last_time:.2f} s skipped "
                                         f"({exc.strerror or exc})")
                if errors >= self.max_decode_errors:
                    self.warnings.append(f"gave up after {errors} undecodable packets at {self.last_time:.2f} s")
                    break
                continue
            for frame in frames:
                self.frames_decoded += 1
                t = float((frame.pts - start) * tb) if frame.pts is not None and tb is not None else index / rate
                if seeking:
                    assert resume is not None
                    if t < resume.time_s - 0.25 / rate:
                        continue  # between the keyframe and the resume point
                    seeking = False
                    index = resume.index + 1
                    if t <= resume.time_s + 0.25 / rate:
                        continue  # the last analysed frame itself
                idx = index
                index += 1
                self.last_time = max(self.last_time, t)
                if self.fps is not None:
                    slot = int(np.floor(t * self.fps + 1e-6))
                    if slot <= last_slot:
                        continue
                    last_slot = slot
                rot = _norm_rotation(frame.rotation)
                img = frame.to_ndarray(format="rgb24")
                if rot:
                    img = np.ascontiguousarray(np.rot90(img, rot // 90))
                self.rotation = rot
                self.height, self.width = int(img.shape[0]), int(img.shape[1])
                sample = self.frames_sampled
                self.frames_sampled += 1
                yield DecodedFrame(index=idx, sample=sample, time_s=t, image=img)
        if errors > 1:
            self.warnings.append(f"{errors} damaged packets skipped in all")
        if self.frames_decoded == 0 and resume is None:
            reason = "no decodable video frame"
            if self.warnings:
                reason += f" ({self.warnings[0]})"
            raise BadInputError(self.name, reason)
        if self.duration:
            frame_dur = 1.0 / rate
            if self.last_time + frame_dur < self.duration - max(0.5, 3 * frame_dur):
                self.warnings.append(f"the stream ends at {self.last_time:.2f} s but its header announces "
                                     f"{self.duration:.2f} s: the file looks truncated; analysed up to the damage")


def iter_frames(path: str | Path, name: str | None = None, fps: float | None = 5.0) -> Iterator[DecodedFrame]:
    """Sampled upright frames of a video (see :class:`FrameReader`)."""
    with FrameReader(path, name, fps) as reader:
        yield from reader


def frame_at(path: str | Path, time_s: float, name: str | None = None) -> np.ndarray:
    """The upright RGB frame shown at ``time_s``, found by seeking to the keyframe before it (not decoding from 0).

    Raises:
        BadInputError: Not a readable video, or no frame at that time.
    """
    import av

    label = name or str(path)
    container = _open(path, label)
    try:
        st = container.streams.video[0]
        tb = st.time_base
        start = st.start_time or 0
        rate = _rate(st.average_rate) or 25.0
        if tb is not None and time_s > 0:
            container.seek(int(start + time_s / tb), stream=st, backward=True, any_frame=False)
        best = None
        for frame in container.decode(st):
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
    img = best.to_ndarray(format="rgb24")
    rot = _norm_rotation(best.rotation)
    return np.ascontiguousarray(np.rot90(img, rot // 90)) if rot else img


def interpolate_faces(a: Sequence[Face], b: Sequence[Face], w: float, min_iou: float = 0.1) -> list[Face]:
    """Faces of a frame between two detected frames.

    Args:
        a: Faces detected before.
        b: Faces detected after.
        w: Position between them in (0, 1) (0 = at ``a``).
        min_iou: Smallest IoU for two detections to be the same face.

    Returns:
        Matched faces with linearly interpolated boxes (lower score of the two, no landmarks); unmatched faces of
        ``a`` when ``w < 0.5`` and of ``b`` otherwise.
    """
    from scipy.optimize import linear_sum_assignment

    out: list[Face] = []
    matched_a: set[int] = set()
    matched_b: set[int] = set()
    if a and b:
        m = iou_matrix([f.box for f in a], [f.box for f in b])
        rows, cols = linear_sum_assignment(-m)
        for i, j in zip(rows, cols, strict=True):
            if m[i, j] >= min_iou:
                matched_a.add(int(i))
                matched_b.add(int(j))
                box = tuple(float((1 - w) * p + w * q) for p, q in zip(a[i].box, b[j].box, strict=True))
                out.append(Face(box=box, det_score=min(a[i].det_score, b[j].det_score)))  # type: ignore[arg-type]
    if w < 0.5:
        out.extend(f for i, f in enumerate(a) if i not in matched_a)
    else:
        out.extend(f for j, f in enumerate(b) if j not in matched_b)
    out.sort(key=lambda f: -(f.width * f.height))
    return out


def _faces_agree(a: Sequence[Face], b: Sequence[Face], min_iou: float) -> bool:
    """Whether two detected frames hold the same faces, each pair at IoU >= ``min_iou`` (one-to-one)."""
    if len(a) != len(b):
        return False
    if not a:
        return True
    from scipy.optimize import linear_sum_assignment

    m = iou_matrix([f.box for f in a], [f.box for f in b])
    rows, cols = linear_sum_assignment(-m)
    return bool(np.all(m[rows, cols] >= min_iou))


class _Analyzer:
    """Chunked detection, classification and tracking over a stream of sampled frames."""

    def __init__(self, name: str, detector: FaceDetector, recognizer: EmotionRecognizer, config: VideoConfig,
                 *, track: bool = True, resume: ResumePoint | None = None) -> None:
        self.name = name
        self.track = track
        self.last: ResumePoint | None = resume  # the last frame whose faces are in ``results`` or were taken
        self.detector = detector
        self.recognizer = recognizer
        self.config = config
        self.k = max(1, config.detect_every)
        self.chunk = max(config.chunk_frames, self.k + 1)
        self.tracker = Tracker(config.tracker)
        self.results: list[FaceResult] = []
        self.pending: list[DecodedFrame] = []
        self.prev_det: tuple[int, list[Face]] | None = None  # (sample, faces) of the last detected frame
        if resume is not None and resume.sample % self.k == 0:
            self.prev_det = (resume.sample, list(resume.faces))
        self.frames_analyzed = 0
        self.frames_with_faces = 0
        # Classification of one chunk runs in the background while the next chunk is decoded and detected.
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="affectlab-classify")
        self._inflight: tuple[Future, Sequence[DecodedFrame]] | None = None

    def finish(self) -> None:
        """Waits for the chunk still being classified and tracks it."""
        self._drain()

    def close(self) -> None:
        """Stops the background classifier (after the chunk it is on)."""
        self._inflight = None
        self._pool.shutdown(wait=True)

    def _drain(self) -> None:
        if self._inflight is not None:
            future, frames = self._inflight
            self._inflight = None
            self._track(frames, future.result())

    def push(self, frame: DecodedFrame) -> bool:
        self.pending.append(frame)
        if len(self.pending) >= self.chunk:
            self.flush(final=False)
            return True
        return False

    def flush(self, final: bool) -> None:
        if not self.pending:
            return
        if self.config.adaptive is not None:
            frames, self.pending = self.pending, []
            self._adaptive(frames)
            return
        frames = self.pending
        det_pos = [i for i, f in enumerate(frames) if f.sample % self.k == 0]
        if final and (not det_pos or det_pos[-1] != len(frames) - 1):
            det_pos.append(len(frames) - 1)
        cut = len(frames) if final else (det_pos[-1] + 1 if det_pos else 0)
        todo, self.pending = frames[:cut], frames[cut:]
        if not todo:
            return
        det_pos = [i for i in det_pos if i < cut]
        dets = self._detect([todo[i].image for i in det_pos])
        det_faces = dict(zip(det_pos, dets, strict=True))
        if self.k > 1:
            self._refine(todo, det_faces)
        faces_per_frame: list[list[Face]] = []
        prev = self.prev_det
        next_iter = iter(sorted(det_faces))
        nxt = next(next_iter, None)
        for i, f in enumerate(todo):
            if i in det_faces:
                faces_per_frame.append(det_faces[i])
                prev = (f.sample, det_faces[i])
                nxt = next(next_iter, None)
                continue
            if prev is None or nxt is None:
                faces_per_frame.append([] if prev is None else list(prev[1]))
                continue
            s0, s1 = prev[0], todo[nxt].sample
            faces_per_frame.append(interpolate_faces(prev[1], det_faces[nxt], (f.sample - s0) / (s1 - s0)))
        self.prev_det = prev
        self._classify_and_track(todo, faces_per_frame)

    def _refine(self, todo: Sequence[DecodedFrame], det_faces: dict[int, list[Face]]) -> None:
        """Detects (in place of interpolating) the frames between detected frames whose faces disagree."""
        keys = sorted(det_faces)
        pairs = [(i0, det_faces[i0], i1) for i0, i1 in pairwise(keys)]
        if self.prev_det is not None and keys:
            pairs.insert(0, (-1, self.prev_det[1], keys[0]))  # -1: the last detected frame of the chunk before
        gaps = []
        for i0, a, i1 in pairs:
            if i1 - i0 > 1 and not _faces_agree(a, det_faces[i1], self.config.refine_iou):
                gaps.extend(range(i0 + 1, i1))
        if gaps:
            det_faces.update(zip(gaps, self._detect([todo[i].image for i in gaps]), strict=True))

    def _detect(self, images: list[np.ndarray]) -> list[list[Face]]:
        out: list[list[Face]] = []
        b = max(1, self.config.detect_batch)
        for i in range(0, len(images), b):
            out.extend(self.detector.detect_batch(images[i:i + b]))
        return out

    def _predict(self, frames: Sequence[DecodedFrame], faces_per_frame: Sequence[list[Face]]):
        kept: list[list[tuple[Face, np.ndarray]]] = []
        crops: list[np.ndarray] = []
        for f, faces in zip(frames, faces_per_frame, strict=True):
            row = []
            for face in faces:
                crop = crop_face(f.image, face.box)
                if crop.size:
                    row.append((face, crop))
                    crops.append(crop)
            kept.append(row)
        b = max(1, self.config.classify_batch)
        preds = [p for i in range(0, len(crops), b) for p in self.recognizer.predict(crops[i:i + b])]
        it = iter(preds)
        return [[(face, crop, next(it)) for face, crop in row] for row in kept]

    def _classify_and_track(self, frames: Sequence[DecodedFrame], faces_per_frame: Sequence[list[Face]]) -> None:
        # Tracks are built in frame order: the previous chunk first. At most one chunk is in flight, so the
        # recognizer's own workers are never asked for two batches at once and memory stays one chunk ahead.
        self._drain()
        if self.recognizer.backend == "onnx":
            # ONNX Runtime's single-threaded workers and the detector's torch threads share the cores well (5 %
            # faster measured); torch classifying beside torch detecting starts two OpenMP teams and is 1.5x
            # slower, so the torch backend classifies in line.
            self._inflight = (self._pool.submit(self._predict, frames, faces_per_frame), frames)
        else:
            self._track(frames, self._predict(frames, faces_per_frame))

    def _track(self, frames: Sequence[DecodedFrame], rows: Sequence[list]) -> None:
        keep = self.config.keep_crops
        for f, row in zip(frames, rows, strict=True):
            self.frames_analyzed += 1
            self.last = ResumePoint(time_s=f.time_s, index=f.index, sample=f.sample,
                                    faces=tuple(face for face, _, _ in row))
            if not row:
                continue
            self.frames_with_faces += 1
            if self.track:
                feats = np.stack([p.features for _, _, p in row])
                ids: Sequence[int | None] = self.tracker.update(f.index, f.time_s, [face.box for face, _, _ in row],
                                                                feats)
            else:
                ids = [None] * len(row)
            for j, ((face, crop, pred), tid) in enumerate(zip(row, ids, strict=True)):
                self.results.append(FaceResult(file=self.name, index=j, face=face, prediction=pred, frame=f.index,
                                               time_s=f.time_s, track=tid, crop=crop if keep else None))

    def _adaptive(self, frames: list[DecodedFrame]) -> None:
        cfg = self.config.adaptive
        assert cfg is not None
        self._drain()
        rows: dict[int, list] = {}
        states: dict[int, FrameState] = {}
        todo = coarse_positions(len(frames), cfg.strides[0])
        for stride in (*cfg.strides[1:], None):
            if todo:
                sub = [frames[i] for i in todo]
                got = self._predict(sub, self._detect([f.image for f in sub]))
                for i, row in zip(todo, got, strict=True):
                    rows[i] = row
                    states[i] = FrameState.of([p for _, _, p in row])
            if stride is None:
                break
            todo = refine(states, stride, cfg.threshold)
        order = sorted(rows)
        self._track([frames[i] for i in order], [rows[i] for i in order])


def analyze_video(path: str | Path, name: str | None, detector: FaceDetector, recognizer: EmotionRecognizer,
                  fps: float | None = 5.0, *, config: VideoConfig | None = None,
                  engagement: EngagementModel | None = None, progress: Progress | None = None) -> VideoAnalysis:
    """Analyses a video: every sampled frame's faces, their tracks, per-track engagement and summaries.

    Args:
        path: The video file.
        name: Its name as given by the user (default: the path).
        detector: The face detector (its ``DetectorConfig.max_side`` downscales frames for detection).
        recognizer: The emotion model.
        fps: Sampling rate in frames per second of video time; 0 or None for every frame.
        config: Detection stride, chunking, tracking and adaptive-rate settings.
        engagement: The engagement model (``EngagementModel.load(weights_dir)``), or None for no engagement.
        progress: Called as ``progress(seconds_done, duration)`` after each chunk.

    Returns:
        The analysis.

    Raises:
        BadInputError: Garbage, audio-only, zero-frame or otherwise unreadable file (message names it and why).
    """
    name = name or str(path)
    config = config or VideoConfig()
    analyzer = _Analyzer(name, detector, recognizer, config)
    with (FrameReader(path, name, fps) as reader, closing(prefetch(reader, depth=analyzer.chunk)) as frames,
          closing(analyzer)):
        for frame in frames:
            if analyzer.push(frame) and progress is not None:
                progress(frame.time_s, reader.duration)
        analyzer.flush(final=True)
        analyzer.finish()
        if progress is not None:
            progress(reader.last_time if reader.duration is None else reader.duration, reader.duration)
    tracks = analyzer.tracker.tracks()
    eng: dict[int, EngagementResult | None] = {}
    if engagement is None:
        status = "no engagement weights (fetch engagement_single_attention)"
    elif recognizer.spec.feature_dim != FEATURE_DIM:
        status = (f"engagement needs {FEATURE_DIM}-d enet_b0 features; {recognizer.spec.name} gives "
                  f"{recognizer.spec.feature_dim}-d")
    else:
        status = "ok"
        by_track: dict[int, list[FaceResult]] = {}
        for r in analyzer.results:
            by_track.setdefault(int(r.track or 0), []).append(r)
        for tid, rs in by_track.items():
            eng[tid] = engagement.score_sequence(np.stack([r.prediction.features for r in rs]),
                                                 [float(r.time_s or 0.0) for r in rs])
    summary = summarize_video(analyzer.results, tracks, analyzer.frames_analyzed, eng)
    persons = ({t.track: t.track for t in tracks} if config.persons is None
               else link_tracks(profiles(tracks, analyzer.results), config.persons))
    return VideoAnalysis(
        file=name, faces=analyzer.results, tracks=tracks, summary=summary, frames_sampled=reader.frames_sampled,
        frames_analyzed=analyzer.frames_analyzed, frames_decoded=reader.frames_decoded,
        duration=reader.duration if reader.duration else reader.last_time, fps=reader.avg_fps,
        sample_fps=reader.fps, width=reader.width, height=reader.height, rotation=reader.rotation,
        warnings=list(reader.warnings), engagement_status=status, persons=persons,
    )


def analyze_video_chunks(path: str | Path, name: str | None, detector: FaceDetector, recognizer: EmotionRecognizer,
                         fps: float | None = 5.0, *, config: VideoConfig | None = None,
                         resume: ResumePoint | None = None, commit_every_s: float = 30.0,
                         progress: Progress | None = None) -> Iterator[VideoChunk]:
    """Analyses a video stretch by stretch, for a caller that stores each stretch before the next (long recordings).

    Memory holds one stretch's faces (with crops when ``config.keep_crops``) and one chunk of frames, whatever the
    video's length. Faces come without tracks: tracking, engagement and persons need the whole recording, so they
    are computed at the end from the stored faces (:class:`FaceReplay`), which gives the same tracks as
    :func:`analyze_video` since the tracker sees the same faces in the same order.

    Args:
        path: The video file.
        name: Its name as given by the user (default: the path).
        detector: The face detector.
        recognizer: The emotion model.
        fps: Sampling rate (0 or None for every frame).
        config: Detection stride, chunking and crops (``adaptive`` is not resumable exactly; ``tracker`` and
            ``persons`` are for :class:`FaceReplay`).
        resume: The last frame a stopped run stored: analysis goes on after it.
        commit_every_s: Seconds of video per yielded stretch (at least one chunk of frames).
        progress: Called as ``progress(seconds_done, duration)`` after each chunk of frames.

    Yields:
        The stretches in time order; the last has ``done`` set (and the reader's warnings).

    Raises:
        BadInputError: Not a readable video.
    """
    name = name or str(path)
    config = config or VideoConfig()
    analyzer = _Analyzer(name, detector, recognizer, config, track=False, resume=resume)

    def chunk(reader: FrameReader, done: bool) -> VideoChunk:
        faces, analyzer.results = analyzer.results, []
        duration = reader.duration if reader.duration else (reader.last_time if done else None)
        return VideoChunk(faces=faces, until=analyzer.last, frames_analyzed=analyzer.frames_analyzed,
                          frames_decoded=reader.frames_decoded, done=done, duration=duration, fps=reader.avg_fps,
                          width=reader.width, height=reader.height, warnings=tuple(reader.warnings) if done else ())

    with (FrameReader(path, name, fps, resume=resume) as reader,
          closing(prefetch(reader, depth=analyzer.chunk)) as frames, closing(analyzer)):
        next_cut = (resume.time_s if resume is not None else 0.0) + commit_every_s
        for frame in frames:
            if not analyzer.push(frame):
                continue
            if progress is not None:
                progress(frame.time_s, reader.duration)
            if frame.time_s >= next_cut:
                analyzer.finish()
                yield chunk(reader, done=False)
                next_cut = frame.time_s + commit_every_s
        analyzer.flush(final=True)
        analyzer.finish()
        if progress is not None:
            progress(reader.last_time if reader.duration is None else reader.duration, reader.duration)
        yield chunk(reader, done=True)


class FaceReplay:
    """Tracks stored faces again, frame by frame in time order, and gathers what joining tracks into persons needs.

    Feeding it every face of a recording (frames in order, each frame's faces in their stored order) gives the
    tracks :func:`analyze_video` gives, without holding the faces' features: each track keeps a running sum.
    """

    def __init__(self, tracker: TrackerConfig | None = None) -> None:
        """Starts with no track."""
        self.tracker = Tracker(tracker)
        self._sums: dict[int, np.ndarray] = {}

    def add(self, frame: int, time_s: float, boxes: Sequence[tuple[float, float, float, float]],
            features: np.ndarray | None) -> list[int]:
        """Tracks one frame's faces; returns their track ids (see :meth:`Tracker.update`)."""
        ids = self.tracker.update(frame, time_s, boxes, features)
        if features is not None:
            feats = np.asarray(features, dtype=np.float64).reshape(len(boxes), -1)
            for tid, v in zip(ids, feats, strict=True):
                n = float(np.linalg.norm(v))
                unit = v / n if n > 0 else v
                self._sums[tid] = unit if tid not in self._sums else self._sums[tid] + unit
        return ids

    def tracks(self) -> list[Track]:
        """The tracks, by id."""
        return self.tracker.tracks()

    def profiles(self) -> list[TrackProfile]:
        """The profile of each track (as :func:`models.persons.profiles` makes it from the faces)."""
        out = []
        for t in self.tracks():
            if not t.boxes:
                continue
            sides = [((b[2] - b[0]) + (b[3] - b[1])) / 2 for b in t.boxes]
            total = self._sums.get(t.track)
            out.append(TrackProfile(
                track=t.track, start_s=t.start_s, end_s=t.end_s, n_faces=t.n_faces,
                feature=total / t.n_faces if total is not None else np.zeros(0),
                first_centre=((t.boxes[0][0] + t.boxes[0][2]) / 2, (t.boxes[0][1] + t.boxes[0][3]) / 2),
                last_centre=((t.boxes[-1][0] + t.boxes[-1][2]) / 2, (t.boxes[-1][1] + t.boxes[-1][3]) / 2),
                size=float(np.mean(sides)),
            ))
        return out

    def persons(self, config: PersonConfig | None = None) -> dict[int, int]:
        """Track id to person number (one person per track when ``config`` is None)."""
        if config is None:
            return {t.track: t.track for t in self.tracks()}
        return link_tracks(self.profiles(), config)


def video_json(analysis: VideoAnalysis) -> dict[str, object]:
    """The parts of the ``analyze --json`` document for one video.

    Returns:
        ``{"file": files-item, "faces": [FaceResult.to_json() + person...], "tracks": [...]}``. The ``files`` item has
        ``file, kind="video", width, height, n_faces, error=None`` plus ``duration_s, fps, sample_fps,
        frames_decoded, frames_sampled, frames_analyzed, rotation, warnings, engagement_status, summary``. Each
        track: ``{track, n_faces, start_s, end_s, face_share, dominant, mean_probs, valence, arousal, engagement:
        {score, label, windows: [{start_s, end_s, p_engaged}]} | None, person}``. ``person`` numbers the student
        a track or face belongs to across the recording (tracks joined by models/persons.py); the file item's
        ``n_persons`` counts them.
    """
    a = analysis
    file_entry = {
        "file": a.file, "kind": "video", "width": a.width, "height": a.height, "n_faces": len(a.faces),
        "error": None, "duration_s": None if a.duration is None else round(a.duration, 4),
        "fps": None if a.fps is None else round(a.fps, 4), "sample_fps": a.sample_fps,
        "frames_decoded": a.frames_decoded, "frames_sampled": a.frames_sampled, "frames_analyzed": a.frames_analyzed,
        "rotation": a.rotation, "warnings": list(a.warnings), "engagement_status": a.engagement_status,
        "summary": a.summary.to_json(), "n_persons": len({a.person(t.track) for t in a.tracks}),
    }
    return {"file": file_entry, "faces": [{**f.to_json(), "person": a.person(f.track)} for f in a.faces],
            "tracks": [{**t.to_json(), "person": a.person(t.track)} for t in a.summary.tracks]}
