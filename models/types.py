"""Result rows of AffectLab's inference, one frozen dataclass each.

Box convention (the only place it is defined): a box is ``(x1, y1, x2, y2)`` in pixels of the *upright* image, i.e.
after EXIF orientation (images) or rotation metadata (videos) has been applied; floats as the detector returns them,
with ``x1 < x2`` and ``y1 < y2``. A face crop is ``image[int(y1):int(y2), int(x1):int(x2)]`` after clipping the
integer box to the image (the reference truncates the same way but does not clip).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

Box = tuple[float, float, float, float]


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
        features: Backbone features, shape ``(feature_dim,)``, float32.
        logits: Raw emotion logits, shape ``(len(labels),)``.
        probs: Softmax of ``logits`` (never includes V/A).
        valence: Valence clipped to [-1, 1], or None when the model has no V/A outputs.
        arousal: Arousal clipped to [-1, 1], or None.
        weights_hash: Hash identifying the weights that produced the prediction ("" if unknown).
        engagement: Per-face engagement level in [0, 1] from a fine-tuned engagement head, else None (engagement
            over time comes from the attention model on tracks).
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
        }
