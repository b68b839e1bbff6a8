"""MobileFaceNet, the backbone of the ``mbf_va_mtl`` checkpoint.

Ported from EmotiEffLib's ``emotiefflib/backbones/mobilefacenet.py`` (Copyright the EmotiEffLib authors,
Apache-2.0), itself adapted from cavaface.pytorch's ``backbone/mobilefacenet.py`` (original author cavalleria).
Class names, attribute names and layer order are kept exactly as there, so that:

- ``state_dict()`` keys match the published checkpoint (``features.layers.0.layers.0.weight``, ...), and
- the published pickle, which names the top-level module ``mobilefacenet``, can be unpickled into these classes
  (``models.convert`` maps ``mobilefacenet.*`` here; only its tensors are kept).

Changes from the original: type annotations and docstrings, and the fp16 path uses ``torch.autocast`` (the original
``torch.cuda.amp.autocast`` is deprecated); with ``fp16=False`` (the published checkpoint) the computation is the same.
"""

from __future__ import annotations

from typing import cast

import torch
from torch import nn
from torch.nn import BatchNorm1d, BatchNorm2d, Conv2d, Linear, Module, PReLU, Sequential

__all__ = [
    "GDC",
    "ConvBlock",
    "DepthWise",
    "Flatten",
    "LinearBlock",
    "MobileFaceNet",
    "Residual",
    "get_mbf",
    "get_mbf_large",
]

_Pair = tuple[int, int]

# torch types ``nn.Module.__call__`` as returning Any; each ``cast`` below names the Tensor a block returns.


class Flatten(Module):
    """Flattens all dimensions but the batch dimension."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Returns ``x`` reshaped to ``(N, -1)``."""
        return x.view(x.size(0), -1)


