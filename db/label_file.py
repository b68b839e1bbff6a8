"""Reading a labels CSV: its syntax checked (header, row lengths, face ids, one row per face), values still text.

The first step of :mod:`db.label_import` (which says what the two kinds of file are and every rule); no database.
"""

from __future__ import annotations

import csv
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from db import labels
from db.errors import ImportLabelsError, InvalidLabelError
from db.exports import EXPORTED_PREFIX, export_columns

EDITABLE = labels.FIELDS
"""The columns that carry votes: label, valence, arousal, engagement, note."""

EXPORTED = tuple(EXPORTED_PREFIX + f for f in EDITABLE)
"""The read-only record of what an export held, one per editable column."""

MAX_NOTE = 500
"""Longest note, in characters."""

_EXPORT_ONLY = frozenset(export_columns(())) - {"face_id", *EDITABLE, *EXPORTED}
_DIGITS = re.compile(r"[0-9]+\Z")
_DECIMAL = re.compile(r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?\Z")
NUMBER_TOLERANCE = 1e-6
"""Numbers closer than this are the same value (a spreadsheet may rewrite 0.30000000000000004 as 0.3)."""


@dataclass(frozen=True)
class LabelsFile:
    """A labels CSV after :func:`read_file`: syntax checked, values still text.

    Attributes:
        name: The file's name, for messages and the rows' ``source``.
        fields: The editable columns present, in :data:`EDITABLE` order.
        edited_export: True when the file has ``exported_*`` columns (votes are the edits).
        lines: 1-based line number of each row (the header is line 1).
        face_ids: The face id of each row.
        cells: Each row's cells of ``fields``, stripped.
        exported: Each row's ``exported_*`` cells of ``fields``, stripped (edited exports only).
    """

    name: str
    fields: tuple[str, ...]
    edited_export: bool
    lines: list[int] = field(default_factory=list)
    face_ids: list[int] = field(default_factory=list)
    cells: list[tuple[str, ...]] = field(default_factory=list)
    exported: list[tuple[str, ...]] = field(default_factory=list)


def read_file(path: Path) -> LabelsFile:
    """Reads a labels CSV and checks its syntax (header, row lengths, face ids, one row per face).

    Args:
        path: The CSV file (UTF-8, with or without a byte order mark).

    Raises:
        ImportLabelsError: For a missing or unreadable file, a bad header, a ragged row, a face id that is not plain
            digits, or a face on two rows (refused naming both lines).
    """
    path = Path(path)
    name = path.name
    try:
        with path.open(newline="", encoding="utf-8-sig") as f:
            reader = csv.reader(f)
            try:
                header = next(reader)
            except StopIteration:
                raise ImportLabelsError(
                    name, "the file is empty; the first line must be a header like face_id,label", 1
                ) from None
            columns = check_header(name, header)
            out = LabelsFile(
                name=name,
                fields=tuple(c for c in EDITABLE if c in columns),
                edited_export=any(c in columns for c in EXPORTED),
            )
            at_id = columns.index("face_id")
            at_cells = [columns.index(c) for c in out.fields]
            at_exported = [columns.index(EXPORTED_PREFIX + c) for c in out.fields] if out.edited_export else []
            width = len(columns)
            first_line: dict[int, int] = {}
            prev = reader.line_num
            for row in reader:
                line, prev = prev + 1, reader.line_num
                if not row:
                    continue
                if len(row) != width:
                    raise ImportLabelsError(
                        name,
                        f"the row has {len(row)} fields and the header {width}; quote values holding a comma",
                        line,
                    )
                fid = parse_face_id(name, row[at_id], line)
                if fid in first_line:
                    raise ImportLabelsError(
                        name, f"face {fid} is on lines {first_line[fid]} and {line}; keep one row per face", line
                    )
                first_line[fid] = line
                out.lines.append(line)
                out.face_ids.append(fid)
                out.cells.append(tuple(row[i].strip() for i in at_cells))
                if out.edited_export:
                    out.exported.append(tuple(row[i].strip() for i in at_exported))
    except FileNotFoundError:
        raise ImportLabelsError(name, "file not found") from None
    except UnicodeDecodeError as e:
        raise ImportLabelsError(name, f"not a UTF-8 CSV file ({e})") from None
    except csv.Error as e:
        raise ImportLabelsError(name, f"not a CSV file ({e})") from None
    return out


def check_header(name: str, header: Sequence[str]) -> list[str]:
    """The header's column names (stripped, lower case), checked.

    Raises:
        ImportLabelsError: (line 1) without ``face_id``, without an editable column, for an empty, duplicate or
            unknown column, for export columns without ``exported_*`` ones, or for an editable column without its
            ``exported_*`` partner in an edited export.
    """
    columns = [h.strip().lower() for h in header]
    seen: set[str] = set()
    for c in columns:
        if not c:
            raise ImportLabelsError(name, "the header has an empty column name (a trailing comma?); remove it", 1)
        if c in seen:
            raise ImportLabelsError(name, f"column {c!r} is in the header twice; keep one", 1)
        seen.add(c)
    if "face_id" not in seen:
        raise ImportLabelsError(name, "no 'face_id' column in the header", 1)
    edited_export = bool(seen & set(EXPORTED))
    for c in columns:
        known_export = c in _EXPORT_ONLY or c in EXPORTED or c.startswith("prob_")
        if c in EDITABLE or c == "face_id" or (known_export and edited_export):
            continue
        if known_export:
            raise ImportLabelsError(
                name,
                f"column {c!r} is an export column, but the file has no exported_* columns (an export made before "
                "they existed, or with them deleted), so its unchanged values would count as votes; export again "
                "and edit that, or keep only face_id and the columns " + ", ".join(EDITABLE),
                1,
            )
        raise ImportLabelsError(
            name,
            f"unknown column {c!r}; a labels file has face_id and any of {', '.join(EDITABLE)} (an edited export "
            "may also keep the export's columns); rename or remove it",
            1,
        )
    present = [c for c in EDITABLE if c in seen]
    if not present:
        raise ImportLabelsError(name, "no column to import: add any of " + ", ".join(EDITABLE), 1)
    if edited_export:
        for c in present:
            if EXPORTED_PREFIX + c not in seen:
                raise ImportLabelsError(
                    name,
                    f"column {c!r} has no {EXPORTED_PREFIX + c!r} beside it; in an edited export keep every "
                    "exported_* column as exported",
                    1,
                )
    return columns


def parse_face_id(name: str, text: str, line: int) -> int:
    """A face id written as plain digits (``46``; not ``46.0``, ``1e3``, ``inf`` or blank).

    Raises:
        ImportLabelsError: For anything else.
    """
    t = text.strip()
    if not _DIGITS.match(t):
        raise ImportLabelsError(name, f"face_id {text!r} is not a face id (digits only, like 46)", line)
    return int(t)


def parse_number(column: str, text: str) -> float | None:
    """A finite decimal number (None for an empty cell).

    Raises:
        InvalidLabelError: For text that is not a decimal number, or nan / inf.
    """
    if not text:
        return None
    if not _DECIMAL.match(text):
        raise InvalidLabelError(column, text, "a decimal number, or an empty cell for no value")
    x = float(text)
    if not math.isfinite(x):
        raise InvalidLabelError(column, text, "a finite number, or an empty cell for no value")
    return x
