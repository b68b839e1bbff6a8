"""Engagement per face track: EmotiEffLib's single-attention model re-implemented in PyTorch (no TensorFlow).

The model (``engagement_single_attention.h5``, registry entry ``ENGAGEMENT_MODEL``) takes a window of T feature rows
of 2560 values and returns P(Distracted), P(Engaged)::

    a_t = x_t . w_e + b_e            # Dense(1) named "e"
    alpha = softmax_t(a)             # over the window
    context = sum_t alpha_t x_t      # (2560,)
    h = relu(context W_h + b_h)      # Dense(512) "hidden_FC"
    p = softmax(h W_d + b_d)         # Dense(2) "dense": [Distracted, Engaged]

Keras kernels are stored (in, out) and are transposed for ``torch.nn.Linear``. No weight depends on T, so any window
length can be scored.

What the weights expect:
    - Features: the 1280-d pooled features of an ``enet_b0_*`` emotion model (EfficientNet-B0; the reference and its
      tests use ``enet_b0_8_best_vgaf`` / ``enet_b0_8_best_afew``; the paper used ``enet_b0_8_best_afew``). Another
      backbone (B2: 1408-d, mbf: 512-d, mobilevit: 768-d) gives no engagement (None).
    - Rows: ``[std(window) (1280), x_t (1280)]``: the window's population std (ddof 0) FIRST, then the frame's
      features, exactly as ``classify_engagement`` builds them (``np.concatenate((std_x, x), axis=1)``).
    - Sampling: the reference feeds one feature row per decoded frame (its tutorials and tests read every frame with
      ``cv2.VideoCapture`` and no sub-sampling; the EngageWild clips are 25-30 fps), so a 128-row window spans about
      4-5 s there. At AffectLab's default 5 fps sampling a 128-row window spans about 25 s; analyse with ``fps=0``
      (every frame) to match the reference's time scale.

Differences from the reference (``EmotiEffLibRecognizerBase.classify_engagement``), all deliberate:
    - One sequence per face *track*, never every face of every frame mixed into one sequence.
    - Every window is scored: ``N - W + 1`` windows at stride 1 (the reference's ``range(N - W)`` drops the last).
      With a larger stride the last window (ending at the last row) is always added.
    - A track shorter than W but with at least ``min_features`` rows is scored as one window over all its rows (the
      reference raises below W). Shorter tracks get no engagement.
    - Windows are built in chunks in float32, never the whole ``(N - W, W, 2560)`` array (2.3 GB in float64 for
      N = 1000 in the reference).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import numpy.typing as npt

from models.errors import CheckpointFormatError
from models.keras_h5 import KerasLayerWeights, read_keras_weights
from models.registry import ENGAGEMENT_MODEL

if TYPE_CHECKING:
    import torch

FEATURE_DIM = 1280
"""Backbone feature size the engagement weights were trained on (enet_b0_*)."""

INPUT_DIM = 2 * FEATURE_DIM
HIDDEN = 512

EngagementLabel = Literal["Distracted", "Engaged"]
"""A track's engagement label: ``registry.ENGAGEMENT_CLASSES``, in the order of the model's two outputs."""


def engagement_label(score: float, threshold: float = 0.5) -> EngagementLabel:
    """``Engaged`` when P(engaged) ``score`` is above ``threshold``, else ``Distracted``."""
    return "Engaged" if score > threshold else "Distracted"


EngagementStatus = Literal["ok", "no-weights", "feature-size"]
"""Whether a video's tracks got engagement: ``ok``; ``no-weights`` (the engagement model is not fetched);
``feature-size`` (the emotion model's features are not the 1280-d enet_b0 features the engagement model reads)."""


def engagement_status(engagement: object | None, feature_dim: int) -> EngagementStatus:
    """The engagement status of an analysis with this engagement model (None: absent) and feature size."""
    if engagement is None:
        return "no-weights"
    return "ok" if feature_dim == FEATURE_DIM else "feature-size"


def engagement_note(status: EngagementStatus, model: str, feature_dim: int) -> str:
    """What a person reads about a status other than ``ok``: why there is no engagement and what to do."""
    if status == "no-weights":
        return "no engagement weights (fetch engagement_single_attention)"
    if status == "feature-size":
        return f"engagement needs {FEATURE_DIM}-d enet_b0 features; {model} gives {feature_dim}-d"
    return "ok"


@dataclass(frozen=True)
class EngagementConfig:
    """How a track's features are cut into windows.

    Attributes:
        window: Rows per window (the reference's ``sliding_window_width``, 128).
        stride: Rows between window starts (1 as in the reference). The last window is always included.
        min_features: A track with fewer rows gets no engagement; between this and ``window`` rows it is scored as
            one window over all its rows.
        chunk: Windows built and scored at a time (bounds memory: ``chunk * window * 2560`` float32).
        threshold: ``label`` is ``Engaged`` when the track score (mean P(engaged)) is above this (0.5: the
            reference's argmax of the mean window probabilities).
    """

    window: int = 128
    stride: int = 1
    min_features: int = 16
    chunk: int = 32
    threshold: float = 0.5


@dataclass(frozen=True)
class EngagementWindow:
    """P(engaged) of one window of a track.

    Attributes:
        start: Index of the window's first row in the track's feature sequence.
        end: Index one past its last row.
        start_s: Time of the first row's frame, seconds.
        end_s: Time of the last row's frame, seconds.
        p_engaged: Probability of ``Engaged``.
    """

    start: int
    end: int
    start_s: float
    end_s: float
    p_engaged: float


@dataclass(frozen=True)
class EngagementResult:
    """Engagement of one track.

    Attributes:
        score: Mean P(engaged) over the windows (the reference tutorials' video-level score).
        label: ``Engaged`` or ``Distracted``.
        windows: Every scored window, in time order.
        n_features: Rows (faces) the track had.
        window: Window length used (shorter than the configured one for a short track).
    """

    score: float
    label: EngagementLabel
    windows: tuple[EngagementWindow, ...]
    n_features: int
    window: int

    def to_json(self) -> dict[str, object]:
        """``{score, label, windows: [{start_s, end_s, p_engaged}]}`` for the analysis document."""
        return {
            "score": round(self.score, 6),
            "label": self.label,
            "windows": [
                {"start_s": round(w.start_s, 4), "end_s": round(w.end_s, 4), "p_engaged": round(w.p_engaged, 6)}
                for w in self.windows
            ],
        }


def _check_layers(
    layers: Sequence[KerasLayerWeights], dims: Sequence[tuple[int, int]]
) -> list[tuple[np.ndarray, np.ndarray]]:
    """The (kernel, bias) of the three weighted layers, shapes checked against ``dims`` ((in, out) each).

    Keras matches the file's weighted layers to the model's in order (``e``, ``hidden_FC``, then the unnamed output
    ``Dense``, saved as ``dense`` or ``dense_N``); so does this.

    Raises:
        CheckpointFormatError: Wrong number of weighted layers or a shape mismatch.
    """
    if len(layers) != len(dims):
        names = [layer.name for layer in layers]
        raise CheckpointFormatError(f"expected 3 weighted layers (e, hidden_FC, dense), found {names}")
    out = []
    for layer, want in zip(layers, dims, strict=True):
        kernel, bias = layer.get("kernel"), layer.get("bias")
        if kernel.shape != tuple(want) or bias.shape != (want[1],):
            raise CheckpointFormatError(
                f"layer {layer.name!r}: kernel {kernel.shape} / bias {bias.shape}, expected {tuple(want)} / "
                f"({want[1]},)"
            )
        out.append((kernel, bias))
    return out


class NumpyEngagementNet:
    """The same classifier in NumPy (float32), for the torch-free CPU path; within 1e-6 of the torch module."""

    def __init__(self, input_dim: int = INPUT_DIM, hidden: int = HIDDEN, n_classes: int = 2) -> None:
        self.dims = ((input_dim, 1), (input_dim, hidden), (hidden, n_classes))
        self.kernels = [np.zeros(d, np.float32) for d in self.dims]
        self.biases = [np.zeros(d[1], np.float32) for d in self.dims]

    def load_keras(self, layers: Sequence[KerasLayerWeights]) -> None:
        """Loads weights read by :func:`models.keras_h5.read_keras_weights` (Keras kernels are (in, out))."""
        pairs = _check_layers(layers, self.dims)
        self.kernels = [np.ascontiguousarray(k, dtype=np.float32) for k, _ in pairs]
        self.biases = [np.asarray(b, dtype=np.float32) for _, b in pairs]

    def __call__(self, x: np.ndarray) -> np.ndarray:
        """Probabilities (B, 2) of windows (B, T, 2560)."""
        (ke, kh, kd), (be, bh, bd) = self.kernels, self.biases
        a = (x @ ke + be)[..., 0]
        a = np.exp(a - a.max(axis=1, keepdims=True))
        alpha = a / a.sum(axis=1, keepdims=True)
        context = np.einsum("bt,btd->bd", alpha, x)
        h = np.maximum(context @ kh + bh, np.float32(0))
        z = h @ kd + bd
        z = np.exp(z - z.max(axis=1, keepdims=True))
        probs: npt.NDArray[np.float32] = (z / z.sum(axis=1, keepdims=True)).astype(np.float32)  # keepdims: typed Any
        return probs


_NET_CLASS: Any = None


def _engagement_net_class() -> Any:
    """The torch module class, defined on first use so that importing this module does not import torch.

    Typed Any: the class exists only at run time (an ``nn.Module`` subclass with a ``load_keras`` method).
    """
    global _NET_CLASS
    if _NET_CLASS is not None:
        return _NET_CLASS
    import torch
    from torch import nn

    class EngagementNet(nn.Module):
        """The single-attention engagement classifier (the Keras graph of EmotiEffLib), in PyTorch."""

        def __init__(self, input_dim: int = INPUT_DIM, hidden: int = HIDDEN, n_classes: int = 2) -> None:
            super().__init__()
            self.e = nn.Linear(input_dim, 1)
            self.hidden_fc = nn.Linear(input_dim, hidden)
            self.dense = nn.Linear(hidden, n_classes)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            """Class probabilities [Distracted, Engaged] of windows (B, T, 2560) -> (B, 2)."""
            alpha = torch.softmax(self.e(x).squeeze(-1), dim=1)
            context = torch.einsum("bt,btd->bd", alpha, x)
            h = torch.relu(self.hidden_fc(context))
            return torch.softmax(self.dense(h), dim=-1)

        def load_keras(self, layers: Sequence[KerasLayerWeights]) -> None:
            """Loads weights read by :func:`models.keras_h5.read_keras_weights`, checking every shape.

            Raises:
                CheckpointFormatError: Wrong number of weighted layers or a shape mismatch.
            """
            targets = [self.e, self.hidden_fc, self.dense]
            pairs = _check_layers(layers, [(t.in_features, t.out_features) for t in targets])
            with torch.no_grad():
                for (kernel, bias), linear in zip(pairs, targets, strict=True):
                    linear.weight.copy_(torch.from_numpy(np.ascontiguousarray(kernel.T, dtype=np.float32)))
                    linear.bias.copy_(torch.from_numpy(np.asarray(bias, dtype=np.float32)))

    _NET_CLASS = EngagementNet
    return EngagementNet


def __getattr__(name: str) -> Any:
    if name == "EngagementNet":
        return _engagement_net_class()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def window_starts(n: int, window: int, stride: int = 1) -> list[int]:
    """Start rows of the windows over ``n`` rows: every ``stride`` rows, the last window (ending at row n) included.

    Args:
        n: Number of rows, at least ``window``.
        window: Window length.
        stride: Step between starts.

    Returns:
        ``[0, stride, ..., n - window]``: ``n - window + 1`` starts at stride 1.
    """
    starts = list(range(0, n - window + 1, stride))
    if starts[-1] != n - window:
        starts.append(n - window)
    return starts


def window_rows(features: np.ndarray, start: int, window: int) -> np.ndarray:
    """The (window, 2 * D) rows of one window, ``[std (ddof 0) of the window, features]`` as the reference builds.

    Args:
        features: (N, D) float32 features of one track.
        start: First row.
        window: Window length.
    """
    x = features[start : start + window]
    std = np.std(x, axis=0)
    return np.concatenate((np.broadcast_to(std, x.shape), x), axis=1)


class EngagementModel:
    """Loaded engagement weights and the windowing of :class:`EngagementConfig`; stateless between calls."""

    def __init__(
        self, net: NumpyEngagementNet | torch.nn.Module, config: EngagementConfig | None = None, device: str = "cpu"
    ) -> None:
        """Wraps a loaded network (torch ``EngagementNet`` or :class:`NumpyEngagementNet`); see :meth:`load`."""
        self.net: NumpyEngagementNet | torch.nn.Module
        if isinstance(net, NumpyEngagementNet):
            self.net = net
        else:
            self.net = net.eval().to(device)
            for p in self.net.parameters():
                p.requires_grad_(False)
        self.config = config or EngagementConfig()
        self.device = device

    @classmethod
    def from_h5(
        cls, path: str | Path, config: EngagementConfig | None = None, device: str = "cpu", numpy: bool = False
    ) -> EngagementModel:
        """Reads Keras weights from ``path`` (``save_weights`` or whole-model HDF5).

        Args:
            path: The ``.h5`` file.
            config: Windowing.
            device: Torch device (torch net).
            numpy: Run the NumPy net (no torch; CPU) instead of the torch module.

        Raises:
            CheckpointFormatError: The file is not a Keras file of this model.
        """
        net: NumpyEngagementNet | Any = NumpyEngagementNet() if numpy else _engagement_net_class()()
        net.load_keras(read_keras_weights(path))
        return cls(net, config, device)

    @classmethod
    def load(
        cls,
        weights_dir: str | Path,
        config: EngagementConfig | None = None,
        device: str = "cpu",
        numpy: bool = False,
    ) -> EngagementModel | None:
        """The registry's engagement model from the weights folder, or None when its file is absent.

        ``numpy=True`` runs it in NumPy (the torch-free CPU path).

        The file is the verified ``engagement_single_attention.h5`` that ``weights.fetch`` stores (HDF5, no pickle).
        """
        from models import weights as weights_mod

        path = weights_mod.weights_path(ENGAGEMENT_MODEL, Path(weights_dir).expanduser())
        if not Path(path).is_file():
            return None
        return cls.from_h5(path, config, device, numpy=numpy)

    def predict_windows(self, rows: np.ndarray) -> np.ndarray:
        """Probabilities (B, 2) of windows given as rows (B, T, 2560)."""
        if isinstance(self.net, NumpyEngagementNet):
            return self.net(np.ascontiguousarray(rows, dtype=np.float32))
        import torch

        with torch.inference_mode():
            x = torch.from_numpy(np.ascontiguousarray(rows, dtype=np.float32)).to(self.device)
            probs: torch.Tensor = self.net(x)  # nn.Module.__call__ is typed Any in torch
            return probs.float().cpu().numpy()

    def score_sequence(self, features: np.ndarray, times: Sequence[float] | None = None) -> EngagementResult | None:
        """Engagement of one track's feature sequence.

        Args:
            features: (N, 1280) features of one track, in time order.
            times: Time in seconds of each row (frame times); None uses row indices.

        Returns:
            The windows and the track score, or None when the features are not 1280-d or there are fewer than
            ``min_features`` rows.
        """
        c = self.config
        feats = np.asarray(features, dtype=np.float32)
        if feats.ndim != 2 or feats.shape[1] != FEATURE_DIM or len(feats) < c.min_features:
            return None
        n = len(feats)
        t = np.arange(n, dtype=np.float64) if times is None else np.asarray(times, dtype=np.float64)
        w = min(c.window, n)
        starts = window_starts(n, w, c.stride)
        windows: list[EngagementWindow] = []
        for i in range(0, len(starts), c.chunk):
            chunk = starts[i : i + c.chunk]
            rows = np.stack([window_rows(feats, s, w) for s in chunk])
            probs = self.predict_windows(rows)
            windows.extend(
                EngagementWindow(
                    start=s, end=s + w, start_s=float(t[s]), end_s=float(t[s + w - 1]), p_engaged=float(p[1])
                )
                for s, p in zip(chunk, probs, strict=True)
            )
        score = float(np.mean([win.p_engaged for win in windows]))
        return EngagementResult(
            score=score, label=engagement_label(score, c.threshold), windows=tuple(windows), n_features=n, window=w
        )


RowReader = Callable[[int, int], np.ndarray]
"""Reads rows ``lo..hi`` (hi excluded) of one track's (N, 1280) float32 features, in time order."""


def window_p_engaged(model: EngagementModel, n: int, read: RowReader) -> tuple[np.ndarray, int, np.ndarray] | None:
    """P(engaged) of each window of a track of ``n`` rows, reading only the rows the next batch of windows needs.

    The windows, batches and values :meth:`EngagementModel.score_sequence` gives for the whole sequence, holding one
    batch's rows (``chunk + window`` rows at stride 1) instead of the track's features.

    Returns:
        The window starts (:func:`window_starts` as int64), the window length and P(engaged) per window (float64);
        None when ``n`` is below ``min_features``.
    """
    c = model.config
    if n < c.min_features:
        return None
    w = min(c.window, n)
    starts = np.arange(0, n - w + 1, c.stride, dtype=np.int64)
    if starts[-1] != n - w:
        starts = np.append(starts, n - w)
    buf, lo, hi = np.zeros((0, FEATURE_DIM), dtype=np.float32), 0, 0  # rows lo..hi of the track
    p_engaged = np.empty(len(starts), dtype=np.float64)
    for i in range(0, len(starts), c.chunk):
        chunk = starts[i : i + c.chunk].tolist()
        if chunk[0] >= hi:  # nothing held is needed any more
            buf, lo, hi = buf[:0], chunk[0], chunk[0]
        buf, lo = buf[chunk[0] - lo :], chunk[0]
        if hi < chunk[-1] + w:
            buf, hi = np.concatenate([buf, read(hi, chunk[-1] + w)]), chunk[-1] + w
        probs = model.predict_windows(np.stack([window_rows(buf, s - lo, w) for s in chunk]))
        p_engaged[i : i + len(chunk)] = probs[:, 1]
    return starts, w, p_engaged
