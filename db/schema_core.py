"""The label store's tables, as SQLAlchemy 2.0 typed ORM classes.

Every foreign key that points at something derived from a media item cascades on delete, so deleting a media row
(``db.service_upkeep.Upkeep.delete_media``) removes its faces, crops, features, predictions, tracks, engagement
windows and annotations in the database itself, on SQLite (``PRAGMA foreign_keys=ON``, see :mod:`db.engine`) and
PostgreSQL alike.

Annotations and predictions are append-only: the initial migration adds triggers that refuse ``UPDATE`` on them,
and migration ``0003`` triggers that refuse a direct ``DELETE`` unless the face or track the row belongs to is
already gone (the cascade of a privacy deletion of a media item or track). A correction is a new annotation row,
an undo is another row pointing at the row it reverts (``reverts_id``), and a model run never replaces another
model's prediction.
"""

from __future__ import annotations

from datetime import UTC, date, datetime
from typing import Any, Literal

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    CheckConstraint,
    Date,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

MediaKind = Literal["image", "video"]
AnalysisStatus = Literal["complete", "partial"]
"""``partial`` while a long video is stored chunk by chunk (:mod:`db.resumable`), then ``complete``."""
AnnotationKind = Literal["set", "undo"]
"""``set``: a correction; ``undo``: reverts the correction named by ``reverts_id``."""
"""EngageWild's four engagement levels, the only engagement values a correction may hold, stored exactly as here."""


def utcnow() -> datetime:
    """The current time, timezone-aware UTC."""
    return datetime.now(UTC)


class Base(DeclarativeBase):
    """Declarative base with the constraint naming convention that the migrations rely on."""

    metadata = MetaData(naming_convention=NAMING_CONVENTION)


