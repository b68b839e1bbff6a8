"""Video analysis: batched detection and classification across sampled frames, tracks, engagement, persons.

Frames come from :mod:`models.decode` (streamed, upright, sampled at ``fps``); at most ``chunk_frames`` sampled
frames are held in memory at once, so memory does not grow with the video's length. Damaged data is skipped with a
warning (see :mod:`models.decode`); unreadable files raise :class:`BadInputError`. A video without faces is not an
error: the result has no faces.

Inference: one :class:`FaceDetector` for the whole video, ``detect_batch`` on groups of frames; the crops of all
faces of a chunk go through the recognizer together. With ``detect_every = k > 1`` faces are detected on every k-th
sampled frame only; in the frames between, each face's box is interpolated between the two detections it is matched
to (by IoU), and a face seen at only one end is kept for the half of the gap nearest to it. With an
:class:`AdaptiveConfig`, frames are analysed at a coarse stride first and refined only where needed (adaptive.py).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import closing
from dataclasses import dataclass, field
from itertools import pairwise
from pathlib import Path
from typing import Any

import numpy as np

from models.adaptive import AdaptiveConfig, FrameState, coarse_positions, refine
from models.decode import DecodedFrame, FrameReader, ResumePoint, prefetch
from models.engagement import EngagementModel, EngagementResult, EngagementStatus
from models.faces import FaceDetector, crop_face
from models.persons import PersonConfig, TrackProfile, link_tracks, profile_of, profiles
from models.recognizer import EmotionRecognizer
from models.summary import VideoSummary, summarize_video
from models.track_results import score_tracks
from models.tracking import Track, Tracker, TrackerConfig, iou_matrix
from models.types import EmotionPrediction, Face, FaceResult, TrackResult

Progress = Callable[[float, float | None], None]
"""Called as ``progress(seconds_done, duration_seconds_or_None)`` after each chunk."""
FaceRow = list[tuple[Face, np.ndarray, EmotionPrediction]]
"""One frame's faces with their crops and predictions."""


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
        engagement_status: ``ok``, or why there is no engagement (:data:`models.engagement.EngagementStatus`).
        engagement_note: What to tell a person about ``engagement_status`` (``ok`` when it is ``ok``).
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
    engagement_status: EngagementStatus
    engagement_note: str = "ok"
    persons: dict[int, int] = field(default_factory=dict)

    def person(self, track: int | None) -> int | None:
        """The person number of a track (the track number itself when tracks were not joined)."""
        return None if track is None else self.persons.get(track, track)

    def engagement(self, track: int) -> EngagementResult | None:
        """The engagement of a track, or None."""
        return next((t.engagement for t in self.summary.tracks if t.track == track), None)

    def track_results(self) -> list[TrackResult]:
        """The tracks as they are stored (span, engagement, person), by id."""
        return [
            TrackResult(
                track=t.track,
                n_faces=t.n_faces,
                start_s=t.start_s,
                end_s=t.end_s,
                engagement=t.engagement,
                person=self.person(t.track),
            )
            for t in self.summary.tracks
        ]


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
                (p1, p2, p3, p4), (q1, q2, q3, q4) = a[i].box, b[j].box
                box = (
                    float((1 - w) * p1 + w * q1),
                    float((1 - w) * p2 + w * q2),
                    float((1 - w) * p3 + w * q3),
                    float((1 - w) * p4 + w * q4),
                )
                out.append(Face(box=box, det_score=min(a[i].det_score, b[j].det_score)))
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

    def __init__(
        self,
        name: str,
        detector: FaceDetector,
        recognizer: EmotionRecognizer,
        config: VideoConfig,
        *,
        track: bool = True,
        resume: ResumePoint | None = None,
        stop_index: int | None = None,
    ) -> None:
        self.name = name
        # Frames from this index on are only looked at (a range's detection to interpolate towards), never kept.
        self.stop_index = stop_index
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
        self._inflight: tuple[Future[list[FaceRow]], Sequence[DecodedFrame]] | None = None

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
        gaps: list[int] = []
        for i0, a, i1 in pairs:
            if i1 - i0 > 1 and not _faces_agree(a, det_faces[i1], self.config.refine_iou):
                gaps.extend(range(i0 + 1, i1))
        if gaps:
            det_faces.update(zip(gaps, self._detect([todo[i].image for i in gaps]), strict=True))

    def _detect(self, images: list[np.ndarray]) -> list[list[Face]]:
        out: list[list[Face]] = []
        b = max(1, self.config.detect_batch)
        for i in range(0, len(images), b):
            out.extend(self.detector.detect_batch(images[i : i + b]))
        return out

    def _beyond(self, frame: DecodedFrame) -> bool:
        return self.stop_index is not None and frame.index >= self.stop_index

    def _predict(self, frames: Sequence[DecodedFrame], faces_per_frame: Sequence[list[Face]]) -> list[FaceRow]:
        kept: list[list[tuple[Face, np.ndarray]]] = []
        crops: list[np.ndarray] = []
        for f, faces in zip(frames, faces_per_frame, strict=True):
            row: list[tuple[Face, np.ndarray]] = []
            for face in [] if self._beyond(f) else faces:
                crop = crop_face(f.image, face.box)
                if crop.size:
                    row.append((face, crop))
                    crops.append(crop)
            kept.append(row)
        b = max(1, self.config.classify_batch)
        preds = [p for i in range(0, len(crops), b) for p in self.recognizer.predict(crops[i : i + b])]
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

    def _track(self, frames: Sequence[DecodedFrame], rows: Sequence[FaceRow]) -> None:
        keep = self.config.keep_crops
        for f, row in zip(frames, rows, strict=True):
            if self._beyond(f):
                continue
            self.frames_analyzed += 1
            self.last = ResumePoint(
                time_s=f.time_s, index=f.index, sample=f.sample, faces=tuple(face for face, _, _ in row)
            )
            if not row:
                continue
            self.frames_with_faces += 1
            if self.track:
                feats = np.stack([p.features for _, _, p in row])
                ids: Sequence[int | None] = self.tracker.update(
                    f.index, f.time_s, [face.box for face, _, _ in row], feats
                )
            else:
                ids = [None] * len(row)
            for j, ((face, crop, pred), tid) in enumerate(zip(row, ids, strict=True)):
                self.results.append(
                    FaceResult(
                        file=self.name,
                        index=j,
                        face=face,
                        prediction=pred,
                        frame=f.index,
                        time_s=f.time_s,
                        track=tid,
                        crop=crop if keep else None,
                    )
                )

    def _adaptive(self, frames: list[DecodedFrame]) -> None:
        cfg = self.config.adaptive
        assert cfg is not None
        self._drain()
        rows: dict[int, FaceRow] = {}
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


