"""The one CSV writer: every CSV AffectLab writes (faces, class tables, metadata) goes through it, neutralised.

A spreadsheet runs a text cell that starts with ``= + - @``, a tab or a CR as a formula (OWASP "CSV injection"):
names people type (study, media, segment, annotator names, notes) could otherwise open links or run commands when
an owner opens the file. :func:`neutralise_cell` puts an apostrophe before such a cell; numbers stay numbers
(a valence of -0.5 is written ``-0.5``). ``import-labels`` removes the apostrophe again
(:func:`db.exports.unneutralise_cell`). Lines end in CRLF (RFC 4180), so every cell holding a CR or LF is quoted.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, TextIO

FORMULA_PREFIXES = ("=", "+", "-", "@", "\t", "\r")
"""First characters that make a spreadsheet read a text cell as a formula (OWASP CSV injection)."""
CSV_LINE_END = "\r\n"
"""RFC 4180 line end: the csv writer then quotes every cell holding a CR or LF (with LF alone, a lone CR is not)."""


def neutralise_cell(value: str) -> str:
    """A CSV text cell that no spreadsheet runs as a formula: ``'`` before a leading ``= + - @``, tab or CR.

    Args:
        value: The text (numbers must not be passed: they stay numbers).

    Returns:
        ``value``, with a leading apostrophe when it starts with one of :data:`FORMULA_PREFIXES`.
    """
    return "'" + value if value.startswith(FORMULA_PREFIXES) else value


def neutralised(df: Any) -> Any:
    """A copy of a pandas DataFrame whose text cells (and column names) are neutralised; numbers untouched."""
    import pandas as pd

    out = df.copy()
    for c in out.columns:
        col = out[c]
        if pd.api.types.is_object_dtype(col) or pd.api.types.is_string_dtype(col):
            out[c] = col.map(lambda v: neutralise_cell(v) if isinstance(v, str) else v)
    out.columns = [neutralise_cell(c) if isinstance(c, str) else c for c in out.columns]
    return out


def write_frame(df: Any, out: Path) -> Path:
    """Writes a pandas DataFrame as CSV (no index, CRLF), every text cell neutralised; returns ``out``."""
    neutralised(df).to_csv(out, index=False, lineterminator=CSV_LINE_END)
    return out


class RowWriter:
    """Streams CSV rows to an open text file (opened with ``newline=""``): the streamed exports' writer.

    Rows are lists of values in column order; the cells at ``text_at`` pass through :func:`neutralise_cell` (each
    distinct text once per :meth:`write_rows` call: most cells repeat), NaN at ``float_at`` is written empty, and
    ``None`` is written empty everywhere, as :func:`write_frame` writes a DataFrame.
    """

    def __init__(self, f: TextIO, *, text_at: Sequence[int] = (), float_at: Sequence[int] = ()) -> None:
        self._w = csv.writer(f, lineterminator=CSV_LINE_END)
        self.text_at = list(text_at)
        self.float_at = list(float_at)

    def header(self, names: Sequence[str]) -> None:
        """Writes the header line (names neutralised like any text cell)."""
        self._w.writerow([neutralise_cell(n) for n in names])

    def write_rows(self, rows: Iterable[list[Any]]) -> None:
        """Writes rows (each list is changed in place)."""
        seen: dict[str, str] = {}
        text_at, float_at = self.text_at, self.float_at

        def clean(values: list[Any]) -> list[Any]:
            for i in text_at:
                v = values[i]
                if v is not None:
                    n = seen.get(v)
                    if n is None:
                        n = seen[v] = neutralise_cell(v)
                    values[i] = n
            for i in float_at:
                v = values[i]
                if v is not None and v != v:
                    values[i] = None
            return values

        self._w.writerows(clean(r) for r in rows)


def dicts_text(rows: Sequence[dict[str, Any]]) -> str:
    """CSV text of dict rows with the keys of the first as header (text cells neutralised, None empty)."""
    buf = io.StringIO()
    if rows:
        names = list(rows[0])
        w = RowWriter(buf)
        w.header(names)
        w.write_rows(
            [("" if v is None else neutralise_cell(v) if isinstance(v, str) else v) for v in r.values()] for r in rows
        )
    return buf.getvalue()
