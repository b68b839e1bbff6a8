"""The kept read model: per-face status, queue counts and tallies, kept up to date in the writing transactions."""

from __future__ import annotations

from typing import Any

from sqlalchemy import (
    JSON,
    Boolean,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    UniqueConstraint,
    text,
)
from sqlalchemy.orm import Mapped, mapped_column

from db.schema_core import Base

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
