"""One video over several processes: the recording cut into time ranges, each analysed by its own worker, joined.

A long recording is one file, so analysing files side by side leaves all but one core idle on it. Here the sampled
frames are split into ``parts`` ranges of equal length; each range is analysed by
:func:`models.video.analyze_video_chunks` in its own process, which seeks to the keyframe before its range exactly as
a resumed run does (a :class:`~models.decode.ResumePoint` on the frame before the range), and stops before the next
range's first frame. The faces come back without tracks; the parent joins them in time order and runs the tracker
over them (what :class:`~models.video.FaceReplay` does for stored faces), then engagement, summaries and persons
(:func:`models.video.conclude_video`). The result is the one a single process gives:

- Same frames: the ranges are planned from the packets' timestamps (a demux pass, no decoding), so each range knows
  the frame and sample numbers its first frame has in a run from the start, and the sampling slots line up.
- Same boxes: a range starts on a detected frame (its first sample is a multiple of ``detect_every``) and, with
  ``detect_every > 1``, also detects the next range's first frame (not kept) so the frames before it are interpolated
  towards the same detection as in one run.
- Same tracks and persons: the tracker and the person linking see the same faces in the same order.

Resuming: a range is resumable on its own (:func:`range_chunks` takes the range's last stored frame), so a storing
caller keeps one resume point per range. Adaptive frame rate (``VideoConfig.adaptive``) is not cut into ranges.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from core.settings import cpu_share, take_on
from models.decode import ResumePoint, may_jump
from models.engagement import EngagementModel
from models.faces import FaceDetector
from models.recognizer import EmotionRecognizer
from models.seam import packet_times
from models.tracking import Tracker
from models.types import FaceResult
from models.video import Progress, VideoAnalysis, VideoChunk, VideoConfig, analyze_video_chunks, conclude_video

ModelOpener = Callable[[], tuple[FaceDetector, EmotionRecognizer]]
"""Loads the detector and emotion model in a worker process (a picklable callable, e.g. a ``functools.partial``)."""

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


def range_chunks(
    path: str | Path,
    name: str,
    detector: FaceDetector,
    recognizer: EmotionRecognizer,
    fps: float | None,
    video_range: VideoRange,
    *,
    config: VideoConfig | None = None,
    resume: ResumePoint | None = None,
    commit_every_s: float = 30.0,
    progress: Progress | None = None,
) -> Iterator[VideoChunk]:
    """Analyses one range stretch by stretch (see :func:`models.video.analyze_video_chunks`); resumable on its own.

    Args:
        path: The video.
        name: Its name as given by the user.
        detector: The face detector.
        recognizer: The emotion model.
        fps: Sampling rate (0 or None: every frame).
        video_range: The range (from :func:`plan_ranges` with the same ``fps`` and ``detect_every``).
        config: Video settings.
        resume: The range's last stored frame from a stopped run (None: the range's start).
        commit_every_s: Seconds of video per yielded stretch.
        progress: Called as ``progress(seconds_done, duration)`` after each chunk of frames.

    Yields:
        The range's stretches; the last has ``done`` set.
    """
    return analyze_video_chunks(
        path,
        name,
        detector,
        recognizer,
        fps,
        config=config,
        resume=resume if resume is not None else video_range.start,
        commit_every_s=commit_every_s,
        progress=progress,
        stop_index=video_range.stop_index,
    )


@dataclass(frozen=True)
class _RangeResult:
    """What a range's worker hands back."""

    faces: list[FaceResult]
    frames_analyzed: int
    warnings: tuple[str, ...]
    duration: float | None
    fps: float | None
    width: int
    height: int


def _run_range(
    path: str,
    name: str,
    models: tuple[FaceDetector, EmotionRecognizer],
    fps: float | None,
    video_range: VideoRange,
    config: VideoConfig,
    progress: Progress | None = None,
) -> _RangeResult:
    detector, recognizer = models
    faces: list[FaceResult] = []
    last: VideoChunk | None = None
    for chunk in range_chunks(
        path, name, detector, recognizer, fps, video_range, config=config, commit_every_s=1e18, progress=progress
    ):
        faces.extend(chunk.faces)
        last = chunk
    assert last is not None
    return _RangeResult(
        faces=faces,
        frames_analyzed=last.frames_analyzed,
        warnings=last.warnings,
        duration=last.duration,
        fps=last.fps,
        width=last.width,
        height=last.height,
    )


def _worker_range(
    opener: ModelOpener, path: str, name: str, fps: float | None, video_range: VideoRange, config: VideoConfig
) -> _RangeResult:
    """A worker process's job: load the models (one core's share) and analyse one range."""
    return _run_range(path, name, opener(), fps, video_range, config)


def _one_core() -> None:
    take_on({}, threads=1)


