"""Face detection (facenet-pytorch MTCNN with the reference's settings) and cropping.

The reference (EmotiEffLib / HSEmotion) detects with ``MTCNN(keep_all=False, post_process=False, min_face_size=40)``,
default thresholds (0.6, 0.7, 0.7) and factor 0.709, keeps faces with probability > 0.9 and crops the tight box
truncated to int, with no margin. AffectLab does the same, with two fixes: boxes are clipped to the image (the
reference gives an empty crop for a negative coordinate) and an image smaller than the minimum face size gives no
face (facenet-pytorch raises ``torch.cat(): expected a non-empty list`` there). The pipeline is facenet-pytorch's,
its image resizes read from an exact summed-area table (``models.mtcnn``: the same network inputs, bit for bit);
facenet-pytorch itself is not modified. ``backend="onnx"`` runs the same three nets exported to ONNX with the glue in
NumPy (``models.mtcnn_np``): no torch import, boxes within 1e-3 px of facenet-pytorch's (tested).
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np

from models.types import Box, Face

DetectorBackend = Literal["torch", "onnx"]


@dataclass(frozen=True)
class DetectorConfig:
    """MTCNN settings; the defaults are the reference's.

    Attributes:
        min_face_size: Smallest face side in pixels the detector looks for.
        thresholds: P-Net, R-Net and O-Net score thresholds.
        factor: Scale step of the image pyramid.
        keep_prob: Faces whose probability is not above this are dropped.
        max_side: If set, images whose longer side exceeds it are downscaled for detection only (faster on large
            frames; boxes are mapped back to full resolution). None keeps the reference behaviour.
    """

    min_face_size: int = 40
    thresholds: tuple[float, float, float] = (0.6, 0.7, 0.7)
    factor: float = 0.709
    keep_prob: float = 0.9
    max_side: int | None = None


class FaceDetector:
    """Finds faces in RGB uint8 images. Holds only the MTCNN weights: safe to share between requests."""

    def __init__(
        self,
        config: DetectorConfig | None = None,
        device: str = "cpu",
        backend: DetectorBackend = "torch",
        weights_dir: str | Path | None = None,
    ) -> None:
        """Loads MTCNN (its weights ship inside the facenet-pytorch wheel).

        Args:
            config: Detector settings; None for the reference's.
            device: Torch device (the torch backend).
            backend: ``torch`` (facenet-pytorch's nets) or ``onnx`` (the same nets exported to ONNX, run by ONNX
                Runtime with NumPy glue, :mod:`models.mtcnn_np`: no torch import once exported; CPU only).
            weights_dir: Weights folder holding the exported nets; required by the onnx backend (the entry point
                passes ``Settings.weights_dir``), unused by torch's.
        """
        self.config = config or DetectorConfig()
        self.backend: DetectorBackend = backend
        self.device = device
        if backend == "onnx":
            from models.mtcnn_export import OnnxMtcnn

            if weights_dir is None:
                raise ValueError("the onnx face detector needs the weights folder holding its exported nets")
            self._onnx = OnnxMtcnn(Path(weights_dir).expanduser())
            return
        import torch
        from facenet_pytorch import MTCNN

        self._torch_device = torch.device(device)
        c = self.config
        self._mtcnn = MTCNN(
            keep_all=False,
            post_process=False,
            min_face_size=c.min_face_size,
            thresholds=list(c.thresholds),
            factor=c.factor,
            device=self._torch_device,
        ).eval()
        # Channels-last weights make the nets' convolutions and max-pools run in channels-last layout, where this
        # torch's CPU max_pool2d is about 8x faster; boxes move by < 1e-4 px (float summation order only).
        for net in (self._mtcnn.pnet, self._mtcnn.rnet, self._mtcnn.onet):
            net.to(memory_format=torch.channels_last)

    def with_config(self, config: DetectorConfig) -> FaceDetector:
        """This detector with other settings (minimum face size, downscaling), sharing its loaded nets.

        The nets do not depend on the settings: every detection reads ``self.config``.
        """
        other = copy.copy(self)
        other.config = config
        return other

    def _scale_for(self, shape: tuple[int, ...]) -> float:
        side = max(shape[0], shape[1])
        ms = self.config.max_side
        return 1.0 if ms is None or side <= ms else ms / side

    def detect(self, image: np.ndarray) -> list[Face]:
        """Detects the faces of one image.

        Args:
            image: RGB uint8 array (H, W, 3).

        Returns:
            Faces with probability above ``keep_prob``, largest first; empty when there is none.
        """
        return self.detect_batch([image])[0]

    def detect_batch(self, images: Sequence[np.ndarray]) -> list[list[Face]]:
        """Detects faces in several images; images of equal size go through MTCNN as one batch.

        Args:
            images: RGB uint8 arrays.

        Returns:
            One list of faces per image, in input order.
        """
        results: list[list[Face]] = [[] for _ in images]
        groups: dict[tuple[int, ...], list[int]] = {}
        for i, img in enumerate(images):
            groups.setdefault(img.shape, []).append(i)
        for shape, idxs in groups.items():
            scale = self._scale_for(shape)
            # An image smaller than the minimum face gives an empty scale pyramid in facenet-pytorch.
            if min(shape[0], shape[1]) * scale < self.config.min_face_size:
                continue
            batch = np.stack([images[i] for i in idxs])
            if scale != 1.0:
                batch = _resize_batch(batch, scale)
            boxes, points = self._detect_face(batch)
            for j, i in enumerate(idxs):
                # Largest first, as facenet-pytorch's MTCNN.detect(select_largest=True) orders them.
                order = np.argsort((boxes[j][:, 2] - boxes[j][:, 0]) * (boxes[j][:, 3] - boxes[j][:, 1]))[::-1]
                b = boxes[j][order]
                results[i] = self._faces(b[:, :4], b[:, 4], points[j][order], scale)
        return results

    def _detect_face(self, batch: np.ndarray) -> tuple[list[np.ndarray], list[np.ndarray]]:
        c = self.config
        if self.backend == "onnx":
            from models.mtcnn_np import detect_face as detect_np

            return detect_np(
                batch, c.min_face_size, self._onnx.pnet, self._onnx.rnet, self._onnx.onet, c.thresholds, c.factor
            )
        import torch

        from models.mtcnn import detect_face

        with torch.inference_mode():
            return detect_face(
                batch,
                c.min_face_size,
                self._mtcnn.pnet,
                self._mtcnn.rnet,
                self._mtcnn.onet,
                c.thresholds,
                c.factor,
                self._torch_device,
            )

    def _faces(self, boxes: np.ndarray, probs: np.ndarray, points: np.ndarray, scale: float) -> list[Face]:
        faces = []
        for k, (box, prob) in enumerate(zip(boxes, probs, strict=True)):
            if not float(prob) > self.config.keep_prob:
                continue
            b = np.asarray(box, dtype=np.float64) / scale
            lm = tuple((float(x) / scale, float(y) / scale) for x, y in np.asarray(points[k]))
            faces.append(
                Face(box=(float(b[0]), float(b[1]), float(b[2]), float(b[3])), det_score=float(prob), landmarks=lm)
            )
        return faces


def _resize_batch(batch: np.ndarray, scale: float) -> np.ndarray:
    from PIL import Image

    h, w = batch.shape[1:3]
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    return np.stack([np.asarray(Image.fromarray(img).resize(size, Image.Resampling.BILINEAR)) for img in batch])


def clip_box(box: Box, width: int, height: int) -> tuple[int, int, int, int]:
    """Truncates a box to int as the reference does, then clips it to the image.

    Args:
        box: ``(x1, y1, x2, y2)`` in pixels.
        width: Image width.
        height: Image height.

    Returns:
        Integer ``(x1, y1, x2, y2)`` with ``0 <= x1 <= x2 <= width`` and ``0 <= y1 <= y2 <= height``.
    """
    x1, y1, x2, y2 = (int(v) for v in box)
    x1, x2 = min(max(x1, 0), width), min(max(x2, 0), width)
    y1, y2 = min(max(y1, 0), height), min(max(y2, 0), height)
    return x1, y1, max(x1, x2), max(y1, y2)


def crop_face(image: np.ndarray, box: Box) -> np.ndarray:
    """Cuts a face out of an image: the tight box, truncated to int and clipped, no margin (as the reference).

    Args:
        image: RGB uint8 array (H, W, 3).
        box: ``(x1, y1, x2, y2)`` in pixels of ``image``.

    Returns:
        The crop (a copy), possibly empty when the box lies outside the image.
    """
    x1, y1, x2, y2 = clip_box(box, image.shape[1], image.shape[0])
    return np.ascontiguousarray(image[y1:y2, x1:x2])
