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
from typing import Any, BinaryIO, TextIO

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


_NONE_TYPE = type(None)


def _repr_cells(values: Sequence[Any], *, nan_empty: bool) -> list[str]:
    """What :class:`RowWriter` writes for each value: ``repr`` of a float, ``str`` of the rest, None empty.

    With ``nan_empty`` (a float column) NaN is written empty too.
    """
    return ["" if v is None or (nan_empty and v != v) else repr(v) if isinstance(v, float) else str(v) for v in values]


class ColumnWriter:
    """Streams CSV pages given column-wise to a file opened in binary mode: the same bytes as :class:`RowWriter`.

    Each column is formatted at once with Arrow (``kinds``: ``int``, ``float``, ``bool`` or ``text`` per column):
    text cells neutralised (:func:`neutralise_cell`: an apostrophe before a leading ``= + - @``, tab or CR) and then
    quoted where the csv module quotes (a comma, quote, CR or LF inside); floats as Python's ``repr`` (Arrow's
    shortest digits, where Arrow writes them positionally, with ``.0`` on whole numbers; any other float, e.g.
    ``1e-05``, through ``repr``), NaN and None empty, booleans ``True``/``False``. A column whose values are not of
    its kind (e.g. an int in a float column) is written value by value as the csv module would, any text in it
    neutralised (:class:`RowWriter` neutralises only its ``text_at`` cells). Lines end in CRLF.
    """

    def __init__(self, f: BinaryIO, kinds: Sequence[str]) -> None:
        self._f = f
        self.kinds = list(kinds)

    def header(self, names: Sequence[str]) -> None:
        """Writes the header line (names neutralised like any text cell)."""
        buf = io.StringIO()
        RowWriter(buf).header(names)
        self._f.write(buf.getvalue().encode("utf-8"))

    def write_columns(self, columns: Sequence[Sequence[Any]]) -> None:
        """Writes one page: ``columns[k]`` holds column ``k``'s values, all columns equally long."""
        import numpy as np
        import pyarrow as pa  # type: ignore[import-untyped]
        import pyarrow.compute as pc  # type: ignore[import-untyped]

        if not columns or not len(columns[0]):
            return
        cells: list[Any] = []
        for k, (values, kind) in enumerate(zip(columns, self.kinds, strict=True)):
            # A column equal to an earlier one of its kind (the exported_* and model_* copies) is formatted once.
            same = next((j for j in range(k) if self.kinds[j] == kind and _same(columns[j], values)), None)
            cells.append(cells[same] if same is not None else _column_text(values, kind))
        lines = pc.binary_join_element_wise(*cells, ",")
        lines = pc.binary_join_element_wise(lines, pa.scalar(""), CSV_LINE_END)  # each line, then CRLF
        lines = pa.concat_arrays([lines]) if lines.offset else lines
        width = 8 if pa.types.is_large_string(lines.type) else 4
        offsets = np.frombuffer(lines.buffers()[1], dtype=np.int64 if width == 8 else np.int32, count=len(lines) + 1)
        self._f.write(memoryview(lines.buffers()[2])[int(offsets[0]) : int(offsets[-1])])


def _same(a: Sequence[Any], b: Sequence[Any]) -> bool:
    """Equal values of equal types (1 == 1.0 == True, but they are written differently)."""
    return a is b or (a == b and list(map(type, a)) == list(map(type, b)))


def _column_text(values: Sequence[Any], kind: str) -> Any:
    """One column as Arrow strings, each the cell the csv module writes (see :class:`ColumnWriter`); None: empty."""
    import pyarrow as pa
    import pyarrow.compute as pc

    types = set(map(type, values))
    if kind == "text" and types <= {str, _NONE_TYPE}:
        return _text_cells(pa.array(values, pa.string()))
    if kind == "float" and types <= {float, _NONE_TYPE}:
        return _float_cells(values)
    if kind == "int" and types <= {int, _NONE_TYPE}:
        return pc.fill_null(pc.cast(pa.array(values, pa.int64()), pa.string()), "")
    if kind == "bool" and types <= {bool, _NONE_TYPE}:
        return pc.fill_null(pc.if_else(pa.array(values, pa.bool_()), "True", "False"), "")
    cells = [neutralise_cell(v) if isinstance(v, str) else v for v in values]
    return _text_cells(pa.array(_repr_cells(cells, nan_empty=kind == "float"), pa.string()), neutralise=False)


def _text_cells(arr: Any, *, neutralise: bool = True) -> Any:
    """Text cells neutralised (unless already), then quoted where the csv module quotes them; None empty."""
    import pyarrow.compute as pc

    if neutralise:
        formula = pc.match_substring_regex(arr, "^[=+\\-@\t\r]")
        if pc.any(formula).as_py():
            arr = pc.if_else(formula, pc.binary_join_element_wise("'", arr, ""), arr)
    quote = pc.match_substring_regex(arr, '[,"\\r\\n]')
    if pc.any(quote).as_py():
        quoted = pc.binary_join_element_wise('"', pc.replace_substring(arr, '"', '""'), '"', "")
        arr = pc.if_else(quote, quoted, arr)
    return pc.fill_null(arr, "")


def _float_cells(values: Sequence[Any]) -> Any:
    """Float cells as ``repr`` writes them (see :class:`ColumnWriter`); None and NaN empty."""
    import pyarrow as pa
    import pyarrow.compute as pc

    arr = pa.array(values, pa.float64())
    text = pc.cast(arr, pa.string())
    size = pc.abs(arr)
    positional = pc.and_(
        pc.or_(pc.equal(size, 0.0), pc.and_(pc.greater_equal(size, 1e-4), pc.less(size, 1e16))),
        pc.invert(pc.match_substring(text, "e")),
    )
    whole = pc.and_(positional, pc.invert(pc.match_substring(text, ".")))
    if pc.any(whole).as_py():
        text = pc.if_else(whole, pc.binary_join_element_wise(text, ".0", ""), text)
    other = pc.and_(pc.invert(positional), pc.is_valid(arr))
    if pc.any(other).as_py():
        mask = other.to_numpy(zero_copy_only=False)
        text = pc.replace_with_mask(text, other, pa.array([repr(values[i]) for i in mask.nonzero()[0]], pa.string()))
    nan = pc.is_nan(arr)
    if pc.any(nan).as_py():
        text = pc.if_else(nan, pa.scalar(None, pa.string()), text)
    return pc.fill_null(text, "")


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