def join_ranges(
    name: str,
    results: Sequence[_RangeResult],
    recognizer: EmotionRecognizer,
    *,
    path: str | Path,
    fps: float | None,
    config: VideoConfig,
    engagement: EngagementModel | None,
    frames_decoded: int,
    frames_sampled: int,
) -> VideoAnalysis:
    """The faces of every range, in time order, tracked and concluded as one run over the whole video."""
    from models.decode import probe_video

    tracker = Tracker(config.tracker)
    faces: list[FaceResult] = []
    run: list[FaceResult] = []

    def track_frame() -> None:
        ids = tracker.update(
            int(run[0].frame or 0),
            float(run[0].time_s or 0.0),
            [f.face.box for f in run],
            np.stack([f.prediction.features for f in run]),
        )
        faces.extend(dataclasses.replace(f, track=tid) for f, tid in zip(run, ids, strict=True))
        run.clear()

    for res in results:
        for f in res.faces:
            if run and f.frame != run[0].frame:
                track_frame()
            run.append(f)
    if run:
        track_frame()
    info = probe_video(path, name)
    last = results[-1]
    warnings = [w for res in results for w in res.warnings]
    return conclude_video(
        name,
        faces,
        tracker.tracks(),
        recognizer,
        config=config,
        engagement=engagement,
        frames_sampled=frames_sampled,
        frames_analyzed=sum(r.frames_analyzed for r in results),
        frames_decoded=frames_decoded,
        duration=last.duration,
        fps=last.fps,
        sample_fps=fps if fps and fps > 0 else None,
        width=last.width,
        height=last.height,
        rotation=info.rotation,
        warnings=list(dict.fromkeys(warnings)),
    )


def analyze_video_ranges(
    path: str | Path,
    name: str | None,
    opener: ModelOpener,
    fps: float | None = 5.0,
    *,
    workers: int,
    config: VideoConfig | None = None,
    engagement: EngagementModel | None = None,
    recognizer: EmotionRecognizer | None = None,
    progress: Progress | None = None,
    in_process: bool = False,
    min_range_s: float = MIN_RANGE_S,
    loaded: tuple[FaceDetector, EmotionRecognizer] | None = None,
) -> VideoAnalysis | None:
    """Analyses a video cut into ranges over ``workers`` processes (this one takes the first range).

    Args:
        path: The video.
        name: Its name as given by the user (default: the path).
        opener: Loads the detector and emotion model; called in each worker, and here (one core's share each).
        fps: Sampling rate (0 or None: every frame).
        workers: Processes, this one included (one range each).
        config: Video settings (``classify_batch`` is set to 1 per worker: one core each).
        engagement: The engagement model (scored here, over the joined tracks).
        recognizer: The model whose name and feature size the result reports (default: the opener's).
        progress: Called with the first range's progress, scaled to the whole video.
        in_process: Analyse the ranges one after the other in this process (tests; same result).
        min_range_s: Fewer ranges when each would be shorter than this many seconds.
        loaded: Models already loaded here, for this process's range (None: ``opener`` loads a copy; a second
            copy costs about 300 MB resident).

    Returns:
        The analysis, the same as :func:`models.video.analyze_video` in one process gives; None when the video is
        too short to cut (or adaptive sampling is on): the caller analyses it in one process.

    Raises:
        BadInputError: Not a readable video.
    """
    from models.decode import probe_video

    name = name or str(path)
    config = config or VideoConfig()
    if config.adaptive is not None or workers <= 1:
        return None
    info = probe_video(path, name)  # a bad file is refused by name before any worker starts
    if info.duration is not None and info.duration < 2 * min_range_s:
        return None
    times = frame_times(path)
    ranges = plan_ranges(path, fps, workers, detect_every=config.range_period, min_range_s=min_range_s, times=times)
    if len(ranges) <= 1:
        return None
    config = dataclasses.replace(config, classify_batch=1, detect_batch=1)
    if loaded is None:
        with cpu_share(1):
            loaded = opener()
    models = loaded
    results = _run_ranges(str(path), name, opener, models, fps, ranges, config, progress, in_process)
    return join_ranges(
        name,
        results,
        recognizer or models[1],
        path=path,
        fps=fps,
        config=config,
        engagement=engagement,
        frames_decoded=len(times),
        frames_sampled=len(sampled_frames(times, fps)),
    )


def _run_ranges(
    path: str,
    name: str,
    opener: ModelOpener,
    models: tuple[FaceDetector, EmotionRecognizer],
    fps: float | None,
    ranges: list[VideoRange],
    config: VideoConfig,
    progress: Progress | None,
    in_process: bool,
) -> list[_RangeResult]:
    """Each range's faces: this process the first (its progress scaled to the whole video), a worker each other."""
    if in_process:
        return [_run_range(path, name, models, fps, r, config) for r in ranges]
    import multiprocessing

    first_end = ranges[0].end_s or 1.0

    def scaled(done: float, duration: float | None) -> None:  # the first range's share of the whole video
        if progress is not None and duration:
            progress(min(duration, done / first_end * duration), duration)

    ctx = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=len(ranges) - 1, mp_context=ctx, initializer=_one_core) as pool:
        futures: list[Future[_RangeResult]] = [
            pool.submit(_worker_range, opener, path, name, fps, r, config) for r in ranges[1:]
        ]
        head = _run_range(path, name, models, fps, ranges[0], config, scaled if progress else None)
        return [head, *(f.result() for f in futures)]
