"""Classifying a still face less often (``VideoConfig.classify_every``): which faces of a frame the classifier sees.

Between two classified frames of a video (every ``classify_every``-th sampled frame: samples 0, N, 2N, ...; a range
or a resumed run starts with every face classified), a face reuses the prediction of the face it follows when its
crop barely changed from the crop that prediction was made of:

- it follows a face of the frame before (boxes matched one-to-one at IoU >= ``min_iou``);
- its box is within ``reuse_shift`` of the box classified: no edge moved by more than that share of the face's side
  (tracking jitter of a pixel or two, not a head turning or a face walking);
- the pixels inside the box classified changed little: the mean absolute difference of their 16 x 16 grey thumbnail
  (block means, 0-255) now and when classified is at most ``reuse_diff``, and no block differs by more than
  ``PEAK_RATIO`` times that (compression noise; not a blink or a smile, which move a few blocks by much and the mean
  little, nor a new expression, another face in the same tile or a change of light).

Both are measured from the face last *classified* along this chain of faces, so slow drift adds up and is classified
again once it passes a bound. Any other face is classified: a new face, a face that moved or changed, every face at a
multiple of N. With ``classify_every = 1`` every face is classified (the exact path). The rule looks only at the
input, never at the model's output, so it holds for any weights as far as the bounds on the input's change are small.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from models.faces import crop_face
from models.tracking import iou_matrix
from models.types import Box, EmotionPrediction

THUMB_SIDE = 16
"""Side of the grey thumbnail compared (block means of the crop)."""
PEAK_RATIO = 4.0
"""The largest difference of one thumbnail block, as a multiple of the bound on the mean difference."""


def thumbnail(crop: np.ndarray, side: int = THUMB_SIDE) -> np.ndarray | None:
    """The crop's grey thumbnail, ``side`` x ``side`` block means in 0-255 (float32); None when smaller than that."""
    h, w = crop.shape[:2]
    if h < side or w < side:
        return None
    grey = crop.astype(np.float32).mean(axis=2) if crop.ndim == 3 else crop.astype(np.float32)
    ys = np.linspace(0, h, side + 1).astype(np.intp)
    xs = np.linspace(0, w, side + 1).astype(np.intp)
    sums = np.add.reduceat(np.add.reduceat(grey, ys[:-1], axis=0), xs[:-1], axis=1)
    counts = np.outer(np.diff(ys), np.diff(xs)).astype(np.float32)
    return sums / counts


def thumb_diff(a: np.ndarray, b: np.ndarray) -> float:
    """Mean absolute difference of two thumbnails (grey levels)."""
    return float(np.abs(a - b).mean())


@dataclass
class PendingPrediction:
    """A prediction asked for: ``index`` into the classifier's batch until ``prediction`` is set."""

    index: int
    prediction: EmotionPrediction | None = None


def _made(p: PendingPrediction) -> EmotionPrediction:
    if p.prediction is None:
        raise RuntimeError("a reused prediction was read before its face was classified")
    return p.prediction


def box_shift(a: Box, b: Box) -> float:
    """The largest move of an edge from ``a`` to ``b``, as a share of ``a``'s larger side."""
    side = max(a[2] - a[0], a[3] - a[1], 1e-6)
    return float(max(abs(x - y) for x, y in zip(a, b, strict=True)) / side)


@dataclass
class _Seen:
    box: Box  # in the frame it was last seen
    classified: Box  # the box its prediction was made of
    thumb: np.ndarray | None  # the thumbnail of that crop
    pending: PendingPrediction


@dataclass
class ClassifyPlan:
    """Which faces of one stretch of frames are classified.

    ``crops`` go to the classifier in order; ``rows[i][j]`` is face j of frame i's prediction (to be filled in by
    :meth:`resolve`) and ``reused[i][j]`` whether it is another face's.
    """

    crops: list[np.ndarray] = field(default_factory=list)
    rows: list[list[PendingPrediction]] = field(default_factory=list)
    reused: list[list[bool]] = field(default_factory=list)
    _new: list[PendingPrediction] = field(default_factory=list)

    def resolve(self, predictions: Sequence[EmotionPrediction]) -> list[list[EmotionPrediction]]:
        """Each face's prediction from the classifier's predictions of :attr:`crops`."""
        for p in self._new:
            p.prediction = predictions[p.index]
        return [[_made(p) for p in row] for row in self.rows]


class ClassifySchedule:
    """Chooses, frame by frame in sample order, the faces to classify (see the module's docstring)."""

    def __init__(self, every: int, reuse_diff: float, reuse_shift: float = 0.05, min_iou: float = 0.5) -> None:
        self.every = max(1, every)
        self.reuse_diff = reuse_diff
        self.reuse_shift = reuse_shift
        self.min_iou = min_iou
        self._prev: list[_Seen] = []

    def plan(self, frames: Sequence[tuple[int, np.ndarray, Sequence[Box], Sequence[np.ndarray]]]) -> ClassifyPlan:
        """The plan for consecutive frames given as ``(sample, image, boxes, crops)`` (each crop cut at its box)."""
        out = ClassifyPlan()
        for sample, image, boxes, crops in frames:
            row: list[PendingPrediction] = []
            reused: list[bool] = []
            seen: list[_Seen] = []
            for box, crop, before in zip(boxes, crops, self._follows(sample, boxes), strict=True):
                if before is not None and self._still(image, box, before):
                    seen.append(_Seen(box, before.classified, before.thumb, before.pending))
                    row.append(before.pending)
                    reused.append(True)
                    continue
                pending = PendingPrediction(len(out.crops))
                out.crops.append(crop)
                out._new.append(pending)
                if self.every > 1:
                    seen.append(_Seen(box, box, thumbnail(crop), pending))
                row.append(pending)
                reused.append(False)
            self._prev = seen
            out.rows.append(row)
            out.reused.append(reused)
        return out

    def _still(self, image: np.ndarray, box: Box, before: _Seen) -> bool:
        """Whether a face at ``box`` barely changed from the crop ``before``'s prediction was made of."""
        if before.thumb is None or box_shift(before.classified, box) > self.reuse_shift:
            return False
        now = thumbnail(crop_face(image, before.classified))
        if now is None or now.shape != before.thumb.shape:
            return False
        change = np.abs(now - before.thumb)
        return float(change.mean()) <= self.reuse_diff and float(change.max()) <= PEAK_RATIO * self.reuse_diff

    def _follows(self, sample: int, boxes: Sequence[Box]) -> list[_Seen | None]:
        """The face of the frame before that each face follows (None: none, or this frame is classified whole)."""
        follows: list[_Seen | None] = [None] * len(boxes)
        if self.every <= 1 or sample % self.every == 0 or not self._prev or not boxes:
            return follows
        from scipy.optimize import linear_sum_assignment

        m = iou_matrix(list(boxes), [s.box for s in self._prev])
        for i, j in zip(*linear_sum_assignment(-m), strict=True):
            if m[i, j] >= self.min_iou:
                follows[int(i)] = self._prev[int(j)]
        return follows
