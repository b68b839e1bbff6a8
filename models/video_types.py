"""The results and settings of a video analysis: :class:`VideoConfig`, :class:`VideoChunk`, :class:`VideoAnalysis`.

Split from :mod:`models.video` (which re-exports them).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from core.settings import DEFAULT_GALLERY_EVERY, DEFAULT_GALLERY_FACES, DEFAULT_REUSE_DIFF, DEFAULT_REUSE_SHIFT
from models.adaptive import AdaptiveConfig
from models.decode import ResumePoint
from models.engagement import EngagementResult, EngagementStatus
from models.persons import PersonConfig
from models.summary import VideoSummary
from models.tracking import Track, TrackerConfig
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
        frames_sampled: Frames the sampling selected so far (counted from the video's start).
        rotation: Display rotation applied, degrees counter-clockwise.
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
    frames_sampled: int = 0
    rotation: int = 0


@dataclass(frozen=True)
class VideoConfig:
    """Video analysis settings.

    Attributes:
        detect_every: Detect faces on every k-th sampled frame and interpolate boxes between (1: every frame).
            Frames between two detected frames whose faces disagree (another count, or a pair below
            ``refine_iou``: a face came, left or moved fast) are detected too instead of interpolated.
        refine_iou: With ``detect_every > 1``, the IoU every face must keep from one detected frame to the next for
            the frames between to be interpolated.
        gallery_every: With ``detect_every > 1``, the stride of a gallery view (students sitting still in fixed
            tiles): detection runs on every ``gallery_every``-th sampled frame first, and the ``detect_every``-th
            frames between two of them are detected too unless both hold ``gallery_faces`` faces or more and their
            faces agree (at ``refine_iou``); then the frames between are interpolated. A webcam (one face) is so
            detected on every ``detect_every``-th frame, as without it. Ignored (the stride is ``detect_every``)
            unless it is a larger multiple of ``detect_every``; its default is chosen by the agreement rule on a
            gallery recording (``DEFAULT_GALLERY_EVERY`` in core/settings.py, bench/bench_gallery_speed.py).
        gallery_faces: The fewest faces in a frame for the gallery stride.
        chunk_frames: Sampled frames held in memory and processed together.
        detect_batch: Frames per ``detect_batch`` call.
        classify_every: Classify every face of every ``classify_every``-th sampled frame; in the frames between, a
            face following a face of the frame before whose crop barely changed since its prediction was made
            (grey thumbnails within ``reuse_diff``) reuses that prediction (models/classify_reuse.py). 1: every
            face is classified (the exact path). The analysis session's default is ``DEFAULT_CLASSIFY_EVERY``
            (core/settings.py), chosen by the agreement rule.
        reuse_diff: The largest mean absolute difference (grey levels, 0-255) of the 16 x 16 grey thumbnails of the
            pixels in the box classified, then and now, for a prediction to be reused.
        reuse_shift: The largest move of a box edge from the box classified, as a share of the face's side, for a
            prediction to be reused.
        classify_batch: Crops per recognizer call (bounds the activations' memory: batch 32 of a 224 px model
            peaks near 1.8 GB resident on CPU, batch 8 well under 1.5 GB).
        tracker: Tracking settings.
        adaptive: Adaptive frame rate settings, or None for full sampling.
        keep_crops: Keep each face's crop in its result.
        persons: How tracks are joined into persons (models/persons.py), or None for one person per track.
    """

    detect_every: int = 1
    refine_iou: float = 0.7
    gallery_every: int = DEFAULT_GALLERY_EVERY
    gallery_faces: int = DEFAULT_GALLERY_FACES
    chunk_frames: int = 16
    detect_batch: int = 8
    classify_every: int = 1
    reuse_diff: float = DEFAULT_REUSE_DIFF
    reuse_shift: float = DEFAULT_REUSE_SHIFT
    classify_batch: int = 8
    tracker: TrackerConfig = field(default_factory=TrackerConfig)
    adaptive: AdaptiveConfig | None = None
    keep_crops: bool = False
    persons: PersonConfig | None = field(default_factory=PersonConfig)

    @property
    def detect_period(self) -> int:
        """The stride of the first detections: ``gallery_every`` where it applies, else ``detect_every``.

        Every stretch of analysis (a chunk, a range of models/ranges.py, a resume point) starts on a multiple of it.
        """
        k = max(1, self.detect_every)
        g = self.gallery_every
        return g if k > 1 and g > k and g % k == 0 else k

    @property
    def range_period(self) -> int:
        """The stride a range starts on: a first detection where every face is classified too.

        The least common multiple of :attr:`detect_period` and ``classify_every``, so that a recording cut into
        ranges gets the faces and predictions of one run over it.
        """
        return math.lcm(self.detect_period, max(1, self.classify_every))


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
