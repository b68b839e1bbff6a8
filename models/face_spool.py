"""A range worker's faces spooled to a file and read back, without pickle.

A worker of :mod:`models.ranges` that spools (``python -m models analyze --json`` on a long recording) writes its faces
30 s of video at a time; the parent reads them back in order. The file is this run's own, in its private folder,
yet it is read as data only (nothing in it can run code: the one unpickling is :mod:`models.unpickle`'s). One batch
is a length-prefixed JSON list of each face's scalar fields, then its arrays (features, logits, probabilities) as
three ``.npy`` records (``allow_pickle=False``), each the faces' arrays flattened end to end with their shapes and
dtypes in the JSON. Floats go through JSON's shortest round-trip form: a face reads back equal to the one written
(crops are not spooled).
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from typing import Any, BinaryIO

import numpy as np

from models.types import EmotionPrediction, Face, FaceResult

_ARRAYS = ("features", "logits", "probs")


def _opt(v: float | None) -> float | None:
    return None if v is None else float(v)


def _meta(r: FaceResult) -> dict[str, object]:
    p, f = r.prediction, r.face
    return {
        "file": r.file,
        "index": r.index,
        "frame": r.frame,
        "time_s": _opt(r.time_s),
        "track": r.track,
        "box": [float(v) for v in f.box],
        "det_score": float(f.det_score),
        "landmarks": None if f.landmarks is None else [[float(x), float(y)] for x, y in f.landmarks],
        "model": p.model,
        "labels": list(p.labels),
        "valence": _opt(p.valence),
        "arousal": _opt(p.arousal),
        "weights_hash": p.weights_hash,
        "engagement": _opt(p.engagement),
        "reused": p.reused,
        "arrays": [[list(getattr(p, a).shape), getattr(p, a).dtype.str] for a in _ARRAYS],
    }


def write_batch(out: BinaryIO, faces: Sequence[FaceResult]) -> None:
    """Appends one batch of faces to ``out``."""
    blob = json.dumps([_meta(r) for r in faces]).encode("utf-8")
    out.write(len(blob).to_bytes(8, "little"))
    out.write(blob)
    for a in _ARRAYS:
        parts = [np.ascontiguousarray(getattr(r.prediction, a)).view(np.uint8).ravel() for r in faces]
        np.save(out, np.concatenate(parts) if parts else np.zeros(0, np.uint8), allow_pickle=False)


def _face(m: dict[str, Any], arrays: list[np.ndarray]) -> FaceResult:
    lm = m["landmarks"]
    pred = EmotionPrediction(
        model=m["model"],
        labels=tuple(m["labels"]),
        features=arrays[0],
        logits=arrays[1],
        probs=arrays[2],
        valence=m["valence"],
        arousal=m["arousal"],
        weights_hash=m["weights_hash"],
        engagement=m["engagement"],
        reused=m["reused"],
    )
    x1, y1, x2, y2 = m["box"]
    marks = None if lm is None else tuple((float(x), float(y)) for x, y in lm)
    face = Face(box=(x1, y1, x2, y2), det_score=m["det_score"], landmarks=marks)
    return FaceResult(m["file"], m["index"], face, pred, frame=m["frame"], time_s=m["time_s"], track=m["track"])


def read_batches(f: BinaryIO) -> Iterator[FaceResult]:
    """Every face of a spool file, in the order written."""
    while head := f.read(8):
        metas = json.loads(f.read(int.from_bytes(head, "little")).decode("utf-8"))
        raw = [np.load(f, allow_pickle=False) for _ in _ARRAYS]
        offsets = [0, 0, 0]
        for m in metas:
            arrays = []
            for k, (shape, dtype) in enumerate(m["arrays"]):
                dt = np.dtype(dtype)
                n = int(np.prod(shape, dtype=np.int64)) * dt.itemsize
                arrays.append(raw[k][offsets[k] : offsets[k] + n].view(dt).reshape(shape).copy())
                offsets[k] += n
            yield _face(m, arrays)
