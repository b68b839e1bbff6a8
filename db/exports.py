"""Writes a study's exports for training and analysis, each with label provenance and a dataset card.

Formats (``python -m db export --format``):

- ``csv`` / ``parquet``: one row per face (``face_id``), the model's prediction (``model_*``, ``prob_*``) and the
  current labels with their provenance (``*_source`` human/model/none, ``*_annotators``, ``*_agreement``, ``model``,
  ``weights_hash``), ``human_label`` (the annotators' majority class alone, empty where nobody labelled the face) and
  ``exported_*``, a read-only copy of the editable columns ``label, valence, arousal, engagement, note``: edit those
  and import the file with ``python -m db import-labels``, and only the edited cells become votes (see
  :mod:`db.label_import`);
- ``imagefolder``: a zip of face crops resized to the model's input size, ``{split}/{label}/{face_id}.png``, with
  ``metadata.csv`` and the card ``README.md``;
- ``features``: an NPZ of backbone features ``X``, class indices ``y`` (into ``classes``), split ``groups`` and the
  provenance arrays;
- ``hf``: the Hugging Face ``datasets`` imagefolder layout (``{train,validation,test}/metadata.csv`` beside the
  images), loadable with ``datasets.load_dataset("imagefolder", data_dir=OUT)``, with the card ``README.md``.

CSV files (the ``csv`` export and every ``metadata.csv``) neutralise spreadsheet formulas: a text cell that starts
with ``=``, ``+``, ``-``, ``@``, a tab or a carriage return gets a leading apostrophe (the OWASP CSV injection rule,
:func:`neutralise_cell`); numbers stay numbers (a valence of -0.5 is written ``-0.5``). Parquet, NPZ and the card
keep the raw values. ``import-labels`` removes the apostrophe again (:func:`unneutralise_cell`), so an exported
note re-imports unchanged.

Splits never put the same media item (or, for video faces, the same person track) in two splits (:mod:`db.splits`);
the card is :func:`db.dataset_card.dataset_card`. The ``class-*`` formats are the online-class tables of
:mod:`db.classroom`. File names inside exports are face ids; the users' file names only appear as data
(``filename`` column).
"""

from __future__ import annotations

import csv
import io
import zipfile
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal, TypeGuard, get_args

import numpy as np
from sqlalchemy import select
from sqlalchemy.orm import Session

from db import csvfile
from db.codecs import PNG_LEVEL, features_from_bytes
from db.crops import as_array, iter_crops
from db.csvfile import CSV_LINE_END, FORMULA_PREFIXES, neutralise_cell
from db.dataset_card import dataset_card
from db.errors import CropsUnavailableError, FeaturesUnavailableError, StoreError
from db.labels import FIELDS, ModelKey
from db.rows import ExportReport, FaceLabel, StudyStats
from db.schema import Face
from db.splits import SPLITS, Split, assign_splits
from models.registry import REGISTRY

FaceFormat = Literal["csv", "parquet", "imagefolder", "features", "hf"]
"""A format of one row (or one image) per face."""
ClassFormat = Literal["class-minutes", "class-segments", "class-overall"]
"""Online-class tables (:mod:`db.classroom`): CSV, or Parquet when the file name ends in ``.parquet``; no images."""
ExportFormat = Literal[FaceFormat, ClassFormat]
"""Every format ``python -m db export --format`` takes."""
FORMATS: tuple[ExportFormat, ...] = get_args(ExportFormat)
CLASS_FORMATS: tuple[ClassFormat, ...] = get_args(ClassFormat)
DEFAULT_INPUT_SIZE = 224
EXPORTED_PREFIX = "exported_"
"""Prefix of the read-only columns recording what a CSV/Parquet export held in each editable column."""
EDITABLE_COLUMNS = FIELDS
"""The columns of a CSV/Parquet export that ``import-labels`` reads as votes where they differ from ``exported_*``."""


