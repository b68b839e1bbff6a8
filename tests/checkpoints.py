"""Random-weight checkpoints in the published HSEmotion / EmotiEffLib formats, for tests that need no real weights.

Weights do not matter for parity (REFERENCE.md section 8): a model of the published architecture with random weights,
saved the way the authors saved theirs, exercises the same loading and inference code.

- :func:`random_published_module`: the module as published (whole ``nn.Module``; EfficientNet ``classifier`` is
  ``Sequential(Linear(F, K))``; mobilevit ``head.fc`` is ``Linear(768, 10)``; mbf is
  ``Sequential(features=MobileFaceNet, fc=Linear(512, 10))`` with EmotiEffLib's class imported as the top-level module
  ``mobilefacenet``, as the published pickle names it), every parameter and BatchNorm running stat randomised.
  The same ``seed`` gives the same weights for a PyTorch entry and its ``.onnx`` entry.
- :func:`save_published`: ``torch.save(module, path)``.
- :func:`export_published_onnx`: ONNX as published (opset 11, input ``input``, dynamic batch, last node Gemm).
- :func:`install_random_weights`: writes published files and imports them into a weights folder.

The API is shared by several test modules: keep it stable.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
import warnings
from collections import OrderedDict
from pathlib import Path

import torch
from torch import nn

from models.registry import ModelSpec, get_spec

__all__ = [
    "emotiefflib_mobilefacenet",
    "export_published_onnx",
    "install_random_weights",
    "random_published_module",
    "randomize_",
    "save_published",
]


def emotiefflib_mobilefacenet():
    """EmotiEffLib's ``backbones/mobilefacenet.py``, imported as the top-level module ``mobilefacenet`` (as published).

    Imported from the installed package's folder without importing ``emotiefflib`` itself (which needs cv2).
    """
    if "mobilefacenet" in sys.modules:
        return sys.modules["mobilefacenet"]
    spec = importlib.util.find_spec("emotiefflib")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("emotiefflib is not installed (pip install --no-deps emotiefflib)")
    backbones = str(Path(next(iter(spec.submodule_search_locations))) / "backbones")
    if backbones not in sys.path:
        sys.path.append(backbones)
    return importlib.import_module("mobilefacenet")


@torch.no_grad()
def randomize_(module: nn.Module, seed: int, calibration: torch.Tensor | None = None) -> nn.Module:
    """Randomises every parameter and BatchNorm running statistic of ``module`` in place, deterministically.

    Weight matrices and kernels get N(0, 1/fan_in); 1-d ``weight`` parameters (norm scales, PReLU slopes) U(0.5, 1.5);
    other 1-d parameters (biases) N(0, 0.1). Purely random running statistics make a deep net's output constant (the
    signal dies within a few blocks), which would make a parity test vacuous; so, given a ``calibration`` batch of
    natural images (normalised model inputs), the BatchNorm statistics are first measured on it in training mode,
    then perturbed: means shifted by N(0, 0.1) standard deviations, variances scaled by U(0.8, 1.25). Outputs then vary
    with the input at realistic magnitudes. Without it they are drawn at random: means N(0, 0.1), variances U(0.5, 2).
    """
    gen = torch.Generator().manual_seed(seed)
    for name, p in sorted(module.named_parameters(), key=lambda kv: kv[0]):
        if p.dim() >= 2:
            fan_in = p[0].numel()
            p.copy_(torch.randn(p.shape, generator=gen) / fan_in**0.5)
        elif name.endswith("weight"):
            p.copy_(torch.rand(p.shape, generator=gen) + 0.5)
        else:
            p.copy_(torch.randn(p.shape, generator=gen) * 0.1)
    norms = [m for m in module.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if calibration is not None and norms:
        saved = [m.momentum for m in norms]
        for m in norms:
            m.reset_running_stats()
            m.momentum = None  # cumulative average over the calibration batch
        module.train()
        module(calibration)
        for m, momentum in zip(norms, saved, strict=True):
            m.momentum = momentum
            std = m.running_var.clamp_min(1e-6).sqrt()
            m.running_mean.add_(torch.randn(m.running_mean.shape, generator=gen) * 0.1 * std)
            m.running_var.mul_(torch.rand(m.running_var.shape, generator=gen) * 0.45 + 0.8)
    else:
        for m in norms:
            m.running_mean.copy_(torch.randn(m.running_mean.shape, generator=gen) * 0.1)
            m.running_var.copy_(torch.rand(m.running_var.shape, generator=gen) * 1.5 + 0.5)
    for m in norms:
        if m.num_batches_tracked is not None:
            m.num_batches_tracked.fill_(int(torch.randint(1, 10_000, (1,), generator=gen)))
    return module.eval()


def calibration_batch(spec: ModelSpec, seed: int, n: int = 8) -> torch.Tensor:
    """Random crops of scikit-image's sample photographs, preprocessed as the model's inputs."""
    import numpy as np
    import skimage.data
    from PIL import Image

    from models.recognizer import preprocess

    rng = np.random.default_rng(seed)
    photos = [skimage.data.astronaut(), skimage.data.coffee(), skimage.data.chelsea()]
    crops = []
    for i in range(n):
        img = photos[i % len(photos)]
        h, w = img.shape[:2]
        side = int(rng.integers(min(h, w) // 4, min(h, w)))
        y, x = int(rng.integers(0, h - side + 1)), int(rng.integers(0, w - side + 1))
        crops.append(np.asarray(Image.fromarray(img[y : y + side, x : x + side])))
    return preprocess(crops, spec)


def random_published_module(spec: ModelSpec | str, seed: int = 0) -> nn.Module:
    """A random-weight model in the published format of ``spec`` (a PyTorch or ONNX entry).

    Args:
        spec: Registry entry or name.
        seed: Random seed; the same seed and architecture give the same weights.

    Returns:
        The module in evaluation mode.
    """
    spec = get_spec(spec) if isinstance(spec, str) else spec
    k = spec.num_outputs
    if spec.arch == "mobilefacenet":
        mbf = emotiefflib_mobilefacenet()
        module: nn.Module = nn.Sequential(
            OrderedDict(features=mbf.MobileFaceNet(False, 512, (1, 4, 6, 2), scale=2), fc=nn.Linear(512, k))
        )
    elif spec.arch.startswith("mobilevit"):
        import timm

        module = timm.create_model(spec.arch, pretrained=False, num_classes=k)
    elif spec.arch == "keras_mobilenet_v1":
        from models.keras_mobilenet import KerasMobileNetV1

        module = KerasMobileNetV1(k)
    elif spec.arch.startswith("tf_efficientnet"):
        import timm

        module = timm.create_model(spec.arch, pretrained=False, num_classes=k)
        module.classifier = nn.Sequential(nn.Linear(module.num_features, k))
    else:
        raise ValueError(f"{spec.name}: no published PyTorch format for {spec.arch}")
    return randomize_(module, seed, calibration_batch(spec, seed))


def save_published(module: nn.Module, path: str | Path) -> Path:
    """Saves ``module`` as the authors did: the whole pickled module (``torch.save(model)``)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(module, path)
    return path


