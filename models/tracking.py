"""Face tracks across video frames: box overlap plus backbone-feature similarity, one-to-one per frame.

Each frame's faces are assigned to the live tracks by the Hungarian algorithm (``scipy.optimize.linear_sum_assignment``)
on a cost mixing the IoU between the face's box and the track's *predicted* box (last box moved by the track's
velocity, so two faces crossing keep their ids) and the cosine similarity between the face's backbone features and
the track's appearance (a running mean of its L2-normalised features). A pair is only allowed when the boxes overlap
(IoU >= ``min_iou``) or, for a face that left and came back, when the appearance is similar enough
(>= ``min_similarity``). A track not seen for more than ``max_gap_s`` seconds is closed: a face appearing later gets a
new id. Assignment is one-to-one, so two faces of the same frame never share a track.

Position and appearance both guard a track's continuation (a gallery view that re-flows moves students between tiles,
and a tile may slide into the place a leaver had):

- *Position*: a face whose centre is more than ``max_jump`` face sizes from the track's predicted box does not continue
  it, however similar it looks (a tile jump starts a new track; :func:`models.persons.link_tracks` joins the pieces).
- *Appearance*, relative, since absolute similarities say little with random weights (two crops of one face may
  score 0.91, two students 0.99): a face that another live track looks more like (similarity higher by
  ``appearance_margin``) does not continue a track: that student moved here (a re-flow, a tile sliding into a
  leaver's place). Optional: ``feature_jump`` (a distance ``1 - cosine`` beyond that many times the track's usual
  one, at least ``min_step``; off by default: a key frame of a static face can jump 0.05) and ``min_continuity``
  (an absolute floor, for trained weights).
"""

from __future__ import annotations

from array import array
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from models.types import Box, iou

_FORBIDDEN = 1e6


@dataclass(frozen=True)
class TrackerConfig:
    """Tracking settings.

    Attributes:
        max_gap_s: A face unseen for longer than this (seconds) cannot be continued; a later face gets a new track.
        min_iou: Smallest IoU with the predicted box for a match on position.
        min_similarity: Smallest feature cosine similarity for a match on appearance alone (no overlap: the face
            moved a lot or came back after a gap).
        iou_weight: Weight of the IoU in the matching score; ``1 - iou_weight`` goes to appearance.
        momentum: Running-mean factor of a track's appearance (weight of the old value).
        max_velocity_gap_s: Velocity is only extrapolated over gaps up to this many seconds.
        min_continuity: If set, a face whose feature similarity to the track is below this never continues it,
            however well the boxes overlap (a gallery view that re-flows puts another student in the same tile).
        max_jump: A face whose centre is farther than this many face sizes from the track's predicted box never
            continues it (None: no limit).
        appearance_margin: A face never continues a track when another live track's appearance is more similar to
            it by more than this (None: off).
        feature_jump: A face never continues a track whose usual feature distance it exceeds this many times
            (None: off).
        min_step: The usual feature distance is taken as at least this (static, compressed video varies little).
    """

    max_gap_s: float = 2.0
    min_iou: float = 0.1
    min_similarity: float = 0.6
    iou_weight: float = 0.5
    momentum: float = 0.7
    max_velocity_gap_s: float = 1.0
    min_continuity: float | None = None
    max_jump: float | None = 0.5
    appearance_margin: float | None = 0.02
    feature_jump: float | None = None
    min_step: float = 0.003


@dataclass(frozen=True)
class Track:
    """One face followed through a video.

    Attributes:
        track: The id (0, 1, ... in order of first appearance).
        frames: Frame indices where the face was seen, increasing.
        times: Their times in seconds.
        boxes: The face's box in each of them.
    """

    track: int
    frames: tuple[int, ...]
    times: tuple[float, ...]
    boxes: tuple[Box, ...]

    @property
    def n_faces(self) -> int:
        """Number of frames where the face was seen."""
        return len(self.frames)

    @property
    def start_s(self) -> float:
        """Time of the first sighting."""
        return self.times[0]

    @property
    def end_s(self) -> float:
        """Time of the last sighting."""
        return self.times[-1]


