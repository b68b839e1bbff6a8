"""MTCNN detection: facenet-pytorch's ``detect_face`` with a faster resize of the face candidates.

facenet-pytorch (MIT licence, Tim Esler) resizes each candidate box to R-Net's 24 px and O-Net's 48 px inputs one
at a time with ``interpolate(mode="area")``: hundreds of calls per image, each with torch's per-call overhead, the
largest single cost of a detection on a CPU. An area resize is an average over integer bins (bin i of an n -> m
resize covers ``[floor(i n / m), ceil((i + 1) n / m))``), i.e. ``rows @ region @ cols.T`` with two small averaging
matrices, which NumPy computes in a fraction of the time. Everything else is facenet-pytorch's code, called as is or
(the two candidate loops) transcribed line for line. facenet-pytorch itself is left untouched, so a reference
``MTCNN`` in the same process (the benchmarks, the tests) runs exactly as published.

The results equal ``MTCNN.detect`` up to float32 rounding of the averages (tested: boxes within 1e-3 px,
probabilities within 1e-5).
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
import torch
from facenet_pytorch.models.utils.detect_face import (
    batched_nms_numpy,
    bbreg,
    fixed_batch_process,
    generateBoundingBox,
    imresample,
    pad,
    rerec,
)
from torchvision.ops.boxes import batched_nms


@lru_cache(maxsize=4096)
def area_matrix(n: int, m: int) -> np.ndarray:
    """(m, n) float32 matrix averaging n samples into m bins exactly as ``adaptive_avg_pool2d`` bins them."""
    mat = np.zeros((m, n), dtype=np.float32)
    for i in range(m):
        start, end = (i * n) // m, -((-(i + 1) * n) // m)
        mat[i, start:end] = 1.0 / (end - start)
    mat.flags.writeable = False
    return mat


def area_resize(region: np.ndarray, size: int) -> np.ndarray:
    """``interpolate(region[None], (size, size), mode="area")[0]`` for a (C, h, w) float32 array."""
    return area_matrix(region.shape[1], size) @ region @ area_matrix(region.shape[2], size).T


def _candidates(imgs_np: np.ndarray, boxes: torch.Tensor, image_inds: torch.Tensor, w: int, h: int,
                size: int) -> torch.Tensor:
    """facenet-pytorch's candidate crop loop, with :func:`area_resize`; normalised R-Net / O-Net input."""
    from threadpoolctl import threadpool_limits

    y, ey, x, ex = pad(boxes, w, h)
    inds = image_inds.cpu().numpy()
    im_data = []
    # One BLAS thread: these products are tiny, and idle OpenBLAS threads spinning after them would compete with
    # torch's own threads for the 2 cores (twice slower convolutions measured here).
    with threadpool_limits(limits=1, user_api="blas"):
        for k in range(len(y)):
            if ey[k] > (y[k] - 1) and ex[k] > (x[k] - 1):
                im_data.append(area_resize(imgs_np[inds[k], :, (y[k] - 1):ey[k], (x[k] - 1):ex[k]], size))
    data = torch.from_numpy(np.stack(im_data)).contiguous(memory_format=torch.channels_last)
    return (data - 127.5) * 0.0078125


