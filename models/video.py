"""Video analysis: batched detection and classification across sampled frames, tracks, engagement, persons.

Frames come from :mod:`models.decode` (streamed, upright, sampled at ``fps``); at most ``chunk_frames`` sampled
frames are held in memory at once, so memory does not grow with the video's length. Damaged data is skipped with a
warning (see :mod:`models.decode`); unreadable files raise :class:`BadInputError`. A video without faces is not an
error: the result has no faces.

Detection, classification and tracking of each chunk of frames: :class:`models.analyzer.FrameAnalyzer` (detection
every k-th sampled frame with boxes interpolated between, adaptive frame rate). Results and settings:
:mod:`models.video_types` (re-exported here).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import closing
from pathlib import Path
from typing import Any

import numpy as np

from models.analyzer import FrameAnalyzer, interpolate_faces
from models.decode import FrameReader, ResumePoint, prefetch
from models.engagement import EngagementModel
from models.faces import FaceDetector
from models.persons import PersonConfig, TrackProfile, link_tracks, profiles
from models.recognizer import EmotionRecognizer
from models.summary import summarize_video
from models.track_results import score_tracks
from models.tracking import Track, Tracker, TrackerConfig, TrackSpan
from models.types import FaceResult
from models.video_types import FaceRow, Progress, VideoAnalysis, VideoChunk, VideoConfig

__all__ = [
    "FaceReplay",
    "FaceRow",
    "Progress",
    "VideoAnalysis",
    "VideoChunk",
    "VideoConfig",
    "analyze_video",
    "analyze_video_chunks",
    "conclude_video",
    "interpolate_faces",
    "video_json",
]


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
    analyzer = FrameAnalyzer(name, detector, recognizer, config)
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


def _chunk(analyzer: FrameAnalyzer, reader: FrameReader, done: bool) -> VideoChunk:
    """The faces analysed since the last chunk (taken from ``analyzer``), with where the analysis stands."""
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
        frames_sampled=reader.frames_sampled,
        rotation=reader.rotation,
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
    analyzer = FrameAnalyzer(name, detector, recognizer, config, track=False, resume=resume, stop_index=stop_index)

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
                yield _chunk(analyzer, reader, done=False)
                next_cut = frame.time_s + commit_every_s
        analyzer.flush(final=True)
        analyzer.finish()
        if progress is not None:
            progress(reader.last_time if reader.duration is None else reader.duration, reader.duration)
        yield _chunk(analyzer, reader, done=True)


class FaceReplay:
    """Tracks stored faces again, frame by frame in time order, and gathers what joining tracks into persons needs.

    Feeding it every face of a recording (frames in order, each frame's faces in their stored order) gives the
    tracks :func:`analyze_video` gives, without holding the faces' features: each track keeps a running sum, and the
    tracker keeps no history (:class:`models.tracking.TrackSpan`), so memory does not grow with the recording but by
    one float per face.
    """

    def __init__(self, tracker: TrackerConfig | None = None) -> None:
        """Starts with no track."""
        self.tracker = Tracker(tracker, history=False)
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

    def tracks(self) -> list[TrackSpan]:
        """The tracks summed up, by id."""
        return self.tracker.spans()

    def profiles(self) -> list[TrackProfile]:
        """The profile of each track (as :func:`models.persons.profile_of` makes it from the faces)."""
        out = []
        for t in self.tracks():
            total = self._sums.get(t.track)
            if t.n_faces:
                (a1, b1, a2, b2), (c1, d1, c2, d2) = t.first_box, t.last_box
                out.append(
                    TrackProfile(
                        track=t.track,
                        start_s=t.start_s,
                        end_s=t.end_s,
                        n_faces=t.n_faces,
                        feature=total / t.n_faces if total is not None else np.zeros(0),
                        first_centre=(float(a1 + a2) / 2, float(b1 + b2) / 2),
                        last_centre=(float(c1 + c2) / 2, float(d1 + d2) / 2),
                        size=float(np.mean(t.sides)),
                    )
                )
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
