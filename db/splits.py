"""Train/validation/test assignment of a study's faces, disjoint by split group.

A face's split group (:attr:`db.rows.FaceLabel.group`) is its media item, or its person track for a tracked video
face, named by the media's sha256 (and the track number), so the same bytes are the same group whatever their row ids.
A group is assigned by a hash of that name and the seed, so a group keeps its split when the study grows. In a small
study where that leaves a split empty, groups are dealt out in hash order instead, each to the split furthest below
its share.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Sequence
from typing import Literal, get_args

import numpy as np

from db.rows import FaceLabel

Split = Literal["train", "validation", "test"]
SPLITS: tuple[Split, ...] = get_args(Split)
SPLIT_FRACTIONS = (0.8, 0.1, 0.1)
"""Target share of the faces in each of :data:`SPLITS`, in the same order."""


def _unit(key: str, seed: int) -> float:
    """A number in [0, 1) fixed by the group name and the seed."""
    digest = hashlib.sha256(f"{seed}:{key}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def assign_splits(rows: Sequence[FaceLabel], seed: int = 0) -> dict[int, Split]:
    """Split name per face id, disjoint by group (see the module docstring)."""
    sizes = Counter(r.group for r in rows)
    bounds = np.cumsum(SPLIT_FRACTIONS)
    by_group = {g: SPLITS[int(np.searchsorted(bounds, _unit(g, seed), side="right"))] for g in sizes}
    if len(sizes) >= len(SPLITS) and len(set(by_group.values())) < len(SPLITS):
        filled = dict.fromkeys(SPLITS, 0)
        total = sum(sizes.values())
        for g in sorted(sizes, key=lambda g: _unit(g, seed)):
            split = min(SPLITS, key=lambda s: (filled[s] / (SPLIT_FRACTIONS[SPLITS.index(s)] * total), SPLITS.index(s)))
            by_group[g] = split
            filled[split] += sizes[g]
    return {r.face_id: by_group[r.group] for r in rows}
