"""Persons: the tracks of one student joined across the whole recording (pure functions on track summaries).

A track ends when its face is unseen for longer than the tracker's gap (the student left the picture, turned away,
the video conference re-flowed its gallery). :func:`link_tracks` joins tracks into *persons*:

- Never two tracks that overlap in time: two faces of one frame are never one person (checked against every track
  already in the person, not only the last one).
- A later track continues an earlier one when it starts at the same tile position (centre distance within ``near``
  face sizes) within ``max_gap_s``, or anywhere, any time later, when its appearance (the mean backbone feature, centred
  on the recording's mean so that what every face shares does not count) is similar enough (``min_similarity``).
- A later track that starts at the same tile *within the tracker's gap* (``near_min_gap_s``) is not joined on
  position: the tracker saw a face there and refused to continue the track (its appearance jumped: another student
  took the tile), so position cannot overrule it; only appearance (``min_similarity``) or a move can.
- A *move*: when a track ends and another starts elsewhere at the same moment (within ``reflow_window_s``), a tile
  slid (into a leaver's place, say); these are aligned like a re-flow (below) even when fewer than
  ``reflow_min_tracks`` tracks move.
- Candidate joins are taken best first (similarity, minus a penalty for distance and gap), each track keeping at most
  one predecessor and one successor, so a person is a chain of tracks in time.
- When the gallery re-flows, many tracks end and many start within moments (:attr:`PersonConfig.reflow_window_s`).
  The tracks that end and those that start there are aligned in reading order (row by row), keeping their order: a
  conference keeps the participants' order when tiles move. The alignment (dynamic programming, like a diff) pays
  ``1 - similarity`` per pair and a fixed price per student who left or joined, so it follows appearance where that
  tells the students apart and the order where it does not.

Persons are numbered 0, 1, ... in order of first appearance.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from models.tracking import Track
from models.types import FaceResult


@dataclass(frozen=True)
class PersonConfig:
    """Settings of :func:`link_tracks`.

    Attributes:
        near: A later track starting within this many face sizes of where an earlier one ended is at the same tile.
        max_gap_s: Longest gap (seconds) joined on position alone.
        min_similarity: Centred-feature cosine similarity that joins two tracks on appearance alone, at any distance.
        min_similarity_near: Smallest similarity for a join on position (a different student taking the tile is
            refused when the appearance disagrees clearly).
        reflow_window_s: Tracks ending, and tracks starting, within this many seconds of each other form one
            re-flow event (when at least ``reflow_min_tracks`` of each).
        reflow_min_tracks: Smallest number of tracks ending and starting together that counts as a re-flow.
        skip_cost: Alignment price of a student who left or joined at a re-flow.
        near_min_gap_s: A join on position alone needs at least this gap (seconds): below it the tracker refused
            the continuation (keep it at the tracker's ``max_gap_s``).
        move_skip_cost: Alignment price of a track that did not move when fewer than ``reflow_min_tracks`` did.
        move_window_s: One track ending and one starting elsewhere within this many seconds is one tile that moved:
            position carries the join even where features say little.
    """

    near: float = 0.75
    max_gap_s: float = 600.0
    min_similarity: float = 0.9
    min_similarity_near: float = 0.0
    reflow_window_s: float = 1.5
    reflow_min_tracks: int = 3
    skip_cost: float = 0.6
    near_min_gap_s: float = 2.0
    move_skip_cost: float = 0.25
    move_window_s: float = 1.0


@dataclass(frozen=True, eq=False)
class TrackProfile:
    """What linking needs to know about one track.

    Attributes:
        track: Track id.
        start_s: First sighting, seconds.
        end_s: Last sighting, seconds.
        n_faces: Faces in the track.
        feature: Mean of the L2-normalised backbone features of its faces.
        first_centre: Box centre ``(x, y)`` at the first sighting.
        last_centre: Box centre at the last sighting.
        size: Mean box side (the mean of width and height), pixels.
    """

    track: int
    start_s: float
    end_s: float
    n_faces: int
    feature: np.ndarray
    first_centre: tuple[float, float]
    last_centre: tuple[float, float]
    size: float


def _centre(box: Sequence[float]) -> tuple[float, float]:
    return (float(box[0] + box[2]) / 2, float(box[1] + box[3]) / 2)


def profiles(tracks: Sequence[Track], faces: Sequence[FaceResult]) -> list[TrackProfile]:
    """The profile of each track that has faces, from an analysis's tracks and faces (``track`` set on each face)."""
    feats: dict[int, list[np.ndarray]] = {}
    for f in faces:
        if f.track is None or f.prediction.features is None or np.size(f.prediction.features) == 0:
            continue
        v = np.asarray(f.prediction.features, dtype=np.float64).ravel()
        n = float(np.linalg.norm(v))
        feats.setdefault(int(f.track), []).append(v / n if n > 0 else v)
    out = []
    for t in tracks:
        fs = feats.get(t.track)
        if t.boxes:
            out.append(profile_of(t, np.mean(fs, axis=0) if fs else np.zeros(0)))
    return out


def profile_of(track: Track, feature: np.ndarray) -> TrackProfile:
    """The profile of a track with boxes, given its mean unit feature (empty when it has none)."""
    sides = [((b[2] - b[0]) + (b[3] - b[1])) / 2 for b in track.boxes]
    return TrackProfile(
        track=track.track,
        start_s=track.start_s,
        end_s=track.end_s,
        n_faces=track.n_faces,
        feature=feature,
        first_centre=_centre(track.boxes[0]),
        last_centre=_centre(track.boxes[-1]),
        size=float(np.mean(sides)),
    )


def overlaps(a: TrackProfile, b: TrackProfile) -> bool:
    """Whether two tracks share a moment (then they are two different people)."""
    return a.start_s <= b.end_s and b.start_s <= a.end_s


def _similarities(ps: Sequence[TrackProfile]) -> np.ndarray:
    """Cosine similarity of the centred mean features of every pair (0 where features are missing)."""
    n = len(ps)
    dims = {p.feature.size for p in ps if p.feature.size}
    if len(dims) != 1 or n < 2:
        return np.zeros((n, n))
    d = dims.pop()
    x = np.stack([p.feature if p.feature.size == d else np.zeros(d) for p in ps])
    has = np.array([p.feature.size == d for p in ps])
    if has.sum() >= 3:  # centre on the recording's mean face; with fewer tracks the mean is one of them
        w = np.array([p.n_faces for p in ps], dtype=np.float64) * has
        x = x - (w[:, None] * x).sum(0) / max(w.sum(), 1.0)
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    x = np.divide(x, norms, out=np.zeros_like(x), where=norms > 0)
    s: npt.NDArray[np.float64] = x @ x.T
    s[~has, :] = 0.0
    s[:, ~has] = 0.0
    return s


def _reading_order(points: Sequence[tuple[float, float]], size: float) -> list[int]:
    """Indices of the points row by row (rows are a face size apart), left to right within a row."""
    return sorted(range(len(points)), key=lambda i: (round(points[i][1] / max(size, 1.0)), points[i][0]))


def _align(cost: np.ndarray, skip: float) -> list[tuple[int, int]]:
    """Order-preserving alignment of rows to columns (each used at most once) minimising pair and skip costs."""
    n, m = cost.shape
    dp = np.zeros((n + 1, m + 1))
    dp[:, 0] = np.arange(n + 1) * skip
    dp[0, :] = np.arange(m + 1) * skip
    for i in range(1, n + 1):
        for j in range(1, m + 1):
            dp[i, j] = min(dp[i - 1, j - 1] + cost[i - 1, j - 1], dp[i - 1, j] + skip, dp[i, j - 1] + skip)
    pairs = []
    i, j = n, m
    while i > 0 and j > 0:
        if np.isclose(dp[i, j], dp[i - 1, j - 1] + cost[i - 1, j - 1]):
            pairs.append((i - 1, j - 1))
            i, j = i - 1, j - 1
        elif np.isclose(dp[i, j], dp[i - 1, j] + skip):
            i -= 1
        else:
            j -= 1
    return pairs[::-1]


def _reflow_pairs(ps: Sequence[TrackProfile], sim: np.ndarray, c: PersonConfig) -> list[tuple[float, int, int]]:
    """Joins proposed by aligning the tracks that end and start together at re-flow events."""
    out: list[tuple[float, int, int]] = []
    ends = sorted(range(len(ps)), key=lambda i: ps[i].end_s)
    used_end: set[int] = set()
    for k, i in enumerate(ends):
        if i in used_end:
            continue
        group = [j for j in ends[k:] if ps[j].end_s - ps[i].end_s <= c.reflow_window_s and j not in used_end]
        t_end = max(ps[j].end_s for j in group)
        starts = [j for j in range(len(ps)) if t_end < ps[j].start_s <= t_end + 2 * c.reflow_window_s]
        if not starts:
            continue
        skip = c.skip_cost
        if len(group) < c.reflow_min_tracks or len(starts) < c.reflow_min_tracks:
            group = [j for j in group if not _resumed_here(ps[j], [ps[x] for x in starts])]
            starts = [x for x in starts if not _resumed_here(ps[x], [ps[j] for j in group], first=True)]
            if not group or not starts:
                continue
            one = len(group) == 1 and len(starts) == 1
            near_in_time = one and ps[starts[0]].start_s - ps[group[0]].end_s <= c.move_window_s
            skip = 1.0 if near_in_time else c.move_skip_cost  # 1.0: a lone simultaneous move always pairs
        used_end.update(group)
        size = float(np.median([ps[j].size for j in group + starts]))
        a = [group[o] for o in _reading_order([ps[j].last_centre for j in group], size)]
        b = [starts[o] for o in _reading_order([ps[j].first_centre for j in starts], size)]
        cost = np.array([[1.0 - sim[x, y] for y in b] for x in a])
        for x, y in _align(cost, skip):
            out.append((2.0 + sim[a[x], b[y]], a[x], b[y]))  # taken before ordinary joins
    return out


def _resumed_here(p: TrackProfile, others: Sequence[TrackProfile], first: bool = False, near: float = 0.75) -> bool:
    """Whether a track ends (``first``: starts) at a place where one of ``others`` starts (ends): no move there."""
    a = p.first_centre if first else p.last_centre
    for q in others:
        b = q.last_centre if first else q.first_centre
        if np.hypot(a[0] - b[0], a[1] - b[1]) <= near * max((p.size + q.size) / 2, 1.0):
            return True
    return False


def link_tracks(ps: Sequence[TrackProfile], config: PersonConfig | None = None) -> dict[int, int]:
    """Joins tracks into persons (see the module docstring).

    Args:
        ps: The tracks' profiles (:func:`profiles`).
        config: Linking settings.

    Returns:
        Track id to person number (0, 1, ... by first appearance); two tracks that overlap in time always get
        different numbers.
    """
    c = config or PersonConfig()
    n = len(ps)
    sim = _similarities(ps)
    cands: list[tuple[float, int, int]] = _reflow_pairs(ps, sim, c)
    for i in range(n):
        for j in range(n):
            a, b = ps[i], ps[j]
            if i == j or b.start_s <= a.end_s:
                continue
            gap = b.start_s - a.end_s
            dist = float(np.hypot(b.first_centre[0] - a.last_centre[0], b.first_centre[1] - a.last_centre[1]))
            dist /= max((a.size + b.size) / 2, 1.0)
            near = dist <= c.near and c.near_min_gap_s <= gap <= c.max_gap_s and sim[i, j] >= c.min_similarity_near
            if near or sim[i, j] >= c.min_similarity:
                cands.append((sim[i, j] + (1.0 if near else 0.0) - 0.1 * min(dist, 5.0) - gap / 3600.0, i, j))
    cands.sort(key=lambda t: -t[0])
    group = list(range(n))

    def root(i: int) -> int:
        while group[i] != i:
            group[i] = group[group[i]]
            i = group[i]
        return i

    members: dict[int, list[int]] = {i: [i] for i in range(n)}
    has_next: set[int] = set()
    has_prev: set[int] = set()
    for _, i, j in cands:
        if i in has_next or j in has_prev:
            continue
        ri, rj = root(i), root(j)
        if ri == rj or any(overlaps(ps[x], ps[y]) for x in members[ri] for y in members[rj]):
            continue
        group[rj] = ri
        members[ri] += members.pop(rj)
        has_next.add(i)
        has_prev.add(j)
    firsts = sorted(members, key=lambda r: min(ps[x].start_s for x in members[r]))
    return {ps[x].track: k for k, r in enumerate(firsts) for x in members[r]}


def check_persons(ps: Sequence[TrackProfile], persons: Mapping[int, int]) -> None:
    """Raises ValueError when two tracks of one person overlap in time (a guard for callers that edit persons)."""
    by_track = {p.track: p for p in ps}
    groups: dict[int, list[TrackProfile]] = {}
    for t, person in persons.items():
        if t in by_track:
            groups.setdefault(person, []).append(by_track[t])
    for person, tracks in groups.items():
        for x in range(len(tracks)):
            for y in range(x + 1, len(tracks)):
                if overlaps(tracks[x], tracks[y]):
                    raise ValueError(f"person {person}: tracks {tracks[x].track} and {tracks[y].track} overlap in time")
