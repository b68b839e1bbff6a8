"""Result rows of AffectLab's inference, one frozen dataclass each.

Box convention (the only place it is defined): a box is ``(x1, y1, x2, y2)`` in pixels of the *upright* image, i.e.
after EXIF orientation (images) or rotation metadata (videos) has been applied; floats as the detector returns them,
with ``x1 < x2`` and ``y1 < y2``. A face crop is ``image[int(y1):int(y2), int(x1):int(x2)]`` after clipping the
integer box to the image (the reference truncates the same way but does not clip).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from models.engagement import EngagementResult

Box = tuple[float, float, float, float]


def iou(a: Box, b: Box) -> float:
    """Intersection over union of two ``(x1, y1, x2, y2)`` boxes (0 when they do not overlap)."""
    iw = min(a[2], b[2]) - max(a[0], b[0])
    ih = min(a[3], b[3]) - max(a[1], b[1])
    if iw <= 0 or ih <= 0:
        return 0.0
    inter = iw * ih
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return float(inter / union) if union > 0 else 0.0


@dataclass(frozen=True, eq=False)
class Face:
    """A detected face.

    Attributes:
        box: ``(x1, y1, x2, y2)`` in upright-image pixels (see the module docstring).
        det_score: Detector confidence in [0, 1].
        landmarks: Five facial landmarks ``(x, y)`` (eyes, nose, mouth corners), or None.
    """

    box: Box
    det_score: float
    landmarks: tuple[tuple[float, float], ...] | None = None

    @property
    def width(self) -> float:
        """Box width in pixels."""
        return self.box[2] - self.box[0]

    @property
    def height(self) -> float:
        """Box height in pixels."""
        return self.box[3] - self.box[1]


@dataclass(frozen=True, eq=False)
class EmotionPrediction:
    """One model's output for one face crop.

    Attributes:
        model: Registry name (or fine-tuned version name) of the model that made it.
        labels: Class names in output order.
        features: Backbone features, shape ``(feature_dim,)``, float32; empty when not known (a prediction read
            back from an analysis file, whose features are computed again from the crop).
        logits: Raw emotion logits, shape ``(len(labels),)``; empty for a prediction read back from an analysis
            file (the file keeps ``probs`` only).
        probs: Softmax of ``logits`` (never includes V/A).
        valence: Valence clipped to [-1, 1], or None when the model has no V/A outputs.
        arousal: Arousal clipped to [-1, 1], or None.
        weights_hash: Hash identifying the weights that produced the prediction ("" if unknown).
        engagement: Per-face engagement level in [0, 1] from a fine-tuned engagement head, else None (engagement
            over time comes from the attention model on tracks).
        reused: The prediction of an earlier face of the same video that this face follows and whose crop this
            one's barely differs from (``VideoConfig.classify_every``, models/classify_reuse.py), not made of this
            face's own crop.
    """

    model: str
    labels: tuple[str, ...]
    features: np.ndarray
    logits: np.ndarray
    probs: np.ndarray
    valence: float | None = None
    arousal: float | None = None
    weights_hash: str = ""
    engagement: float | None = None
    reused: bool = False

    @property
    def label(self) -> str:
        """The most probable class."""
        return self.labels[int(np.argmax(self.probs))]

    @property
    def confidence(self) -> float:
        """Probability of the most probable class."""
        return float(np.max(self.probs))

    def probs_dict(self) -> dict[str, float]:
        """Class name to probability, in output order."""
        return {name: float(p) for name, p in zip(self.labels, self.probs, strict=True)}


@dataclass(frozen=True, eq=False)
class FaceResult:
    """A face found in a file (or a video frame) with its emotion prediction.

    Attributes:
        file: The source file's name as given by the user (kept as data; never interpreted).
        index: Index of the face within the image or frame, in detector order (largest first).
        face: The detection.
        prediction: The emotion prediction for the face's crop.
        frame: Frame index for videos, None for images.
        time_s: Presentation time in seconds for videos, None for images.
        track: Track id for videos, None for images.
        crop: The RGB uint8 crop the prediction was made on, when kept.
    """

    file: str
    index: int
    face: Face
    prediction: EmotionPrediction
    frame: int | None = None
    time_s: float | None = None
    track: int | None = None
    crop: np.ndarray | None = field(default=None, repr=False)

    def to_json(self) -> dict[str, object]:
        """The JSON form used by ``python -m models analyze --json``."""
        p = self.prediction
        return {
            "file": self.file,
            "index": self.index,
            "frame": self.frame,
            "time_s": None if self.time_s is None else round(self.time_s, 4),
            "track": self.track,
            "box": [round(float(v), 2) for v in self.face.box],
            "det_score": round(float(self.face.det_score), 6),
            "model": p.model,
            "weights_hash": p.weights_hash,
            "label": p.label,
            "probs": {k: round(v, 6) for k, v in p.probs_dict().items()},
            "valence": None if p.valence is None else round(p.valence, 6),
            "arousal": None if p.arousal is None else round(p.arousal, 6),
            "reused": p.reused,
        }


@dataclass(frozen=True)
class TrackResult:
    """A video's face track as it is stored: its span, engagement and person.

    Attributes:
        track: Track id within the video (0, 1, ... in order of first appearance).
        n_faces: Faces in the track.
        start_s: First sighting, seconds.
        end_s: Last sighting, seconds.
        engagement: The track's engagement (mean score, label and windows), or None.
        person: The person number of the student the track belongs to across the recording (tracks joined by
            models/persons.py), or None when unknown.
    """

    track: int
    n_faces: int = 0
    start_s: float | None = None
    end_s: float | None = None
    engagement: EngagementResult | None = None
    person: int | None = None