def export_published_onnx(module: nn.Module, spec: ModelSpec | str, path: str | Path) -> Path:
    """Exports ``module`` as the published ONNX files are: opset 11, input ``input`` [N,3,S,S], logits, last node Gemm.

    Raises:
        AssertionError: If the exported graph does not end with a Gemm node.
    """
    import onnx

    spec = get_spec(spec) if isinstance(spec, str) else spec
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    dummy = torch.zeros(1, 3, spec.input_size, spec.input_size)
    with warnings.catch_warnings():  # the TorchScript exporter is deprecated, but it writes what was published
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.onnx.export(
            module.eval(),
            (dummy,),
            str(path),
            opset_version=11,
            input_names=["input"],
            output_names=["output"],
            dynamic_axes={"input": {0: "batch"}, "output": {0: "batch"}},
            do_constant_folding=True,
            dynamo=False,
        )
    last = onnx.load(str(path)).graph.node[-1]
    assert last.op_type == "Gemm", f"{path}: last node is {last.op_type}, not Gemm"
    return path


def install_random_weights(
    names: list[str] | tuple[str, ...] | str,
    weights_dir: str | Path,
    seed: int = 0,
    published_dir: str | Path | None = None,
) -> dict[str, Path]:
    """Writes random-weight published files and imports them into ``weights_dir``.

    PyTorch entries are saved as pickled modules (``<published_dir>/<file>.pt``) and ONNX entries exported
    (``<published_dir>/<file>.onnx``); each is imported with ``import_checkpoint(trust_unverified=True)`` (random
    files never match the registry hash), so the stored weights say ``verified: false``.

    Args:
        names: Registry names (PyTorch or ONNX entries).
        weights_dir: The weights folder.
        seed: Random seed (shared by a model and its ONNX variant, so both give the same numbers).
        published_dir: Where the published-format files go (default ``<weights_dir>/published``).

    Returns:
        ``{name: path of the published-format file}``.
    """
    from models.convert import import_checkpoint

    if isinstance(names, str):
        names = [names]
    wd = Path(weights_dir)
    pub = Path(published_dir) if published_dir is not None else wd / "published"
    out: dict[str, Path] = {}
    for name in names:
        spec = get_spec(name)
        module = random_published_module(spec, seed)
        if spec.fmt == "torch_pickle":
            path = save_published(module, pub / spec.filename)
        elif spec.fmt == "keras_h5" and spec.is_emotion_model:
            from tests.keras_files import write_mobilenet_h5

            state = {k: v.numpy() for k, v in module.state_dict().items()}
            path = write_mobilenet_h5(state, pub / spec.filename)
        elif spec.fmt == "onnx":
            path = export_published_onnx(module, spec, pub / spec.filename)
        else:
            raise ValueError(f"{name}: cannot make random {spec.fmt} weights")
        import_checkpoint(path, name, wd, trust_unverified=True)
        out[name] = path
    return out
