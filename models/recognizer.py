"""Batched emotion recognition with the HSEmotion / EmotiEffLib models.

Preprocessing is the reference's torch path, exactly: the RGB crop as a PIL image, torchvision ``Resize((S, S))``
(bilinear, antialiased, aspect ratio not kept), ``ToTensor``, ``Normalize(mean, std)``. The backbone's pooled features
go through the published linear head; probabilities are the softmax of the emotion logits only, and valence/arousal
(outputs 8 and 9 of the ``*_va_mtl`` models) are clipped to [-1, 1] as the author recommends.

Two backends give the same numbers (within 1e-4): PyTorch on the converted safetensors weights (the reference-exact
path, ``--exact``), and ONNX Runtime (the entry points' default on the CPU) on the published ONNX file, cut before its
final Gemm to expose the features as the reference does, or on a one-time export of the safetensors weights kept in
the weights folder with its head, so that loading it later imports no torch. Preprocessing is NumPy (bit for bit
torchvision's ``ToTensor`` and ``Normalize``). The
reference's ONNX path resizes with ``cv2.resize`` instead; ``resize="cv2"`` reproduces it.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import numpy as np
from PIL import Image

from models import weights as weights_mod
from models.download import git_blob_sha1
from models.errors import AffectLabError, WeightsMissingError
from models.ort_sessions import EXPORT_BATCH_DIM, batch_dim_name, ort_session
from models.registry import ModelSpec, onnx_variant
from models.runtime import OnnxSession
from models.types import EmotionPrediction

if TYPE_CHECKING:
    import torch

Backend = Literal["torch", "onnx"]
Resize = Literal["pil", "cv2"]
Precision = Literal["fp32", "bf16"]


class DeviceUnavailableError(AffectLabError):
    """The requested torch device does not exist on this machine."""


def resolve_device(device: str) -> torch.device | str:
    """Checks a device string: ``cpu``, ``cuda`` or ``cuda:N`` (only when CUDA is present).

    Returns:
        The torch device, or the string ``"cpu"`` as it is (so that the torch-free path never imports torch).

    Raises:
        DeviceUnavailableError: CUDA was asked for and is not available.
    """
    if device == "cpu":
        return "cpu"
    import torch

    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise DeviceUnavailableError(f"device {device!r} was asked for but CUDA is not available; use --device cpu")
    if dev.type not in ("cpu", "cuda"):
        raise DeviceUnavailableError(f"unsupported device {device!r}; use cpu or cuda[:N]")
    return dev


def preprocess(crops: Sequence[np.ndarray], spec: ModelSpec, resize: Resize = "pil") -> torch.Tensor:
    """Turns RGB uint8 crops into the model's normalised input batch (N, 3, S, S), float32 (a torch tensor).

    The same numbers as :func:`preprocess_array`, bit for bit.
    """
    import torch

    return torch.from_numpy(preprocess_array(crops, spec, resize))


def preprocess_array(crops: Sequence[np.ndarray], spec: ModelSpec, resize: Resize = "pil") -> np.ndarray:
    """Turns RGB uint8 crops into the model's normalised input batch (N, 3, S, S), float32 (NumPy, no torch).

    ToTensor's ``/ 255`` and Normalize's ``(x - mean) / std``, each one IEEE float32 operation as torch does them.
    A ``caffe`` model (``spec.preprocessing``, ``mobilenet_7``) gets the channels in BGR order and ``x - mean`` on the
    raw 0-255 values instead (no ``/ 255``; its std is 1), as Keras's ``preprocess_input(mode="caffe")``.

    Args:
        crops: RGB uint8 arrays (h, w, 3), any size above zero.
        spec: The model's registry entry (input size, mean, std).
        resize: ``pil`` (the reference torch path) or ``cv2`` (the reference ONNX path).

    Returns:
        The input array, C-contiguous.
    """
    s = spec.input_size
    if resize == "cv2":
        import cv2

        resized = [cv2.resize(c, (s, s)) for c in crops]
    else:
        resized = [np.asarray(Image.fromarray(c).resize((s, s), Image.Resampling.BILINEAR)) for c in crops]
    if spec.preprocessing == "caffe":
        x = np.stack(resized)[..., ::-1].transpose(0, 3, 1, 2).astype(np.float32)
        x -= np.asarray(spec.mean, dtype=np.float32).reshape(1, 3, 1, 1)
        if any(s != 1.0 for s in spec.std):
            x /= np.asarray(spec.std, dtype=np.float32).reshape(1, 3, 1, 1)
        return np.ascontiguousarray(x)
    x = np.stack(resized).transpose(0, 3, 1, 2).astype(np.float32)
    x /= np.float32(255)
    x -= np.asarray(spec.mean, dtype=np.float32).reshape(1, 3, 1, 1)
    x /= np.asarray(spec.std, dtype=np.float32).reshape(1, 3, 1, 1)
    return np.ascontiguousarray(x)


@dataclass(frozen=True)
class Head:
    """A linear classifier over backbone features.

    Attributes:
        weight: (K, F) float32.
        bias: (K,) float32.
        name: Model (or fine-tuned version) name reported with predictions.
        weights_hash: Identifies these head weights with their backbone.
        engagement_weight: (1, F) per-face engagement-level head of a fine-tuned version, or None.
        engagement_bias: (1,) its bias.
    """

    weight: np.ndarray
    bias: np.ndarray
    name: str
    weights_hash: str
    engagement_weight: np.ndarray | None = None
    engagement_bias: np.ndarray | None = None


def channels_last(precision: str) -> bool:
    """Whether the torch backend runs the backbone channels-last: only at bf16.

    At fp32 the torch backend is the reference path (``--exact``), so it keeps the reference's contiguous layout and
    gives its numbers bit for bit. Channels-last was ~10 % faster on CPU, but its convolution kernels sum in another
    order: on some CPUs MobileFaceNet's features then drift by 1.3e-5 (features up to ~8), past the 1e-5 parity bound.
    The fast default path is ONNX Runtime; bf16 (an explicit opt-in) uses channels-last.
    """
    return precision == "bf16"


class EmotionRecognizer:
    """Runs an emotion model on face crops. Shared safely between requests: it keeps no per-request state."""

    def __init__(
        self,
        spec: ModelSpec,
        head: Head,
        *,
        backbone: torch.nn.Module | None = None,
        onnx_session: OnnxSession | None = None,
        device: str = "cpu",
        resize: Resize = "pil",
        precision: Precision = "fp32",
        batch_size: int = 32,
        onnx_workers: int = 1,
    ) -> None:
        """Wraps a loaded backbone; use :meth:`load` to build one from the weights folder."""
        self.spec = spec
        self.head = head
        self.device = resolve_device(device)
        self.backbone = backbone
        self.onnx_session = onnx_session
        self.resize: Resize = resize
        self.precision: Precision = precision
        self.batch_size = batch_size
        self.onnx_workers = onnx_workers
        self._w = np.ascontiguousarray(head.weight, dtype=np.float32)
        self._b = np.ascontiguousarray(head.bias, dtype=np.float32)

    @property
    def name(self) -> str:
        """Name reported with predictions."""
        return self.head.name

    @property
    def weights_hash(self) -> str:
        """Hash of the weights that make the predictions."""
        return self.head.weights_hash

    @property
    def backend(self) -> Backend:
        """``torch`` or ``onnx``."""
        return "onnx" if self.onnx_session is not None else "torch"

    @classmethod
    def load(
        cls,
        name: str,
        weights_dir: str | Path,
        *,
        device: str = "cpu",
        backend: Backend = "torch",
        resize: Resize = "pil",
        precision: Precision = "fp32",
        batch_size: int = 32,
    ) -> EmotionRecognizer:
        """Loads a registered emotion model from the weights folder (safetensors or ONNX; never pickle).

        Args:
            name: Registry name of a PyTorch checkpoint (``enet_b0_8_best_vgaf``...) or of a fine-tuned version
                (``base@...``, see ``models.versions``).
            weights_dir: Weights folder (the entry point passes ``Settings.weights_dir``).
            device: ``cpu``, ``cuda`` or ``cuda:N``.
            backend: ``torch`` or ``onnx`` (uses the published ``NAME.onnx`` file).
            resize: ``pil`` (reference torch preprocessing) or ``cv2`` (reference ONNX preprocessing).
            precision: ``fp32`` (reference-exact) or ``bf16`` (opt-in autocast; changes the numbers slightly).
            batch_size: Crops per forward pass.

        Raises:
            UnknownModelError: No such model.
            WeightsMissingError: Its weights are not in the folder; the message says how to get them.
            AffectLabError: The model is not an emotion model or cannot run here.
        """
        resolve_device(device)  # a missing CUDA is a setup error on every backend
        wdir = Path(weights_dir).expanduser()
        if backend == "onnx":
            if "@" not in name:  # a registry entry (not a fine-tuned version): no torch needed once exported
                from models.registry import get_spec

                spec = get_spec(name)
                published = onnx_variant(spec.name)
                if published is not None and weights_mod.weights_path(published.name, wdir).is_file():
                    return cls._load_onnx(spec, wdir, device=device, resize=resize, batch_size=batch_size)
                cached = cls._load_exported(spec, wdir, device=device, resize=resize, batch_size=batch_size)
                if cached is not None:
                    return cached
            # No published ONNX file here, no export yet (or a fine-tuned version): export the verified weights.
            torch_rec = cls.load(name, wdir, device="cpu", backend="torch", resize=resize, batch_size=batch_size)
            return torch_rec._to_onnx_runtime(wdir, device)
        import torch

        from models.backbones import split_head
        from models.versions import load_model

        loaded = load_model(name, wdir)
        spec = loaded.spec
        backbone, linear = split_head(loaded.model, spec)
        eng_w, eng_b = loaded.engagement or (None, None)
        head = Head(
            weight=linear.weight.detach().cpu().numpy(),
            bias=linear.bias.detach().cpu().numpy(),
            name=name,
            weights_hash=loaded.weights_hash,
            engagement_weight=eng_w,
            engagement_bias=eng_b,
        )
        dev = resolve_device(device)
        backbone = backbone.eval().to(dev)
        if channels_last(precision):
            backbone = backbone.to(memory_format=torch.channels_last)
        for p in backbone.parameters():
            p.requires_grad_(False)
        return cls(
            spec, head, backbone=backbone, device=device, resize=resize, precision=precision, batch_size=batch_size
        )

    @classmethod
    def _load_onnx(
        cls, spec: ModelSpec, wdir: Path, *, device: str, resize: Resize, batch_size: int
    ) -> EmotionRecognizer:
        import onnx
        from onnx import helper, numpy_helper

        ospec = onnx_variant(spec.name)
        if ospec is None:
            raise AffectLabError(f"{spec.name!r} has no published ONNX file; use --backend torch")
        path = weights_mod.weights_path(ospec.name, wdir)
        if not path.is_file():
            raise WeightsMissingError(ospec.name, str(wdir))
        model = onnx.load(str(path))
        graph = model.graph
        gemm = graph.node[-1]
        if gemm.op_type != "Gemm" or len(gemm.input) < 3:
            raise AffectLabError(f"{path}: expected the published layout (last node Gemm), got {gemm.op_type}")
        inits = {t.name: t for t in graph.initializer}
        weight = numpy_helper.to_array(inits[gemm.input[1]]).astype(np.float32)
        bias = numpy_helper.to_array(inits[gemm.input[2]]).astype(np.float32)
        trans_b = next((a.i for a in gemm.attribute if a.name == "transB"), 0)
        if not trans_b:
            weight = weight.T
        graph.node.remove(gemm)
        del graph.output[:]
        graph.output.append(
            helper.make_tensor_value_info(gemm.input[0], onnx.TensorProto.FLOAT, [None, weight.shape[1]])
        )
        session, workers = ort_session(model.SerializeToString(), device, batch_dim_name(model))
        head = Head(weight=weight, bias=bias, name=spec.name, weights_hash=git_blob_sha1(path))
        return cls(
            spec, head, onnx_session=session, device="cpu", resize=resize, batch_size=batch_size, onnx_workers=workers
        )

    @staticmethod
    def _export_path(wdir: Path, name: str, weights_hash: str) -> Path:
        return Path(wdir) / "onnx-export" / f"{name}-{weights_hash.replace('+', '-')[:40]}.onnx"

    @classmethod
    def _load_exported(
        cls, spec: ModelSpec, wdir: Path, *, device: str, resize: Resize, batch_size: int
    ) -> EmotionRecognizer | None:
        """The registry model's earlier ONNX export and head (``.head.npz``), without torch; None if there is none.

        The export is found by the source hash recorded in the safetensors header (read as JSON: no tensor
        library), so a changed weights file never reuses a stale export.
        """
        path = weights_mod.weights_path(spec.name, wdir)
        if not spec.stores_safetensors or not path.is_file():
            return None
        try:
            with path.open("rb") as f:
                (n,) = struct.unpack("<Q", f.read(8))
                meta = json.loads(f.read(n)).get("__metadata__") or {}
        except (OSError, ValueError, struct.error):
            return None
        sha1 = meta.get("source_sha1", "")
        if not sha1 or meta.get("name") != spec.name:
            return None
        onnx_path = cls._export_path(wdir, spec.name, sha1)
        head_path = onnx_path.with_suffix(".head.npz")
        if not (onnx_path.is_file() and head_path.is_file()):
            return None
        with np.load(head_path) as z:
            head = Head(weight=z["weight"], bias=z["bias"], name=spec.name, weights_hash=sha1)
        session, workers = ort_session(onnx_path.read_bytes(), device, EXPORT_BATCH_DIM)
        return cls(
            spec, head, onnx_session=session, device="cpu", resize=resize, batch_size=batch_size, onnx_workers=workers
        )

    def _to_onnx_runtime(self, wdir: Path, device: str) -> EmotionRecognizer:
        """The same model on ONNX Runtime: the backbone exported once (cached in ``<weights_dir>/onnx-export``).

        The head is kept beside it (``.head.npz``) so that later loads need no torch (:meth:`_load_exported`).
        """
        import os

        import torch

        assert self.backbone is not None
        path = self._export_path(wdir, self.name, self.weights_hash)
        folder = path.parent
        head_path = path.with_suffix(".head.npz")
        if "@" not in self.name and not head_path.is_file():
            folder.mkdir(parents=True, exist_ok=True)
            tmp = folder / f".{path.stem}.{os.getpid()}.head.tmp.npz"
            np.savez(tmp, weight=self.head.weight, bias=self.head.bias)
            os.replace(tmp, head_path)
        if not path.is_file():
            folder.mkdir(parents=True, exist_ok=True)
            tmp = folder / f".{path.name}.{os.getpid()}.tmp"
            s = self.spec.input_size
            with torch.inference_mode(False), torch.no_grad():
                torch.onnx.export(
                    self.backbone,
                    (torch.zeros(1, 3, s, s),),
                    str(tmp),
                    input_names=["input"],
                    output_names=["features"],
                    dynamic_axes={"input": {0: EXPORT_BATCH_DIM}, "features": {0: EXPORT_BATCH_DIM}},
                    opset_version=17,
                    dynamo=False,
                )
            os.replace(tmp, path)
        session, workers = ort_session(path.read_bytes(), device, EXPORT_BATCH_DIM)
        return EmotionRecognizer(
            self.spec,
            self.head,
            onnx_session=session,
            device="cpu",
            resize=self.resize,
            batch_size=self.batch_size,
            onnx_workers=workers,
        )

    def extract_features(self, crops: Sequence[np.ndarray]) -> np.ndarray:
        """Backbone features of face crops.

        Args:
            crops: RGB uint8 arrays, each at least 1x1.

        Returns:
            Float32 array (N, feature_dim).
        """
        if self.onnx_session is not None and self.onnx_workers > 1 and len(crops) > 1:
            return self._extract_parallel(crops)
        out = []
        for i in range(0, len(crops), self.batch_size):
            x = preprocess_array(crops[i : i + self.batch_size], self.spec, self.resize)
            out.append(self._forward(x))
        if not out:
            return np.zeros((0, self.spec.feature_dim), dtype=np.float32)
        return np.concatenate(out)

    def _extract_parallel(self, crops: Sequence[np.ndarray]) -> np.ndarray:
        """ONNX Runtime on CPU: each batch split into one chunk per worker, run side by side.

        A chunk is preprocessed here, in torch's own threads (torch ops started from several threads at once would
        each start a team of OpenMP threads and oversubscribe the cores), and handed to a worker at once, so that
        the next chunk's preprocessing overlaps the first runs; the single-threaded ORT runs release the GIL.
        """
        from concurrent.futures import ThreadPoolExecutor

        out: list[np.ndarray] = []
        with ThreadPoolExecutor(max_workers=self.onnx_workers) as pool:
            for i in range(0, len(crops), self.batch_size):  # one batch in memory at a time
                batch = crops[i : i + self.batch_size]
                n = min(self.onnx_workers, len(batch))
                parts = [batch[len(batch) * k // n : len(batch) * (k + 1) // n] for k in range(n)]
                futures = [pool.submit(self._forward, preprocess_array(p, self.spec, self.resize)) for p in parts]
                out.extend(f.result() for f in futures)
        return np.concatenate(out)

    def _forward(self, x: np.ndarray) -> np.ndarray:
        if self.onnx_session is not None:
            return self.onnx_session.run(None, {"input": x})[0].astype(np.float32)
        assert self.backbone is not None
        import torch

        with torch.inference_mode():
            t = torch.from_numpy(x).to(self.device)
            if channels_last(self.precision):
                t = t.contiguous(memory_format=torch.channels_last)
            if self.precision == "bf16":
                with torch.autocast(device_type=torch.device(self.device).type, dtype=torch.bfloat16):
                    f = self.backbone(t)
                f = f.float()
            else:
                f = self.backbone(t)
            features: np.ndarray = f.cpu().numpy()  # nn.Module.__call__ is typed Any in torch
            return features

    def logits(self, features: np.ndarray) -> np.ndarray:
        """Raw head outputs (emotion logits, then V and A for ``*_va_mtl``) for features (N, F)."""
        if self.backbone is None:  # ONNX Runtime: no torch in the process
            return features @ self._w.T + self._b
        import torch

        with torch.inference_mode():
            return torch.nn.functional.linear(
                torch.from_numpy(features), torch.from_numpy(self._w), torch.from_numpy(self._b)
            ).numpy()

    def classify(self, features: np.ndarray) -> list[EmotionPrediction]:
        """Emotion predictions from backbone features (N, F)."""
        if len(features) == 0:
            return []
        raw = self.logits(np.ascontiguousarray(features, dtype=np.float32))
        k = len(self.spec.labels)
        logits = raw[:, :k]
        z = logits - logits.max(axis=1, keepdims=True)
        probs = np.exp(z)
        probs /= probs.sum(axis=1, keepdims=True)
        va = np.clip(raw[:, k : k + 2], -1.0, 1.0) if self.spec.has_va else None
        eng = None
        if self.head.engagement_weight is not None and self.head.engagement_bias is not None:
            eng = np.clip(features @ self.head.engagement_weight.T + self.head.engagement_bias, 0.0, 1.0)[:, 0]
        return [
            EmotionPrediction(
                model=self.name,
                labels=self.spec.labels,
                features=features[i],
                logits=logits[i],
                probs=probs[i],
                valence=None if va is None else float(va[i, 0]),
                arousal=None if va is None else float(va[i, 1]),
                weights_hash=self.weights_hash,
                engagement=None if eng is None else float(eng[i]),
            )
            for i in range(len(features))
        ]

    def predict(self, crops: Sequence[np.ndarray]) -> list[EmotionPrediction]:
        """Features, logits, probabilities and V/A for each crop, batched."""
        return self.classify(self.extract_features(crops))
