"""``mobilenet_7.h5`` in PyTorch: Keras's MobileNet v1 rebuilt layer for layer and loaded from the ``.h5`` weights.

The published file is a whole Keras model (``model.save``): ``keras.applications.MobileNet(include_top=False,
pooling="avg", alpha=1.0)`` on a 224x224x3 input, then ``Dense(7, activation="softmax")``. This module reproduces it
in PyTorch (no TensorFlow) so that it runs like every other model: converted once to safetensors
(:func:`keras_state_dict`, called by ``models.convert``), built by ``models.backbones.build_model``, split into the
1024-d pooled features and the linear head, exported, fine-tuned.

The network (Keras layer names; ``relu6`` after every BatchNorm, BatchNorm epsilon 1e-3 as Keras's default):

- ``conv1``: 3x3 conv, 32 filters, stride 2, no bias; ``conv1_bn``.
- 13 blocks ``conv_dw_i`` (3x3 depthwise, no bias) / ``conv_dw_i_bn`` / ``conv_pw_i`` (1x1 conv, no bias) /
  ``conv_pw_i_bn``, with 64, 128, 128, 256, 256, 512 x6, 1024, 1024 filters; blocks 2, 4, 6 and 12 have stride 2.
- Global average pooling (1024 features), then the ``Dense`` head (the softmax is the probabilities' softmax).

Keras's padding: a stride-2 convolution pads one zero row at the bottom and one column at the right only
(``ZeroPadding2D(((0, 1), (0, 1)))`` then ``valid``; the same as TensorFlow's ``same`` on even sizes); a stride-1 3x3
pads one on every side. Keras 2 names the depthwise weight ``depthwise_kernel``, Keras 3 ``kernel``; both are read.
Weights are stored NHWC-style: ``Conv2D`` kernels ``(kh, kw, in, out)`` become
``(out, in, kh, kw)``; ``DepthwiseConv2D`` kernels ``(kh, kw, in, 1)`` become ``(in, 1, kh, kw)``; the ``Dense``
kernel ``(in, out)`` is transposed. The input here is NCHW (channels first), like every AffectLab model.

Input (``ModelSpec.preprocessing == "caffe"``, done by ``models.recognizer.preprocess_array``): the 224x224 crop in
BGR channel order, raw 0-255 values minus the per-channel mean ``(103.939, 116.779, 123.68)``, no division (what the
HSEmotion demo does by hand and ``keras.applications.imagenet_utils.preprocess_input(mode="caffe")`` does). The demo
resized with ``cv2.resize`` (``--resize cv2`` reproduces it); AffectLab's default is PIL's antialiased bilinear.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from models.errors import CheckpointFormatError
from models.keras_h5 import KerasLayerWeights, read_keras_weights

BN_EPS = 1e-3
"""Keras BatchNormalization's default epsilon (MobileNet keeps it)."""

STEM_FILTERS = 32
BLOCKS: tuple[tuple[int, int], ...] = (
    (64, 1),
    (128, 2),
    (128, 1),
    (256, 2),
    (256, 1),
    (512, 2),
    (512, 1),
    (512, 1),
    (512, 1),
    (512, 1),
    (512, 1),
    (1024, 2),
    (1024, 1),
)
"""(pointwise filters, depthwise stride) of Keras MobileNet v1's 13 blocks at alpha 1.0."""

FEATURE_DIM = BLOCKS[-1][0]
WEIGHTED_LAYERS = 2 + 4 * len(BLOCKS) + 1
"""conv1, conv1_bn, 13 x (dw, dw_bn, pw, pw_bn), the Dense head: 55 layers with weights."""


def _pad_same(x: torch.Tensor, stride: int) -> torch.Tensor:
    """Keras's padding of a 3x3 convolution: ``same`` at stride 1, bottom/right only at stride 2."""
    if stride == 1:
        return F.pad(x, (1, 1, 1, 1))
    return F.pad(x, (0, 1, 0, 1))


class ConvBN(nn.Module):
    """A bias-free convolution, BatchNorm (eps 1e-3) and ReLU6, with Keras's padding."""

    def __init__(self, cin: int, cout: int, kernel: int, stride: int, depthwise: bool = False) -> None:
        """``depthwise``: one 3x3 filter per channel (``DepthwiseConv2D``, ``cout == cin``)."""
        super().__init__()
        self.kernel = kernel
        self.stride = stride
        self.conv = nn.Conv2d(cin, cout, kernel, stride=stride, padding=0, bias=False, groups=cin if depthwise else 1)
        self.bn = nn.BatchNorm2d(cout, eps=BN_EPS)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``relu6(bn(conv(pad(x))))``."""
        if self.kernel > 1:
            x = _pad_same(x, self.stride)
        out: torch.Tensor = F.relu6(self.bn(self.conv(x)))
        return out


class KerasMobileNetV1(nn.Module):
    """Keras MobileNet v1 (alpha 1.0, pooled 1024-d features) with a linear head of ``num_classes`` outputs.

    ``forward`` returns the head's raw outputs (the logits the Keras softmax is applied to); ``classifier`` is the
    head (``models.backbones.head_path``), so replacing it with ``nn.Identity`` leaves the pooled features.
    """

    def __init__(self, num_classes: int = 7) -> None:
        """Random weights; load them with :func:`keras_state_dict`."""
        super().__init__()
        self.conv1 = ConvBN(3, STEM_FILTERS, 3, 2)
        layers: list[nn.Module] = []
        cin = STEM_FILTERS
        for cout, stride in BLOCKS:
            layers.append(nn.Sequential(ConvBN(cin, cin, 3, stride, depthwise=True), ConvBN(cin, cout, 1, 1)))
            cin = cout
        self.blocks = nn.Sequential(*layers)
        self.classifier: nn.Module = nn.Linear(FEATURE_DIM, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Raw head outputs ``[N, num_classes]`` of a caffe-preprocessed NCHW batch ``[N, 3, 224, 224]``."""
        x = self.blocks(self.conv1(x))
        out: torch.Tensor = self.classifier(x.mean(dim=(2, 3)))
        return out