def detect_face(imgs: np.ndarray, minsize: int, pnet: torch.nn.Module, rnet: torch.nn.Module,
                onet: torch.nn.Module, threshold: tuple[float, float, float], factor: float,
                device: torch.device) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """facenet-pytorch's ``detect_face`` for a batch of equal-size RGB uint8 images (B, H, W, 3).

    Returns:
        Per image, the boxes (N, 5: x1, y1, x2, y2, probability) and the landmarks (N, 5, 2), in facenet-pytorch's
        order. An image smaller than the minimum face gives none (facenet-pytorch raises there).
    """
    batch_size, h, w = imgs.shape[:3]
    model_dtype = next(pnet.parameters()).dtype
    imgs_t = torch.as_tensor(np.ascontiguousarray(imgs), device=device).permute(0, 3, 1, 2).type(model_dtype)
    imgs_np = imgs_t.cpu().numpy()
    m = 12.0 / minsize
    minl = min(h, w) * m
    scales = []
    scale_i = m
    while minl >= 12:
        scales.append(scale_i)
        scale_i = scale_i * factor
        minl = minl * factor
    if not scales:
        return ([np.zeros((0, 5), np.float32)] * batch_size, [np.zeros((0, 5, 2), np.float32)] * batch_size)

    # First stage
    boxes, image_inds, scale_picks, offset = [], [], [], 0
    for scale in scales:
        im_data = imresample(imgs_t, (int(h * scale + 1), int(w * scale + 1)))
        im_data = (im_data - 127.5) * 0.0078125
        reg, probs = pnet(im_data)
        boxes_scale, image_inds_scale = generateBoundingBox(reg, probs[:, 1], scale, threshold[0])
        boxes.append(boxes_scale)
        image_inds.append(image_inds_scale)
        pick = batched_nms(boxes_scale[:, :4], boxes_scale[:, 4], image_inds_scale, 0.5)
        scale_picks.append(pick + offset)
        offset += boxes_scale.shape[0]
    boxes_t = torch.cat(boxes, dim=0)
    inds_t = torch.cat(image_inds, dim=0)
    picks = torch.cat(scale_picks, dim=0)
    boxes_t, inds_t = boxes_t[picks], inds_t[picks]
    pick = batched_nms(boxes_t[:, :4], boxes_t[:, 4], inds_t, 0.7)
    boxes_t, inds_t = boxes_t[pick], inds_t[pick]
    regw = boxes_t[:, 2] - boxes_t[:, 0]
    regh = boxes_t[:, 3] - boxes_t[:, 1]
    qq1 = boxes_t[:, 0] + boxes_t[:, 5] * regw
    qq2 = boxes_t[:, 1] + boxes_t[:, 6] * regh
    qq3 = boxes_t[:, 2] + boxes_t[:, 7] * regw
    qq4 = boxes_t[:, 3] + boxes_t[:, 8] * regh
    boxes_t = rerec(torch.stack([qq1, qq2, qq3, qq4, boxes_t[:, 4]]).permute(1, 0))

    # Second stage
    if len(boxes_t) > 0:
        im_data = _candidates(imgs_np, boxes_t, inds_t, w, h, 24).to(device=device, dtype=model_dtype)
        out = fixed_batch_process(im_data, rnet)
        out0, out1 = out[0].permute(1, 0), out[1].permute(1, 0)
        score = out1[1, :]
        ipass = score > threshold[1]
        boxes_t = torch.cat((boxes_t[ipass, :4], score[ipass].unsqueeze(1)), dim=1)
        inds_t = inds_t[ipass]
        mv = out0[:, ipass].permute(1, 0)
        pick = batched_nms(boxes_t[:, :4], boxes_t[:, 4], inds_t, 0.7)
        boxes_t, inds_t, mv = boxes_t[pick], inds_t[pick], mv[pick]
        boxes_t = rerec(bbreg(boxes_t, mv))

    # Third stage
    points = torch.zeros(0, 5, 2, device=device)
    if len(boxes_t) > 0:
        im_data = _candidates(imgs_np, boxes_t, inds_t, w, h, 48).to(device=device, dtype=model_dtype)
        out = fixed_batch_process(im_data, onet)
        out0, out1, out2 = out[0].permute(1, 0), out[1].permute(1, 0), out[2].permute(1, 0)
        score = out2[1, :]
        ipass = score > threshold[2]
        points = out1[:, ipass]
        boxes_t = torch.cat((boxes_t[ipass, :4], score[ipass].unsqueeze(1)), dim=1)
        inds_t = inds_t[ipass]
        mv = out0[:, ipass].permute(1, 0)
        w_i = boxes_t[:, 2] - boxes_t[:, 0] + 1
        h_i = boxes_t[:, 3] - boxes_t[:, 1] + 1
        points_x = w_i.repeat(5, 1) * points[:5, :] + boxes_t[:, 0].repeat(5, 1) - 1
        points_y = h_i.repeat(5, 1) * points[5:10, :] + boxes_t[:, 1].repeat(5, 1) - 1
        points = torch.stack((points_x, points_y)).permute(2, 1, 0)
        boxes_t = bbreg(boxes_t, mv)
        pick = batched_nms_numpy(boxes_t[:, :4], boxes_t[:, 4], inds_t, 0.7, "Min")
        boxes_t, inds_t, points = boxes_t[pick], inds_t[pick], points[pick]

    boxes_np, points_np, inds_np = boxes_t.cpu().numpy(), points.cpu().numpy(), inds_t.cpu().numpy()
    return ([boxes_np[inds_np == b].copy() for b in range(batch_size)],
            [points_np[inds_np == b].copy() for b in range(batch_size)])
