"""Chunked detection, classification and tracking over a stream of sampled frames (:class:`FrameAnalyzer`).

Split from :mod:`models.video`, which drives it. Inference: one :class:`FaceDetector` for the whole video,
``detect_batch`` on groups of frames; the crops of all faces of a chunk go through the recognizer together. With
``detect_every = k > 1`` faces are detected on every k-th sampled frame only; in the frames between, each face's box
is interpolated between the two detections it is matched to (by IoU), and a face seen at only one end is kept for the
half of the gap nearest to it. A gallery view is detected at a wider stride first (``VideoConfig.gallery_every``:
the ``detect_every``-th frames between two such detections are detected too unless both hold a gallery's faces and
agree). With an :class:`AdaptiveConfig`, frames are analysed at a coarse stride first and refined only where needed
(adaptive.py).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from itertools import pairwise

import numpy as np

from models.adaptive import FrameState, coarse_positions, refine
from models.classify_reuse import ClassifySchedule
from models.decode import DecodedFrame, ResumePoint
from models.faces import FaceDetector, crop_face
from models.recognizer import EmotionRecognizer
from models.tracking import Tracker, iou_matrix
from models.types import Face, FaceResult
from models.video_types import FaceRow, VideoConfig


def interpolate_faces(a: Sequence[Face], b: Sequence[Face], w: float, min_iou: float = 0.1) -> list[Face]:
    """Faces of a frame between two detected frames.

    Args:
        a: Faces detected before.
        b: Faces detected after.
        w: Position between them in (0, 1) (0 = at ``a``).
        min_iou: Smallest IoU for two detections to be the same face.

    Returns:
        Matched faces with linearly interpolated boxes (lower score of the two, no landmarks); unmatched faces of
        ``a`` when ``w < 0.5`` and of ``b`` otherwise.
    """
    from scipy.optimize import linear_sum_assignment

    out: list[Face] = []
    matched_a: set[int] = set()
    matched_b: set[int] = set()
    if a and b:
        m = iou_matrix([f.box for f in a], [f.box for f in b])
        rows, cols = linear_sum_assignment(-m)
        for i, j in zip(rows, cols, strict=True):
            if m[i, j] >= min_iou:
                matched_a.add(int(i))
                matched_b.add(int(j))
                (p1, p2, p3, p4), (q1, q2, q3, q4) = a[i].box, b[j].box
                box = (
                    float((1 - w) * p1 + w * q1),
                    float((1 - w) * p2 + w * q2),
                    float((1 - w) * p3 + w * q3),
                    float((1 - w) * p4 + w * q4),
                )
                out.append(Face(box=box, det_score=min(a[i].det_score, b[j].det_score)))
    if w < 0.5:
        out.extend(f for i, f in enumerate(a) if i not in matched_a)
    else:
        out.extend(f for j, f in enumerate(b) if j not in matched_b)
    out.sort(key=lambda f: -(f.width * f.height))
    return out


def faces_agree(a: Sequence[Face], b: Sequence[Face], min_iou: float) -> bool:
    """Whether two detected frames hold the same faces, each pair at IoU >= ``min_iou`` (one-to-one)."""
    if len(a) != len(b):
        return False
    if not a:
        return True
    from scipy.optimize import linear_sum_assignment

    m = iou_matrix([f.box for f in a], [f.box for f in b])
    rows, cols = linear_sum_assignment(-m)
    return bool(np.all(m[rows, cols] >= min_iou))


class FrameAnalyzer:
    """Chunked detection, classification and tracking over a stream of sampled frames."""

    def __init__(
        self,
        name: str,
        detector: FaceDetector,
        recognizer: EmotionRecognizer,
        config: VideoConfig,
        *,
        track: bool = True,
        resume: ResumePoint | None = None,
        stop_index: int | None = None,
    ) -> None:
        self.name = name
        # Frames from this index on are only looked at (a range's detection to interpolate towards), never kept.
        self.stop_index = stop_index
        self.track = track
        self.last: ResumePoint | None = resume  # the last frame whose faces are in ``results`` or were taken
        self.detector = detector
        self.recognizer = recognizer
        self.config = config
        self.k = max(1, config.detect_every)
        self.period = config.detect_period  # the first detections' stride (a multiple of k)
        self.chunk = max(config.chunk_frames, self.period + 1)
        self.tracker = Tracker(config.tracker)
        self.schedule = ClassifySchedule(
            config.classify_every, config.reuse_diff, config.reuse_shift
        )  # frames in sample order
        self.results: list[FaceResult] = []
        self.pending: list[DecodedFrame] = []
        self.prev_det: tuple[int, list[Face]] | None = None  # (sample, faces) of the last detected frame
        if resume is not None and resume.sample % self.period == 0:
            self.prev_det = (resume.sample, list(resume.faces))
        self.frames_analyzed = 0
        self.frames_with_faces = 0
        # Classification of one chunk runs in the background while the next chunk is decoded and detected.
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="affectlab-classify")
        self._inflight: tuple[Future[list[FaceRow]], Sequence[DecodedFrame]] | None = None

    def finish(self) -> None:
        """Waits for the chunk still being classified and tracks it."""
        self._drain()

    def close(self) -> None:
        """Stops the background classifier (after the chunk it is on)."""
        self._inflight = None
        self._pool.shutdown(wait=True)

    def _drain(self) -> None:
        if self._inflight is not None:
            future, frames = self._inflight
            self._inflight = None
            self._track(frames, future.result())

    def push(self, frame: DecodedFrame) -> bool:
        """Adds a frame; analyses the pending frames once a chunk is full (returns whether it did)."""
        self.pending.append(frame)
        if len(self.pending) >= self.chunk:
            self.flush(final=False)
            return True
        return False

    def flush(self, final: bool) -> None:
        """Analyses the pending frames up to the last detected one (all of them when ``final``)."""
        if not self.pending:
            return
        if self.config.adaptive is not None:
            frames, self.pending = self.pending, []
            self._adaptive(frames)
            return
        frames = self.pending
        # The first detections: every ``period``-th sample, and a run's first frame on a ``k``-th sample (a range
        # planned at ``k`` rather than at the gallery stride still starts on a detection).
        det_pos = [
            i
            for i, f in enumerate(frames)
            if f.sample % self.period == 0 or (i == 0 and self.prev_det is None and f.sample % self.k == 0)
        ]
        if final and (not det_pos or det_pos[-1] != len(frames) - 1):
            det_pos.append(len(frames) - 1)
        cut = len(frames) if final else (det_pos[-1] + 1 if det_pos else 0)
        todo, self.pending = frames[:cut], frames[cut:]
        if not todo:
            return
        det_pos = [i for i in det_pos if i < cut]
        dets = self._detect([todo[i].image for i in det_pos])
        det_faces = dict(zip(det_pos, dets, strict=True))
        if self.period > self.k:
            self._densify(todo, det_faces)
        if self.k > 1:
            self._refine(todo, det_faces)
        faces_per_frame: list[list[Face]] = []
        prev = self.prev_det
        next_iter = iter(sorted(det_faces))
        nxt = next(next_iter, None)
        for i, f in enumerate(todo):
            if i in det_faces:
                faces_per_frame.append(det_faces[i])
                prev = (f.sample, det_faces[i])
                nxt = next(next_iter, None)
                continue
            if prev is None or nxt is None:
                faces_per_frame.append([] if prev is None else list(prev[1]))
                continue
            s0, s1 = prev[0], todo[nxt].sample
            faces_per_frame.append(interpolate_faces(prev[1], det_faces[nxt], (f.sample - s0) / (s1 - s0)))
        self.prev_det = prev
        self._classify_and_track(todo, faces_per_frame)

    def _pairs(self, det_faces: dict[int, list[Face]]) -> list[tuple[int, list[Face], int]]:
        """Neighbouring detected positions ``(i0, faces at i0, i1)``, from the chunk before's last (``i0 = -1``)."""
        keys = sorted(det_faces)
        pairs = [(i0, det_faces[i0], i1) for i0, i1 in pairwise(keys)]
        if self.prev_det is not None and keys:
            pairs.insert(0, (-1, self.prev_det[1], keys[0]))
        return pairs

    def _densify(self, todo: Sequence[DecodedFrame], det_faces: dict[int, list[Face]]) -> None:
        """Detects the ``detect_every``-th frames between two gallery-stride detections unless both are one gallery.

        A gallery: both frames hold ``gallery_faces`` faces or more and their faces agree at ``refine_iou``.
        """
        cfg = self.config
        gaps: list[int] = []
        for i0, a, i1 in self._pairs(det_faces):
            b = det_faces[i1]
            if i1 - i0 <= 1:
                continue
            if min(len(a), len(b)) >= cfg.gallery_faces and faces_agree(a, b, cfg.refine_iou):
                continue
            gaps.extend(i for i in range(i0 + 1, i1) if todo[i].sample % self.k == 0)
        if gaps:
            det_faces.update(zip(gaps, self._detect([todo[i].image for i in gaps]), strict=True))

    def _refine(self, todo: Sequence[DecodedFrame], det_faces: dict[int, list[Face]]) -> None:
        """Detects (in place of interpolating) the frames between detected frames whose faces disagree."""
        gaps: list[int] = []
        for i0, a, i1 in self._pairs(det_faces):
            if i1 - i0 > 1 and not faces_agree(a, det_faces[i1], self.config.refine_iou):
                gaps.extend(range(i0 + 1, i1))
        if gaps:
            det_faces.update(zip(gaps, self._detect([todo[i].image for i in gaps]), strict=True))

    def _detect(self, images: list[np.ndarray]) -> list[list[Face]]:
        out: list[list[Face]] = []
        b = max(1, self.config.detect_batch)
        for i in range(0, len(images), b):
            out.extend(self.detector.detect_batch(images[i : i + b]))
        return out

    def _beyond(self, frame: DecodedFrame) -> bool:
        return self.stop_index is not None and frame.index >= self.stop_index

    def _predict(
        self, frames: Sequence[DecodedFrame], faces_per_frame: Sequence[list[Face]], *, reuse: bool = True
    ) -> list[FaceRow]:
        """Each face's crop and prediction.

        With ``classify_every > 1`` (and ``reuse``) a still face's prediction may be the one of the face it follows
        (:mod:`models.classify_reuse`).
        """
        kept: list[list[tuple[Face, np.ndarray]]] = []
        for f, faces in zip(frames, faces_per_frame, strict=True):
            row: list[tuple[Face, np.ndarray]] = []
            for face in [] if self._beyond(f) else faces:
                crop = crop_face(f.image, face.box)
                if crop.size:
                    row.append((face, crop))
            kept.append(row)
        schedule = self.schedule if reuse else ClassifySchedule(1, 0.0)
        plan = schedule.plan(
            [
                (f.sample, f.image, [face.box for face, _ in row], [c for _, c in row])
                for f, row in zip(frames, kept, strict=True)
            ]
        )
        crops = plan.crops
        b = max(1, self.config.classify_batch)
        preds = plan.resolve([p for i in range(0, len(crops), b) for p in self.recognizer.predict(crops[i : i + b])])
        return [
            [
                (face, crop, dataclasses.replace(p, reused=True) if again else p)
                for (face, crop), p, again in zip(row, ps, flags, strict=True)
            ]
            for row, ps, flags in zip(kept, preds, plan.reused, strict=True)
        ]

    def _classify_and_track(self, frames: Sequence[DecodedFrame], faces_per_frame: Sequence[list[Face]]) -> None:
        # Tracks are built in frame order: the previous chunk first. At most one chunk is in flight, so the
        # recognizer's own workers are never asked for two batches at once and memory stays one chunk ahead.
        self._drain()
        if self.recognizer.backend == "onnx":
            # ONNX Runtime's single-threaded workers and the detector's torch threads share the cores well (5 %
            # faster measured); torch classifying beside torch detecting starts two OpenMP teams and is 1.5x
            # slower, so the torch backend classifies in line.
            self._inflight = (self._pool.submit(self._predict, frames, faces_per_frame), frames)
        else:
            self._track(frames, self._predict(frames, faces_per_frame))

    def _track(self, frames: Sequence[DecodedFrame], rows: Sequence[FaceRow]) -> None:
        keep = self.config.keep_crops
        for f, row in zip(frames, rows, strict=True):
            if self._beyond(f):
                continue
            self.frames_analyzed += 1
            self.last = ResumePoint(
                time_s=f.time_s, index=f.index, sample=f.sample, faces=tuple(face for face, _, _ in row)
            )
            if not row:
                continue
            self.frames_with_faces += 1
            if self.track:
                feats = np.stack([p.features for _, _, p in row])
                ids: Sequence[int | None] = self.tracker.update(
                    f.index, f.time_s, [face.box for face, _, _ in row], feats
                )
            else:
                ids = [None] * len(row)
            for j, ((face, crop, pred), tid) in enumerate(zip(row, ids, strict=True)):
                self.results.append(
                    FaceResult(
                        file=self.name,
                        index=j,
                        face=face,
                        prediction=pred,
                        frame=f.index,
                        time_s=f.time_s,
                        track=tid,
                        crop=crop if keep else None,
                    )
                )

    def _adaptive(self, frames: list[DecodedFrame]) -> None:
        cfg = self.config.adaptive
        assert cfg is not None
        self._drain()
        rows: dict[int, FaceRow] = {}
        states: dict[int, FrameState] = {}
        todo = coarse_positions(len(frames), cfg.strides[0])
        for stride in (*cfg.strides[1:], None):
            if todo:
                sub = [frames[i] for i in todo]
                got = self._predict(sub, self._detect([f.image for f in sub]), reuse=False)
                for i, row in zip(todo, got, strict=True):
                    rows[i] = row
                    states[i] = FrameState.of([p for _, _, p in row])
            if stride is None:
                break
            todo = refine(states, stride, cfg.threshold)
        order = sorted(rows)
        self._track([frames[i] for i in order], [rows[i] for i in order])
