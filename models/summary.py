"""Per-track and per-video summaries of a video analysis, and the AFEW-style feature descriptor.

- Dominant emotion: the class with the highest *mean probability* over the faces (not a vote over labels).
- Valence / arousal: means over the faces (None for models without V/A).
- Face share: the share of analysed frames in which the track (or, per video, any face) was seen.
- Descriptor: ``[mean, std, min, max]`` of the backbone features over the faces, concatenated (4 x D; 5120-d for
  enet_b0), the video descriptor of the reference's AFEW notebook (there L2-normalised before a LinearSVC; it is kept
  raw here for export, normalise it where it is used).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from models.engagement import EngagementLabel, EngagementResult, engagement_label
from models.tracking import Track
from models.types import FaceResult


def afew_descriptor(features: np.ndarray) -> np.ndarray:
    """``[mean, std (ddof 0), min, max]`` over rows of (N, D) features; shape (4 * D,), float32.

    Raises:
        ValueError: No rows.
    """
    x = np.asarray(features, dtype=np.float32)
    if x.ndim != 2 or len(x) == 0:
        raise ValueError("afew_descriptor needs at least one feature row")
    return np.concatenate([x.mean(0), x.std(0), x.min(0), x.max(0)]).astype(np.float32)


@dataclass(frozen=True, eq=False)
class EmotionSummary:
    """Emotions over a set of faces.

    Attributes:
        n_faces: Faces summarised.
        dominant: Class with the highest mean probability.
        mean_probs: Class name to mean probability.
        valence: Mean valence, or None.
        arousal: Mean arousal, or None.
        descriptor: AFEW-style descriptor of the faces' features (see :func:`afew_descriptor`).
    """

    n_faces: int
    dominant: str
    mean_probs: dict[str, float]
    valence: float | None
    arousal: float | None
    descriptor: np.ndarray

    def to_json(self) -> dict[str, object]:
        """JSON form (without the descriptor, which is for export)."""
        return {
            "n_faces": self.n_faces,
            "dominant": self.dominant,
            "mean_probs": {k: round(v, 6) for k, v in self.mean_probs.items()},
            "valence": None if self.valence is None else round(self.valence, 6),
            "arousal": None if self.arousal is None else round(self.arousal, 6),
        }


def summarize_faces(faces: Sequence[FaceResult]) -> EmotionSummary | None:
    """Summary of a set of faces (all from one model); None when there is none."""
    if not faces:
        return None
    labels = faces[0].prediction.labels
    probs = np.stack([f.prediction.probs for f in faces]).astype(np.float64)
    mean = probs.mean(0)
    vals = [f.prediction.valence for f in faces if f.prediction.valence is not None]
    aros = [f.prediction.arousal for f in faces if f.prediction.arousal is not None]
    return EmotionSummary(
        n_faces=len(faces),
        dominant=labels[int(np.argmax(mean))],
        mean_probs={k: float(v) for k, v in zip(labels, mean, strict=True)},
        valence=float(np.mean(vals)) if vals else None,
        arousal=float(np.mean(aros)) if aros else None,
        descriptor=afew_descriptor(np.stack([f.prediction.features for f in faces])),
    )


@dataclass(frozen=True, eq=False)
class TrackSummary:
    """One track's summary.

    Attributes:
        track: Track id.
        n_faces: Faces in the track.
        start_s: First sighting, seconds.
        end_s: Last sighting, seconds.
        face_share: Share of the analysed frames in which the track's face was seen.
        emotions: Its emotions.
        engagement: Its engagement, or None (no 1280-d features, no engagement weights, or too few faces).
    """

    track: int
    n_faces: int
    start_s: float
    end_s: float
    face_share: float
    emotions: EmotionSummary
    engagement: EngagementResult | None

    def to_json(self) -> dict[str, object]:
        """The ``tracks`` item of the analysis document."""
        return {
            "track": self.track,
            "n_faces": self.n_faces,
            "start_s": round(self.start_s, 4),
            "end_s": round(self.end_s, 4),
            "face_share": round(self.face_share, 6),
            **{k: v for k, v in self.emotions.to_json().items() if k != "n_faces"},
            "engagement": None if self.engagement is None else self.engagement.to_json(),
        }


@dataclass(frozen=True, eq=False)
class VideoSummary:
    """A whole video's summary.

    Attributes:
        frames_analyzed: Frames analysed.
        frames_with_face: Analysed frames with at least one face.
        face_share: ``frames_with_face / frames_analyzed``.
        n_tracks: Number of tracks (people, as far as tracking can tell).
        emotions: Emotions over every face, or None without faces.
        engagement_score: Mean of the tracks' engagement scores weighted by their number of faces, or None.
        engagement_label: ``Engaged`` / ``Distracted`` from that score, or None.
        tracks: Per-track summaries, by id.
    """

    frames_analyzed: int
    frames_with_face: int
    face_share: float
    n_tracks: int
    emotions: EmotionSummary | None
    engagement_score: float | None
    engagement_label: EngagementLabel | None
    tracks: tuple[TrackSummary, ...]

    def to_json(self) -> dict[str, object]:
        """The per-file ``summary`` of the analysis document."""
        return {
            "frames_analyzed": self.frames_analyzed,
            "frames_with_face": self.frames_with_face,
            "face_share": round(self.face_share, 6),
            "n_tracks": self.n_tracks,
            "emotions": None if self.emotions is None else self.emotions.to_json(),
            "engagement": None
            if self.engagement_score is None
            else {"score": round(self.engagement_score, 6), "label": self.engagement_label},
        }


def summarize_video(
    faces: Sequence[FaceResult],
    tracks: Sequence[Track],
    frames_analyzed: int,
    engagement: Mapping[int, EngagementResult | None] | None = None,
    threshold: float = 0.5,
) -> VideoSummary:
    """Summaries per track and per video.

    Args:
        faces: Every face of the video, with ``track`` set.
        tracks: The tracks.
        frames_analyzed: Frames analysed (the denominator of the face shares).
        engagement: Track id to engagement result.
        threshold: Video-level engagement label threshold on the weighted mean score.
    """
    engagement = engagement or {}
    by_track: dict[int, list[FaceResult]] = {}
    for f in faces:
        if f.track is not None:
            by_track.setdefault(f.track, []).append(f)
    denom = max(frames_analyzed, 1)
    summaries = []
    for t in tracks:
        em = summarize_faces(by_track.get(t.track, []))
        if em is None:
            continue
        summaries.append(
            TrackSummary(
                track=t.track,
                n_faces=t.n_faces,
                start_s=t.start_s,
                end_s=t.end_s,
                face_share=len(set(t.frames)) / denom,
                emotions=em,
                engagement=engagement.get(t.track),
            )
        )
    scored = [(s.engagement.score, s.n_faces) for s in summaries if s.engagement is not None]
    score = float(np.average([s for s, _ in scored], weights=[n for _, n in scored])) if scored else None
    frames_with_face = len({f.frame for f in faces})
    return VideoSummary(
        frames_analyzed=frames_analyzed,
        frames_with_face=frames_with_face,
        face_share=frames_with_face / denom,
        n_tracks=len(summaries),
        emotions=summarize_faces(faces),
        engagement_score=score,
        engagement_label=None if score is None else engagement_label(score, threshold),
        tracks=tuple(summaries),
    )
