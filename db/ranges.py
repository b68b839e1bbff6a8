"""A long video cut into time ranges analysed side by side: the plan and a resume point per range.

When the analysis service cuts a recording over several worker processes (:mod:`affectlab.ranged`), the plan (each
range's start, the frame before it, and where the next range starts) is stored with the partial media item in the
transaction that starts the cut, and each stretch of a range's faces is stored together with that range's resume
point (:func:`db.resumable.store_chunk` with ``range_number``), so the stored faces and the resume points never
disagree. A stopped run resumes each range after its last stored frame and skips the ranges that are done, with as
many processes as it has (one: one range after the other). Functions take the caller's session and never commit.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session

from db.errors import StoreError
from db.schema import AnalysisRange, Face
from models.types import Box


@dataclass(frozen=True)
class RangePlan:
    """Where one range lies in the video.

    Attributes:
        number: Its place among the ranges (0 first).
        start_s: Time of the frame just before it (None: it starts the video).
        start_frame: That frame's number among the decoded frames.
        start_sample: Its number among the sampled frames.
        stop_frame: The next range's first frame (None: the last range).
    """

    number: int
    start_s: float | None
    start_frame: int | None
    start_sample: int | None
    stop_frame: int | None


@dataclass(frozen=True)
class RangeState:
    """A range's plan and how far its analysis got.

    Attributes:
        plan: Where it lies.
        until_s: Time of its last stored frame (None: nothing analysed yet).
        until_frame: That frame's number.
        until_sample: Its sample number.
        faces: Boxes and detection scores of that frame's stored faces, in their order.
        done: Its last frame is stored.
    """

    plan: RangePlan
    until_s: float | None = None
    until_frame: int | None = None
    until_sample: int | None = None
    faces: tuple[tuple[Box, float], ...] = ()
    done: bool = False


def _faces_at(session: Session, media_id: int, frame: int | None) -> tuple[tuple[Box, float], ...]:
    if frame is None:
        return ()
    stmt = (
        select(Face.x1, Face.y1, Face.x2, Face.y2, Face.det_score)
        .where(Face.media_id == media_id, Face.frame == frame)
        .order_by(Face.face_index, Face.id)
    )
    return tuple(((x1, y1, x2, y2), d) for x1, y1, x2, y2, d in session.execute(stmt))


def states(session: Session, media_id: int) -> list[RangeState]:
    """The media item's ranges in order (empty: it is not cut into ranges)."""
    rows = session.scalars(
        select(AnalysisRange).where(AnalysisRange.media_id == media_id).order_by(AnalysisRange.number)
    )
    return [
        RangeState(
            plan=RangePlan(r.number, r.start_s, r.start_frame, r.start_sample, r.stop_frame),
            until_s=r.until_s,
            until_frame=r.until_frame,
            until_sample=r.until_sample,
            faces=() if r.done else _faces_at(session, media_id, r.until_frame),
            done=r.done,
        )
        for r in rows
    ]


def plan(session: Session, media_id: int, ranges: Sequence[RangePlan]) -> list[RangeState]:
    """Stores the plan of a media item not cut yet; returns its ranges (the stored plan when it has one already)."""
    got = states(session, media_id)
    if got:
        return got
    session.add_all(
        AnalysisRange(
            media_id=media_id,
            number=r.number,
            start_s=r.start_s,
            start_frame=r.start_frame,
            start_sample=r.start_sample,
            stop_frame=r.stop_frame,
        )
        for r in ranges
    )
    session.flush()
    return states(session, media_id)


def move(
    session: Session, media_id: int, number: int, *, until_s: float, until_frame: int, samples: int, done: bool
) -> None:
    """Moves one range's resume point (in the transaction that stores its faces up to there)."""
    row = session.scalar(
        select(AnalysisRange).where(AnalysisRange.media_id == media_id, AnalysisRange.number == number)
    )
    if row is None:
        raise StoreError(f"media {media_id} has no analysis range {number}; analyse the file again")
    row.until_s, row.until_frame, row.until_sample, row.done = until_s, until_frame, samples - 1, done
