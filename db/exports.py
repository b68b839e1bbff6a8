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

import io
import zipfile
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeGuard, get_args

import numpy as np
from sqlalchemy import select
from sqlalchemy.orm import Session

from db import csvfile, feature_store
from db.class_order import export_classes
from db.codecs import PNG_LEVEL, features_from_bytes
from db.crops import as_array, iter_crops
from db.csvfile import FORMULA_PREFIXES, neutralise_cell
from db.dataset_card import dataset_card
from db.errors import CropsUnavailableError, FeaturesUnavailableError, StoreError
from db.labels import FIELDS, ModelKey
from db.rows import ClassFormat, ExportFormat, ExportReport, FaceFormat, FaceLabel, Split, StudyStats
from db.schema import Face
from db.splits import SPLITS, assign_splits
from models.registry import REGISTRY

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
        *map(probs.get, classes),
        r.has_crop,
    ]


def records(rows: Sequence[FaceLabel], splits: Mapping[int, Split], classes: Sequence[str]) -> list[dict[str, Any]]:
    """Flat records of the CSV/Parquet export, one per face."""
    cols = export_columns(classes)
    return [dict(zip(cols, row_values(r, splits.get(r.face_id), classes), strict=True)) for r in rows]


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
    values = [row_values(r, splits.get(r.face_id), classes) for r in rows]
    return frame_of_values(values, classes, neutralise=neutralise)


def frame_of_values(values: Sequence[list[Any]], classes: Sequence[str], *, neutralise: bool = False) -> Any:
    """:func:`dataframe` of rows already flattened (:func:`row_values` order, as :mod:`db.export_rows` gives them)."""
    import pandas as pd

    df = pd.DataFrame.from_records(values, columns=export_columns(classes))
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


IMAGE_THREADS = 2
"""Threads that resize and PNG-encode crops for the image exports (Pillow releases the GIL in both)."""


