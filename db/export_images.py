"""The image exports' crops: resized to the model's input size (in threads) and written to ``imagefolder``/``hf``.

Crops stream recording by recording (:func:`db.crops.iter_crops`); see :mod:`db.exports` for the layouts.
"""

from __future__ import annotations

import io
import zipfile
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path

import numpy as np
from sqlalchemy.orm import Session

from db.codecs import PNG_LEVEL
from db.crops import as_array, iter_crops
from db.dataset_card import dataset_card
from db.errors import StoreError
from db.export_table import _labelled, _metadata_rows, _write_csv
from db.labels import ModelKey
from db.rows import ExportFormat, FaceLabel, Split, StudyStats
from db.splits import SPLITS
from models.registry import REGISTRY

DEFAULT_INPUT_SIZE = 224


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
