"""The ``python -m models analyze --json`` document written in bounded memory, a recording's faces streamed.

:meth:`models.analysis.AnalysisSession.write_document` writes the text ``json.dumps(doc, indent=2)`` gives for the
document :meth:`~models.analysis.AnalysisSession.analyze_paths` builds, without holding a recording's faces:

- :class:`ListSpool`: the items of one of the document's lists (``faces``, ``tracks``), written to a temporary file
  as they come, as they sit in the indented document, and copied into it at the end.
- :class:`VideoSpool`: one video's faces as they come out of the analysis (stretch by stretch, or range by range),
  tracked online (:class:`models.video.FaceReplay`, the tracker the store's finish step replays), each face's JSON
  line and features spooled to temporary files; what is held grows by a few numbers per face (its track, time,
  valence and arousal), plus each track's running sums. At the end the tracks are joined into persons, each
  track's engagement is scored from its spooled features, a batch of windows at a time
  (:func:`models.engagement.window_p_engaged`), and the faces are copied into the document with their person.

The result is the one :func:`models.video.conclude_video` and :func:`models.video.video_json` give from the same
faces in memory (the same sums in the same order; tests compare the text).
"""

from __future__ import annotations

import json
import os
import tempfile
from array import array
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, replace
from typing import IO, Any

import numpy as np

from models.engagement import (
    FEATURE_DIM,
    EngagementModel,
    engagement_label,
    engagement_note,
    engagement_status,
    window_p_engaged,
)
from models.tracking import TrackSpan
from models.types import FaceResult
from models.video_types import VideoConfig

HOLE = "\0hole\0"
"""Stands for a list written apart while the rest of an item is rendered."""


def item_text(obj: object, level: int) -> str:
    """``obj`` as ``json.dumps(doc, indent=2)`` renders it at nesting ``level`` (its first line not indented)."""
    return json.dumps(obj, indent=2, ensure_ascii=False).replace("\n", "\n" + "  " * level)


def split_hole(text: str) -> tuple[str, str, int]:
    """The text before and after :data:`HOLE`, and the nesting level of the line it is on."""
    head, tail = text.split(json.dumps(HOLE), 1)
    line = head[head.rfind("\n") + 1 :]
    return head, tail, (len(line) - len(line.lstrip(" "))) // 2


def write_list(out: IO[str], items: Iterable[object], level: int) -> None:
    """A list whose line is at nesting ``level``, its items written one by one."""
    n = 0
    pad = "\n" + "  " * (level + 1)
    for item in items:
        out.write(f"{',' if n else '['}{pad}{item_text(item, level + 1)}")
        n += 1
    out.write("[]" if n == 0 else "\n" + "  " * level + "]")


class ListSpool:
    """The items of one list of the document (at nesting ``level``: its items one deeper), in a temporary file."""

    def __init__(self, level: int = 1) -> None:
        """An empty list."""
        self.file = tempfile.TemporaryFile("w+", encoding="utf-8")  # noqa: SIM115 (closed by close)
        self.level = level
        self.n = 0

    def begin(self) -> IO[str]:
        """Starts the next item: write its text (rendered by :func:`item_text` at ``level + 1``) to the file."""
        self.file.write(("," if self.n else "") + "\n" + "  " * (self.level + 1))
        self.n += 1
        return self.file

    def add(self, obj: object) -> None:
        """Adds one item."""
        self.begin().write(item_text(obj, self.level + 1))

    def copy_to(self, out: IO[str]) -> None:
        """Writes the list into ``out``."""
        if self.n == 0:
            out.write("[]")
            return
        out.write("[")
        self.file.seek(0)
        while block := self.file.read(1 << 16):
            out.write(block)
        out.write("\n" + "  " * self.level + "]")

    def close(self) -> None:
        """Removes the file."""
        self.file.close()


@dataclass(frozen=True)
class VideoMeta:
    """What the analysis of a video knows at its end, besides its faces (see :class:`models.video.VideoAnalysis`)."""

    frames_sampled: int
    frames_analyzed: int
    frames_decoded: int
    duration: float | None
    fps: float | None
    sample_fps: float | None
    width: int
    height: int
    rotation: int
    warnings: tuple[str, ...]