def resized_pngs(
    crops: Iterator[tuple[int, bytes | np.ndarray]], size: int, *, threads: int = IMAGE_THREADS, chunk: int = 64
) -> Iterator[tuple[int, bytes]]:
    """``(face_id, resized PNG)`` of crops (:func:`resized_png`) in their order, ``threads`` encoding at once.

    The crops are taken ``chunk`` at a time, so memory holds at most one chunk of crops and PNGs.
    """
    from concurrent.futures import ThreadPoolExecutor
    from itertools import islice

    if threads <= 1:
        yield from ((fid, resized_png(data, size)) for fid, data in crops)
        return
    with ThreadPoolExecutor(threads, thread_name_prefix="affectlab-png") as pool:
        while part := list(islice(crops, chunk)):
            yield from zip((fid for fid, _ in part), pool.map(lambda c: resized_png(c[1], size), part), strict=True)


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
    """Writes one export of a study from its rows read whole (see the module docstring).

    ``LabelStore.export`` calls it for ``imagefolder`` and ``hf``; CSV, Parquet and features go through
    :func:`export_stream` instead, and the tests check that both write the same files.

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
    if is_class_format(fmt):
        return export_class_table(session, study, fmt, out)
    splits = assign_splits(rows, seed)
    crops_available = stats.counts["crops"] > 0
    notes = _study_notes(bool(rows), stats.predictions_only, crops_available)
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
    feats = feature_store.features(session, ids)  # rows, or finished videos' files
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
            for fid, png in resized_pngs(iter_crops(session, media_root, list(by_id), progress=progress), size):
                r = by_id[fid]
                zf.writestr(f"{splits[fid]}/{r.label}/{fid}.png", png)
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
    for fid, png in resized_pngs(iter_crops(session, media_root, list(by_id), progress=progress), size):
        (out / splits[fid] / f"{fid}.png").write_bytes(png)
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


def export_class_table(session: Session, study: str, fmt: ClassFormat, out: Path) -> ExportReport:
    """Writes one online-class table (:mod:`db.classroom`) with its card ``STEM.README.md``; never an image.

    The report counts the faces the tables rest on (the recordings' persons' faces), human- and model-labelled.
    """
    from db import classroom, repo

    tables = classroom.class_tables(session, study)
    df = classroom.dataframe(tables, fmt)
    out.parent.mkdir(parents=True, exist_ok=True)
    if out.suffix.lower() == ".parquet":
        df.to_parquet(out, index=False)
    else:
        csvfile.write_frame(df, out)
    from db.codebook import method, method_lines
    from db.recording_info import recording_infos

    study_id = repo.get_study(session, study).id
    how = method(session, study_id, tables, recording_infos(session, study_id))
    card = classroom.card(study, fmt, tables) + "\n" + "\n".join(method_lines(how)) + "\n"
    out.with_name(out.stem + ".README.md").write_text(card, encoding="utf-8")
    notes = [f"{len(df)} rows"] + ([] if len(df) else ["no recording of the study has persons yet"])
    voted = repo.has_votes(session, repo.get_study(session, study).id)
    return ExportReport(
        path=str(out),
        format=fmt,
        n_faces=tables.n_human + tables.n_model,
        n_human=tables.n_human,
        n_model_only=tables.n_model,
        predictions_only=not voted,
        crops_available=False,
        splits={},
        notes=tuple(notes),
    )


# ---------------------------------------------------------------------------------------------------- streaming

STREAM_FORMATS: tuple[FaceFormat, ...] = ("csv", "parquet", "features")
"""The formats :func:`export_stream` writes page by page, in memory that does not grow with the study."""


CSV_WORKERS = 2
"""Processes that write a large CSV export, each a contiguous half of the faces (the machine's two cores)."""
PARALLEL_MIN_FACES = 200_000
"""Studies from this many faces get their CSV written by :data:`CSV_WORKERS` processes."""


FEATURES_ZIP_LEVEL = 1
"""Deflate level of the features NPZ (the compact features shrink about as much as at zlib's default 6)."""


def is_stream_format(fmt: str) -> TypeGuard[FaceFormat]:
    """Whether :func:`export_stream` writes ``fmt`` (:data:`STREAM_FORMATS`)."""
    return fmt in STREAM_FORMATS


def _row_writer(f: Any, cols: Sequence[str]) -> csvfile.RowWriter:
    """The one CSV writer (:class:`db.csvfile.RowWriter`) set up for the export's columns."""
    return csvfile.RowWriter(
        f,
        text_at=[i for i, c in enumerate(cols) if _column_kind(c) == "text"],
        float_at=[i for i, c in enumerate(cols) if _column_kind(c) == "float"],
    )


class _Column:
    """One array of the features NPZ, written to a temporary file row by row and copied into the zip at the end."""

    def __init__(self, folder: Path, name: str, dtype: Any, width: int = 0) -> None:
        self.name = name
        self.dtype = np.dtype(dtype)
        self.width = width
        self.rows = 0
        self.path = folder / f"{name}.bin"
        self.file = self.path.open("wb")

    def write(self, values: Any) -> None:
        arr = np.ascontiguousarray(values, dtype=self.dtype)
        self.rows += len(arr)
        self.file.write(arr.tobytes())

    def copy_into(self, zf: zipfile.ZipFile, remap: np.ndarray | None = None, out_dtype: Any = None) -> None:
        """Writes ``NAME.npy`` into the zip: codes mapped through ``remap`` (for classes, groups and strings)."""
        self.file.close()
        dtype = np.dtype(out_dtype) if out_dtype is not None else self.dtype
        shape: tuple[int, ...] = (self.rows, self.width) if self.width else (self.rows,)
        row_bytes = self.dtype.itemsize * max(1, self.width)
        with zf.open(f"{self.name}.npy", "w", force_zip64=True) as f, self.path.open("rb") as src:
            header = {"descr": np.lib.format.dtype_to_descr(dtype), "fortran_order": False, "shape": shape}
            np.lib.format.write_array_header_1_0(f, header)
            while chunk := src.read(row_bytes * 8192):
                arr = np.frombuffer(chunk, dtype=self.dtype)
                f.write((remap[arr] if remap is not None else arr).astype(dtype, copy=False).tobytes())
        self.path.unlink()


class _Codes:
    """Codes of a low-cardinality text column (first seen, first code), and their final text array."""

    def __init__(self) -> None:
        self.index: dict[str, int] = {}

    def code(self, value: str) -> int:
        return self.index.setdefault(value, len(self.index))

    def remap(self, final: Sequence[str] | None = None) -> tuple[np.ndarray, Any]:
        """Code -> value (or -> position in ``final``), and the value dtype (``<U`` of the longest value used)."""
        if final is not None:
            pos = {v: i for i, v in enumerate(final)}
            return np.array([pos[v] for v in self.index], dtype=np.int64), np.int64
        values = list(self.index)
        width = max([1, *(len(v) for v in values)])
        return np.array(values, dtype=f"<U{width}"), f"<U{width}"


def export_stream(
    session: Session,
    study: str,
    fmt: FaceFormat,
    out: Path,
    *,
    model: str | None = None,
    seed: int = 0,
    progress: Callable[[int, int], None] | None = None,
    page_size: int | None = None,
    workers: int = CSV_WORKERS,
) -> ExportReport:
    """Writes a CSV, Parquet or features export page by page (see the module docstring), in bounded memory.

    The rows are read in keyset pages (:mod:`db.face_pages`), each page resolved from its own faces' votes, and
    written at once; the split of each face comes from its group (:func:`db.splits.group_splits` over the group
    sizes counted in SQL); the statistics of the card are accumulated on the way and the card written last.

    Args:
        session: An open (read) session.
        study: The study's name.
        fmt: ``csv``, ``parquet`` or ``features``.
        out: The file to write.
        model: The model whose predictions to follow (default: the study's most used run).
        seed: Seed of the split assignment.
        progress: Called with ``(faces done, faces in the study)`` after each page.
        page_size: Faces per page (default :data:`db.face_pages.PAGE_SIZE`).
        workers: Processes writing the CSV of a study of :data:`PARALLEL_MIN_FACES` faces or more (each a
            contiguous half of the face ids, appended in order: the same file as one process writes).

    Raises:
        FeaturesUnavailableError: For features when no features are stored.
    """
    from db import export_rows, face_pages, labels, quality, repo
    from db.dataset_card import CardCounts
    from db.splits import group_sizes, group_splits

    if fmt not in STREAM_FORMATS:
        raise StoreError(f"format {fmt!r} is not streamed; use one of {', '.join(STREAM_FORMATS)}")
    out = Path(out)
    st = repo.get_study(session, study)
    primary = labels.choose_model(session, st.id, model)
    counts = repo.count_rows(session, st.id)
    by_group = group_splits(group_sizes(session, st.id), seed)
    crops_available = counts["crops"] > 0
    acc = quality.StatsAccumulator()
    card_counts = CardCounts()
    split_counts: Counter[Split] = Counter()
    size = page_size or face_pages.PAGE_SIZE
    out.parent.mkdir(parents=True, exist_ok=True)
    notes: list[str] = []
    if fmt in ("csv", "parquet"):
        classes = export_classes(session, st.id, primary)
        tally = export_rows.Tally(acc, card_counts, split_counts)
        if fmt == "csv":
            _stream_csv(session, st.id, primary, out, classes, by_group, tally, size, progress, workers)
        else:
            _stream_parquet(session, st.id, primary, out, classes, by_group, tally, size, progress)
    else:
        pages = face_pages.iter_face_pages(session, st.id, primary, page_size=size, progress=progress)
        _stream_features(session, st.id, study, out, pages, primary, by_group, acc, card_counts, split_counts, notes)
    stats = acc.result(st.name, counts, primary)
    notes = [*_study_notes(counts["faces"] > 0, stats.predictions_only, crops_available), *notes]
    splits_out = {k: split_counts[k] for k in split_counts}
    card = dataset_card(stats, card_counts, fmt, splits_out, notes, crops_available=crops_available)
    out.with_name(out.stem + ".README.md").write_text(card, encoding="utf-8")
    return ExportReport(
        path=str(out),
        format=fmt,
        n_faces=card_counts.n,
        n_human=card_counts.human,
        n_model_only=card_counts.model_only,
        predictions_only=stats.predictions_only,
        crops_available=crops_available,
        splits=splits_out,
        notes=tuple(notes),
    )


def _csv_rows(
    w: Any,
    session: Session,
    study_id: int,
    primary: ModelKey | None,
    classes: Sequence[str],
    by_group: Mapping[str, Split],
    tally: Any,
    page_size: int,
    progress: Callable[[int, int], None] | None,
    after: int | None = None,
    until: int | None = None,
) -> None:
    """Writes the rows of the faces in ``(after, until]`` with ``w`` (the one CSV writer), counting them in ``tally``.

    The rows come from :func:`db.export_rows.iter_row_pages` (SQL tuples, a list per face nobody judged).
    """
    from db import export_rows

    pages = export_rows.iter_row_pages(
        session,
        study_id,
        primary,
        classes,
        by_group,
        tally,
        row_values,
        page_size=page_size,
        progress=progress,
        after=after,
        until=until,
    )
    for rows in pages:
        w.write_rows(rows)


def _csv_part(
    url: str,
    study_id: int,
    primary: ModelKey | None,
    classes: Sequence[str],
    by_group: Mapping[str, Split],
    after: int,
    path: str,
    page_size: int,
    done: Any,
    results: Any,
) -> None:
    """A worker process: writes the CSV rows of the faces after id ``after`` to ``path`` (no header)."""
    from db import quality
    from db.dataset_card import CardCounts
    from db.engine import make_engine
    from db.export_rows import Tally

    try:
        engine = make_engine(url)
        tally = Tally(quality.StatsAccumulator(), CardCounts())
        with Session(engine) as session, open(path, "w", encoding="utf-8", newline="") as f:

            def step(n: int, _total: int) -> None:
                done.value = n

            w = _row_writer(f, export_columns(classes))
            _csv_rows(w, session, study_id, primary, classes, by_group, tally, page_size, step, after=after)
        engine.dispose()
        results.put((tally.acc, tally.card, tally.splits, None))
    except BaseException as e:  # the parent raises it
        results.put((None, None, None, f"{type(e).__name__}: {e}"))


def _stream_csv(
    session: Session,
    study_id: int,
    primary: ModelKey | None,
    out: Path,
    classes: Sequence[str],
    by_group: Mapping[str, Split],
    tally: Any,
    page_size: int,
    progress: Callable[[int, int], None] | None,
    workers: int,
) -> None:
    """Writes the CSV: the header, then the rows; a large study's second half by a second process meanwhile."""
    import multiprocessing

    from db import face_pages
    from db.schema import Media

    cols = export_columns(classes)
    total = face_pages.count_faces(session, study_id)
    engine = session.get_bind().engine
    split_at = None
    if workers > 1 and total >= PARALLEL_MIN_FACES and engine.url.database not in (None, "", ":memory:"):
        ids = select(Face.id).join(Media, Face.media_id + 0 == Media.id).where(Media.study_id == study_id)
        split_at = session.scalar(ids.order_by(Face.id).offset(total // 2).limit(1))
    with out.open("w", encoding="utf-8", newline="") as f:
        w = _row_writer(f, cols)
        w.header(cols)
        if split_at is None:
            _csv_rows(w, session, study_id, primary, classes, by_group, tally, page_size, progress)
            return
        ctx = multiprocessing.get_context("spawn")
        done = ctx.Value("q", 0)
        results = ctx.Queue()
        part = out.with_name(out.name + ".part")
        url = engine.url.render_as_string(hide_password=False)
        args = (url, study_id, primary, tuple(classes), dict(by_group), split_at, str(part), page_size, done, results)
        proc = ctx.Process(target=_csv_part, args=args, daemon=True)
        proc.start()
        try:

            def step(n: int, _total: int) -> None:
                if progress is not None:
                    progress(min(total, n + done.value), total)

            _csv_rows(w, session, study_id, primary, classes, by_group, tally, page_size, step, until=split_at)
            got = results.get()
            proc.join()
            if got[3] is not None:
                raise StoreError(f"writing the second half of the CSV export failed: {got[3]}")
            tally.acc.merge(got[0])
            tally.card.merge(got[1])
            tally.splits.update(got[2])
            f.flush()
            with part.open("r", encoding="utf-8", newline="") as src:
                while chunk := src.read(1 << 20):
                    f.write(chunk)
            if progress is not None:
                progress(total, total)
        finally:
            if proc.is_alive():
                proc.kill()
            part.unlink(missing_ok=True)


def _column_kind(c: str) -> str:
    """``int``, ``float``, ``bool`` or ``text``: the type :func:`dataframe` gives an export column."""
    if c in _INT_COLUMNS:
        return "int"
    if c in _FLOAT_COLUMNS or c.startswith("prob_"):
        return "float"
    return "bool" if c == "has_crop" else "text"


def _stream_parquet(
    session: Session,
    study_id: int,
    primary: ModelKey | None,
    out: Path,
    classes: Sequence[str],
    by_group: Mapping[str, Split],
    tally: Any,
    page_size: int,
    progress: Callable[[int, int], None] | None,
) -> None:
    """Writes the Parquet file one row group per page (rows from :func:`db.export_rows.iter_row_pages`)."""
    import pyarrow as pa  # type: ignore[import-untyped]
    import pyarrow.parquet as pq  # type: ignore[import-untyped]

    from db import export_rows

    writer = None
    pages = export_rows.iter_row_pages(
        session, study_id, primary, classes, by_group, tally, row_values, page_size=page_size, progress=progress
    )
    try:
        for values in pages:
            table = pa.Table.from_pandas(frame_of_values(values, classes), preserve_index=False)
            if writer is None:
                writer = pq.ParquetWriter(out, table.schema)
            writer.write_table(table)
        if writer is None:
            dataframe([], {}, classes).to_parquet(out, index=False)
    finally:
        if writer is not None:
            writer.close()


def _feature_models(session: Session, study_id: int) -> Counter[str]:
    from sqlalchemy import func

    from db.schema import Media

    stmt = (
        select(Face.feature_model, func.count(Face.id))
        .join(Media, Face.media_id == Media.id)
        .where(Media.study_id == study_id, Face.feature_model.is_not(None))
        .group_by(Face.feature_model)
    )
    return Counter({str(m): int(n) for m, n in session.execute(stmt)})


def _page_features(session: Session, face_ids: Sequence[int]) -> dict[int, np.ndarray]:
    """The stored feature vectors of some faces (faces without are absent).

    Compact vectors of one length are decoded together (:func:`decode_compact`), others one by one.
    """
    out: dict[int, np.ndarray] = {}
    if not face_ids:
        return out
    compact: dict[int, list[tuple[int, bytes]]] = {}
    for fid, (data, dim) in sorted(feature_store.stored_bytes(session, face_ids).items()):  # rows or files
        if len(data) == dim + 8:
            compact.setdefault(int(dim), []).append((int(fid), bytes(data)))
        else:
            out[int(fid)] = features_from_bytes(data, dim)
    for dim, items in compact.items():
        for (fid, _), vec in zip(items, decode_compact(b"".join(d for _, d in items), dim), strict=True):
            out[fid] = vec
    return out


def decode_compact(data: bytes, dim: int) -> np.ndarray:
    """Compact feature vectors of ``dim`` values stored back to back, decoded at once (``(n, dim)`` float32).

    The same arithmetic as :func:`db.codecs.features_from_bytes` (float64 ``lo + step * q``, then float32), so the
    values are equal to the ones decoded one by one.
    """
    raw = np.frombuffer(data, dtype=np.uint8).reshape(-1, dim + 8)
    head = np.ascontiguousarray(raw[:, :8]).view("<f4").astype(np.float64)
    q = raw[:, 8:].astype(np.float64)
    out: np.ndarray = (head[:, :1] + head[:, 1:2] * q).astype(np.float32)
    return out


def _stream_features(
    session: Session,
    study_id: int,
    study: str,
    out: Path,
    pages: Iterator[list[FaceLabel]],
    primary: ModelKey | None,
    by_group: Mapping[str, Split],
    acc: Any,
    card_counts: Any,
    split_counts: Counter[Split],
    notes: list[str],
) -> None:
    """The features NPZ of the labelled faces with features of one backbone, written column by column."""
    import tempfile

    feature_models = _feature_models(session, study_id)
    if not feature_models:
        raise FeaturesUnavailableError(study)
    wanted = primary[0] if primary and primary[0] in feature_models else feature_models.most_common(1)[0][0]
    left_out = 0
    codes = {k: _Codes() for k in ("y", "groups", "split", "label_source", "model", "weights_hash")}
    with tempfile.TemporaryDirectory(prefix="affectlab-npz-", dir=out.parent) as tmp:
        folder = Path(tmp)
        x: _Column | None = None
        ints = {k: _Column(folder, k, np.int64) for k in ("face_id", "label_annotators", *codes)}
        floats = {k: _Column(folder, k, np.float64) for k in ("label_agreement", "valence", "arousal", "engagement")}
        for page in pages:
            chosen = []
            for r in page:
                acc.add(r)
                if not r.label:
                    continue
                if r.feature_model != wanted:
                    left_out += 1
                    continue
                chosen.append(r)
            feats = _page_features(session, [r.face_id for r in chosen])
            left_out += sum(1 for r in chosen if r.face_id not in feats)
            chosen = [r for r in chosen if r.face_id in feats]
            if not chosen:
                continue
            if x is None:
                x = _Column(folder, "X", np.float32, width=next(iter(feats.values())).size)
            x.write(np.stack([feats[r.face_id] for r in chosen]))
            for r in chosen:
                card_counts.add(r)
                split_counts[by_group[r.group]] += 1
            ints["face_id"].write([r.face_id for r in chosen])
            ints["label_annotators"].write([r.label_annotators for r in chosen])
            ints["y"].write([codes["y"].code(str(r.label)) for r in chosen])
            ints["groups"].write([codes["groups"].code(r.group) for r in chosen])
            ints["split"].write([codes["split"].code(by_group[r.group]) for r in chosen])
            ints["label_source"].write([codes["label_source"].code(r.label_source) for r in chosen])
            ints["model"].write([codes["model"].code(r.model or "") for r in chosen])
            ints["weights_hash"].write([codes["weights_hash"].code(r.weights_hash or "") for r in chosen])
            for k, c in floats.items():
                c.write([np.nan if getattr(r, k) is None else getattr(r, k) for r in chosen])
        if left_out:
            notes.append(f"{left_out} labelled faces without features of {wanted!r} left out")
        classes = list(acc.classes())
        group_names = sorted(codes["groups"].index)
        # Deflate level 1: the (compact, so 256 values per vector) features shrink about as much as at the default
        # level 6 (243 vs 242 MB at 10^5 faces), in much less time (deflating was half of this export's time).
        zip_args: dict[str, Any] = {"compression": zipfile.ZIP_DEFLATED, "allowZip64": True}
        zip_args["compresslevel"] = FEATURES_ZIP_LEVEL
        with zipfile.ZipFile(out, "w", **zip_args) as zf:
            if x is None:
                dim = 0
                _put(zf, "X.npy", _npy(np.zeros((0, dim), np.float32)))
            else:
                x.copy_into(zf)
            for k in ("y", "groups"):
                remap, dtype = codes[k].remap(classes if k == "y" else group_names)
                ints[k].copy_into(zf, remap, dtype)
            _put(zf, "group_names.npy", _npy(np.array(group_names, dtype=str)))
            ints["face_id"].copy_into(zf)
            _put(zf, "classes.npy", _npy(np.array(classes, dtype=str)))
            for k in ("split", "label_source"):
                ints[k].copy_into(zf, *codes[k].remap())
            ints["label_annotators"].copy_into(zf)
            for c in floats.values():
                c.copy_into(zf)
            for k in ("model", "weights_hash"):
                ints[k].copy_into(zf, *codes[k].remap())
            _put(zf, "feature_model.npy", _npy(np.array(wanted)))


def _put(zf: zipfile.ZipFile, name: str, data: bytes) -> None:
    """Writes a member dated like the streamed ones (1980-01-01), so that the same study exports the same bytes."""
    with zf.open(name, "w") as f:
        f.write(data)


def _npy(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.lib.format.write_array(buf, arr, allow_pickle=False)
    return buf.getvalue()
