"""The rows ingest stores, built from typed results (:class:`FaceIn`, ``faces`` and ``predictions`` rows).

:class:`FaceIn` is a :class:`models.types.FaceResult` flattened for the tables; :class:`MediaInfo` what is known
about a media file besides its bytes. Shared by :mod:`db.ingest` (whole files) and :mod:`db.resumable` (videos
stored stretch by stretch); the names are importable from :mod:`db.ingest` too.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from db.codecs import encode_png
from db.schema import Face, Prediction
from models.decode import VIDEO_SUFFIXES
from models.types import Box, FaceResult, TrackResult


@dataclass(frozen=True)
class MediaInfo:
    """What is known about a media file besides its bytes."""

    kind: str
    width: int | None = None
    height: int | None = None
    duration_s: float | None = None
    fps: float | None = None


@dataclass(frozen=True, eq=False)
class FaceIn:
    """A face to store with one prediction: a :class:`models.types.FaceResult` flattened for the tables."""

    index: int
    frame: int | None
    time_s: float | None
    track: int | None
    box: Box
    det_score: float
    model: str
    weights_hash: str
    label: str
    probs: dict[str, float]
    valence: float | None = None
    arousal: float | None = None
    model_version: str | None = None
    features: np.ndarray | None = None
    feature_model: str | None = None
    crop_png: bytes | None = None
    reused: bool = False


def version_of(model: str | None) -> str | None:
    """The fine-tuned version a model name denotes (``base@...``, see ``models.versions``), else None."""
    return model if model and "@" in model else None


def guess_kind(filename: str) -> str:
    """``video`` for video container suffixes (``models.decode.VIDEO_SUFFIXES``), else ``image``."""
    return "video" if Path(filename).suffix.lower() in VIDEO_SUFFIXES else "image"


def face_in(result: FaceResult, *, store_crops: bool = True, model_version: str | None = None) -> FaceIn:
    """The face to store of a :class:`models.types.FaceResult`, its crop PNG-encoded (dropped unless ``store_crops``).

    Called before the write transaction: encoding a crop is the costly part of storing a face.
    """
    p = result.prediction
    x1, y1, x2, y2 = result.face.box
    features = p.features if p.features is not None and np.size(p.features) > 0 else None
    return FaceIn(
        index=int(result.index),
        frame=result.frame,
        time_s=result.time_s,
        track=result.track,
        box=(float(x1), float(y1), float(x2), float(y2)),
        det_score=float(result.face.det_score),
        model=p.model,
        weights_hash=p.weights_hash,
        label=p.label if np.size(p.probs) else "",
        probs=p.probs_dict(),
        valence=p.valence,
        arousal=p.arousal,
        model_version=model_version or version_of(p.model),
        features=features,
        feature_model=p.model,
        crop_png=encode_png(result.crop) if store_crops and result.crop is not None and result.crop.size else None,
        reused=p.reused,
    )


def face_row(f: FaceIn, media_id: int, track_id: int | None = None) -> Face:
    """A new ``faces`` row of a face to store (its crop and features are set by the caller, where missing)."""
    x1, y1, x2, y2 = (float(v) for v in f.box)
    return Face(
        media_id=media_id,
        track_id=track_id,
        face_index=f.index,
        frame=f.frame,
        time_s=f.time_s,
        x1=x1,
        y1=y1,
        x2=x2,
        y2=y2,
        det_score=float(f.det_score),
    )


def prediction_row(f: FaceIn, face_id: int, engagement: float | None = None) -> Prediction:
    """A new ``predictions`` row: the model's output for a stored face (append-only, never replaced)."""
    probs = {str(k): float(v) for k, v in f.probs.items()}
    return Prediction(
        face_id=face_id,
        model=f.model,
        weights_hash=f.weights_hash,
        model_version=f.model_version,
        probs=probs,
        label=f.label,
        confidence=max(probs.values()) if probs else 0.0,
        valence=_opt_float(f.valence),
        arousal=_opt_float(f.arousal),
        engagement=engagement,
        reused=f.reused,
    )


def _engagement_at(track: TrackResult | None, time_s: float | None) -> float | None:
    if track is None or track.engagement is None:
        return None
    if time_s is not None:
        for w in track.engagement.windows:
            if w.start_s <= time_s <= w.end_s:
                return float(w.p_engaged)
    return float(track.engagement.score)


def _windows(track: TrackResult) -> list[tuple[float, float, float]]:
    eng = track.engagement
    return [] if eng is None else [(float(w.start_s), float(w.end_s), float(w.p_engaged)) for w in eng.windows]


def _opt_float(v: float | None) -> float | None:
    return None if v is None else float(v)
