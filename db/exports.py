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
:mod:`db.classroom`. The work is split by job: the columns and rows in :mod:`db.export_table`, crops in
:mod:`db.export_images`, the features NPZ in :mod:`db.export_features`, the streamed formats in
:mod:`db.export_stream`; their public names are importable from here. File names inside exports are face ids;
the users' file names only appear as data (``filename`` column).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from pathlib import Path

from sqlalchemy.orm import Session

from db import csvfile
from db.class_order import export_classes
from db.csvfile import neutralise_cell
from db.dataset_card import dataset_card
from db.errors import CropsUnavailableError, StoreError
from db.export_features import FEATURES_ZIP_LEVEL, _write_features, decode_compact
from db.export_images import DEFAULT_INPUT_SIZE, IMAGE_THREADS, _write_images, input_size, resized_png, resized_pngs
from db.export_stream import (
    CSV_WORKERS,
    PARALLEL_MIN_FACES,
    STREAM_FORMATS,
    _row_writer,
    export_stream,
    is_stream_format,
)
from db.export_table import (
    CLASS_FORMATS,
    EDITABLE_COLUMNS,
    EXPORTED_PREFIX,
    FORMATS,
    _study_notes,
    dataframe,
    export_columns,
    frame_of_values,
    is_class_format,
    records,
    row_values,
    unneutralise_cell,
)
from db.labels import ModelKey
from db.rows import ClassFormat, ExportFormat, ExportReport, FaceLabel, StudyStats
from db.splits import assign_splits

__all__ = [
    "CLASS_FORMATS",
    "CSV_WORKERS",
    "DEFAULT_INPUT_SIZE",
    "EDITABLE_COLUMNS",
    "EXPORTED_PREFIX",
    "FEATURES_ZIP_LEVEL",
    "FORMATS",
    "IMAGE_THREADS",
    "PARALLEL_MIN_FACES",
    "STREAM_FORMATS",
    "_row_writer",
    "dataframe",
    "dataset_card",
    "decode_compact",
    "export",
    "export_class_table",
    "export_classes",
    "export_columns",
    "export_stream",
    "frame_of_values",
    "input_size",
    "is_class_format",
    "is_stream_format",
    "neutralise_cell",
    "records",
    "resized_png",
    "resized_pngs",
    "row_values",
    "unneutralise_cell",
]


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

    ``Exports.export`` calls it for ``imagefolder`` and ``hf``; CSV, Parquet and features go through
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
