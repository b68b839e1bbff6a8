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
    text,
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


# ---------------------------------------------------------------------------------------------------- classes


PersonCorrectionKind = Literal["rename", "merge", "split"]


class Person(Base):
    """A student of a recording: the tracks that the analysis joined (``person`` in the JSON), or a split's new one."""

    __tablename__ = "persons"
    __table_args__ = (UniqueConstraint("media_id", "person_index"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    media_id: Mapped[int] = mapped_column(ForeignKey("media.id", ondelete="CASCADE"), index=True)
    person_index: Mapped[int] = mapped_column(Integer)
    """The analysis's person number (``P{n}`` in the app), unique within the media item."""
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class PersonTrack(Base):
    """The person the analysis gave a track; never changed: people's changes are :class:`PersonCorrection` rows."""

    __tablename__ = "person_tracks"

    track_id: Mapped[int] = mapped_column(ForeignKey("tracks.id", ondelete="CASCADE"), primary_key=True)
    person_id: Mapped[int] = mapped_column(ForeignKey("persons.id", ondelete="CASCADE"), index=True)


class PersonCorrection(Base):
    """One row of the append-only history of people's changes to the persons of a recording.

    ``rename``: ``person_id`` gets the participant id ``participant`` (empty: none). ``merge``: every track of
    ``other_person_id`` moves to ``person_id``. ``split``: track ``track_id`` moves to the new person ``person_id``.
    """

    __tablename__ = "person_corrections"
    __table_args__ = (CheckConstraint("kind IN ('rename', 'merge', 'split')", name="kind"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    media_id: Mapped[int] = mapped_column(ForeignKey("media.id", ondelete="CASCADE"), index=True)
    kind: Mapped[PersonCorrectionKind] = mapped_column(String(8))
    person_id: Mapped[int] = mapped_column(ForeignKey("persons.id", ondelete="CASCADE"), index=True)
    other_person_id: Mapped[int | None] = mapped_column(ForeignKey("persons.id", ondelete="CASCADE"))
    track_id: Mapped[int | None] = mapped_column(ForeignKey("tracks.id", ondelete="CASCADE"))
    participant: Mapped[str | None] = mapped_column(String(200))
    annotator_id: Mapped[int] = mapped_column(ForeignKey("annotators.id", ondelete="RESTRICT"), index=True)
    note: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class Participant(Base):
    """A participant on a study's roster (:mod:`db.roster`): id as the researcher writes it, name, optional group."""

    __tablename__ = "participants"
    __table_args__ = (UniqueConstraint("study_id", "code"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    study_id: Mapped[int] = mapped_column(ForeignKey("studies.id", ondelete="CASCADE"), index=True)
    code: Mapped[str] = mapped_column(String(200))
    name: Mapped[str] = mapped_column(String(200))
    group_name: Mapped[str | None] = mapped_column(String(200))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class RosterExpected(Base):
    """A participant a recording's list expects; a recording without rows expects the whole roster."""

    __tablename__ = "roster_expected"

    media_id: Mapped[int] = mapped_column(ForeignKey("media.id", ondelete="CASCADE"), primary_key=True)
    participant_id: Mapped[int] = mapped_column(ForeignKey("participants.id", ondelete="CASCADE"), primary_key=True)


class PersonAssignment(Base):
    """Append-only history of which participant a person of a recording is (``participant_id`` None: nobody)."""

    __tablename__ = "person_assignments"
    __table_args__ = (CheckConstraint("source IN ('app', 'csv', 'cli', 'remembered')", name="source"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    media_id: Mapped[int] = mapped_column(ForeignKey("media.id", ondelete="CASCADE"), index=True)
    person_id: Mapped[int] = mapped_column(ForeignKey("persons.id", ondelete="CASCADE"), index=True)
    participant_id: Mapped[int | None] = mapped_column(ForeignKey("participants.id", ondelete="CASCADE"))
    source: Mapped[str] = mapped_column(String(10))
    annotator_id: Mapped[int] = mapped_column(ForeignKey("annotators.id", ondelete="RESTRICT"), index=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class LectureSegment(Base):
    """A named part of a lecture recording (introduction, group work...), ``[start_s, end_s)`` in seconds."""

    __tablename__ = "lecture_segments"
    __table_args__ = (
        UniqueConstraint("media_id", "name"),
        CheckConstraint("start_s >= 0 AND end_s > start_s", name="times"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    media_id: Mapped[int] = mapped_column(ForeignKey("media.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(200))
    start_s: Mapped[float] = mapped_column(Float)
    end_s: Mapped[float] = mapped_column(Float)
    created_by: Mapped[str | None] = mapped_column(String(200))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


# ---------------------------------------------------------------------------------------------------- read model


class FaceStatus(Base):
    """The review state of one face, kept by :mod:`db.status` in the transaction of every write that changes it.

    Derived only: each row is what :func:`db.labels.face_labels` resolves for the face (the written rules), stored so
    that the review queues, their counts, "my labels" and the statistics are indexed reads of the faces they show.
    """

    __tablename__ = "face_status"
    __table_args__ = (
        Index("ix_face_status_study_queue", "study_id", "u_key", "face_id"),
        Index("ix_face_status_media_queue", "media_id", "u_key", "face_id"),
        Index("ix_face_status_class_queue", "study_id", "model_label", "u_key", "face_id"),
        Index(
            "ix_face_status_valence_queue",
            "study_id",
            "v_key",
            "face_id",
            sqlite_where=text("v_key IS NOT NULL"),
            postgresql_where=text("v_key IS NOT NULL"),
        ),
        Index(
            "ix_face_status_disagreement_queue",
            "study_id",
            "d_key",
            "face_id",
            sqlite_where=text("d_key IS NOT NULL"),
            postgresql_where=text("d_key IS NOT NULL"),
        ),
        Index(
            "ix_face_status_judged",
            "study_id",
            "face_id",
            sqlite_where=text("n_judges > 0"),
            postgresql_where=text("n_judges > 0"),
        ),
    )

    face_id: Mapped[int] = mapped_column(ForeignKey("faces.id", ondelete="CASCADE"), primary_key=True)
    study_id: Mapped[int] = mapped_column(ForeignKey("studies.id", ondelete="CASCADE"))
    media_id: Mapped[int] = mapped_column(ForeignKey("media.id", ondelete="CASCADE"))
    track_id: Mapped[int | None] = mapped_column(Integer, index=True)
    route: Mapped[float] = mapped_column(Float)
    """:func:`db.review.route_value` of the face: it needs a second vote when below the study's double share."""
    model_label: Mapped[str | None] = mapped_column(String(64))
    model_confidence: Mapped[float | None] = mapped_column(Float)
    u_key: Mapped[float] = mapped_column(Float)
    """Minus the urgency in the ``uncertainty`` queue (1 - the model's confidence, 0 without a prediction).

    The queues' keys are negated urgencies, so an ascending index over ``(key, face_id)`` is the queue's order
    (most urgent first, ties by face id) on every database."""
    human_label: Mapped[str | None] = mapped_column(String(64))
    """The annotators' majority class, None without a vote."""
    n_votes: Mapped[int] = mapped_column(Integer, default=0)
    """Annotators with a current class on the face (own or through its track)."""
    n_judges: Mapped[int] = mapped_column(Integer, default=0)
    """Annotators with any current value on the face."""
    v_key: Mapped[float | None] = mapped_column(Float)
    """Minus the urgency in the ``valence`` queue (None: not in it)."""
    d_key: Mapped[float | None] = mapped_column(Float)
    """Minus the urgency in the ``disagreement`` queue (None: not in it)."""


class FaceJudge(Base):
    """An annotator who judged (a current value, own or through the track) or skipped a face, kept by :mod:`db.status`.

    Both take the face out of that annotator's queues; ``labelled_by`` filters read ``judged``.
    """

    __tablename__ = "face_judges"
    __table_args__ = (Index("ix_face_judges_annotator", "annotator_id", "study_id", "face_id"),)

    face_id: Mapped[int] = mapped_column(ForeignKey("faces.id", ondelete="CASCADE"), primary_key=True)
    annotator_id: Mapped[int] = mapped_column(ForeignKey("annotators.id", ondelete="CASCADE"), primary_key=True)
    study_id: Mapped[int] = mapped_column(ForeignKey("studies.id", ondelete="CASCADE"))
    judged: Mapped[bool] = mapped_column(Boolean)
    skipped: Mapped[bool] = mapped_column(Boolean)


class QueueCount(Base):
    """Kept counts of the review queues, per media item, model class, human class and annotator (:mod:`db.status`).

    ``annotator_id`` 0 holds the study's own counts: faces, faces in each queue (``uncertainty``: still needing a
    vote; ``valence``; ``disagreement``). An annotator's row holds the faces they judged or skipped, per queue (they
    leave that annotator's queue), ``faces``: the faces they judged ("my labels"), and ``skipped``: the faces they
    skipped without judging. Labels are ``""`` for
    none. Updated by the difference each refreshed face makes, in the write's own transaction.
    """

    __tablename__ = "queue_counts"
    __table_args__ = (
        UniqueConstraint("study_id", "annotator_id", "media_id", "model_label", "human_label"),
        Index("ix_queue_counts_media_id", "media_id"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    study_id: Mapped[int] = mapped_column(ForeignKey("studies.id", ondelete="CASCADE"))
    annotator_id: Mapped[int] = mapped_column(Integer)
    media_id: Mapped[int] = mapped_column(ForeignKey("media.id", ondelete="CASCADE"))
    model_label: Mapped[str] = mapped_column(String(64))
    human_label: Mapped[str] = mapped_column(String(64))
    faces: Mapped[int] = mapped_column(Integer, default=0)
    uncertainty: Mapped[int] = mapped_column(Integer, default=0)
    valence: Mapped[int] = mapped_column(Integer, default=0)
    disagreement: Mapped[int] = mapped_column(Integer, default=0)
    skipped: Mapped[int] = mapped_column(Integer, default=0)


class MediaTotals(Base):
    """Row counts of a media item (what ``db stats`` reports), kept by :mod:`db.status` when its faces change."""

    __tablename__ = "media_totals"

    media_id: Mapped[int] = mapped_column(ForeignKey("media.id", ondelete="CASCADE"), primary_key=True)
    study_id: Mapped[int] = mapped_column(ForeignKey("studies.id", ondelete="CASCADE"), index=True)
    faces: Mapped[int] = mapped_column(Integer)
    predictions: Mapped[int] = mapped_column(Integer)
    tracks: Mapped[int] = mapped_column(Integer)
    crops: Mapped[int] = mapped_column(Integer)
    features: Mapped[int] = mapped_column(Integer)


class StudyStatus(Base):
    """The model run a study's rows follow (:func:`db.labels.choose_model`), kept by :mod:`db.status`."""

    __tablename__ = "study_status"

    study_id: Mapped[int] = mapped_column(ForeignKey("studies.id", ondelete="CASCADE"), primary_key=True)
    model: Mapped[str | None] = mapped_column(String(200))
    weights_hash: Mapped[str | None] = mapped_column(String(64))
    model_version: Mapped[str | None] = mapped_column(String(100))
    classes: Mapped[list[str]] = mapped_column(JSON, default=list)
    """Every class the study's chosen predictions name, in the model's output order."""


class FaceTally(Base):
    """What one judged face adds to its study's statistics (:class:`StudyTally`), kept by :mod:`db.status`.

    ``items``: ``[kind, k1, k2, k3, k4, n, s1, s2, s3, s4, s5]`` per :class:`StudyTally` key, so that a refresh takes
    the face's old share out before adding the new one. Only faces someone judged have a row.
    """

    __tablename__ = "face_tallies"

    face_id: Mapped[int] = mapped_column(ForeignKey("faces.id", ondelete="CASCADE"), primary_key=True)
    study_id: Mapped[int] = mapped_column(ForeignKey("studies.id", ondelete="CASCADE"), index=True)
    media_id: Mapped[int] = mapped_column(ForeignKey("media.id", ondelete="CASCADE"), index=True)
    items: Mapped[list[Any]] = mapped_column(JSON)


class StudyTally(Base):
    """Running totals behind a study's statistics and agreement, per media item (:func:`db.status.study_stats`).

    ``kind`` and the keys ``k1``-``k4`` name a total (see :func:`db.status_tallies.face_tallies`: class pairs of two
    annotators, per-face category counts for Fleiss' kappa and Krippendorff's alpha, moments for the CCCs, ...);
    ``n`` counts, ``s1``-``s5`` are sums. Updated by the difference each refreshed face makes, in the write's own
    transaction.
    """

    __tablename__ = "study_tallies"
    __table_args__ = (
        UniqueConstraint("study_id", "media_id", "kind", "k1", "k2", "k3", "k4"),
        Index("ix_study_tallies_media_id", "media_id"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    study_id: Mapped[int] = mapped_column(ForeignKey("studies.id", ondelete="CASCADE"))
    media_id: Mapped[int] = mapped_column(ForeignKey("media.id", ondelete="CASCADE"))
    kind: Mapped[str] = mapped_column(String(16))
    k1: Mapped[str] = mapped_column(String(200))
    k2: Mapped[str] = mapped_column(String(200))
    k3: Mapped[str] = mapped_column(String(200))
    k4: Mapped[str] = mapped_column(String(200))
    n: Mapped[int] = mapped_column(Integer)
    s1: Mapped[float] = mapped_column(Float)
    s2: Mapped[float] = mapped_column(Float)
    s3: Mapped[float] = mapped_column(Float)
    s4: Mapped[float] = mapped_column(Float)
    s5: Mapped[float] = mapped_column(Float)


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


class ClassSumMedia(Base):
    """How a recording's kept class sums (:class:`ClassSum`) were cut and computed (:mod:`db.class_sums`)."""

    __tablename__ = "class_sum_media"

    media_id: Mapped[int] = mapped_column(ForeignKey("media.id", ondelete="CASCADE"), primary_key=True)
    study_id: Mapped[int] = mapped_column(ForeignKey("studies.id", ondelete="CASCADE"), index=True)
    bounds: Mapped[list[float]] = mapped_column(JSON)
    """The time bucket bounds: every minute and segment bound, the recording's duration."""
    duration_s: Mapped[float] = mapped_column(Float)
    one_step: Mapped[float] = mapped_column(Float)
    longest: Mapped[float | None] = mapped_column(Float)
    """The step rule of :func:`db.class_buckets.step_rule` (None: infinite)."""
    run: Mapped[list[Any] | None] = mapped_column(JSON)
    """The study's model run the sums follow (``[model, weights_hash, model_version]``), None: none."""
    classes: Mapped[list[str]] = mapped_column(JSON)
    """The classes of the recording's model runs, the followed run's first."""


class ClassSum(Base):
    """A track's sums over one time bucket of its recording: what every Classroom table and figure adds up.

    Kept by :mod:`db.class_sums` in the transaction of every write that changes them.
    """

    __tablename__ = "class_sums"
    __table_args__ = (Index("ix_class_sums_track_id", "track_id"),)

    media_id: Mapped[int] = mapped_column(ForeignKey("media.id", ondelete="CASCADE"), primary_key=True)
    track_id: Mapped[int] = mapped_column(ForeignKey("tracks.id", ondelete="CASCADE"), primary_key=True)
    bucket: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    n: Mapped[int] = mapped_column(Integer)
    n_human: Mapped[int] = mapped_column(Integer)
    visible_s: Mapped[float] = mapped_column(Float)
    eng_sum: Mapped[float] = mapped_column(Float)
    eng_n: Mapped[int] = mapped_column(Integer)
    val_sum: Mapped[float] = mapped_column(Float)
    val_n: Mapped[int] = mapped_column(Integer)
    aro_sum: Mapped[float] = mapped_column(Float)
    aro_n: Mapped[int] = mapped_column(Integer)
    labels: Mapped[dict[str, int]] = mapped_column(JSON)
    """Faces per class."""
    firsts: Mapped[dict[str, int]] = mapped_column(JSON)
    """Per class of the faces people corrected, the first such face's id (the order of the classes people added)."""
