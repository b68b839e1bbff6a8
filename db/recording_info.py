"""Recording metadata for the study tables: each recording's course, name and date, edited or imported from a CSV.

CSV (UTF-8, header on line 1): ``media`` (the media id, the file name as uploaded, or its sha256) and any of
``course``, ``recording``, ``date`` (ISO ``YYYY-MM-DD``). An empty cell clears the value. Refused whole, naming the
line and changing nothing: an unknown or missing column, a media item that is not a video of the study, a recording
named twice, a value over 200 characters, a date that is not ``YYYY-MM-DD``.
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from datetime import date
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.orm import Session

from db import repo
from db.errors import FileRefusedError
from db.schema import Media
from db.segments import find_video

COLUMNS = ("media", "course", "recording", "date")
MAX_LEN = 200


class RecordingInfoError(FileRefusedError):
    """Recording metadata (a CSV file or one edit) was refused; nothing was changed."""


@dataclass(frozen=True)
class RecordingInfo:
    """A recording's metadata as the study tables show it.

    Attributes:
        media_id: The recording's media id.
        filename: Its file name as uploaded.
        course: The course, or None.
        recording: The recording's name: the one people gave, else the file name.
        date: The day it was recorded (ISO), or None.
        duration_s: Its duration in seconds, when known.
        fps: The video's average frame rate, when known.
    """

    media_id: int
    filename: str
    course: str | None
    recording: str
    date: str | None
    duration_s: float | None
    fps: float | None


def _info(m: Media) -> RecordingInfo:
    day = m.recorded_on.isoformat() if m.recorded_on is not None else None
    return RecordingInfo(m.id, m.filename, m.course, m.recording_name or m.filename, day, m.duration_s, m.fps)


def recording_infos(session: Session, study_id: int) -> dict[int, RecordingInfo]:
    """The metadata of a study's recordings (videos), by media id."""
    stmt = select(Media).where(Media.study_id == study_id, Media.kind == "video").order_by(Media.id)
    return {m.id: _info(m) for m in session.scalars(stmt)}


def _parse_date(text: str) -> date | None:
    try:
        return date.fromisoformat(text) if len(text) == 10 else None
    except ValueError:
        return None


def _problems_of(where: str, values: dict[str, str]) -> list[str]:
    out = []
    for col in ("course", "recording"):
        if len(values.get(col, "")) > MAX_LEN:
            out.append(f"{where}: {col} is longer than {MAX_LEN} characters")
    day = values.get("date", "")
    if day and _parse_date(day) is None:
        out.append(f"{where}: date {day!r} is not a date YYYY-MM-DD")
    return out


def _apply(m: Media, values: dict[str, str]) -> None:
    if "course" in values:
        m.course = values["course"] or None
    if "recording" in values:
        m.recording_name = values["recording"] or None
    if "date" in values:
        m.recorded_on = _parse_date(values["date"]) if values["date"] else None


def set_recording_info(
    session: Session, media_id: int, *, course: str | None, recording: str | None, day: str | None
) -> RecordingInfo:
    """Sets a recording's course, name and date (None or empty clears one), same checks as the import."""
    media = repo.get_row(session, Media, media_id, "media item")
    values = {"course": (course or "").strip(), "recording": (recording or "").strip(), "date": (day or "").strip()}
    problems = _problems_of(f"recording {media.filename!r}", values)
    if media.kind != "video":
        problems.append(f"{media.filename!r} is not a video: only recordings have course, name and date")
    if problems:
        raise RecordingInfoError(media.filename, problems)
    _apply(media, values)
    session.flush()
    return _info(media)


def import_recording_info(session: Session, study: str, path: Path) -> list[RecordingInfo]:
    """Sets the metadata of the recordings a CSV file names (see the module docstring), all or none.

    Raises:
        RecordingInfoError: Naming every refused line; nothing was changed.
    """
    st = repo.get_study(session, study)
    try:
        text = Path(path).read_text(encoding="utf-8-sig")
    except UnicodeDecodeError:
        raise RecordingInfoError(str(path), ["the file is not UTF-8 text; save it as CSV UTF-8"]) from None
    reader = csv.reader(io.StringIO(text))
    cols = [h.strip() for h in next(reader, None) or []]
    unknown = [c for c in cols if c not in COLUMNS]
    if not cols or "media" not in cols or unknown or len(set(cols)) != len(cols) or len(cols) < 2:
        raise RecordingInfoError(
            str(path),
            [
                "line 1: the header must be media and any of course,recording,date, each once"
                + (f"; unknown: {', '.join(unknown)}" if unknown else "")
            ],
        )
    problems: list[str] = []
    items: list[tuple[Media, dict[str, str]]] = []
    seen: dict[int, int] = {}
    for line, row in enumerate(reader, start=2):
        if not any(c.strip() for c in row):
            continue
        where = f"line {line}"
        if len(row) != len(cols):
            problems.append(f"{where}: {len(row)} fields, the header has {len(cols)}")
            continue
        values = {c: v.strip() for c, v in zip(cols, row, strict=True)}
        media = find_video(session, st.id, values.pop("media"))
        if media is None:
            problems.append(f"{where}: no video {row[cols.index('media')].strip()!r} in study {study!r}")
        elif media.id in seen:
            problems.append(f"{where}: {media.filename!r} is already on line {seen[media.id]}")
        else:
            seen[media.id] = line
        problems += _problems_of(where, values)
        if media is not None:
            items.append((media, values))
    if problems:
        raise RecordingInfoError(str(path), problems)
    for media, values in items:
        _apply(media, values)
    session.flush()
    return [_info(m) for m, _ in items]