def _sequences(results: Sequence[FaceResult]) -> Callable[[Track], tuple[np.ndarray, list[float]]]:
    """Reads one track's features and times from faces held in memory (``track`` set on each)."""
    by_track: dict[int, list[FaceResult]] = {}
    for r in results:
        by_track.setdefault(int(r.track or 0), []).append(r)

    def sequence(t: Track) -> tuple[np.ndarray, list[float]]:
        rs = by_track.get(t.track, [])
        feats = np.stack([r.prediction.features for r in rs]) if rs else np.zeros((0, 0), np.float32)
        return feats, [float(r.time_s or 0.0) for r in rs]

    return sequence


def analyze_video(
    path: str | Path,
    name: str | None,
    detector: FaceDetector,
    recognizer: EmotionRecognizer,
    fps: float | None = 5.0,
    *,
    config: VideoConfig | None = None,
    engagement: EngagementModel | None = None,
    progress: Progress | None = None,
) -> VideoAnalysis:
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
    with (
        FrameReader(path, name, fps) as reader,
        closing(prefetch(reader, depth=analyzer.chunk)) as frames,
        closing(analyzer),
    ):
        for frame in frames:
            if analyzer.push(frame) and progress is not None:
                progress(frame.time_s, reader.duration)
        analyzer.flush(final=True)
        analyzer.finish()
        if progress is not None:
            progress(reader.last_time if reader.duration is None else reader.duration, reader.duration)
    return conclude_video(
        name,
        analyzer.results,
        analyzer.tracker.tracks(),
        recognizer,
        config=config,
        engagement=engagement,
        frames_sampled=reader.frames_sampled,
        frames_analyzed=analyzer.frames_analyzed,
        frames_decoded=reader.frames_decoded,
        duration=reader.duration if reader.duration else reader.last_time,
        fps=reader.avg_fps,
        sample_fps=reader.fps,
        width=reader.width,
        height=reader.height,
        rotation=reader.rotation,
        warnings=list(reader.warnings),
    )


