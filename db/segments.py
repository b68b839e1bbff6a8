"""Lecture segments: named parts of a recording, from a CSV file (all or nothing) or one at a time in the app.

CSV (UTF-8, header on line 1): ``media`` (the media id, or the file name as uploaded, or its sha256), ``name``,
``start_s``, ``end_s`` (seconds from the start, decimal numbers). Refused, naming the line and writing nothing: an
unknown or missing column, a media item that is not a video of the study, an empty or duplicate name, a number that
is not a finite decimal, ``start_s < 0``, ``end_s <= start_s``, an end after the recording's duration, and segments
of one recording that overlap each other or one already stored.
"""

from __future__ import annotations

import csv
import io
import math
import re
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.orm import Session

from db import repo
from db.errors import FileRefusedError
from db.schema import LectureSegment, Media

COLUMNS = ("media", "name", "start_s", "end_s")
_DECIMAL = re.compile(r"^[+-]?(\d+(\.\d*)?|\.\d+)$")
DURATION_SLACK_S = 0.5
"""An end up to this much after the stored duration is accepted (frame times round)."""


class SegmentsError(FileRefusedError):
    """A segments file or a new segment was refused; nothing was written."""

    REFUSED = "nothing imported, fix these and import again"


@dataclass(frozen=True)
class SegmentRow:
    """A stored lecture segment."""

    id: int
    media_id: int
    name: str
    start_s: float
    end_s: float


def _number(text: str) -> float | None:
    t = text.strip()
    if not _DECIMAL.match(t):
        return None
    v = float(t)
    return v if math.isfinite(v) else None


def list_segments(session: Session, media_ids: list[int]) -> list[SegmentRow]:
    """The segments of some recordings, by media and start."""
    stmt = (
        select(LectureSegment)
        .where(LectureSegment.media_id.in_(media_ids))
        .order_by(LectureSegment.media_id, LectureSegment.start_s)
    )
    return [SegmentRow(s.id, s.media_id, s.name, s.start_s, s.end_s) for s in session.scalars(stmt)]


def _check(items: list[tuple[str, Media, str, float, float]], session: Session) -> list[str]:
    """Problems of new segments ``(where, media, name, start, end)`` among themselves and with the stored ones."""
    problems = []
    stored = list_segments(session, sorted({m.id for _, m, _, _, _ in items}))
    by_media: dict[int, list[tuple[str, str, float, float]]] = {}
    for s in stored:
        by_media.setdefault(s.media_id, []).append((f"stored segment {s.name!r}", s.name, s.start_s, s.end_s))
    for where, media, name, start, end in items:
        if start < 0:
            problems.append(f"{where}: start_s {start:g} is before the start of the recording (use 0 or more)")
        if end <= start:
            problems.append(f"{where}: end_s {end:g} is not after start_s {start:g}")
        if media.duration_s is not None and end > media.duration_s + DURATION_SLACK_S:
            problems.append(f"{where}: end_s {end:g} is after the end of {media.filename!r} ({media.duration_s:.1f} s)")
        for other_where, other_name, s0, e0 in by_media.get(media.id, []):
            if other_name == name:
                problems.append(f"{where}: {media.filename!r} already has a segment named {name!r} ({other_where})")
            elif start < e0 and s0 < end:
                problems.append(
                    f"{where}: {name!r} {start:g}-{end:g} s overlaps {other_where} {other_name!r} {s0:g}-{e0:g} s"
                )
        by_media.setdefault(media.id, []).append((where, name, start, end))
    return problems


def find_video(session: Session, study_id: int, ref: str) -> Media | None:
    """The study's video that ``ref`` names: its media id, file name or sha256 (None: none, or several by name)."""
    ref = ref.strip()
    base = select(Media).where(Media.study_id == study_id, Media.kind == "video")
    if ref.isdigit():
        m = session.scalar(base.where(Media.id == int(ref)))
        if m is not None:
            return m
    found = list(session.scalars(base.where((Media.filename == ref) | (Media.sha256 == ref.lower()))))
    return found[0] if len(found) == 1 else None


