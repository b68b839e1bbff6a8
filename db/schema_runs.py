"""The tables of analysis runs: claims, time ranges of a recording and its detection settings."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import (
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Integer,
    String,
    UniqueConstraint,
)
from sqlalchemy.orm import Mapped, mapped_column

from db.schema_core import Base, utcnow


class AnalysisClaim(Base):
    """Which run is analysing a file into a study now: one analysis per media item at a time (:mod:`db.claims`).

    Keyed by the file's bytes (study and sha256), not by the media row, so that a still image, whose media row is
    written only with its faces, is claimed like a video. The row lives while the run works and is deleted in the
    transaction that completes the media item (or when the run gives up); a row whose owner stopped beating (a killed
    process) may be taken over by the next run.
    """

    __tablename__ = "analysis_claims"
    __table_args__ = (UniqueConstraint("study_id", "sha256"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    study_id: Mapped[int] = mapped_column(ForeignKey("studies.id", ondelete="CASCADE"), index=True)
    sha256: Mapped[str] = mapped_column(String(64))
    owner: Mapped[str] = mapped_column(String(200))
    """The run holding the claim: ``host:pid:token`` (a token per run, so two runs of one process differ)."""
    host: Mapped[str] = mapped_column(String(200))
    pid: Mapped[int] = mapped_column(Integer)
    claimed_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    heartbeat_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    """Last sign of life of the owner; older than :data:`db.claims.STALE_S`, the claim may be taken over."""


class AnalysisRange(Base):
    """One time range of a partial video analysed by its own worker process (:mod:`db.ranges`): its resume point.

    A long recording is cut into ranges (:func:`models.ranges.plan_ranges`) when its analysis starts; the plan is
    stored with it, so a stopped run resumes every range where it stopped, whatever the number of cores then.
    """

    __tablename__ = "analysis_ranges"
    __table_args__ = (UniqueConstraint("media_id", "number"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    media_id: Mapped[int] = mapped_column(ForeignKey("media.id", ondelete="CASCADE"), index=True)
    number: Mapped[int] = mapped_column(Integer)
    start_s: Mapped[float | None] = mapped_column(Float)
    """Time of the frame just before the range (None: the range starts the video)."""
    start_frame: Mapped[int | None] = mapped_column(Integer)
    """That frame's number among the decoded frames."""
    start_sample: Mapped[int | None] = mapped_column(Integer)
    """Its number among the sampled frames."""
    stop_frame: Mapped[int | None] = mapped_column(Integer)
    """The first frame of the next range (None: the last range)."""
    until_s: Mapped[float | None] = mapped_column(Float)
    """Time of the range's last stored frame (None: nothing stored yet)."""
    until_frame: Mapped[int | None] = mapped_column(Integer)
    until_sample: Mapped[int | None] = mapped_column(Integer)
    done: Mapped[bool] = mapped_column(Boolean, default=False, server_default="0")


class MediaDetection(Base):
    """The face detection settings a recording was analysed with (:mod:`db.detection`): one row per media item."""

    __tablename__ = "media_detection"
    media_id: Mapped[int] = mapped_column(ForeignKey("media.id", ondelete="CASCADE"), primary_key=True)
    preset: Mapped[str] = mapped_column(String(16))
    """``webcam`` or ``gallery`` (what ``auto`` chose), or ``custom``."""
    requested: Mapped[str] = mapped_column(String(16))
    """What the run asked for: ``auto``, ``webcam``, ``gallery`` or ``custom``."""
    min_face_size: Mapped[int] = mapped_column(Integer)
    detect_max_side: Mapped[int | None] = mapped_column(Integer)
    probe_faces: Mapped[int | None] = mapped_column(Integer)
    """Most faces in one probed frame of the first minute (``auto`` only)."""
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