def unneutralise_cell(value: str) -> str:
    """Undoes :func:`neutralise_cell`: drops an apostrophe that precedes one of :data:`FORMULA_PREFIXES`."""
    return value[1:] if value.startswith("'") and value[1:].startswith(FORMULA_PREFIXES) else value


# ---------------------------------------------------------------------------------------------------- table


def export_columns(classes: Sequence[str]) -> list[str]:
    """The CSV/Parquet columns, in order (what :func:`records` writes)."""
    cols = [
        "face_id",
        "media_id",
        "filename",
        "media_sha256",
        "media_kind",
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
    ]
    return [*cols, *(f"prob_{c}" for c in classes), "has_crop"]


def records(rows: Sequence[FaceLabel], splits: Mapping[int, Split], classes: Sequence[str]) -> list[dict[str, Any]]:
    """Flat records of the CSV/Parquet export, one per face."""
    out = []
    for r in rows:
        rec: dict[str, Any] = {
            "face_id": r.face_id,
            "media_id": r.media_id,
            "filename": r.filename,
            "media_sha256": r.media_sha256,
            "media_kind": r.media_kind,
            "frame": r.frame,
            "time_s": r.time_s,
            "track_id": r.track_id,
            "track": r.track_index,
            "x1": r.box[0],
            "y1": r.box[1],
            "x2": r.box[2],
            "y2": r.box[3],
            "det_score": r.det_score,
            "split": splits.get(r.face_id),
        }
        for f in ("label", "valence", "arousal", "engagement"):
            rec[f] = getattr(r, f)
            rec[f"{f}_source"] = getattr(r, f"{f}_source")
            rec[f"{f}_annotators"] = getattr(r, f"{f}_annotators")
            rec[f"{f}_agreement"] = getattr(r, f"{f}_agreement")
        rec["note"] = r.note
        rec["human_label"] = r.human_label
        for f in EDITABLE_COLUMNS:
            rec[EXPORTED_PREFIX + f] = rec[f]
        rec["model"] = r.model
        rec["weights_hash"] = r.weights_hash
        rec["model_version"] = r.model_version
        rec["model_label"] = r.model_label
        rec["model_confidence"] = r.model_confidence
        rec["model_valence"] = r.model_valence
        rec["model_arousal"] = r.model_arousal
        rec["model_engagement"] = r.model_engagement
        for c in classes:
            rec[f"prob_{c}"] = (r.model_probs or {}).get(c)
        rec["has_crop"] = r.has_crop
        out.append(rec)
    return out


_LABEL_FIELDS = ("label", "valence", "arousal", "engagement")
_INT_COLUMNS = ("face_id", "media_id", "frame", "track_id", "track", *(f"{f}_annotators" for f in _LABEL_FIELDS))
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
    import pandas as pd

    recs = records(rows, splits, classes)
    df = pd.DataFrame.from_records(recs, columns=export_columns(classes))
    for c in df.columns:
        if c in _INT_COLUMNS:
            df[c] = df[c].astype("Int64")
        elif c in _FLOAT_COLUMNS or c.startswith("prob_"):
            df[c] = pd.to_numeric(df[c]).astype("Float64")
        elif c == "has_crop":
            df[c] = df[c].astype("boolean")
        else:
            df[c] = df[c].astype("string")
            if neutralise:
                df[c] = df[c].map(neutralise_cell, na_action="ignore").astype("string")
    return df


# ---------------------------------------------------------------------------------------------------- crops


def resized_png(data: bytes | np.ndarray, size: int) -> bytes:
    """The crop (PNG bytes or an RGB array) resized to ``size`` x ``size`` (bicubic), as PNG bytes."""
    from PIL import Image

    img = Image.fromarray(as_array(data)).resize((size, size), Image.Resampling.BICUBIC)
    buf = io.BytesIO()
    img.save(buf, format="PNG", compress_level=PNG_LEVEL)  # lossless at any level; level 1 is ~4x faster
    return buf.getvalue()


