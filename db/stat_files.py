"""The study tables as files: CSV (the one writer, :mod:`db.csvfile`), typed Parquet, SPSS ``.sav``, Stata ``.dta``.

Every export is a folder: one file per table (:data:`db.study_tables.STUDY_TABLES`) in the chosen format, and the
codebook (``codebook.md``, ``codebook.csv``, :mod:`db.codebook`). Column types follow each table's
:class:`db.study_tables.Column`: Parquet has string, nullable integer and float columns (``participant`` a string
column, never an untyped object one); in SPSS and Stata every column carries its variable label, and the
``category`` columns (``reason``, ``engagement_label``, ``dominant_emotion``) are coded 1, 2... with value labels
(pyreadstat).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Literal, get_args

from db import csvfile
from db.codebook import Method, markdown, rows
from db.errors import StoreError
from db.study_tables import StudyTables, Table

if TYPE_CHECKING:
    import pandas as pd

StatFormat = Literal["csv", "parquet", "sav", "dta"]
STAT_FORMATS: tuple[StatFormat, ...] = get_args(StatFormat)
STATA_LABEL_MAX = 80
"""Stata's longest variable label."""


def check_format(fmt: str) -> StatFormat:
    """``fmt`` as a study-table format.

    Raises:
        StoreError: It is none of :data:`STAT_FORMATS`.
    """
    for f in STAT_FORMATS:
        if fmt == f:
            return f
    raise StoreError(f"unknown study-table format {fmt!r}; use one of {', '.join(STAT_FORMATS)}")


def typed_frame(table: Table) -> pd.DataFrame:
    """A table as a DataFrame with its columns' types: ``string``, ``Int64``, ``Float64`` (categories as text)."""
    import pandas as pd

    dtypes = {"str": "string", "category": "string", "int": "Int64", "float": "Float64"}
    names = [c.name for c in table.columns]
    df = pd.DataFrame([[r.get(n) for n in names] for r in table.rows], columns=names, dtype=object)
    return df.astype({c.name: dtypes[c.kind] for c in table.columns})


def _coded_frame(table: Table) -> tuple[pd.DataFrame, dict[str, dict[float, str]]]:
    """The frame SPSS and Stata get: categories coded 1.., numbers as float64 (NaN missing), text '' missing."""
    import numpy as np
    import pandas as pd

    out: dict[str, object] = {}
    value_labels: dict[str, dict[float, str]] = {}
    for c in table.columns:
        vals = [r.get(c.name) for r in table.rows]
        if c.kind == "category":
            code = {v: float(i) for i, v in enumerate(c.values, start=1)}
            out[c.name] = np.array([code.get(v, np.nan) if v is not None else np.nan for v in vals], dtype=np.float64)
            value_labels[c.name] = {i: v for v, i in code.items()}
        elif c.kind == "str":
            out[c.name] = np.array(["" if v is None else str(v) for v in vals], dtype=object)
        else:
            out[c.name] = np.array([np.nan if v is None else float(v) for v in vals], dtype=np.float64)
    return pd.DataFrame(out, columns=[c.name for c in table.columns]), value_labels


def write_table(table: Table, out: Path, fmt: StatFormat) -> Path:
    """Writes one study table to ``out`` in ``fmt`` (see the module docstring); returns ``out``."""
    if fmt == "csv":
        return csvfile.write_frame(typed_frame(table), out)
    if fmt == "parquet":
        typed_frame(table).to_parquet(out, index=False)
        return out
    import pyreadstat

    df, value_labels = _coded_frame(table)
    labels = [c.label[:STATA_LABEL_MAX] for c in table.columns]
    if fmt == "sav":
        pyreadstat.write_sav(df, str(out), column_labels=labels, variable_value_labels=value_labels)
    else:
        pyreadstat.write_dta(df, str(out), column_labels=labels, variable_value_labels=value_labels)
    return out


def write_study(study: str, st: StudyTables, method: Method, fmt: StatFormat, out_dir: Path) -> list[Path]:
    """Writes the three study tables and the codebook into the new (or empty) folder ``out_dir``.

    Raises:
        StoreError: Unknown format, or the folder holds files already.
    """
    if fmt not in STAT_FORMATS:
        raise StoreError(f"unknown study-table format {fmt!r}; use one of {', '.join(STAT_FORMATS)}")
    out_dir = Path(out_dir)
    if out_dir.exists() and (not out_dir.is_dir() or any(out_dir.iterdir())):
        raise StoreError(f"{out_dir}: exists and is not an empty folder; export the study tables into a new folder")
    out_dir.mkdir(parents=True, exist_ok=True)
    written = [write_table(t, out_dir / f"{t.name}.{fmt}", fmt) for t in st.tables]
    book = out_dir / "codebook.md"
    book.write_text(markdown(study, st, method, fmt), encoding="utf-8")
    csv_book = out_dir / "codebook.csv"
    csv_book.write_text(csvfile.dicts_text(rows(st)), encoding="utf-8", newline="")
    return [*written, book, csv_book]


def names(st: StudyTables, fmt: StatFormat) -> Sequence[str]:
    """The file names an export of ``st`` in ``fmt`` holds."""
    return [*(f"{t.name}.{fmt}" for t in st.tables), "codebook.md", "codebook.csv"]
