"""The ``features`` export: an NPZ of backbone features (``X``), labels, split groups and provenance.

Features are read through :mod:`db.feature_store` (rows, pending, or a finished video's file); the streamed writer
writes each array column by column to a temporary file and copies it into the zip, every member dated 1980-01-01 so
that the same study exports the same bytes.
"""

from __future__ import annotations

import io
import zipfile
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from sqlalchemy import select
from sqlalchemy.orm import Session

from db import feature_store
from db.codecs import features_from_bytes
from db.errors import FeaturesUnavailableError
from db.export_table import _labelled
from db.labels import ModelKey
from db.rows import FaceLabel, Split, StudyStats
from db.schema import Face


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


FEATURES_ZIP_LEVEL = 1
"""Deflate level of the features NPZ (the compact features shrink about as much as at zlib's default 6)."""


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
        _write_npz(out, x, ints, floats, codes, classes, group_names, wanted)


def _write_npz(
    out: Path,
    x: _Column | None,
    ints: Mapping[str, _Column],
    floats: Mapping[str, _Column],
    codes: Mapping[str, _Codes],
    classes: list[str],
    group_names: list[str],
    wanted: str,
) -> None:
    """Copies the written columns into the NPZ (``np.load`` order of the whole-study export)."""
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
