"""Image analysis: decode, detect every face, classify all crops of the image in one batch."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from models.faces import FaceDetector, crop_face
from models.images import ImageSource, load_image
from models.recognizer import EmotionRecognizer
from models.types import FaceResult


@dataclass(frozen=True, eq=False)
class ImageAnalysis:
    """The faces of one image.

    Attributes:
        file: The file's name as given by the user.
        width: Upright image width in pixels.
        height: Upright image height in pixels.
        faces: One result per face, largest first.
    """

    file: str
    width: int
    height: int
    faces: list[FaceResult] = field(default_factory=list)


def analyze_array(
    image: np.ndarray, name: str, detector: FaceDetector, recognizer: EmotionRecognizer, keep_crops: bool = False
) -> ImageAnalysis:
    """Detects and classifies every face of a decoded image.

    Args:
        image: Upright RGB uint8 array.
        name: The file's name (kept as data).
        detector: The face detector.
        recognizer: The emotion model.
        keep_crops: Keep each face's crop in its result (for storage and display).

    Returns:
        The analysis; ``faces`` is empty when there is no face.
    """
    faces = detector.detect(image)
    kept, crops = [], []
    for face in faces:
        crop = crop_face(image, face.box)
        if crop.size:
            kept.append(face)
            crops.append(crop)
    preds = recognizer.predict(crops)
    results = [
        FaceResult(file=name, index=i, face=f, prediction=p, crop=c if keep_crops else None)
        for i, (f, p, c) in enumerate(zip(kept, preds, crops, strict=True))
    ]
    return ImageAnalysis(file=name, width=int(image.shape[1]), height=int(image.shape[0]), faces=results)


def analyze_image(
    src: ImageSource, name: str, detector: FaceDetector, recognizer: EmotionRecognizer, keep_crops: bool = False
) -> ImageAnalysis:
    """Decodes an image file and analyses it.

    Raises:
        BadInputError: The file cannot be decoded (the message names it and says why).
    """
    return analyze_array(load_image(src, name), name, detector, recognizer, keep_crops)