def import_segments(session: Session, study: str, path: Path, created_by: str | None = None) -> list[SegmentRow]:
    """Adds the segments of a CSV file (see the module docstring), all or none.

    Raises:
        SegmentsError: Naming every refused line.
    """
    st = repo.get_study(session, study)
    try:
        text = Path(path).read_text(encoding="utf-8-sig")
    except UnicodeDecodeError:
        raise SegmentsError(str(path), ["the file is not UTF-8 text; save it as CSV UTF-8"]) from None
    reader = csv.reader(io.StringIO(text))
    header = next(reader, None)
    if header is None:
        raise SegmentsError(str(path), ["line 1: the file is empty; it needs the header media,name,start_s,end_s"])
    cols = [h.strip() for h in header]
    unknown = [c for c in cols if c not in COLUMNS]
    missing = [c for c in COLUMNS if c not in cols]
    if unknown or missing or len(set(cols)) != len(cols):
        raise SegmentsError(
            str(path),
            [
                f"line 1: the header must be exactly {','.join(COLUMNS)} (in any order)"
                + (f"; unknown: {', '.join(unknown)}" if unknown else "")
                + (f"; missing: {', '.join(missing)}" if missing else "")
            ],
        )
    problems: list[str] = []
    items: list[tuple[str, Media, str, float, float]] = []
    for line, row in enumerate(reader, start=2):
        if not any(c.strip() for c in row):
            continue
        where = f"line {line}"
        if len(row) != len(cols):
            problems.append(f"{where}: {len(row)} fields, the header has {len(cols)}")
            continue
        d = dict(zip(cols, row, strict=True))
        media = find_video(session, st.id, d["media"])
        if media is None:
            problems.append(
                f"{where}: no video {d['media'].strip()!r} in study {study!r} (give its media id, its "
                "file name or its sha256)"
            )
        name = d["name"].strip()
        if not name or len(name) > 200:
            problems.append(f"{where}: a segment needs a name of 1 to 200 characters")
        start, end = _number(d["start_s"]), _number(d["end_s"])
        for col, v in (("start_s", start), ("end_s", end)):
            if v is None:
                problems.append(f"{where}: {col} {d[col].strip()!r} is not a decimal number of seconds")
        if media is not None and name and start is not None and end is not None:
            items.append((where, media, name, start, end))
    problems += _check(items, session)
    if problems:
        raise SegmentsError(str(path), sorted(problems, key=_line_no))
    return _store(session, items, created_by)


def _line_no(problem: str) -> int:
    m = re.match(r"line (\d+)", problem)
    return int(m.group(1)) if m else 0


def _store(
    session: Session, items: list[tuple[str, Media, str, float, float]], created_by: str | None
) -> list[SegmentRow]:
    rows = [
        LectureSegment(media_id=m.id, name=name, start_s=start, end_s=end, created_by=created_by)
        for _, m, name, start, end in items
    ]
    session.add_all(rows)
    session.flush()
    return [SegmentRow(r.id, r.media_id, r.name, r.start_s, r.end_s) for r in rows]


def add_segment(
    session: Session, media_id: int, name: str, start_s: float, end_s: float, created_by: str | None = None
) -> SegmentRow:
    """Adds one segment to a recording (the same checks as the import)."""
    media = repo.get_row(session, Media, media_id, "media item")
    where = f"segment {name.strip()!r}"
    problems = [] if name.strip() else [f"{where}: a segment needs a name"]
    if not (math.isfinite(start_s) and math.isfinite(end_s)):
        problems.append(f"{where}: times must be finite numbers of seconds")
    else:
        problems += _check([(where, media, name.strip(), float(start_s), float(end_s))], session)
    if problems:
        raise SegmentsError(media.filename, problems)
    return _store(session, [(where, media, name.strip(), float(start_s), float(end_s))], created_by)[0]


def delete_segment(session: Session, segment_id: int) -> None:
    """Removes a segment."""
    session.delete(repo.get_row(session, LectureSegment, segment_id, "segment"))
    session.flush()
