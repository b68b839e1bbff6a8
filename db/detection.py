"""The face detection settings each recording was analysed with: stored once per media item, read by the codebook.

A run records the settings when it first stores a media item (:func:`record`); a resumed run of the same bytes gets
the stored ones back, so one recording is never analysed half with one minimum face size and half with another.
:func:`detection_settings` is what a codebook or table reads (None: analysed before settings were stored, with the
defaults of then: minimum face size 40, no downscaling).
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy.orm import Session

from db.schema import MediaDetection

PRESETS = ("webcam", "gallery")
REQUESTS = ("auto", "webcam", "gallery", "custom")


@dataclass(frozen=True)
class DetectionSettings:
    """How faces were looked for in a recording.

    Attributes:
        preset: ``webcam`` or ``gallery`` (the one ``auto`` chose), or ``custom`` (a minimum face size given alone).
        requested: What the run asked for (``auto``, ``webcam``, ``gallery``, ``custom``).
        min_face_size: Smallest face side in pixels the detector looked for.
        detect_max_side: Frames with a longer side were downscaled for detection (None: full resolution).
        probe_faces: Most faces in one probed frame of the first minute (``auto`` only).
    """

    preset: str
    requested: str
    min_face_size: int
    detect_max_side: int | None = None
    probe_faces: int | None = None

    def __post_init__(self) -> None:
        if self.preset not in (*PRESETS, "custom") or self.requested not in REQUESTS:
            raise ValueError(f"unknown detection preset {self.preset!r} (asked: {self.requested!r})")
        if self.min_face_size < 1:
            raise ValueError(f"minimum face size {self.min_face_size} px: give a positive number of pixels")


def detection_settings(session: Session, media_id: int) -> DetectionSettings | None:
    """The settings ``media_id`` was analysed with; None when none were stored (analysed before they were)."""
    row = session.get(MediaDetection, media_id)
    if row is None:
        return None
    return DetectionSettings(row.preset, row.requested, row.min_face_size, row.detect_max_side, row.probe_faces)


def record(session: Session, media_id: int, settings: DetectionSettings) -> DetectionSettings:
    """Stores the settings of ``media_id`` unless some are stored already; returns the stored ones (first wins)."""
    got = detection_settings(session, media_id)
    if got is not None:
        return got
    session.add(
        MediaDetection(
            media_id=media_id,
            preset=settings.preset,
            requested=settings.requested,
            min_face_size=settings.min_face_size,
            detect_max_side=settings.detect_max_side,
            probe_faces=settings.probe_faces,
        )
    )
    session.flush()
    return settings