class ConvBlock(Module):
    """Conv2d (no bias), BatchNorm2d and PReLU.

    Args:
        in_c: Input channels.
        out_c: Output channels.
        kernel: Kernel size.
        stride: Stride.
        padding: Zero padding.
        groups: Convolution groups.
    """

    activation = True
    """Whether the block ends with PReLU (``LinearBlock``: no)."""

    def __init__(
        self,
        in_c: int,
        out_c: int,
        kernel: _Pair = (1, 1),
        stride: _Pair = (1, 1),
        padding: _Pair = (0, 0),
        groups: int = 1,
    ) -> None:
        super().__init__()
        block: list[Module] = [
            Conv2d(in_c, out_c, kernel, groups=groups, stride=stride, padding=padding, bias=False),
            BatchNorm2d(num_features=out_c),
        ]
        if self.activation:
            block.append(PReLU(num_parameters=out_c))
        self.layers = nn.Sequential(*block)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Applies the block."""
        return cast(torch.Tensor, self.layers(x))


class LinearBlock(ConvBlock):
    """Conv2d (no bias) and BatchNorm2d, without activation (arguments as :class:`ConvBlock`'s)."""

    activation = False


class DepthWise(Module):
    """Inverted bottleneck: 1x1 expansion, depthwise conv, 1x1 linear projection, optional residual.

    Args:
        in_c: Input channels.
        out_c: Output channels.
        residual: Whether to add the input to the output.
        kernel: Depthwise kernel size.
        stride: Depthwise stride.
        padding: Depthwise padding.
        groups: Expanded width (and depthwise groups).
    """

    def __init__(
        self,
        in_c: int,
        out_c: int,
        residual: bool = False,
        kernel: _Pair = (3, 3),
        stride: _Pair = (2, 2),
        padding: _Pair = (1, 1),
        groups: int = 1,
    ) -> None:
        super().__init__()
        self.residual = residual
        self.layers = nn.Sequential(
            ConvBlock(in_c, out_c=groups, kernel=(1, 1), padding=(0, 0), stride=(1, 1)),
            ConvBlock(groups, groups, groups=groups, kernel=kernel, padding=padding, stride=stride),
            LinearBlock(groups, out_c, kernel=(1, 1), padding=(0, 0), stride=(1, 1)),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Applies the block."""
        out = cast(torch.Tensor, self.layers(x))
        return x + out if self.residual else out


class Residual(Module):
    """A stack of residual :class:`DepthWise` blocks of constant width.

    Args:
        c: Channels.
        num_block: Number of blocks.
        groups: Expanded width of each block.
        kernel: Depthwise kernel size.
        stride: Depthwise stride.
        padding: Depthwise padding.
    """

    def __init__(
        self,
        c: int,
        num_block: int,
        groups: int,
        kernel: _Pair = (3, 3),
        stride: _Pair = (1, 1),
        padding: _Pair = (1, 1),
    ) -> None:
        super().__init__()
        modules = [DepthWise(c, c, True, kernel, stride, padding, groups) for _ in range(num_block)]
        self.layers = Sequential(*modules)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Applies the blocks."""
        return cast(torch.Tensor, self.layers(x))


class GDC(Module):
    """Global depthwise convolution head: 7x7 depthwise LinearBlock, flatten, Linear, BatchNorm1d.

    Args:
        embedding_size: Size of the output embedding.
    """

    def __init__(self, embedding_size: int) -> None:
        super().__init__()
        self.layers = nn.Sequential(
            LinearBlock(512, 512, groups=512, kernel=(7, 7), stride=(1, 1), padding=(0, 0)),
            Flatten(),
            Linear(512, embedding_size, bias=False),
            BatchNorm1d(embedding_size),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Returns the ``(N, embedding_size)`` embedding."""
        return cast(torch.Tensor, self.layers(x))


class MobileFaceNet(Module):
    """MobileFaceNet for 112x112 faces.

    Args:
        fp16: Run the convolutional trunk under CUDA float16 autocast (only on CUDA inputs).
        num_features: Size of the output embedding.
        blocks: Number of residual blocks in the four stages.
        scale: Width multiplier.
    """

    def __init__(
        self,
        fp16: bool = False,
        num_features: int = 512,
        blocks: tuple[int, int, int, int] = (1, 4, 6, 2),
        scale: int = 2,
    ) -> None:
        super().__init__()
        self.scale = scale
        self.fp16 = fp16
        self.layers = nn.ModuleList()
        self.layers.append(ConvBlock(3, 64 * self.scale, kernel=(3, 3), stride=(2, 2), padding=(1, 1)))
        if blocks[0] == 1:
            self.layers.append(
                ConvBlock(64 * self.scale, 64 * self.scale, kernel=(3, 3), stride=(1, 1), padding=(1, 1), groups=64)
            )
        else:
            self.layers.append(
                Residual(64 * self.scale, num_block=blocks[0], groups=128, kernel=(3, 3), stride=(1, 1), padding=(1, 1))
            )
        self.layers.extend(
            [
                DepthWise(64 * self.scale, 64 * self.scale, kernel=(3, 3), stride=(2, 2), padding=(1, 1), groups=128),
                Residual(
                    64 * self.scale, num_block=blocks[1], groups=128, kernel=(3, 3), stride=(1, 1), padding=(1, 1)
                ),
                DepthWise(64 * self.scale, 128 * self.scale, kernel=(3, 3), stride=(2, 2), padding=(1, 1), groups=256),
                Residual(
                    128 * self.scale, num_block=blocks[2], groups=256, kernel=(3, 3), stride=(1, 1), padding=(1, 1)
                ),
                DepthWise(128 * self.scale, 128 * self.scale, kernel=(3, 3), stride=(2, 2), padding=(1, 1), groups=512),
                Residual(
                    128 * self.scale, num_block=blocks[3], groups=256, kernel=(3, 3), stride=(1, 1), padding=(1, 1)
                ),
            ]
        )
        self.conv_sep = ConvBlock(128 * self.scale, 512, kernel=(1, 1), stride=(1, 1), padding=(0, 0))
        self.features = GDC(num_features)
        self._initialize_weights()

    def _initialize_weights(self) -> None:
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                if m.bias is not None:
                    m.bias.data.zero_()
            elif isinstance(m, nn.BatchNorm2d):
                m.weight.data.fill_(1)
                m.bias.data.zero_()
            elif isinstance(m, nn.Linear):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                if m.bias is not None:
                    m.bias.data.zero_()

    def _trunk(self, x: torch.Tensor) -> torch.Tensor:
        for func in self.layers:
            x = func(x)
        return x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Returns the ``(N, num_features)`` embedding of ``(N, 3, 112, 112)`` normalised faces."""
        if self.fp16 and x.is_cuda:
            with torch.autocast(device_type="cuda", dtype=torch.float16):
                x = self._trunk(x)
            x = x.float()
        else:
            x = self._trunk(x)
        x = self.conv_sep(x)
        return cast(torch.Tensor, self.features(x))


def get_mbf(
    fp16: bool, num_features: int, blocks: tuple[int, int, int, int] = (1, 4, 6, 2), scale: int = 2
) -> MobileFaceNet:
    """The MobileFaceNet configuration of ``mbf_va_mtl`` (blocks (1, 4, 6, 2), scale 2)."""
    return MobileFaceNet(fp16, num_features, blocks, scale=scale)


def get_mbf_large(
    fp16: bool, num_features: int, blocks: tuple[int, int, int, int] = (2, 8, 12, 4), scale: int = 4
) -> MobileFaceNet:
    """The large MobileFaceNet configuration (blocks (2, 8, 12, 4), scale 4)."""
    return MobileFaceNet(fp16, num_features, blocks, scale=scale)
