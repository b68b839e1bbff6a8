"""The table side of the exports: the columns and rows of the CSV/Parquet exports and of ``metadata.csv``.

Used by :mod:`db.exports` (whole-study formats), :mod:`db.export_stream` and :mod:`db.export_rows`; the format
Literals and the CSV rules are described in :mod:`db.exports`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeGuard, get_args

from db import csvfile
from db.csvfile import FORMULA_PREFIXES, neutralise_cell
from db.labels import FIELDS
from db.rows import ClassFormat, ExportFormat, FaceLabel, Split

FORMATS: tuple[ExportFormat, ...] = get_args(ExportFormat)


CLASS_FORMATS: tuple[ClassFormat, ...] = get_args(ClassFormat)


EXPORTED_PREFIX = "exported_"
"""Prefix of the read-only columns recording what a CSV/Parquet export held in each editable column."""


EDITABLE_COLUMNS = FIELDS
"""The columns of a CSV/Parquet export that ``import-labels`` reads as votes where they differ from ``exported_*``."""


def unneutralise_cell(value: str) -> str:
    """Undoes :func:`neutralise_cell`: drops an apostrophe that precedes one of :data:`FORMULA_PREFIXES`."""
    return value[1:] if value.startswith("'") and value[1:].startswith(FORMULA_PREFIXES) else value


def export_columns(classes: Sequence[str]) -> list[str]:
    """The CSV/Parquet columns, in order (what :func:`records` writes)."""
    cols = [
        "face_id",
        "media_id",
        "filename",
        "media_sha256",
        "media_kind",
        "media_status",
        "frame",
        "time_s",
        "track_id",
        "track",
        "x1",
        "y1",
        "x2",
        "y2",
        "det_score",
        "split",
    ]
    for f in _LABEL_FIELDS:
        cols += [f, f"{f}_source", f"{f}_annotators", f"{f}_agreement"]
    cols += ["note", "human_label", *(EXPORTED_PREFIX + f for f in EDITABLE_COLUMNS)]
    cols += [
        "model",
        "weights_hash",
        "model_version",
        "model_label",
        "model_confidence",
        "model_valence",
        "model_arousal",
        "model_engagement",
        "model_reused",
    ]
    return [*cols, *(f"prob_{c}" for c in classes), "has_crop"]


def row_values(r: FaceLabel, split: Split | None, classes: Sequence[str]) -> list[Any]:
    """One face's CSV/Parquet values, in the order of :func:`export_columns` (raw: not neutralised)."""
    probs = r.model_probs or {}
    return [
        r.face_id,
        r.media_id,
        r.filename,
        r.media_sha256,
        r.media_kind,
        r.media_status,
        r.frame,
        r.time_s,
        r.track_id,
        r.track_index,
        r.box[0],
        r.box[1],
        r.box[2],
        r.box[3],
        r.det_score,
        split,
        r.label,
        r.label_source,
        r.label_annotators,
        r.label_agreement,
        r.valence,
        r.valence_source,
        r.valence_annotators,
        r.valence_agreement,
        r.arousal,
        r.arousal_source,
        r.arousal_annotators,
        r.arousal_agreement,
        r.engagement,
        r.engagement_source,
        r.engagement_annotators,
        r.engagement_agreement,
        r.note,
        r.human_label,
        r.label,  # the exported_* copies of EDITABLE_COLUMNS, in that order
        r.valence,
        r.arousal,
        r.engagement,
        r.note,
        r.model,
        r.weights_hash,
        r.model_version,
        r.model_label,
        r.model_confidence,
        r.model_valence,
        r.model_arousal,
        r.model_engagement,
        r.model_reused,
        *map(probs.get, classes),
        r.has_crop,
    ]


def records(rows: Sequence[FaceLabel], splits: Mapping[int, Split], classes: Sequence[str]) -> list[dict[str, Any]]:
    """Flat records of the CSV/Parquet export, one per face."""
    cols = export_columns(classes)
    return [dict(zip(cols, row_values(r, splits.get(r.face_id), classes), strict=True)) for r in rows]


_LABEL_FIELDS = ("label", "valence", "arousal", "engagement")


_INT_COLUMNS = ("face_id", "media_id", "frame", "track_id", "track", *(f"{f}_annotators" for f in _LABEL_FIELDS))


_BOOL_COLUMNS = ("model_reused", "has_crop")
"""Columns of booleans: the model's prediction reused from an earlier frame of the track, a crop available."""
_FLOAT_COLUMNS = (
    "time_s",
    "x1",
    "y1",
    "x2",
    "y2",
    "det_score",
    "valence",
    "arousal",
    "engagement",
    "model_confidence",
    "model_valence",
    "model_arousal",
    "model_engagement",
    *(f"{f}_agreement" for f in _LABEL_FIELDS),
    *(EXPORTED_PREFIX + f for f in _LABEL_FIELDS[1:]),
)


