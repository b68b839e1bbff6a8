"""Exports of a study for download (CSV, Parquet, ImageFolder, features, Hugging Face) and its statistics."""

from __future__ import annotations

import io
import re
import tempfile
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Literal

from db.errors import StudyNotFoundError
from db.rows import StudyStats
from db.services import LabelStore
from webapp.services.who import require_owner

DownloadFormat = Literal["csv", "parquet", "imagefolder", "features", "hf"]
"""The study exports offered as downloads."""

EXPORT_FORMATS: dict[DownloadFormat, tuple[str, str, str]] = {
    "csv": ("CSV of faces", "csv", "text/csv"),
    "parquet": ("Parquet of faces", "parquet", "application/vnd.apache.parquet"),
    "imagefolder": ("ImageFolder zip of face crops (train/val/test)", "zip", "application/zip"),
    "features": ("Features NPZ (X, y, groups)", "npz", "application/octet-stream"),
    "hf": ("Hugging Face imagefolder dataset (zip)", "zip", "application/zip"),
}
"""Format -> (description, file suffix, MIME type) of each export offered as a download."""


def study_stats(store: LabelStore, study: str) -> StudyStats | None:
    """Counts, confusion and agreement of a study, None for a study without data."""
    try:
        return store.exports.stats(study)
    except StudyNotFoundError:
        return None


def export_file_name(study: str, fmt: DownloadFormat) -> str:
    """The download's file name: ``affectlab-<study>-<format>.<suffix>``, safe characters only."""
    safe = re.sub(r"[^A-Za-z0-9_-]+", "-", study).strip("-") or "study"
    return f"affectlab-{safe}-{fmt}.{EXPORT_FORMATS[fmt][1]}"


def export_bytes(
    store: LabelStore, study: str, fmt: str, *, owner: bool, progress: Callable[[int, int], None] | None = None
) -> bytes:
    """One export of a study as the bytes of the file offered for download.

    CSV, Parquet and features NPZ are the export files themselves; the ImageFolder export is its zip; the Hugging
    Face layout (a folder) is zipped. CSV, Parquet and features are written page by page and call
    ``progress(faces done, faces in the study)`` after each page (e.g. a progress bar's update).

    Raises:
        NotAllowedError: For anyone but an owner of the study.
        CropsUnavailableError, FeaturesUnavailableError, StoreError: As ``Exports.export``.
    """
    require_owner(owner, f"exporting study {study!r}")
    chosen = next((f for f in EXPORT_FORMATS if f == fmt), None)
    if chosen is None:
        raise ValueError(f"unknown export format {fmt!r}: use one of {', '.join(EXPORT_FORMATS)}")
    with tempfile.TemporaryDirectory(prefix="affectlab-export-") as tmp:
        out = Path(tmp) / ("export" if chosen == "hf" else f"export.{EXPORT_FORMATS[chosen][1]}")
        store.exports.export(study, chosen, out, progress=progress)
        if fmt != "hf":
            return out.read_bytes()
        buf = io.BytesIO()
        with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_DEFLATED) as zf:
            for f in sorted(out.rglob("*")):
                if f.is_file():
                    zf.write(f, f.relative_to(out).as_posix())
        return buf.getvalue()


def dataset_card(store: LabelStore, study: str, *, owner: bool) -> str:
    """The dataset card (README) of a study: counts, label sources, agreement, licence notes.

    Raises:
        NotAllowedError: For anyone but an owner of the study.
    """
    require_owner(owner, f"exporting the dataset card of study {study!r}")
    with tempfile.TemporaryDirectory(prefix="affectlab-card-") as tmp:
        out = Path(tmp) / "faces.csv"
        store.exports.export(study, "csv", out)
        return out.with_name("faces.README.md").read_text(encoding="utf-8")
