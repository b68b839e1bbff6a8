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

import contextlib
import dataclasses
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from core.settings import cpu_share, take_on
from models import face_spool
from models.decode import ResumePoint
from models.doc_stream import VideoMeta
from models.engagement import EngagementModel
from models.faces import FaceDetector
from models.range_plan import MIN_RANGE_S, VideoRange, frame_times, plan_ranges, sampled_frames
from models.recognizer import EmotionRecognizer
from models.tracking import Tracker
from models.types import FaceResult
from models.video import Progress, VideoAnalysis, VideoChunk, VideoConfig, analyze_video_chunks, conclude_video

__all__ = [
    "MIN_RANGE_S",
    "ModelOpener",
    "RangedRun",
    "VideoRange",
    "analyze_video_ranges",
    "frame_times",
    "join_ranges",
    "plan_ranges",
    "range_chunks",
    "range_faces",
    "run_ranges",
    "sampled_frames",
]

ModelOpener = Callable[[], tuple[FaceDetector, EmotionRecognizer]]
"""Loads the detector and emotion model in a worker process (a picklable callable, e.g. a ``functools.partial``)."""


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
    """What a range's worker hands back: its faces, or the file they were spooled to (see :func:`range_faces`)."""

    faces: list[FaceResult]
    frames_analyzed: int
    warnings: tuple[str, ...]
    duration: float | None
    fps: float | None
    width: int
    height: int
    spool: str | None = None


def _run_range(
    path: str,
    name: str,
    models: tuple[FaceDetector, EmotionRecognizer],
    fps: float | None,
    video_range: VideoRange,
    config: VideoConfig,
    progress: Progress | None = None,
    spool: str | None = None,
) -> _RangeResult:
    """Analyses one range; its faces are kept, or with ``spool`` written there stretch by stretch (30 s each)."""
    detector, recognizer = models
    faces: list[FaceResult] = []
    last: VideoChunk | None = None
    with contextlib.ExitStack() as stack:
        out = stack.enter_context(open(spool, "wb")) if spool else None
        for chunk in range_chunks(
            path,
            name,
            detector,
            recognizer,
            fps,
            video_range,
            config=config,
            commit_every_s=30.0 if out else 1e18,
            progress=progress,
        ):
            if out is None:
                faces.extend(chunk.faces)
            else:
                face_spool.write_batch(out, chunk.faces)
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
        spool=spool,
    )


def range_faces(results: Sequence[_RangeResult]) -> Iterator[FaceResult]:
    """Every range's faces in time order, read back stretch by stretch from the ranges that spooled them."""
    for res in results:
        if res.spool is None:
            yield from res.faces
            continue
        with open(res.spool, "rb") as f:  # written by this run's own worker in its private folder
            yield from face_spool.read_batches(f)


def _worker_range(
    opener: ModelOpener,
    path: str,
    name: str,
    fps: float | None,
    video_range: VideoRange,
    config: VideoConfig,
    spool: str | None = None,
) -> _RangeResult:
    """A worker process's job: load the models (one core's share) and analyse one range."""
    return _run_range(path, name, opener(), fps, video_range, config, spool=spool)


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

    for f in range_faces(results):
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


@dataclass(frozen=True)
class RangedRun:
    """The ranges of a video, analysed: their results (faces, or the files they were spooled to) and its counts."""

    name: str
    results: list[_RangeResult]
    config: VideoConfig
    frames_decoded: int
    frames_sampled: int
    models: tuple[FaceDetector, EmotionRecognizer]

    def faces(self) -> Iterator[FaceResult]:
        """Every face in time order (see :func:`range_faces`)."""
        return range_faces(self.results)

    def meta(self, path: str | Path, fps: float | None) -> VideoMeta:
        """What a one-process analysis of the video knows at its end, besides its faces."""
        from models.decode import probe_video

        last = self.results[-1]
        return VideoMeta(
            frames_sampled=self.frames_sampled,
            frames_analyzed=sum(r.frames_analyzed for r in self.results),
            frames_decoded=self.frames_decoded,
            duration=last.duration,
            fps=last.fps,
            sample_fps=fps if fps and fps > 0 else None,
            width=last.width,
            height=last.height,
            rotation=probe_video(path, self.name).rotation,
            warnings=tuple(dict.fromkeys(w for res in self.results for w in res.warnings)),
        )