def dataframe(
    rows: Sequence[FaceLabel], splits: Mapping[int, Split], classes: Sequence[str], *, neutralise: bool = False
) -> Any:
    """The export table as a pandas DataFrame with nullable integer, float, boolean and string columns.

    Args:
        rows: The faces.
        splits: Split of each face id.
        classes: The ``prob_*`` columns.
        neutralise: Pass the text cells through :func:`neutralise_cell` (for CSV; numbers are untouched).
    """
    values = [row_values(r, splits.get(r.face_id), classes) for r in rows]
    return frame_of_values(values, classes, neutralise=neutralise)


def frame_of_values(values: Sequence[list[Any]], classes: Sequence[str], *, neutralise: bool = False) -> Any:
    """:func:`dataframe` of rows already flattened (:func:`row_values` order, as :mod:`db.export_rows` gives them)."""
    import pandas as pd

    return _typed(pd.DataFrame.from_records(values, columns=export_columns(classes)), neutralise)


def frame_of_columns(columns: Sequence[list[Any]], classes: Sequence[str]) -> Any:
    """:func:`dataframe` of a page given column-wise (:func:`export_columns` order, as :mod:`db.export_pages` gives)."""
    import pandas as pd

    cols = export_columns(classes)
    return _typed(pd.DataFrame(dict(zip(cols, columns, strict=True)), columns=cols), False)


def _typed(df: Any, neutralise: bool) -> Any:
    """The export table's column types (nullable ints, floats and booleans, strings)."""
    import pandas as pd

    for c in df.columns:
        if c in _INT_COLUMNS:
            df[c] = df[c].astype("Int64")
        elif c in _FLOAT_COLUMNS or c.startswith("prob_"):
            df[c] = pd.to_numeric(df[c]).astype("Float64")
        elif c in _BOOL_COLUMNS:
            df[c] = df[c].astype("boolean")
        else:
            df[c] = df[c].astype("string")
            if neutralise:
                df[c] = df[c].map(neutralise_cell, na_action="ignore").astype("string")
    return df


def _labelled(rows: Sequence[FaceLabel]) -> list[FaceLabel]:
    return [r for r in rows if r.label]


def _metadata_rows(
    rows: Sequence[FaceLabel],
    splits: Mapping[int, Split],
    file_name: Callable[[FaceLabel], str],
    *,
    typed: bool = False,
) -> list[dict[str, Any]]:
    """Per-image metadata with provenance.

    With ``typed`` (the Hugging Face layout, where each split's ``metadata.csv`` must infer the same column types):
    frame and track are written as floats, a missing model or weights hash as ``unknown``, and the user's file name
    (free text that may look like a number) is left out; join on ``face_id`` with the CSV export to get it.
    """
    keep = (
        "face_id",
        "filename",
        "media_sha256",
        "frame",
        "time_s",
        "track",
        "split",
        "label",
        "label_source",
        "label_annotators",
        "label_agreement",
        "valence",
        "valence_source",
        "arousal",
        "arousal_source",
        "engagement",
        "engagement_source",
        "model",
        "weights_hash",
        "model_label",
        "model_confidence",
    )
    out = []
    for rec, r in zip(records(rows, splits, ()), rows, strict=True):
        row: dict[str, Any] = {"file_name": file_name(r)}
        row.update({k: rec[k] for k in keep})
        if typed:
            del row["filename"]
            for k in ("frame", "track", "time_s"):
                row[k] = None if row[k] is None else float(row[k])
            for k in ("model", "weights_hash", "model_label"):
                row[k] = row[k] or "unknown"
        out.append(row)
    return out


def _write_csv(rows: list[dict[str, Any]]) -> str:
    return csvfile.dicts_text(rows)


def _study_notes(has_faces: bool, predictions_only: bool, crops_available: bool) -> list[str]:
    """The card's first notes: an empty study, a study of predictions only, a study without crops."""
    notes = []
    if not has_faces:
        notes.append("the study has no faces yet")
    elif predictions_only:
        notes.append("predictions only: the study has no human corrections")
    if has_faces and not crops_available:
        notes.append("face crops unavailable: none stored (features-only mode, or ingested without crops)")
    return notes


def is_class_format(fmt: str) -> TypeGuard[ClassFormat]:
    """Whether ``fmt`` is one of the online-class tables (:data:`CLASS_FORMATS`)."""
    return fmt in CLASS_FORMATS
