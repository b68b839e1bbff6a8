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
from collections.abc import Mapping, Sequence
from typing import get_args

import numpy as np
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from db.rows import FaceLabel, Split, group_name
from db.schema import Face, Media, Track

SPLITS: tuple[Split, ...] = get_args(Split)
SPLIT_FRACTIONS = (0.8, 0.1, 0.1)
"""Target share of the faces in each of :data:`SPLITS`, in the same order."""


def _unit(key: str, seed: int) -> float:
    """A number in [0, 1) fixed by the group name and the seed."""
    digest = hashlib.sha256(f"{seed}:{key}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def assign_splits(rows: Sequence[FaceLabel], seed: int = 0) -> dict[int, Split]:
    """Split name per face id, disjoint by group (see the module docstring)."""
    by_group = group_splits(Counter(r.group for r in rows), seed)
    return {r.face_id: by_group[r.group] for r in rows}


def group_splits(sizes: Mapping[str, int], seed: int = 0) -> dict[str, Split]:
    """Split name per split group, from the faces per group (see the module docstring)."""
    bounds = np.cumsum(SPLIT_FRACTIONS)
    by_group = {g: SPLITS[int(np.searchsorted(bounds, _unit(g, seed), side="right"))] for g in sizes}
    if len(sizes) >= len(SPLITS) and len(set(by_group.values())) < len(SPLITS):
        filled = dict.fromkeys(SPLITS, 0)
        total = sum(sizes.values())
        for g in sorted(sizes, key=lambda g: _unit(g, seed)):
            split = min(SPLITS, key=lambda s: (filled[s] / (SPLIT_FRACTIONS[SPLITS.index(s)] * total), SPLITS.index(s)))
            by_group[g] = split
            filled[split] += sizes[g]
    return by_group


def group_sizes(session: Session, study_id: int) -> dict[str, int]:
    """Faces per split group of a study, counted in SQL (one grouped query, no face loaded)."""
    stmt = (
        select(Media.sha256, Track.track_index, func.count(Face.id))
        .join(Media, Face.media_id == Media.id)
        .outerjoin(Track, Face.track_id == Track.id)
        .where(Media.study_id == study_id)
        .group_by(Face.media_id, Face.track_id, Media.sha256, Track.track_index)
    )
    out: Counter[str] = Counter()
    for sha, index, n in session.execute(stmt):
        out[group_name(sha, index)] += int(n)
    return dict(out)
