"""The tables of class studies: persons and their corrections, the roster, lecture segments."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from sqlalchemy import (
    CheckConstraint,
    DateTime,
    Float,
    ForeignKey,
    Integer,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import Mapped, mapped_column

from db.schema_core import Base, utcnow

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
