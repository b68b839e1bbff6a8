"""MTCNN detection: facenet-pytorch's ``detect_face`` with its image resizes done on a summed-area table.

facenet-pytorch (MIT licence, Tim Esler) area-resizes the whole image once per pyramid level and then each face
candidate, one at a time, to R-Net's 24 px and O-Net's 48 px inputs (``interpolate(mode="area")``): hundreds of
calls per image, the largest cost of a detection on a CPU. An area resize averages integer pixel windows (bin i of an
n -> m resize covers ``[floor(i n / m), ceil((i + 1) n / m))``), and a window's sum is four lookups in a summed-area
table of the uint8 image, exactly (integers), for every level and every candidate at once (:class:`IntegralImage`).
Everything else is facenet-pytorch's code, called as is or transcribed line for line. facenet-pytorch itself is left
untouched, so a reference ``MTCNN`` in the same process (the benchmarks, the tests) runs exactly as published.

The network inputs equal facenet-pytorch's bit for bit (tested), so the results equal ``MTCNN.detect`` (tested on
real images: boxes within 1e-3 px, probabilities within 1e-5; the nets' channels-last layout reorders float sums).
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch
from facenet_pytorch.models.utils.detect_face import (
    batched_nms_numpy,
    bbreg,
    fixed_batch_process,
    generateBoundingBox,
    pad,
    rerec,
)
from torchvision.ops.boxes import batched_nms

from models.mtcnn_np import IntegralImage, _bins, pyramid_level, pyramid_scales  # noqa: F401  (_bins: for tests)


def _candidates(
    integral: IntegralImage, boxes: torch.Tensor, image_inds: torch.Tensor, w: int, h: int, size: int
) -> torch.Tensor:
    """facenet-pytorch's candidate crops (its ``pad``, the same skip rule), resized exactly; normalised input."""
    y, ey, x, ex = pad(boxes, w, h)
    keep = (ey > (y - 1)) & (ex > (x - 1))
    inds = image_inds.cpu().numpy()[keep]
    data = integral.crops(inds, y[keep] - 1, ey[keep], x[keep] - 1, ex[keep], size)
    data -= np.float32(127.5)
    data *= np.float32(0.0078125)
    return torch.from_numpy(data).permute(0, 3, 1, 2)


def _stage_one(
    integral: IntegralImage,
    h: int,
    w: int,
    scales: list[float],
    pnet: torch.nn.Module,
    threshold: float,
    device: torch.device,
    model_dtype: torch.dtype,
) -> tuple[torch.Tensor, torch.Tensor]:
    """P-Net over the pyramid: candidate boxes squared, and their image indices.

    The pyramid levels are resized by a helper thread (NumPy releases the GIL) while P-Net runs on the levels before.
    """

    def level(scale: float) -> np.ndarray:
        return pyramid_level(integral, h, w, scale)

    boxes, image_inds, scale_picks, offset = [], [], [], 0
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="affectlab-pyramid") as pool:
        levels = pool.map(level, scales)
        for scale, data in zip(scales, levels, strict=True):
            im_data = torch.from_numpy(data).permute(0, 3, 1, 2).to(device=device, dtype=model_dtype)
            reg, probs = pnet(im_data)
            boxes_scale, image_inds_scale = generateBoundingBox(reg, probs[:, 1], scale, threshold)
            pick = batched_nms(boxes_scale[:, :4], boxes_scale[:, 4], image_inds_scale, 0.5)
            boxes.append(boxes_scale)
            image_inds.append(image_inds_scale)
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
    return boxes_t, inds_t


def _stage_three(
    integral: IntegralImage,
    boxes_t: torch.Tensor,
    inds_t: torch.Tensor,
    w: int,
    h: int,
    onet: torch.nn.Module,
    threshold: float,
    device: torch.device,
    model_dtype: torch.dtype,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """O-Net on R-Net's boxes: the final boxes, their image indices and landmarks (N, 5, 2)."""
    im_data = _candidates(integral, boxes_t, inds_t, w, h, 48).to(device=device, dtype=model_dtype)
    out = fixed_batch_process(im_data, onet)
    out0, out1, out2 = out[0].permute(1, 0), out[1].permute(1, 0), out[2].permute(1, 0)
    score = out2[1, :]
    ipass = score > threshold
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
    return boxes_t, inds_t, points


def detect_face(
    imgs: np.ndarray,
    minsize: int,
    pnet: torch.nn.Module,
    rnet: torch.nn.Module,
    onet: torch.nn.Module,
    threshold: tuple[float, float, float],
    factor: float,
    device: torch.device,
) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """facenet-pytorch's ``detect_face`` for a batch of equal-size RGB uint8 images (B, H, W, 3).

    Returns:
        Per image, the boxes (N, 5: x1, y1, x2, y2, probability) and the landmarks (N, 5, 2), in facenet-pytorch's
        order. An image smaller than the minimum face gives none (facenet-pytorch raises there).
    """
    batch_size, h, w = imgs.shape[:3]
    model_dtype = next(pnet.parameters()).dtype
    integral = IntegralImage(np.ascontiguousarray(imgs, dtype=np.uint8))
    scales = pyramid_scales(h, w, minsize, factor)
    if not scales:
        return ([np.zeros((0, 5), np.float32)] * batch_size, [np.zeros((0, 5, 2), np.float32)] * batch_size)

    boxes_t, inds_t = _stage_one(integral, h, w, scales, pnet, threshold[0], device, model_dtype)

    # Second stage
    if len(boxes_t) > 0:
        im_data = _candidates(integral, boxes_t, inds_t, w, h, 24).to(device=device, dtype=model_dtype)
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

    points = torch.zeros(0, 5, 2, device=device)
    if len(boxes_t) > 0:
        boxes_t, inds_t, points = _stage_three(integral, boxes_t, inds_t, w, h, onet, threshold[2], device, model_dtype)

    boxes_np, points_np, inds_np = boxes_t.cpu().numpy(), points.cpu().numpy(), inds_t.cpu().numpy()
    return (
        [boxes_np[inds_np == b].copy() for b in range(batch_size)],
        [points_np[inds_np == b].copy() for b in range(batch_size)],
    )