def input_size(model: str | None) -> tuple[int, str | None]:
    """The registry input size of ``model`` and a note when it had to be assumed."""
    spec = REGISTRY.get(model or "")
    if spec is not None and spec.input_size > 0:
        return spec.input_size, None
    return DEFAULT_INPUT_SIZE, f"model {model!r} is not in the registry: crops resized to {DEFAULT_INPUT_SIZE} px"


# ---------------------------------------------------------------------------------------------------- writers


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
    buf = io.StringIO()
    if rows:
        w = csv.DictWriter(buf, fieldnames=list(rows[0]), lineterminator=CSV_LINE_END)
        w.writeheader()
        w.writerows(
            {k: ("" if v is None else neutralise_cell(v) if isinstance(v, str) else v) for k, v in r.items()}
            for r in rows
        )
    return buf.getvalue()


def _is_class_format(fmt: str) -> TypeGuard[ClassFormat]:
    """Whether ``fmt`` is one of the online-class tables (:data:`CLASS_FORMATS`)."""
    return fmt in CLASS_FORMATS


def export(
    session: Session,
    study: str,
    rows: list[FaceLabel],
    stats: StudyStats,
    primary: ModelKey | None,
    fmt: ExportFormat,
    out: Path,
    *,
    seed: int = 0,
    media_root: Path | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> ExportReport:
    """Writes one export of a study (see the module docstring).

    Args:
        session: An open (read) session, for the crops and features.
        study: The study's name.
        rows: The study's face rows (:func:`db.labels.face_labels`).
        stats: The study's statistics, for the card.
        primary: The model run the rows follow.
        fmt: One of :data:`FORMATS`.
        out: Target file (csv, parquet, imagefolder zip, features npz) or folder (hf).
        seed: Seed of the split assignment.
        media_root: The kept media files, whence video crops are re-cut (:mod:`db.crops`).
        progress: ``progress(done, total)`` as the imagefolder and hf exports write crops.

    Returns:
        Where the export went and what it holds.

    Raises:
        CropsUnavailableError: For imagefolder/hf when no face crop is stored.
        FeaturesUnavailableError: For features when no features are stored.
    """
    if fmt not in FORMATS:
        raise StoreError(f"unknown export format {fmt!r}; use one of {', '.join(FORMATS)}")
    out = Path(out)
    if _is_class_format(fmt):
        return export_class_table(session, study, rows, stats, fmt, out)
    splits = assign_splits(rows, seed)
    notes: list[str] = []
    crops_available = stats.counts["crops"] > 0
    if not rows:
        notes.append("the study has no faces yet")
    elif stats.predictions_only:
        notes.append("predictions only: the study has no human corrections")
    if rows and not crops_available:
        notes.append("face crops unavailable: none stored (features-only mode, or ingested without crops)")
    if fmt in ("imagefolder", "hf") and not crops_available:
        raise CropsUnavailableError(study, fmt, has_faces=bool(rows))

    if fmt in ("csv", "parquet"):
        classes = stats.labels
        df = dataframe(rows, splits, classes, neutralise=fmt == "csv")
        out.parent.mkdir(parents=True, exist_ok=True)
        if fmt == "csv":
            csvfile.write_frame(df, out)
        else:
            df.to_parquet(out, index=False)
        exported = rows
        split_counts = dict(Counter(splits[r.face_id] for r in rows))
        card = dataset_card(stats, exported, fmt, split_counts, notes, crops_available=crops_available)
        out.with_name(out.stem + ".README.md").write_text(card, encoding="utf-8")
    elif fmt == "features":
        exported, split_counts = _write_features(session, study, rows, splits, stats, primary, out, notes)
        card = dataset_card(stats, exported, fmt, split_counts, notes, crops_available=crops_available)
        out.with_name(out.stem + ".README.md").write_text(card, encoding="utf-8")
    else:
        exported, split_counts = _write_images(
            session, rows, splits, stats, primary, fmt, out, notes, media_root=media_root, progress=progress
        )
    return ExportReport(
        path=str(out),
        format=fmt,
        n_faces=len(exported),
        n_human=sum(r.label_source == "human" for r in exported),
        n_model_only=sum(r.label_source == "model" for r in exported),
        predictions_only=stats.predictions_only,
        crops_available=crops_available,
        splits=split_counts,
        notes=tuple(notes),
    )


def _write_features(
    session: Session,
    study: str,
    rows: list[FaceLabel],
    splits: Mapping[int, Split],
    stats: StudyStats,
    primary: ModelKey | None,
    out: Path,
    notes: list[str],
) -> tuple[list[FaceLabel], dict[Split, int]]:
    """Writes the NPZ of the labelled faces with features of one backbone (the primary model's when stored)."""
    labelled = _labelled(rows)
    feature_models = Counter(r.feature_model for r in labelled if r.feature_model)
    if not feature_models:
        raise FeaturesUnavailableError(study)
    wanted = primary[0] if primary and primary[0] in feature_models else feature_models.most_common(1)[0][0]
    chosen = [r for r in labelled if r.feature_model == wanted]
    if len(chosen) < len(labelled):
        notes.append(f"{len(labelled) - len(chosen)} labelled faces without features of {wanted!r} left out")
    ids = [r.face_id for r in chosen]
    feats: dict[int, np.ndarray] = {}
    for i in range(0, len(ids), 512):
        stmt = select(Face.id, Face.features, Face.feature_dim).where(Face.id.in_(ids[i : i + 512]))
        for fid, data, dim in session.execute(stmt):
            if data is not None and dim is not None:
                feats[fid] = features_from_bytes(data, dim)
    classes = list(stats.labels)
    group_names = sorted({r.group for r in chosen})
    group_index = {g: i for i, g in enumerate(group_names)}

    def arr(field: str) -> np.ndarray:
        return np.array([np.nan if getattr(r, field) is None else getattr(r, field) for r in chosen], dtype=np.float64)

    dim = next(iter(feats.values())).size if feats else 0
    out.parent.mkdir(parents=True, exist_ok=True)
    payload: dict[str, Any] = {
        "X": np.stack([feats[r.face_id] for r in chosen]) if chosen else np.zeros((0, dim), np.float32),
        "y": np.array([classes.index(str(r.label)) for r in chosen], dtype=np.int64),
        "groups": np.array([group_index[r.group] for r in chosen], dtype=np.int64),
        "group_names": np.array(group_names, dtype=str),
        "face_id": np.array(ids, dtype=np.int64),
        "classes": np.array(classes, dtype=str),
        "split": np.array([splits[r.face_id] for r in chosen], dtype=str),
        "label_source": np.array([r.label_source for r in chosen], dtype=str),
        "label_annotators": np.array([r.label_annotators for r in chosen], dtype=np.int64),
        "label_agreement": arr("label_agreement"),
        "valence": arr("valence"),
        "arousal": arr("arousal"),
        "engagement": arr("engagement"),
        "model": np.array([r.model or "" for r in chosen], dtype=str),
        "weights_hash": np.array([r.weights_hash or "" for r in chosen], dtype=str),
        "feature_model": np.array(wanted),
    }
    with out.open("wb") as f:
        np.savez_compressed(f, **payload)
    return chosen, dict(Counter(splits[r.face_id] for r in chosen))


def _write_images(
    session: Session,
    rows: list[FaceLabel],
    splits: Mapping[int, Split],
    stats: StudyStats,
    primary: ModelKey | None,
    fmt: ExportFormat,
    out: Path,
    notes: list[str],
    *,
    media_root: Path | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> tuple[list[FaceLabel], dict[Split, int]]:
    """Writes the labelled faces' resized crops: an ``imagefolder`` zip, else the ``hf`` folder layout.

    Crops stream (:func:`db.crops.iter_crops`): stored ones in batches, re-cut ones recording by recording, each
    recording decoded once in time order; memory holds one batch or one frame, never the study's crops.
    """
    labelled = _labelled(rows)
    size, note = input_size(primary[0] if primary else None)
    if note:
        notes.append(note)
    notes.append(f"crops resized to {size} x {size} px (the model's input size)")
    by_id = {r.face_id: r for r in labelled}
    exported: list[FaceLabel] = []
    out.parent.mkdir(parents=True, exist_ok=True)
    if fmt == "imagefolder":
        with zipfile.ZipFile(out, "w", compression=zipfile.ZIP_STORED) as zf:
            for fid, data in iter_crops(session, media_root, list(by_id), progress=progress):
                r = by_id[fid]
                zf.writestr(f"{splits[fid]}/{r.label}/{fid}.png", resized_png(data, size))
                exported.append(r)
            _missing_note(labelled, exported, notes)
            meta = _metadata_rows(exported, splits, lambda r: f"{splits[r.face_id]}/{r.label}/{r.face_id}.png")
            zf.writestr("metadata.csv", _write_csv(meta))
            split_counts = dict(Counter(splits[r.face_id] for r in exported))
            zf.writestr("README.md", dataset_card(stats, exported, fmt, split_counts, notes, crops_available=True))
        return exported, split_counts

    if out.exists() and any(out.iterdir()):
        raise StoreError(f"{out}: the folder exists and is not empty; export into a new folder")
    out.mkdir(parents=True, exist_ok=True)
    for split in SPLITS:
        (out / split).mkdir(exist_ok=True)
    for fid, data in iter_crops(session, media_root, list(by_id), progress=progress):
        (out / splits[fid] / f"{fid}.png").write_bytes(resized_png(data, size))
        exported.append(by_id[fid])
    _missing_note(labelled, exported, notes)
    split_counts = {}
    for split in SPLITS:
        part = [r for r in exported if splits[r.face_id] == split]
        split_counts[split] = len(part)
        if part:
            meta = _metadata_rows(part, splits, lambda r: f"{r.face_id}.png", typed=True)
            (out / split / "metadata.csv").write_text(_write_csv(meta), encoding="utf-8")
        else:
            (out / split).rmdir()
    (out / "README.md").write_text(
        dataset_card(stats, exported, fmt, split_counts, notes, crops_available=True), encoding="utf-8"
    )
    return exported, split_counts


def _missing_note(labelled: list[FaceLabel], exported: list[FaceLabel], notes: list[str]) -> None:
    if len(exported) < len(labelled):
        notes.append(f"{len(labelled) - len(exported)} labelled faces without a stored crop left out")


# ---------------------------------------------------------------------------------------------------- class tables


def export_class_table(
    session: Session, study: str, rows: list[FaceLabel], stats: StudyStats, fmt: ClassFormat, out: Path
) -> ExportReport:
    """Writes one online-class table (:mod:`db.classroom`) with its card ``STEM.README.md``; never an image."""
    from db import classroom

    tables = classroom.class_tables(session, study, rows)
    df = classroom.dataframe(tables, fmt)
    out.parent.mkdir(parents=True, exist_ok=True)
    if out.suffix.lower() == ".parquet":
        df.to_parquet(out, index=False)
    else:
        csvfile.write_frame(df, out)
    out.with_name(out.stem + ".README.md").write_text(classroom.card(study, fmt, tables), encoding="utf-8")
    notes = [f"{len(df)} rows"] + ([] if len(df) else ["no recording of the study has persons yet"])
    return ExportReport(
        path=str(out),
        format=fmt,
        n_faces=len(rows),
        n_human=sum(r.label_source == "human" for r in rows),
        n_model_only=sum(r.label_source == "model" for r in rows),
        predictions_only=stats.predictions_only,
        crops_available=False,
        splits={},
        notes=tuple(notes),
    )
