"""Byte forms of what the store keeps: sha256 of media, PNG crops, compact features, image header sizes.

Features are stored in one of two forms, told apart by their length alone (no schema flag, so old rows read as
they are): ``4 * dim`` bytes are little-endian float32 (the exact vector, what stores before revision 0007 hold),
``dim + 8`` bytes are the compact form :data:`FEATURES_U8`: the vector's minimum and step as two little-endian
float32, then one uint8 per value (``x ~= min + step * q``, error at most ``step / 2``: 1/510 of the vector's range).
A 1280-d EfficientNet vector is 1,288 bytes instead of 5,120; what that changes downstream (engagement, tracks,
persons, fine-tuning) is measured by ``bench/bench_storage.py`` and quoted in the README.
"""

from __future__ import annotations

import hashlib
import io
from pathlib import Path

import numpy as np


def sha256_bytes(data: bytes) -> str:
    """Hex sha256 of ``data``."""
    return hashlib.sha256(data).hexdigest()


def sha256_source(source: bytes | Path) -> tuple[str, int]:
    """Hex sha256 and size of bytes or of a file (read in blocks)."""
    if isinstance(source, bytes):
        return sha256_bytes(source), len(source)
    h = hashlib.sha256()
    size = 0
    with open(source, "rb") as fh:
        while block := fh.read(1 << 20):
            h.update(block)
            size += len(block)
    return h.hexdigest(), size


PNG_LEVEL = 1
"""zlib level of stored crops: lossless at any level; level 1 encodes a face crop ~4x faster than Pillow's default
6 (7 vs 29 ms for a 300x300 crop here) for ~8 % more bytes, and encoding was half the time of storing a video."""


def encode_png(crop: np.ndarray) -> bytes:
    """Lossless PNG bytes of an RGB (or grey) uint8 array (zlib level :data:`PNG_LEVEL`)."""
    from PIL import Image

    arr = np.ascontiguousarray(crop)
    if arr.dtype != np.uint8:
        arr = np.clip(arr, 0, 255).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG", compress_level=PNG_LEVEL)
    return buf.getvalue()


def decode_png(data: bytes) -> np.ndarray:
    """The RGB uint8 array of stored crop bytes."""
    from PIL import Image

    with Image.open(io.BytesIO(data)) as im:
        return np.asarray(im.convert("RGB"))


FEATURES_F32 = "float32"
"""Exact little-endian float32 features (``4 * dim`` bytes)."""
FEATURES_U8 = "u8"
"""Compact features: float32 minimum and step, then a uint8 per value (``dim + 8`` bytes); the store's default."""


def features_to_bytes(features: np.ndarray, codec: str = FEATURES_U8) -> tuple[bytes, int]:
    """The stored bytes of a feature vector in form ``codec`` (:data:`FEATURES_U8` or ``F32``) and its length."""
    arr = np.asarray(features, dtype="<f4").reshape(-1)
    if codec == FEATURES_F32:
        return arr.tobytes(), int(arr.size)
    if codec != FEATURES_U8:
        raise ValueError(f"unknown feature codec {codec!r}")
    if arr.size == 0 or not np.all(np.isfinite(arr)):
        return arr.tobytes(), int(arr.size)  # nothing to scale (or not finite): kept exact
    lo = float(arr.min())
    step = (float(arr.max()) - lo) / 255.0
    if step <= 0.0 or not np.isfinite(step):
        step = 1.0
    q = np.clip(np.rint((arr.astype(np.float64) - lo) / step), 0, 255).astype(np.uint8)
    return np.array([lo, step], dtype="<f4").tobytes() + q.tobytes(), int(arr.size)


def features_codec(data: bytes, dim: int) -> str:
    """The form of stored feature bytes of ``dim`` values (by their length)."""
    if len(data) == 4 * dim:
        return FEATURES_F32
    if len(data) == dim + 8:
        return FEATURES_U8
    raise ValueError(f"stored features of {len(data)} bytes are neither {dim} float32 nor {dim} compact values")


def features_from_bytes(data: bytes, dim: int) -> np.ndarray:
    """The float32 feature vector stored as ``data`` (either form, see the module docstring)."""
    if features_codec(data, dim) == FEATURES_F32:
        return np.frombuffer(data, dtype="<f4").astype(np.float32)
    lo, step = (float(v) for v in np.frombuffer(data[:8], dtype="<f4"))
    q = np.frombuffer(data[8:], dtype=np.uint8).astype(np.float64)
    out: np.ndarray = (lo + step * q).astype(np.float32)
    return out


def compact_feature_bytes(data: bytes, dim: int) -> bytes:
    """Stored feature bytes in the compact form (float32 ones converted, compact ones returned as they are)."""
    if features_codec(data, dim) == FEATURES_U8:
        return data
    return features_to_bytes(np.frombuffer(data, dtype="<f4"), FEATURES_U8)[0]


def image_size(data: bytes) -> tuple[int | None, int | None]:
    """Upright ``(width, height)`` of an image from its header (EXIF rotations swap them), Nones if unreadable."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(data)) as im:
            w, h = im.size
            orientation = im.getexif().get(0x0112, 1)
    except (UnidentifiedImageError, OSError, ValueError):
        return None, None
    return (h, w) if orientation in (5, 6, 7, 8) else (w, h)
