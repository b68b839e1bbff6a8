"""MTCNN detection without torch: facenet-pytorch's ``detect_face`` glue in NumPy, the three nets on ONNX Runtime.

The default CPU path. facenet-pytorch's P-, R- and O-Net are exported once to ONNX (:mod:`models.mtcnn_export`,
kept in the weights folder); everything between the nets (pyramid, box generation, NMS, box regression, squaring,
padding, the exact area resizes) is transcribed here line for line from facenet-pytorch 2.5.3 (MIT licence, Tim
Esler) and torchvision's ``batched_nms``, in float32 as they compute. The image resizes read the exact summed-area
table of :class:`IntegralImage` (also used by the torch path, :mod:`models.mtcnn`), so the nets' inputs equal
facenet-pytorch's bit for bit; boxes equal ``MTCNN.detect``'s within 1e-3 px on real images (tested).
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import numpy.typing as npt

IntArray = npt.NDArray[np.signedinteger[Any]]
"""An integer array (the summed-area tables and their window sums; int32 or int64)."""

Net = Callable[[np.ndarray], list[np.ndarray]]
"""A network run: NCHW float32 input -> its outputs (ONNX Runtime session ``run``)."""


def _bins(n: np.ndarray | int, m: int) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]]:
    """Start and end of the m bins that an area resize of n samples averages (``adaptive_avg_pool2d``'s bins).

    Bin i covers ``[floor(i n / m), ceil((i + 1) n / m))``; n may be an array (one row of bins per entry).
    """
    i = np.arange(m, dtype=np.int64)
    n = np.asarray(n, dtype=np.int64)[..., None]
    return (i * n) // m, -((-(i + 1) * n) // m)


class IntegralImage:
    """Summed-area tables of a batch of uint8 RGB images, for exact area resizes of whole images and of boxes.

    A pixel window's sum is four table lookups. The sums are integers, exact in the table and in float32 for windows
    of up to 65,793 pixels (larger ones only in the coarsest levels of images over about 3,000 px a side, where
    torch's own float32 sums round too), so dividing them as torch's CPU kernel does, ``sum / kh / kw`` in float32,
    gives bit for bit what facenet-pytorch's ``interpolate(mode="area")`` gives (tested).
    """

    def __init__(self, imgs: np.ndarray) -> None:
        """Builds the tables.

        Args:
            imgs: (B, H, W, 3) uint8.
        """
        b, h, w, c = imgs.shape
        # Exact integer sums; int32 (faster to build and to gather from) while no prefix sum can pass 2**31.
        dtype = np.int32 if h * w * 255 < 2**31 else np.int64
        table: IntArray = np.zeros((b, h + 1, w + 1, c), dtype=dtype)
        inner = table[:, 1:, 1:]
        np.cumsum(imgs, axis=1, dtype=dtype, out=inner)
        np.cumsum(inner, axis=2, dtype=dtype, out=inner)
        self._table = table
        self._flat = table.reshape(-1, c)
        self.shape = (b, h, w, c)

    def resize(self, out_h: int, out_w: int) -> np.ndarray:
        """The whole images area-resized to (out_h, out_w): (B, out_h, out_w, 3) float32."""
        _, h, w, _ = self.shape
        ys, ye = _bins(h, out_h)
        xs, xe = _bins(w, out_w)
        # np.take with an index array is typed Any (an array also matches its scalar-index overload): annotated here.
        rows: IntArray = np.take(self._table, ye, axis=1) - np.take(self._table, ys, axis=1)
        sums: IntArray = np.take(rows, xe, axis=2) - np.take(rows, xs, axis=2)
        kh: npt.NDArray[np.float32] = (ye - ys).astype(np.float32)[:, None, None]
        kw: npt.NDArray[np.float32] = (xe - xs).astype(np.float32)[None, :, None]
        return sums.astype(np.float32) / kh / kw

    def crops(
        self, inds: np.ndarray, y0: np.ndarray, y1: np.ndarray, x0: np.ndarray, x1: np.ndarray, size: int
    ) -> np.ndarray:
        """Boxes ``img[inds[k], y0[k]:y1[k], x0[k]:x1[k]]`` each area-resized to (size, size): (K, size, size, 3)."""
        _, h, w, c = self.shape
        stride = w + 1
        y0, x0 = np.asarray(y0, dtype=np.int64)[:, None], np.asarray(x0, dtype=np.int64)[:, None]
        ys, ye = _bins(np.asarray(y1) - y0[:, 0], size)
        xs, xe = _bins(np.asarray(x1) - x0[:, 0], size)
        kh: npt.NDArray[np.float32] = (ye - ys).astype(np.float32)[:, :, None, None]
        kw: npt.NDArray[np.float32] = (xe - xs).astype(np.float32)[:, None, :, None]
        base = np.asarray(inds, dtype=np.int64)[:, None] * ((h + 1) * stride)
        ys, ye = (ys + y0) * stride + base, (ye + y0) * stride + base
        xs, xe = xs + x0, xe + x0

        def corner(rows: np.ndarray, cols: np.ndarray) -> IntArray:
            picked: IntArray = np.take(self._flat, (rows[:, :, None] + cols[:, None, :]).ravel(), axis=0)
            return picked

        sums = corner(ye, xe) - corner(ys, xe) - corner(ye, xs) + corner(ys, xs)
        return sums.reshape(len(y0), size, size, c).astype(np.float32) / kh / kw


# ------------------------------------------------------------------------------------------ facenet-pytorch glue


def nms(boxes: np.ndarray, scores: np.ndarray, iou_threshold: float) -> np.ndarray:
    """The CPU kernel of torchvision's ``nms``: greedy by score (stable, descending), IoU in float32 vs a double.

    Returns:
        Kept indices in decreasing score order.
    """
    if len(boxes) == 0:
        return np.zeros(0, dtype=np.int64)
    x1, y1, x2, y2 = (np.ascontiguousarray(boxes[:, k]) for k in range(4))
    areas = (x2 - x1) * (y2 - y1)
    rest = np.argsort(-scores, kind="stable")
    keep = []
    while rest.size:
        i = rest[0]
        keep.append(i)
        others = rest[1:]
        w = np.maximum(np.float32(0), np.minimum(x2[i], x2[others]) - np.maximum(x1[i], x1[others]))
        h = np.maximum(np.float32(0), np.minimum(y2[i], y2[others]) - np.maximum(y1[i], y1[others]))
        inter = w * h
        ovr = inter / (areas[i] + areas[others] - inter)
        rest = others[~(ovr.astype(np.float64) > iou_threshold)]
    return np.asarray(keep, dtype=np.int64)


def batched_nms(boxes: np.ndarray, scores: np.ndarray, idxs: np.ndarray, iou_threshold: float) -> np.ndarray:
    """The CPU path of torchvision's ``batched_nms``: per image above 1,000 boxes, else the coordinate offset trick."""
    if len(boxes) == 0:
        return np.zeros(0, dtype=np.int64)
    if boxes.size > 4000:
        keep_mask = np.zeros(len(boxes), dtype=bool)
        for cls in np.unique(idxs):
            cur = np.nonzero(idxs == cls)[0]
            keep_mask[cur[nms(boxes[cur], scores[cur], iou_threshold)]] = True
        kept = np.nonzero(keep_mask)[0]
        return kept[np.argsort(-scores[kept], kind="stable")]
    max_coordinate = boxes.max()
    offsets = idxs.astype(np.float32) * (max_coordinate + np.float32(1))
    return nms(boxes + offsets[:, None], scores, iou_threshold)


def _nms_min(boxes: np.ndarray, scores: np.ndarray, threshold: float) -> np.ndarray:
    """facenet-pytorch's ``nms_numpy`` with method "Min", as published."""
    if boxes.size == 0:
        return np.empty((0, 3))
    x1, y1, x2, y2 = boxes[:, 0].copy(), boxes[:, 1].copy(), boxes[:, 2].copy(), boxes[:, 3].copy()
    area = (x2 - x1 + 1) * (y2 - y1 + 1)
    order = np.argsort(scores)
    pick = np.zeros_like(scores, dtype=np.int16)
    counter = 0
    while order.size > 0:
        i = order[-1]
        pick[counter] = i
        counter += 1
        idx = order[0:-1]
        w = np.maximum(0.0, np.minimum(x2[i], x2[idx]) - np.maximum(x1[i], x1[idx]) + 1)
        h = np.maximum(0.0, np.minimum(y2[i], y2[idx]) - np.maximum(y1[i], y1[idx]) + 1)
        o = w * h / np.minimum(area[i], area[idx])
        order = order[np.where(o <= threshold)]
    return pick[:counter].copy()


def batched_nms_min(boxes: np.ndarray, scores: np.ndarray, idxs: np.ndarray, threshold: float) -> np.ndarray:
    """facenet-pytorch's ``batched_nms_numpy(..., "Min")``."""
    if boxes.size == 0:
        return np.zeros(0, dtype=np.int64)
    offsets = idxs.astype(np.float32) * (boxes.max() + np.float32(1))
    return _nms_min(boxes + offsets[:, None], scores, threshold).astype(np.int64)


def generate_bounding_box(
    reg: np.ndarray, probs: np.ndarray, scale: float, thresh: float
) -> tuple[np.ndarray, np.ndarray]:
    """facenet-pytorch's ``generateBoundingBox``: (K, 9) ``[q1, q2, score, reg]`` and the image index of each."""
    mask = probs >= np.float32(thresh)
    n, yy, xx = np.nonzero(mask)
    score = probs[n, yy, xx]
    r = reg[n, :, yy, xx]
    bb = np.stack([xx, yy], axis=1).astype(np.float32)
    s = np.float32(scale)
    q1 = np.floor((np.float32(2) * bb + np.float32(1)) / s)
    q2 = np.floor((np.float32(2) * bb + np.float32(12)) / s)
    return np.concatenate([q1, q2, score[:, None], r], axis=1).astype(np.float32), n.astype(np.int64)


def rerec(b: np.ndarray) -> np.ndarray:
    """facenet-pytorch's ``rerec`` (boxes made square about their centre), in place."""
    h = b[:, 3] - b[:, 1]
    w = b[:, 2] - b[:, 0]
    side = np.maximum(w, h)
    b[:, 0] = b[:, 0] + w * np.float32(0.5) - side * np.float32(0.5)
    b[:, 1] = b[:, 1] + h * np.float32(0.5) - side * np.float32(0.5)
    b[:, 2] = b[:, 0] + side
    b[:, 3] = b[:, 1] + side
    return b


def bbreg(b: np.ndarray, reg: np.ndarray) -> np.ndarray:
    """facenet-pytorch's ``bbreg`` (box regression), in place."""
    w = b[:, 2] - b[:, 0] + np.float32(1)
    h = b[:, 3] - b[:, 1] + np.float32(1)
    b1 = b[:, 0] + reg[:, 0] * w
    b2 = b[:, 1] + reg[:, 1] * h
    b3 = b[:, 2] + reg[:, 2] * w
    b4 = b[:, 3] + reg[:, 3] * h
    b[:, 0], b[:, 1], b[:, 2], b[:, 3] = b1, b2, b3, b4
    return b


def pad(boxes: np.ndarray, w: int, h: int) -> tuple[np.ndarray, ...]:
    """facenet-pytorch's ``pad``: boxes truncated to int32 and clipped to ``[1, w] x [1, h]``."""
    b = np.trunc(boxes[:, :4]).astype(np.int32)
    x, y, ex, ey = b[:, 0], b[:, 1], b[:, 2], b[:, 3]
    x[x < 1] = 1
    y[y < 1] = 1
    ex[ex > w] = w
    ey[ey > h] = h
    return y, ey, x, ex


def _candidates(integral: IntegralImage, boxes: np.ndarray, inds: np.ndarray, w: int, h: int, size: int) -> np.ndarray:
    """The candidates' crops (facenet-pytorch's skip rule), area-resized exactly; normalised NCHW input."""
    y, ey, x, ex = pad(boxes, w, h)
    keep = (ey > (y - 1)) & (ex > (x - 1))
    data = integral.crops(inds[keep], y[keep] - 1, ey[keep], x[keep] - 1, ex[keep], size)
    data -= np.float32(127.5)
    data *= np.float32(0.0078125)
    return np.ascontiguousarray(data.transpose(0, 3, 1, 2))


def _batched(net: Net, data: np.ndarray, batch_size: int = 512) -> list[np.ndarray]:
    """facenet-pytorch's ``fixed_batch_process``: the net over chunks of 512, outputs concatenated."""
    outs = [net(data[i : i + batch_size]) for i in range(0, len(data), batch_size)]
    return [np.concatenate([o[k] for o in outs]) for k in range(len(outs[0]))]


def pyramid_scales(h: int, w: int, minsize: int, factor: float) -> list[float]:
    """MTCNN's image pyramid: the scales from ``12 / minsize`` down while the shorter side stays >= 12 px."""
    m = 12.0 / minsize
    minl = min(h, w) * m
    scales = []
    scale_i = m
    while minl >= 12:
        scales.append(scale_i)
        scale_i = scale_i * factor
        minl = minl * factor
    return scales


def pyramid_level(integral: IntegralImage, h: int, w: int, scale: float) -> np.ndarray:
    """One pyramid level (N, H, W, 3) float32, area-resized and normalised as P-Net expects (``(x - 127.5) / 128``)."""
    data = integral.resize(int(h * scale + 1), int(w * scale + 1))
    data -= np.float32(127.5)
    data *= np.float32(0.0078125)
    return data


def _stage_one(
    integral: IntegralImage, h: int, w: int, scales: list[float], pnet: Net, threshold: float
) -> tuple[np.ndarray, np.ndarray]:
    """P-Net over the pyramid: candidate boxes (N, 5) squared, and their image indices."""

    def level(scale: float) -> np.ndarray:
        return np.ascontiguousarray(pyramid_level(integral, h, w, scale).transpose(0, 3, 1, 2))

    # The next pyramid level is resized by a helper thread while P-Net runs (both release the GIL).
    boxes_l, inds_l = [], []
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="affectlab-pyramid") as pool:
        for scale, data in zip(scales, pool.map(level, scales), strict=True):
            reg, probs = pnet(data)[:2]
            bs, bi = generate_bounding_box(reg, probs[:, 1], scale, threshold)
            pick = batched_nms(bs[:, :4], bs[:, 4], bi, 0.5)
            boxes_l.append(bs[pick])
            inds_l.append(bi[pick])
    boxes = np.concatenate(boxes_l)
    inds = np.concatenate(inds_l)
    pick = batched_nms(boxes[:, :4], boxes[:, 4], inds, 0.7)
    boxes, inds = boxes[pick], inds[pick]
    regw = boxes[:, 2] - boxes[:, 0]
    regh = boxes[:, 3] - boxes[:, 1]
    corners = [boxes[:, k] + boxes[:, k + 5] * (regw if k % 2 == 0 else regh) for k in range(4)]
    return rerec(np.stack([*corners, boxes[:, 4]], axis=1)), inds


def _stage_two(
    integral: IntegralImage, boxes: np.ndarray, inds: np.ndarray, w: int, h: int, rnet: Net, threshold: float
) -> tuple[np.ndarray, np.ndarray]:
    """R-Net on the candidates: the boxes it keeps (refined, squared) and their image indices."""
    reg, probs = _batched(rnet, _candidates(integral, boxes, inds, w, h, 24))[:2]
    score = probs[:, 1]
    ipass = score > np.float32(threshold)
    boxes = np.concatenate([boxes[ipass, :4], score[ipass, None]], axis=1)
    inds, mv = inds[ipass], reg[ipass]
    pick = batched_nms(boxes[:, :4], boxes[:, 4], inds, 0.7)
    boxes, inds, mv = boxes[pick], inds[pick], mv[pick]
    return rerec(bbreg(boxes, mv)), inds


def _stage_three(
    integral: IntegralImage, boxes: np.ndarray, inds: np.ndarray, w: int, h: int, onet: Net, threshold: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """O-Net on R-Net's boxes: the final boxes, their image indices and landmarks (N, 5, 2)."""
    reg, marks, probs = _batched(onet, _candidates(integral, boxes, inds, w, h, 48))[:3]
    score = probs[:, 1]
    ipass = score > np.float32(threshold)
    marks = marks[ipass]
    boxes = np.concatenate([boxes[ipass, :4], score[ipass, None]], axis=1)
    inds, mv = inds[ipass], reg[ipass]
    w_i = (boxes[:, 2] - boxes[:, 0] + np.float32(1))[:, None]
    h_i = (boxes[:, 3] - boxes[:, 1] + np.float32(1))[:, None]
    px = w_i * marks[:, :5] + boxes[:, 0:1] - np.float32(1)
    py = h_i * marks[:, 5:10] + boxes[:, 1:2] - np.float32(1)
    points = np.stack([px, py], axis=2)
    boxes = bbreg(boxes, mv)
    pick = batched_nms_min(boxes[:, :4], boxes[:, 4], inds, 0.7)
    return boxes[pick], inds[pick], points[pick]


def detect_face(
    imgs: np.ndarray,
    minsize: int,
    pnet: Net,
    rnet: Net,
    onet: Net,
    threshold: tuple[float, float, float],
    factor: float,
) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """facenet-pytorch's ``detect_face`` for a batch of equal-size RGB uint8 images (B, H, W, 3), without torch.

    Args:
        imgs: (B, H, W, 3) uint8.
        minsize: Smallest face side looked for.
        pnet: P-Net: (N, 3, h, w) -> [reg (N, 4, h', w'), probs (N, 2, h', w')].
        rnet: R-Net: (N, 3, 24, 24) -> [reg (N, 4), probs (N, 2)].
        onet: O-Net: (N, 3, 48, 48) -> [reg (N, 4), landmarks (N, 10), probs (N, 2)].
        threshold: The three score thresholds.
        factor: Pyramid scale step.

    Returns:
        Per image, the boxes (N, 5: x1, y1, x2, y2, probability) and the landmarks (N, 5, 2), in facenet-pytorch's
        order. An image smaller than the minimum face gives none (facenet-pytorch raises there).
    """
    batch_size, h, w = imgs.shape[:3]
    integral = IntegralImage(np.ascontiguousarray(imgs, dtype=np.uint8))
    scales = pyramid_scales(h, w, minsize, factor)
    empty = ([np.zeros((0, 5), np.float32)] * batch_size, [np.zeros((0, 5, 2), np.float32)] * batch_size)
    if not scales:
        return empty

    boxes, inds = _stage_one(integral, h, w, scales, pnet, threshold[0])
    if len(boxes) > 0:
        boxes, inds = _stage_two(integral, boxes, inds, w, h, rnet, threshold[1])
    points = np.zeros((0, 5, 2), np.float32)
    if len(boxes) > 0:
        boxes, inds, points = _stage_three(integral, boxes, inds, w, h, onet, threshold[2])

    return ([boxes[inds == b].copy() for b in range(batch_size)], [points[inds == b].copy() for b in range(batch_size)])