class Study(Base):
    """A study: one deployment serves several, each with its own media and labels, and its labelling rules."""

    __tablename__ = "studies"
    __table_args__ = (CheckConstraint("double_share >= 0 AND double_share <= 1", name="double_share"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(200), unique=True)
    independent: Mapped[bool] = mapped_column(Boolean, default=False, server_default="0")
    """Independent labelling: an annotator never sees other annotators' labels (see :mod:`db.review`)."""
    hide_model: Mapped[bool] = mapped_column(Boolean, default=False, server_default="0")
    """In independent labelling, annotators do not see the model's prediction either."""
    double_share: Mapped[float] = mapped_column(Float, default=0.0, server_default="0")
    """Share of faces (0 to 1) routed to a second annotator for agreement."""
    blur_faces: Mapped[bool] = mapped_column(Boolean, default=False, server_default="0")
    """Privacy for minors: faces are blurred wherever the app shows them to anyone but the study's owners."""
    keep_video_crops: Mapped[bool] = mapped_column(Boolean, default=False, server_default="0")
    """Store every video face's crop even when the recording is kept (by default such crops are re-cut from it)."""
    persons_by_annotators: Mapped[bool] = mapped_column(Boolean, default=False, server_default="0")
    """Annotators may rename, merge and split persons and assign them (by default owners only, :mod:`db.roster`)."""
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class Media(Base):
    """An uploaded image or video; the same bytes appear once per study (``sha256``)."""

    __tablename__ = "media"
    __table_args__ = (
        UniqueConstraint("study_id", "sha256"),
        CheckConstraint("kind IN ('image', 'video')", name="kind"),
        CheckConstraint("size_bytes >= 0", name="size_bytes"),
        CheckConstraint("analysis_status IN ('complete', 'partial')", name="analysis_status"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    study_id: Mapped[int] = mapped_column(ForeignKey("studies.id", ondelete="CASCADE"), index=True)
    sha256: Mapped[str] = mapped_column(String(64))
    filename: Mapped[str] = mapped_column(Text)
    """The original file name as the user gave it; data only, never used as a path."""
    kind: Mapped[MediaKind] = mapped_column(String(10))
    size_bytes: Mapped[int] = mapped_column(BigInteger)
    width: Mapped[int | None] = mapped_column(Integer)
    height: Mapped[int | None] = mapped_column(Integer)
    duration_s: Mapped[float | None] = mapped_column(Float)
    fps: Mapped[float | None] = mapped_column(Float)
    uploaded_by: Mapped[str | None] = mapped_column(String(200))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    analysis_status: Mapped[AnalysisStatus] = mapped_column(String(10), default="complete", server_default="complete")
    """``complete``, or ``partial`` while a long video is stored chunk by chunk (a stopped run resumes from it)."""
    analysed_until_s: Mapped[float | None] = mapped_column(Float)
    """Time of the last analysed frame of a partial video (its faces are stored)."""
    analysed_until_frame: Mapped[int | None] = mapped_column(Integer)
    """Index of that frame among the decoded frames."""
    analysed_samples: Mapped[int | None] = mapped_column(Integer)
    """Sampled frames analysed so far (the next sampled frame's number)."""
    recut_crops: Mapped[bool] = mapped_column(Boolean, default=False, server_default="0")
    """The crops of this video's faces that have none stored are re-cut from its kept file (:mod:`db.crops`)."""
    course: Mapped[str | None] = mapped_column(String(200))
    """The course a recording belongs to (study tables' ``course`` column, :mod:`db.recording_info`)."""
    recording_name: Mapped[str | None] = mapped_column(String(200))
    """The recording's name in the study tables (a lecture's title); the file name when empty."""
    recorded_on: Mapped[date | None] = mapped_column(Date)
    """The day the recording was made (study tables' ``date`` column)."""
    features_file: Mapped[str | None] = mapped_column(String(200), deferred=True)
    """``count:size:sha256`` of the finished video's feature file, None while its features are in rows
    (:mod:`db.feature_store`)."""


class Track(Base):
    """A person track of a video, with its engagement result when one was computed."""

    __tablename__ = "tracks"
    __table_args__ = (UniqueConstraint("media_id", "track_index"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    media_id: Mapped[int] = mapped_column(ForeignKey("media.id", ondelete="CASCADE"), index=True)
    track_index: Mapped[int] = mapped_column(Integer)
    """The track number of the analysis (``track`` in the JSON), unique within the media item."""
    n_faces: Mapped[int] = mapped_column(Integer, default=0)
    start_s: Mapped[float | None] = mapped_column(Float)
    end_s: Mapped[float | None] = mapped_column(Float)
    engagement_score: Mapped[float | None] = mapped_column(Float)
    engagement_label: Mapped[str | None] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class EngagementWindow(Base):
    """One window of a track's engagement estimate."""

    __tablename__ = "engagement_windows"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    track_id: Mapped[int] = mapped_column(ForeignKey("tracks.id", ondelete="CASCADE"), index=True)
    start_s: Mapped[float] = mapped_column(Float)
    end_s: Mapped[float] = mapped_column(Float)
    p_engaged: Mapped[float] = mapped_column(Float)


class Face(Base):
    """A detected face: where it is, its crop (or none) and its backbone features.

    The crop and the features are deferred columns: listing faces does not load them. A video face whose media item
    has ``recut_crops`` stores no crop: it is re-cut from the kept recording when shown or exported (:mod:`db.crops`).
    """

    __tablename__ = "faces"
    __table_args__ = (Index("ix_faces_media_id_frame", "media_id", "frame"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    media_id: Mapped[int] = mapped_column(ForeignKey("media.id", ondelete="CASCADE"))
    track_id: Mapped[int | None] = mapped_column(ForeignKey("tracks.id", ondelete="CASCADE"), index=True)
    face_index: Mapped[int] = mapped_column(Integer, default=0)
    frame: Mapped[int | None] = mapped_column(Integer)
    time_s: Mapped[float | None] = mapped_column(Float)
    x1: Mapped[float] = mapped_column(Float)
    y1: Mapped[float] = mapped_column(Float)
    x2: Mapped[float] = mapped_column(Float)
    y2: Mapped[float] = mapped_column(Float)
    det_score: Mapped[float] = mapped_column(Float)
    crop_png: Mapped[bytes | None] = mapped_column(LargeBinary, deferred=True)
    features: Mapped[bytes | None] = mapped_column(LargeBinary, deferred=True)
    """Compact (``feature_dim + 8`` bytes) or float32 (``4 * feature_dim``) features, see :mod:`db.codecs`; ``b''``
    for a video face whose features are pending or in its video's file (:mod:`db.feature_store`)."""
    feature_dim: Mapped[int | None] = mapped_column(Integer)
    feature_model: Mapped[str | None] = mapped_column(String(200))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)

    @property
    def box(self) -> tuple[float, float, float, float]:
        """``(x1, y1, x2, y2)`` in upright-image pixels (see :mod:`models.types`)."""
        return (self.x1, self.y1, self.x2, self.y2)


class PendingFeatures(Base):
    """A video face's features while its video is analysed, until they move to its file (:mod:`db.feature_store`).

    Apart from ``faces`` so that moving them frees whole pages (reused by the next recordings); the face's row holds
    ``features = b''`` meanwhile.
    """

    __tablename__ = "pending_features"
    __table_args__ = (Index("ix_pending_features_media_id_face_id", "media_id", "face_id"),)

    face_id: Mapped[int] = mapped_column(ForeignKey("faces.id", ondelete="CASCADE"), primary_key=True)
    media_id: Mapped[int] = mapped_column(ForeignKey("media.id", ondelete="CASCADE"))
    features: Mapped[bytes] = mapped_column(LargeBinary)


class Prediction(Base):
    """One model's output for one face; never updated, a new model run adds rows."""

    __tablename__ = "predictions"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    face_id: Mapped[int] = mapped_column(ForeignKey("faces.id", ondelete="CASCADE"), index=True)
    model: Mapped[str] = mapped_column(String(200))
    weights_hash: Mapped[str] = mapped_column(String(64), default="")
    model_version: Mapped[str | None] = mapped_column(String(100))
    """Version of a fine-tuned head; None for the published checkpoints."""
    probs: Mapped[dict[str, Any]] = mapped_column(JSON)
    label: Mapped[str] = mapped_column(String(64))
    confidence: Mapped[float] = mapped_column(Float)
    valence: Mapped[float | None] = mapped_column(Float)
    arousal: Mapped[float | None] = mapped_column(Float)
    engagement: Mapped[float | None] = mapped_column(Float)
    """p(engaged) of the engagement window covering the face's time, when its track has one."""
    reused: Mapped[bool] = mapped_column(Boolean, default=False, server_default="0")
    """The prediction of an earlier face of the same video that this face follows, whose crop this one's barely
    differs from (``VideoConfig.classify_every``, models/classify_reuse.py): not made of this face's own crop."""
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class Annotator(Base):
    """A person who corrects labels.

    ``key`` is the person's identity (:func:`db.repo.annotator_key`: case- and space-insensitive), ``name`` the name
    as first typed, for display.
    """

    __tablename__ = "annotators"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(200), unique=True)
    key: Mapped[str] = mapped_column(String(200), unique=True, index=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class Annotation(Base):
    """One row of the append-only correction history, for a face or for a whole track."""

    __tablename__ = "annotations"
    __table_args__ = (
        CheckConstraint("(face_id IS NULL) <> (track_id IS NULL)", name="one_target"),
        CheckConstraint("kind IN ('set', 'undo')", name="kind"),
        CheckConstraint("kind = 'set' OR reverts_id IS NOT NULL", name="undo_reverts"),
        CheckConstraint("valence IS NULL OR (valence >= -1 AND valence <= 1)", name="valence"),
        CheckConstraint("arousal IS NULL OR (arousal >= -1 AND arousal <= 1)", name="arousal"),
        CheckConstraint("engagement IS NULL OR engagement IN (0, 0.33, 0.66, 1)", name="engagement"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    face_id: Mapped[int | None] = mapped_column(ForeignKey("faces.id", ondelete="CASCADE"), index=True)
    track_id: Mapped[int | None] = mapped_column(ForeignKey("tracks.id", ondelete="CASCADE"), index=True)
    annotator_id: Mapped[int] = mapped_column(ForeignKey("annotators.id", ondelete="RESTRICT"), index=True)
    kind: Mapped[AnnotationKind] = mapped_column(String(8), default="set")
    reverts_id: Mapped[int | None] = mapped_column(ForeignKey("annotations.id", ondelete="CASCADE"), index=True)
    label: Mapped[str | None] = mapped_column(String(64))
    valence: Mapped[float | None] = mapped_column(Float)
    arousal: Mapped[float | None] = mapped_column(Float)
    engagement: Mapped[float | None] = mapped_column(Float)
    note: Mapped[str | None] = mapped_column(Text)
    source: Mapped[str | None] = mapped_column(String(300))
    """Where the row came from: ``web``, ``import:FILE``, ``api``..."""
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class ReviewSkip(Base):
    """An annotator's skip of a face in the review queue: it stays out of that annotator's queue until unskipped.

    Skips are queue state, not labels: they carry no vote, and removing one (``unskip``) deletes the row.
    """

    __tablename__ = "review_skips"
    __table_args__ = (UniqueConstraint("face_id", "annotator_id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    face_id: Mapped[int] = mapped_column(ForeignKey("faces.id", ondelete="CASCADE"), index=True)
    annotator_id: Mapped[int] = mapped_column(ForeignKey("annotators.id", ondelete="CASCADE"), index=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