def conclude_video(
    name: str,
    faces: list[FaceResult],
    tracks: list[Track],
    recognizer: EmotionRecognizer,
    *,
    config: VideoConfig,
    engagement: EngagementModel | None,
    frames_sampled: int,
    frames_analyzed: int,
    frames_decoded: int,
    duration: float | None,
    fps: float | None,
    sample_fps: float | None,
    width: int,
    height: int,
    rotation: int,
    warnings: list[str],
) -> VideoAnalysis:
    """The analysis of a video from its tracked faces: engagement per track, summaries, persons.

    Shared by :func:`analyze_video` and the analysis of a video cut into time ranges (models/ranges.py), so that
    both end the same way from the same faces (:func:`models.track_results.score_tracks`).
    """
    scored = score_tracks(
        tracks,
        _sequences(faces),
        engagement,
        recognizer.spec.name,
        recognizer.spec.feature_dim,
        lambda: profiles(tracks, faces),
        config.persons,
    )
    summary = summarize_video(faces, tracks, frames_analyzed, scored.engagement)
    return VideoAnalysis(
        file=name,
        faces=faces,
        tracks=tracks,
        summary=summary,
        frames_sampled=frames_sampled,
        frames_analyzed=frames_analyzed,
        frames_decoded=frames_decoded,
        duration=duration,
        fps=fps,
        sample_fps=sample_fps,
        width=width,
        height=height,
        rotation=rotation,
        warnings=warnings,
        engagement_status=scored.status,
        engagement_note=scored.note,
        persons=scored.persons,
    )


def analyze_video_chunks(
    path: str | Path,
    name: str | None,
    detector: FaceDetector,
    recognizer: EmotionRecognizer,
    fps: float | None = 5.0,
    *,
    config: VideoConfig | None = None,
    resume: ResumePoint | None = None,
    commit_every_s: float = 30.0,
    progress: Progress | None = None,
    stop_index: int | None = None,
    stream: int = 0,
) -> Iterator[VideoChunk]:
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
        stop_index: Analyse only the frames before this frame number (one time range of the video,
            models/ranges.py). With ``detect_every > 1`` the first sampled frame from it on is still detected, so
            that the frames before it get the boxes a run over the whole video gives them; its faces are not kept.
        stream: The video stream to read (see :class:`models.decode.FrameReader`).

    Yields:
        The stretches in time order; the last has ``done`` set (and the reader's warnings; ``done`` at
        ``stop_index`` too).

    Raises:
        BadInputError: Not a readable video.
    """
    name = name or str(path)
    config = config or VideoConfig()
    analyzer = _Analyzer(name, detector, recognizer, config, track=False, resume=resume, stop_index=stop_index)

    def chunk(reader: FrameReader, done: bool) -> VideoChunk:
        faces, analyzer.results = analyzer.results, []
        duration = reader.duration if reader.duration else (reader.last_time if done else None)
        return VideoChunk(
            faces=faces,
            until=analyzer.last,
            frames_analyzed=analyzer.frames_analyzed,
            frames_decoded=reader.frames_decoded,
            done=done,
            duration=duration,
            fps=reader.avg_fps,
            width=reader.width,
            height=reader.height,
            warnings=tuple(reader.warnings) if done else (),
        )

    with (
        FrameReader(path, name, fps, resume=resume, stream=stream) as reader,
        closing(prefetch(reader, depth=analyzer.chunk)) as frames,
        closing(analyzer),
    ):
        next_cut = (resume.time_s if resume is not None else 0.0) + commit_every_s
        for frame in frames:
            if stop_index is not None and frame.index >= stop_index:
                if analyzer.k > 1:
                    analyzer.push(frame)  # detected to interpolate towards; its faces are not kept
                break
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

    def add(
        self, frame: int, time_s: float, boxes: Sequence[tuple[float, float, float, float]], features: np.ndarray | None
    ) -> list[int]:
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
            total = self._sums.get(t.track)
            if t.boxes:
                out.append(profile_of(t, total / t.n_faces if total is not None else np.zeros(0)))
        return out

    def persons(self, config: PersonConfig | None = None) -> dict[int, int]:
        """Track id to person number (one person per track when ``config`` is None)."""
        if config is None:
            return {t.track: t.track for t in self.tracks()}
        return link_tracks(self.profiles(), config)


def video_json(analysis: VideoAnalysis) -> dict[str, Any]:
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
        "file": a.file,
        "kind": "video",
        "width": a.width,
        "height": a.height,
        "n_faces": len(a.faces),
        "error": None,
        "duration_s": None if a.duration is None else round(a.duration, 4),
        "fps": None if a.fps is None else round(a.fps, 4),
        "sample_fps": a.sample_fps,
        "frames_decoded": a.frames_decoded,
        "frames_sampled": a.frames_sampled,
        "frames_analyzed": a.frames_analyzed,
        "rotation": a.rotation,
        "warnings": list(a.warnings),
        "engagement_status": a.engagement_status,
        "engagement_note": a.engagement_note,
        "summary": a.summary.to_json(),
        "n_persons": len({a.person(t.track) for t in a.tracks}),
    }
    return {
        "file": file_entry,
        "faces": [{**f.to_json(), "person": a.person(f.track)} for f in a.faces],
        "tracks": [{**t.to_json(), "person": a.person(t.track)} for t in a.summary.tracks],
    }
