"""A range worker's spooled faces read back equal to those written, and the file is read as data only."""

from __future__ import annotations

import io
import pickle

import numpy as np
import pytest

from models import face_spool
from models.types import EmotionPrediction, Face, FaceResult


def _face(rng: np.random.Generator, i: int, landmarks: bool, dtype: type) -> FaceResult:
    probs = rng.random(8).astype(dtype)
    pred = EmotionPrediction(
        model="enet_b0_8_va_mtl",
        labels=tuple(f"c{k}" for k in range(8)),
        features=rng.standard_normal(1280).astype(np.float32),
        logits=rng.standard_normal(10).astype(dtype),
        probs=probs / probs.sum(),
        valence=float(rng.standard_normal()) if i % 3 else None,
        arousal=float(rng.standard_normal()),
        weights_hash="ab" * 8,
        engagement=None if i % 2 else float(rng.random()),
        reused=bool(i % 2),
    )
    box = tuple(float(v) for v in rng.random(4) * 700)
    marks = tuple((float(x), float(y)) for x, y in rng.random((5, 2))) if landmarks else None
    face = Face(box=box, det_score=float(rng.random()), landmarks=marks)  # type: ignore[arg-type]
    return FaceResult("lecture 1.mp4", i, face, pred, frame=10 * i, time_s=i / 5, track=i // 3)


def _same(a: FaceResult, b: FaceResult) -> bool:
    pa, pb = a.prediction, b.prediction
    arrays = all(
        x.dtype == y.dtype and x.shape == y.shape and np.array_equal(x, y)
        for x, y in ((pa.features, pb.features), (pa.logits, pb.logits), (pa.probs, pb.probs))
    )
    scalars = (
        a.file,
        a.index,
        a.frame,
        a.time_s,
        a.track,
        a.face.box,
        a.face.det_score,
        a.face.landmarks,
        pa.model,
        pa.labels,
        pa.valence,
        pa.arousal,
    ) == (
        b.file,
        b.index,
        b.frame,
        b.time_s,
        b.track,
        b.face.box,
        b.face.det_score,
        b.face.landmarks,
        pb.model,
        pb.labels,
        pb.valence,
        pb.arousal,
    )
    rest = (pa.weights_hash, pa.engagement, pa.reused) == (pb.weights_hash, pb.engagement, pb.reused)
    return arrays and scalars and rest


def test_spooled_faces_read_back_equal_in_order() -> None:
    rng = np.random.default_rng(3)
    batches = [
        [_face(rng, 10 * b + i, landmarks=i % 2 == 0, dtype=np.float32 if b else np.float64) for i in range(n)]
        for b, n in enumerate((5, 0, 7))
    ]
    buf = io.BytesIO()
    for batch in batches:
        face_spool.write_batch(buf, batch)
    buf.seek(0)
    back = list(face_spool.read_batches(buf))
    written = [f for batch in batches for f in batch]
    assert len(back) == len(written) == 12
    assert all(_same(a, b) for a, b in zip(written, back, strict=True))
    changed = FaceResult(written[0].file, 99, written[0].face, written[0].prediction)
    assert not _same(changed, back[0])  # the comparison can fail


class _Boom:
    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (print, ("unpickled",))


def test_a_pickle_in_a_spool_file_is_refused_not_run(capsys: pytest.CaptureFixture[str]) -> None:
    """An object array (pickle inside a .npy record) where the arrays should be: refused, nothing called."""
    buf = io.BytesIO()
    face_spool.write_batch(buf, [])
    forged = io.BytesIO()
    blob = b"[]"
    forged.write(len(blob).to_bytes(8, "little") + blob)
    np.save(forged, np.array([_Boom()], dtype=object), allow_pickle=True)
    forged.seek(0)
    with pytest.raises(ValueError, match="pickle"):
        list(face_spool.read_batches(forged))
    assert "unpickled" not in capsys.readouterr().out
    assert pickle.dumps(_Boom())  # the forged object really pickles to a call