class VideoSpool:
    """One video's faces, in time order, tracked and spooled as they come; written into the document at the end."""

    def __init__(self, name: str, config: VideoConfig, engagement: EngagementModel | None, model: str, dim: int):
        """Nothing seen yet. ``model`` and ``dim``: the emotion model's name and feature size (for engagement)."""
        from models.video import FaceReplay

        self.name, self.config, self.engagement, self.model, self.dim = name, config, engagement, model, dim
        self.status = engagement_status(engagement, dim)
        self.replay = FaceReplay(config.tracker)
        self.lines = tempfile.TemporaryFile("w+", encoding="utf-8")  # noqa: SIM115 (one JSON line per face)
        ok = self.status == "ok"
        self.features = tempfile.TemporaryFile("w+b") if ok else None  # noqa: SIM115 ((N, 1280) float32 rows)
        self.tracks, self.times = array("i"), array("d")
        self.valence, self.arousal = array("d"), array("d")  # NaN: none
        self.sums: dict[int, np.ndarray] = {}  # each track's probabilities summed in order (float64)
        self.total: np.ndarray | None = None
        self.labels: tuple[str, ...] = ()
        self.short: set[int] = set()  # tracks with a face without 1280-d features (no engagement)
        self.frames_with_face = 0
        self._run: list[FaceResult] = []

    def add(self, faces: Iterable[FaceResult]) -> None:
        """Faces in time order, each frame's faces together and in their order."""
        for f in faces:
            if self._run and f.frame != self._run[0].frame:
                self._track_frame()
            self._run.append(f)

    def _track_frame(self) -> None:
        run, self._run = self._run, []
        self.frames_with_face += 1
        feats = np.stack([f.prediction.features for f in run])
        ids = self.replay.add(int(run[0].frame or 0), float(run[0].time_s or 0.0), [f.face.box for f in run], feats)
        for f, tid in zip(run, ids, strict=True):
            self.lines.write(json.dumps(replace(f, track=tid).to_json(), ensure_ascii=False) + "\n")
            p = f.prediction
            self.tracks.append(tid)
            self.times.append(float(f.time_s or 0.0))
            self.valence.append(np.nan if p.valence is None else p.valence)
            self.arousal.append(np.nan if p.arousal is None else p.arousal)
            probs = np.asarray(p.probs, dtype=np.float64)
            self.labels = p.labels
            self.sums[tid] = probs.copy() if tid not in self.sums else self.sums[tid] + probs
            self.total = probs.copy() if self.total is None else self.total + probs
            if self.features is not None:
                v = np.asarray(p.features, dtype=np.float32).ravel()
                if v.size != FEATURE_DIM:
                    self.short.add(tid)
                    v = np.zeros(FEATURE_DIM, dtype=np.float32)
                self.features.write(v.tobytes())

    def write(self, meta: VideoMeta, faces: ListSpool, tracks: ListSpool) -> dict[str, Any]:
        """Writes the faces and tracks into the document's lists; returns the video's ``files`` item."""
        if self._run:
            self._track_frame()
        spans = self.replay.tracks()
        persons = self.replay.persons(self.config.persons)
        scores = self._write_tracks(spans, persons, meta.frames_analyzed, tracks)
        self._copy_faces(persons, faces)
        scored = [(scores[t.track], t.n_faces) for t in spans if t.track in scores]
        score = float(np.average([s for s, _ in scored], weights=[n for _, n in scored])) if scored else None
        denom = max(meta.frames_analyzed, 1)
        summary = {
            "frames_analyzed": meta.frames_analyzed,
            "frames_with_face": self.frames_with_face,
            "face_share": round(self.frames_with_face / denom, 6),
            "n_tracks": len(spans),
            "emotions": None if self.total is None else self._emotions(len(self.tracks), self.total, None),
            "engagement": None if score is None else {"score": round(score, 6), "label": engagement_label(score)},
        }
        return {
            "file": self.name,
            "kind": "video",
            "width": meta.width,
            "height": meta.height,
            "n_faces": len(self.tracks),
            "error": None,
            "duration_s": None if meta.duration is None else round(meta.duration, 4),
            "fps": None if meta.fps is None else round(meta.fps, 4),
            "sample_fps": meta.sample_fps,
            "frames_decoded": meta.frames_decoded,
            "frames_sampled": meta.frames_sampled,
            "frames_analyzed": meta.frames_analyzed,
            "rotation": meta.rotation,
            "warnings": list(meta.warnings),
            "engagement_status": self.status,
            "engagement_note": engagement_note(self.status, self.model, self.dim),
            "summary": summary,
            "n_persons": len({persons.get(t.track, t.track) for t in spans}),
        }

    def _emotions(self, n: int, total: np.ndarray, at: np.ndarray | None) -> dict[str, object]:
        """``EmotionSummary.to_json`` of ``n`` faces (those at ``at``, or all) whose probabilities sum to ``total``."""
        mean = total / n
        out: dict[str, object] = {
            "n_faces": n,
            "dominant": self.labels[int(np.argmax(mean))],
            "mean_probs": {k: round(float(v), 6) for k, v in zip(self.labels, mean, strict=True)},
        }
        for key, values in (("valence", self.valence), ("arousal", self.arousal)):
            x = np.frombuffer(values, dtype=np.float64)
            x = x if at is None else x[at]
            x = x[~np.isnan(x)]
            out[key] = round(float(np.mean(x)), 6) if len(x) else None
        return out

    def _write_tracks(
        self, spans: list[TrackSpan], persons: dict[int, int], frames_analyzed: int, out: ListSpool
    ) -> dict[int, float]:
        """Each track's ``tracks`` item, its engagement windows written as they are scored; returns the scores."""
        track_of = np.frombuffer(self.tracks, dtype=np.int32)
        order = np.argsort(track_of, kind="stable")  # each track's faces, in time order
        bounds = np.searchsorted(track_of[order], np.arange(len(spans) + 1))
        scores: dict[int, float] = {}
        for t in spans:
            at = order[bounds[t.track] : bounds[t.track + 1]]
            emotions = self._emotions(len(at), self.sums[t.track], at)
            del emotions["n_faces"]
            item: dict[str, object] = {
                "file": self.name,
                "track": t.track,
                "n_faces": t.n_faces,
                "start_s": round(t.start_s, 4),
                "end_s": round(t.end_s, 4),
                "face_share": round(t.n_faces / max(frames_analyzed, 1), 6),
                **emotions,
                "engagement": None,
                "person": persons.get(t.track, t.track),
            }
            got = self._windows(t.track, at)
            if got is None:
                out.add(item)
                continue
            starts, w, p = got
            score = scores[t.track] = float(np.mean(p))
            label = engagement_label(score, self.engagement.config.threshold if self.engagement else 0.5)
            item["engagement"] = {"score": round(score, 6), "label": label, "windows": HOLE}
            head, tail, level = split_hole(item_text(item, out.level + 1))
            f = out.begin()
            f.write(head)
            times = np.frombuffer(self.times, dtype=np.float64)[at]
            write_list(f, _window_items(starts, w, p, times), level)
            f.write(tail)
        return scores

    def _windows(self, track: int, at: np.ndarray) -> tuple[np.ndarray, int, np.ndarray] | None:
        """One track's windows from its spooled features (None: no engagement for it)."""
        if self.features is None or self.engagement is None or track in self.short:
            return None
        self.features.flush()
        fd, row = self.features.fileno(), FEATURE_DIM * 4

        def read(lo: int, hi: int) -> np.ndarray:
            data = b"".join(os.pread(fd, row, int(i) * row) for i in at[lo:hi])
            return np.frombuffer(data, dtype=np.float32).reshape(-1, FEATURE_DIM)

        return window_p_engaged(self.engagement, len(at), read)

    def _copy_faces(self, persons: dict[int, int], out: ListSpool) -> None:
        """Each spooled face into the document, with its person."""
        self.lines.seek(0)
        for line in self.lines:
            face = json.loads(line)
            face["person"] = persons.get(face["track"], face["track"])
            out.add(face)

    def close(self) -> None:
        """Removes the temporary files."""
        self.lines.close()
        if self.features is not None:
            self.features.close()


def _window_items(starts: np.ndarray, w: int, p: np.ndarray, times: np.ndarray) -> Iterator[dict[str, float]]:
    """The ``windows`` items of one track (made one at a time)."""
    for j in range(len(starts)):
        s = int(starts[j])
        start, end = round(float(times[s]), 4), round(float(times[s + w - 1]), 4)
        yield {"start_s": start, "end_s": end, "p_engaged": round(float(p[j]), 6)}