@dataclass(frozen=True, eq=False)
class TrackSpan:
    """One track summed up in a size that does not grow with its length but for one float per face.

    What a :class:`Tracker` made with ``history=False`` keeps of a track (a recording's finish step,
    :class:`models.video.FaceReplay`): enough for the stored track (span, faces) and for joining tracks into persons.

    Attributes:
        track: The id.
        n_faces: Faces seen.
        start_s: Time of the first sighting.
        end_s: Time of the last sighting.
        first_box: The box at the first sighting.
        last_box: The box at the last sighting.
        sides: Each face's mean box side ``((x2 - x1) + (y2 - y1)) / 2``, float64, in order.
    """

    track: int
    n_faces: int
    start_s: float
    end_s: float
    first_box: Box
    last_box: Box
    sides: np.ndarray


def iou_matrix(a: Sequence[Box], b: Sequence[Box]) -> np.ndarray:
    """IoU of every box of ``a`` with every box of ``b``, shape (len(a), len(b))."""
    return np.array([[iou(x, y) for y in b] for x in a], dtype=np.float64).reshape(len(a), len(b))


@dataclass
class _Live:
    track: int
    frames: list[int] = field(default_factory=list)
    times: list[float] = field(default_factory=list)
    boxes: list[Box] = field(default_factory=list)
    appearance: np.ndarray | None = None
    step: float | None = None
    """Running mean of the feature distance of the track's faces to its appearance (the track's usual variation)."""
    n: int = 0
    first_s: float = 0.0
    first_box: Box = (0.0, 0.0, 0.0, 0.0)
    sides: array[float] = field(default_factory=lambda: array("d"))

    def add(self, frame: int, time_s: float, box: Box, history: bool) -> None:
        """Notes one sighting; without ``history`` only the last two are kept (what :meth:`predicted` needs)."""
        if not self.n:
            self.first_s, self.first_box = time_s, box
        self.n += 1
        self.sides.append(((box[2] - box[0]) + (box[3] - box[1])) / 2)
        self.frames.append(frame)
        self.times.append(time_s)
        self.boxes.append(box)
        if not history and len(self.frames) > 2:
            del self.frames[0], self.times[0], self.boxes[0]

    def predicted(self, time_s: float, max_velocity_gap_s: float) -> Box:
        last = self.boxes[-1]
        if len(self.boxes) < 2:
            return last
        dt_prev = self.times[-1] - self.times[-2]
        dt = time_s - self.times[-1]
        if dt_prev <= 0 or dt > max_velocity_gap_s:
            return last
        prev = self.boxes[-2]
        f = dt / dt_prev
        (c1, c2, c3, c4), (p1, p2, p3, p4) = last, prev
        return (
            float(c1 + (c1 - p1) * f),
            float(c2 + (c2 - p2) * f),
            float(c3 + (c3 - p3) * f),
            float(c4 + (c4 - p4) * f),
        )


def _normalise(v: np.ndarray) -> np.ndarray:
    n = float(np.linalg.norm(v))
    return v / n if n > 0 else v


