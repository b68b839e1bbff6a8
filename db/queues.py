"""Why a face is in which review queue, and which faces need a second vote: pure rules over one face's values.

:mod:`db.review` builds the queues with these; :mod:`db.status` keeps each face's place in them up to date.
"""

from __future__ import annotations

import hashlib
from typing import Literal

from db.rows import FaceLabel

ReviewOrder = Literal["uncertainty", "disagreement", "valence"]
REVIEW_ORDERS: tuple[ReviewOrder, ...] = ("uncertainty", "disagreement", "valence")

POSITIVE_CLASSES = frozenset({"Happiness"})
NEGATIVE_CLASSES = frozenset({"Anger", "Contempt", "Disgust", "Fear", "Sadness"})
VALENCE_CONTRADICTION = 0.2
"""A positive class with valence below -0.2, or a negative one above 0.2, is proposed for review."""


def route_value(study_id: int, face_id: int) -> float:
    """A number in [0, 1) fixed per face: the face needs a second vote when it is below the study's double share."""
    digest = hashlib.sha256(f"affectlab-route:{study_id}:{face_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def queue_reason(face: FaceLabel, by: ReviewOrder, independent: bool) -> tuple[str, float] | None:
    """Why ``face`` belongs in queue ``by`` and how urgently, or None when it does not."""
    if by == "uncertainty":
        if face.model_confidence is None:
            return ("no model prediction", 0.0) if not independent else ("not labelled yet", 0.0)
        text = "not labelled yet" if independent else f"model confidence {face.model_confidence:.2f}"
        return text, 1.0 - face.model_confidence
    if by == "disagreement":
        if face.label_source != "human" or face.model_label is None or face.model_label == face.label:
            return None
        text = (
            "annotators and model disagree"
            if independent
            else (f"annotators say {face.label}, model says {face.model_label}")
        )
        return text, face.model_confidence or 0.0
    if face.label is None or face.valence is None:
        return None
    if face.label in POSITIVE_CLASSES and face.valence < -VALENCE_CONTRADICTION:
        text = f"{face.label} with negative valence {face.valence:.2f}"
    elif face.label in NEGATIVE_CLASSES and face.valence > VALENCE_CONTRADICTION:
        text = f"{face.label} with positive valence {face.valence:.2f}"
    else:
        return None
    return ("valence contradicts the class" if independent else text), abs(face.valence)
