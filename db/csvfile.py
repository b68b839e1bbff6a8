"""The one CSV writer: every CSV AffectLab writes (faces, class tables, metadata) goes through it, neutralised.

A spreadsheet runs a text cell that starts with ``= + - @``, a tab or a CR as a formula (OWASP "CSV injection"):
names people type (study, media, segment, annotator names, notes) could otherwise open links or run commands when
an owner opens the file. :func:`neutralise_cell` puts an apostrophe before such a cell; numbers stay numbers
(a valence of -0.5 is written ``-0.5``). ``import-labels`` removes the apostrophe again
(:func:`db.exports.unneutralise_cell`). Lines end in CRLF (RFC 4180), so every cell holding a CR or LF is quoted.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

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