def run_ranges(
    path: str | Path,
    name: str | None,
    opener: ModelOpener,
    fps: float | None = 5.0,
    *,
    workers: int,
    config: VideoConfig | None = None,
    progress: Progress | None = None,
    in_process: bool = False,
    min_range_s: float | None = None,
    loaded: tuple[FaceDetector, EmotionRecognizer] | None = None,
    spool_dir: str | None = None,
) -> RangedRun | None:
    """Analyses a video cut into ranges over ``workers`` processes (see :func:`analyze_video_ranges`).

    ``spool_dir``: each range writes its faces to a file there, 30 s of video at a time, instead of handing them back
    (memory holds one stretch per process; :meth:`RangedRun.faces` reads them back in order).

    Returns:
        The run, or None when the video is too short to cut (or adaptive sampling is on).
    """
    from models.decode import probe_video

    name = name or str(path)
    config = config or VideoConfig()
    min_range_s = MIN_RANGE_S if min_range_s is None else min_range_s  # read now: tests shorten it
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
    spools = [None if spool_dir is None else str(Path(spool_dir) / f"range{r.number}.faces") for r in ranges]
    results = _run_ranges(str(path), name, opener, loaded, fps, ranges, config, progress, in_process, spools)
    return RangedRun(name, results, config, len(times), len(sampled_frames(times, fps)), loaded)


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
    min_range_s: float | None = None,
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
        min_range_s: Fewer ranges when each would be shorter than this many seconds (None: ``MIN_RANGE_S``).
        loaded: Models already loaded here, for this process's range (None: ``opener`` loads a copy; a second
            copy costs about 300 MB resident).

    Returns:
        The analysis, the same as :func:`models.video.analyze_video` in one process gives; None when the video is
        too short to cut (or adaptive sampling is on): the caller analyses it in one process.

    Raises:
        BadInputError: Not a readable video.
    """
    name = name or str(path)
    run = run_ranges(
        path,
        name,
        opener,
        fps,
        workers=workers,
        config=config,
        progress=progress,
        in_process=in_process,
        min_range_s=min_range_s,
        loaded=loaded,
    )
    if run is None:
        return None
    return join_ranges(
        name,
        run.results,
        recognizer or run.models[1],
        path=path,
        fps=fps,
        config=run.config,
        engagement=engagement,
        frames_decoded=run.frames_decoded,
        frames_sampled=run.frames_sampled,
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
    spools: Sequence[str | None],
) -> list[_RangeResult]:
    """Each range's faces: this process the first (its progress scaled to the whole video), a worker each other."""
    if in_process:
        return [_run_range(path, name, models, fps, r, config, spool=sp) for r, sp in zip(ranges, spools, strict=True)]
    import multiprocessing

    first_end = ranges[0].end_s or 1.0

    def scaled(done: float, duration: float | None) -> None:  # the first range's share of the whole video
        if progress is not None and duration:
            progress(min(duration, done / first_end * duration), duration)

    ctx = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=len(ranges) - 1, mp_context=ctx, initializer=_one_core) as pool:
        futures: list[Future[_RangeResult]] = [
            pool.submit(_worker_range, opener, path, name, fps, r, config, sp)
            for r, sp in zip(ranges[1:], spools[1:], strict=True)
        ]
        head = _run_range(path, name, models, fps, ranges[0], config, scaled if progress else None, spools[0])
        return [head, *(f.result() for f in futures)]