class Tracker:
    """Assigns track ids to the faces of successive frames (call :meth:`update` in time order).

    A track unseen for longer than ``max_gap_s`` is closed for good (times never go back): it leaves the tracks each
    frame is matched against. With ``history=False`` a track keeps its last two sightings and a :class:`TrackSpan`'s
    worth of the rest, so memory does not grow with a recording's length but by one float per face
    (:meth:`spans`; :meth:`tracks` is then unavailable).
    """

    def __init__(self, config: TrackerConfig | None = None, *, history: bool = True) -> None:
        """Starts with no track."""
        self.config = config or TrackerConfig()
        self.history = history
        self._tracks: list[_Live] = []
        self._open: list[_Live] = []

    def update(self, frame: int, time_s: float, boxes: Sequence[Box], features: np.ndarray | None = None) -> list[int]:
        """Assigns the faces of one frame to tracks, opening new tracks for unmatched faces.

        Args:
            frame: Frame index.
            time_s: Frame time in seconds (not before the previous update's).
            boxes: The frame's face boxes.
            features: Their backbone features (N, D), or None to track on boxes alone.

        Returns:
            The track id of each face, in input order; all different.
        """
        c = self.config
        feats = None if features is None else np.asarray(features, dtype=np.float64).reshape(len(boxes), -1)
        if any(time_s - t.times[-1] > c.max_gap_s for t in self._open):  # closed: they never come back
            for t in self._open:
                if time_s - t.times[-1] > c.max_gap_s and not self.history:
                    t.appearance = None  # nothing matches it again
            self._open = [t for t in self._open if time_s - t.times[-1] <= c.max_gap_s]
        live = [t for t in self._open if t.frames[-1] != frame]
        ids = [-1] * len(boxes)
        if live and boxes:
            sims = self._similarities(live, feats)
            cost = np.full((len(boxes), len(live)), _FORBIDDEN)
            for j, t in enumerate(live):
                pred = t.predicted(time_s, c.max_velocity_gap_s)
                gap = (time_s - t.times[-1]) / max(c.max_gap_s, 1e-9)
                for i, box in enumerate(boxes):
                    sim = None if sims is None else float(sims[i, j])
                    if not self._allowed(pred, box, sim, None if sims is None else sims[i], j, t.step):
                        continue
                    ov = iou(pred, box)
                    score = ov if sim is None else c.iou_weight * ov + (1 - c.iou_weight) * sim
                    cost[i, j] = 1.0 - score + 0.1 * gap
            from scipy.optimize import linear_sum_assignment  # ~1 s to import: only where tracks meet faces

            rows, cols = linear_sum_assignment(cost)
            for i, j in zip(rows, cols, strict=True):
                if cost[i, j] < _FORBIDDEN:
                    ids[i] = live[j].track
        by_id = {t.track: t for t in self._open}
        for i, box in enumerate(boxes):
            if ids[i] < 0:
                t = _Live(track=len(self._tracks))
                self._tracks.append(t)
                self._open.append(t)
                by_id[t.track] = t
                ids[i] = t.track
            t = by_id[ids[i]]
            t.add(frame, float(time_s), (float(box[0]), float(box[1]), float(box[2]), float(box[3])), self.history)
            if feats is not None:
                f = _normalise(feats[i])
                old = t.appearance
                if old is not None:
                    dist = 1.0 - float(np.dot(f, old))
                    t.step = dist if t.step is None else 0.8 * t.step + 0.2 * dist
                t.appearance = f if old is None else _normalise(c.momentum * old + (1 - c.momentum) * f)
        return ids

    def _similarities(self, live: Sequence[_Live], feats: np.ndarray | None) -> np.ndarray | None:
        """Cosine similarity of each face's features to each live track's appearance (None without features)."""
        if feats is None or any(t.appearance is None for t in live):
            return None
        norms = np.linalg.norm(feats, axis=1, keepdims=True)
        unit = np.divide(feats, norms, out=np.zeros_like(feats), where=norms > 0)
        out: np.ndarray = unit @ np.stack([t.appearance for t in live if t.appearance is not None]).T
        return out

    def _allowed(
        self, pred: Box, box: Box, sim: float | None, row: np.ndarray | None, j: int, step: float | None
    ) -> bool:
        """Whether a face may continue a track: position and appearance guards (see the module docstring)."""
        c = self.config
        if iou(pred, box) < c.min_iou and (sim is None or sim < c.min_similarity):
            return False
        if c.max_jump is not None:
            side = max(((pred[2] - pred[0]) + (pred[3] - pred[1]) + (box[2] - box[0]) + (box[3] - box[1])) / 4, 1.0)
            dx = (box[0] + box[2] - pred[0] - pred[2]) / 2
            dy = (box[1] + box[3] - pred[1] - pred[3]) / 2
            if float(np.hypot(dx, dy)) > c.max_jump * side:
                return False
        if sim is None or row is None:
            return True
        if c.min_continuity is not None and sim < c.min_continuity:
            return False
        if c.feature_jump is not None and step is not None and 1.0 - sim > c.feature_jump * max(step, c.min_step):
            return False
        if c.appearance_margin is not None and len(row) > 1:
            others = np.delete(row, j)
            if float(others.max()) > sim + c.appearance_margin:
                return False
        return True

    def tracks(self) -> list[Track]:
        """Every track so far, by id (a tracker made with ``history=False`` has :meth:`spans` only)."""
        if not self.history:
            raise ValueError("this tracker keeps no history (history=False): read its spans()")
        return [
            Track(track=t.track, frames=tuple(t.frames), times=tuple(t.times), boxes=tuple(t.boxes))
            for t in self._tracks
        ]

    def spans(self) -> list[TrackSpan]:
        """Every track so far summed up, by id."""
        return [
            TrackSpan(
                track=t.track,
                n_faces=t.n,
                start_s=t.first_s,
                end_s=t.times[-1],
                first_box=t.first_box,
                last_box=t.boxes[-1],
                sides=np.frombuffer(t.sides, dtype=np.float64).copy(),
            )
            for t in self._tracks
        ]
