"""Adaptive frame rate (Savchenko, ICML 2023 workshop; REFERENCE.md §5), applied to AffectLab's sampled frames.

The paper classifies a video from frames taken with a large stride and, where the decision is not confident, halves
the stride (18 -> 9 -> 3 -> 1). AffectLab does the same locally, per chunk of sampled frames: it analyses every
``strides[0]``-th frame (and the chunk's last one), then, between two neighbouring analysed frames, analyses the frames
at the next stride only when either frame is *uncertain* (a face whose top probability is below ``threshold``) or the
two frames *differ* (another number of faces or another multiset of labels). Frames never refined are not analysed
at all (no detection, no classification).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from itertools import pairwise

from models.types import EmotionPrediction


@dataclass(frozen=True)
class AdaptiveConfig:
    """Adaptive-rate settings.

    Attributes:
        strides: Decreasing strides in sampled frames, the last usually 1 (full sampling where refined).
        threshold: A face whose top class probability is below this makes its frame uncertain.
    """

    strides: tuple[int, ...] = (8, 4, 2, 1)
    threshold: float = 0.6

    def __post_init__(self) -> None:
        if (
            not self.strides
            or any(s < 1 for s in self.strides)
            or list(self.strides) != sorted(self.strides, reverse=True)
        ):
            raise ValueError(f"strides must be decreasing positive integers, got {self.strides}")


@dataclass(frozen=True)
class FrameState:
    """What the adaptive rule looks at in an analysed frame.

    Attributes:
        labels: The faces' labels, sorted.
        min_confidence: Lowest top-class probability among the faces (1.0 without faces).
    """

    labels: tuple[str, ...]
    min_confidence: float

    @classmethod
    def of(cls, predictions: Sequence[EmotionPrediction]) -> FrameState:
        """The state of a frame from its faces' predictions."""
        return cls(
            labels=tuple(sorted(p.label for p in predictions)),
            min_confidence=min((p.confidence for p in predictions), default=1.0),
        )


def coarse_positions(n: int, stride: int) -> list[int]:
    """Positions analysed first among ``n`` frames: every ``stride``-th and the last."""
    if n <= 0:
        return []
    pos = list(range(0, n, stride))
    if pos[-1] != n - 1:
        pos.append(n - 1)
    return pos


def needs_refinement(a: FrameState, b: FrameState, threshold: float) -> bool:
    """Whether the frames between two analysed frames must be looked at more closely."""
    return a.labels != b.labels or a.min_confidence < threshold or b.min_confidence < threshold


def refine(states: Mapping[int, FrameState], stride: int, threshold: float) -> list[int]:
    """Positions to analyse next, at ``stride``, between neighbouring analysed positions that need it.

    Args:
        states: The analysed positions so far and their states.
        stride: The next (smaller) stride.
        threshold: See :class:`AdaptiveConfig`.

    Returns:
        New positions, increasing, none already analysed.
    """
    done = sorted(states)
    out: list[int] = []
    for a, b in pairwise(done):
        if b - a > 1 and needs_refinement(states[a], states[b], threshold):
            out.extend(p for p in range(a + stride, b, stride) if p not in states)
    return out