def _conv_names() -> list[str]:
    """Module paths of the 27 ConvBN units in weighted-layer order (conv, then its BN)."""
    names = ["conv1"]
    for i in range(len(BLOCKS)):
        names += [f"blocks.{i}.0", f"blocks.{i}.1"]
    return names


def _check(layer: KerasLayerWeights, kind: str, shape: tuple[int, ...]) -> np.ndarray:
    if kind == "depthwise_kernel" and len(layer.values) == 1:  # Keras 3 names it ``kernel``, Keras 2 so
        kind = layer.weight_names[0].rsplit("/", 1)[-1].split(":", 1)[0]
        if kind not in ("depthwise_kernel", "kernel"):
            raise CheckpointFormatError(f"layer {layer.name!r}: expected a depthwise kernel, found {kind!r}")
    value = layer.get(kind)
    if value.shape != shape:
        raise CheckpointFormatError(
            f"layer {layer.name!r}: {kind} has shape {value.shape}, expected {shape} (Keras MobileNet v1, alpha 1.0)"
        )
    return np.ascontiguousarray(value, dtype=np.float32)


def state_dict_from_layers(layers: Sequence[KerasLayerWeights], num_classes: int) -> dict[str, np.ndarray]:
    """The :class:`KerasMobileNetV1` state dict (NumPy float32) of the weighted layers of a Keras MobileNet v1 file.

    Keras matches a file's weighted layers to the model's in order, ignoring names; so does this, checking each
    shape (a file of another architecture fails with the layer that does not fit).

    Raises:
        CheckpointFormatError: Not 55 weighted layers, or a shape that does not fit.
    """
    if len(layers) != WEIGHTED_LAYERS:
        names = [layer.name for layer in layers]
        shown = ", ".join([*names[:4], "...", *names[-3:]]) if len(names) > 8 else ", ".join(names)
        raise CheckpointFormatError(
            f"expected {WEIGHTED_LAYERS} weighted layers (conv1, conv1_bn, 13 depthwise/pointwise blocks with their "
            f"BatchNorms, the Dense head) of Keras MobileNet v1; found {len(layers)}: {shown}"
        )
    state: dict[str, np.ndarray] = {}
    channels = [(3, STEM_FILTERS, 3, False)]
    cin = STEM_FILTERS
    for cout, _ in BLOCKS:
        channels += [(cin, cin, 3, True), (cin, cout, 1, False)]
        cin = cout
    for k, (name, (ci, co, ks, depthwise)) in enumerate(zip(_conv_names(), channels, strict=True)):
        conv, bn = layers[2 * k], layers[2 * k + 1]
        if depthwise:
            kernel = _check(conv, "depthwise_kernel", (ks, ks, ci, 1))
            state[f"{name}.conv.weight"] = np.ascontiguousarray(kernel.transpose(2, 3, 0, 1))
        else:
            kernel = _check(conv, "kernel", (ks, ks, ci, co))
            state[f"{name}.conv.weight"] = np.ascontiguousarray(kernel.transpose(3, 2, 0, 1))
        state[f"{name}.bn.weight"] = _check(bn, "gamma", (co,))
        state[f"{name}.bn.bias"] = _check(bn, "beta", (co,))
        state[f"{name}.bn.running_mean"] = _check(bn, "moving_mean", (co,))
        state[f"{name}.bn.running_var"] = _check(bn, "moving_variance", (co,))
    head = layers[-1]
    state["classifier.weight"] = np.ascontiguousarray(_check(head, "kernel", (FEATURE_DIM, num_classes)).T)
    state["classifier.bias"] = _check(head, "bias", (num_classes,))
    return state


def keras_state_dict(path: str | Path, num_classes: int) -> dict[str, Any]:
    """Reads a Keras MobileNet v1 ``.h5`` file (whole model or weights) into a :class:`KerasMobileNetV1` state dict.

    Args:
        path: The ``.h5`` file (read with h5py: nothing in it runs).
        num_classes: Outputs of its Dense head (7 for ``mobilenet_7``).

    Returns:
        CPU tensors for ``KerasMobileNetV1(num_classes).load_state_dict(..., strict=True)`` (BatchNorm's
        ``num_batches_tracked`` included, as 0).

    Raises:
        CheckpointFormatError: Not a Keras HDF5 file, or not this architecture.
    """
    layers = read_keras_weights(path)  # its errors name the file
    try:
        arrays = state_dict_from_layers(layers, num_classes)
    except CheckpointFormatError as exc:
        raise CheckpointFormatError(f"{path}: {exc}") from None
    state: dict[str, Any] = {k: torch.from_numpy(v) for k, v in arrays.items()}
    for key in [k for k in state if k.endswith(".bn.running_var")]:
        state[key.replace("running_var", "num_batches_tracked")] = torch.tensor(0, dtype=torch.long)
    return state
