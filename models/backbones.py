"""Builds the PyTorch architecture of a registered checkpoint, with random weights.

The weights come from ``models.weights.load_weights`` (safetensors); this module never reads a file. The state-dict
keys of the models built here are those of the published checkpoints after ``models.convert`` renamed
``classifier.0.*`` to ``classifier.*``.
"""

from __future__ import annotations

from collections import OrderedDict

from torch import nn

from models.errors import CheckpointFormatError
from models.mobilefacenet import MobileFaceNet
from models.registry import ModelSpec

MOBILEFACENET_ARCH = "mobilefacenet"
MOBILEFACENET_EMBEDDING = 512
KERAS_MOBILENET_ARCH = "keras_mobilenet_v1"


def is_torch_buildable(spec: ModelSpec) -> bool:
    """Whether :func:`build_model` can build ``spec``'s architecture (timm models, MobileFaceNet, Keras MobileNet)."""
    return spec.is_emotion_model and spec.arch != "engagement_attention"


def build_model(spec: ModelSpec) -> nn.Module:
    """Builds ``spec``'s architecture with random weights, in evaluation mode.

    EfficientNets use timm's ``tf_`` variants (SAME padding, BatchNorm eps 1e-3), as the checkpoints were trained with:
    the non-``tf_`` variants accept the same keys but compute something else. ``mbf_va_mtl`` is
    ``Sequential(features=MobileFaceNet(), fc=Linear(512, 10))``, as published. ``mobilenet_7`` is Keras's MobileNet
    v1 rebuilt in PyTorch (:class:`models.keras_mobilenet.KerasMobileNetV1`).

    Args:
        spec: The registry entry.

    Returns:
        The model; ``model(x)`` returns the ``spec.num_outputs`` raw outputs.

    Raises:
        CheckpointFormatError: If ``spec`` is not a PyTorch-buildable emotion model (Keras entries, engagement).
    """
    if not is_torch_buildable(spec):
        raise CheckpointFormatError(
            f"model {spec.name!r} ({spec.arch}, {spec.fmt}) has no PyTorch architecture in AffectLab; "
            "run `python -m models list` for the runnable models."
        )
    if spec.arch == KERAS_MOBILENET_ARCH:
        from models.keras_mobilenet import KerasMobileNetV1

        return KerasMobileNetV1(spec.num_outputs).eval()
    if spec.arch == MOBILEFACENET_ARCH:
        model: nn.Module = nn.Sequential(
            OrderedDict(
                features=MobileFaceNet(fp16=False, num_features=MOBILEFACENET_EMBEDDING, blocks=(1, 4, 6, 2), scale=2),
                fc=nn.Linear(MOBILEFACENET_EMBEDDING, spec.num_outputs),
            )
        )
    else:
        import timm

        try:
            model = timm.create_model(spec.arch, pretrained=False, num_classes=spec.num_outputs)
        except RuntimeError as exc:  # timm: "Unknown model"
            raise CheckpointFormatError(f"timm cannot build {spec.arch!r} for {spec.name!r}: {exc}") from exc
    return model.eval()


def head_path(spec: ModelSpec) -> str:
    """Dotted attribute path of the final ``nn.Linear`` of ``spec``'s model (``fc``, ``head.fc`` or ``classifier``)."""
    if spec.arch == MOBILEFACENET_ARCH:
        return "fc"
    if spec.arch.startswith("mobilevit"):
        return "head.fc"
    return "classifier"


def find_head(model: nn.Module, spec: ModelSpec) -> tuple[nn.Module, str, nn.Linear]:
    """Where ``spec``'s architecture keeps its final Linear: ``(parent module, attribute name, the Linear)``.

    Raises:
        CheckpointFormatError: If there is no linear layer there.
    """
    *parents, last = head_path(spec).split(".")
    owner = model
    for part in parents:
        owner = getattr(owner, part)
    head = getattr(owner, last, None)
    if isinstance(head, nn.Sequential) and len(head) == 1:
        head = head[0]
    if not isinstance(head, nn.Linear):
        raise CheckpointFormatError(
            f"{spec.name}: expected a Linear layer at {head_path(spec)!r}, found {type(head).__name__}"
        )
    return owner, last, head


def split_head(model: nn.Module, spec: ModelSpec) -> tuple[nn.Module, nn.Linear]:
    """Splits ``model`` into a feature extractor and its final linear layer, as the reference does.

    The head is replaced by ``nn.Identity`` in place (as EmotiEffLib does), so ``features = backbone(x)`` and
    ``logits = head(features)`` reproduce ``model(x)``. A ``classifier`` that is a ``Sequential`` holding one
    ``Linear`` (the published pickle format) is handled too.

    Args:
        model: A model from :func:`build_model` (modified in place).
        spec: Its registry entry.

    Returns:
        ``(backbone, head)``: ``backbone`` is ``model`` itself with its head replaced; ``head`` the removed Linear.

    Raises:
        CheckpointFormatError: If the model has no linear head where ``spec`` says.
    """
    owner, last, head = find_head(model, spec)
    setattr(owner, last, nn.Identity())
    return model, head
