"""``python -m models analyze --json`` streamed (:mod:`models.doc_stream`): the same text, in bounded memory.

The document :meth:`AnalysisSession.write_document` writes must be the text ``json.dumps(doc, indent=2)`` gives for
the document built in memory (:meth:`AnalysisSession.analyze_paths`: :func:`models.video.conclude_video` and
:func:`models.video.video_json` over every face held), on a gallery recording with several tracks, persons and
engagement windows, in one process (many stretches) and cut into ranges over worker processes; and what it holds must
not grow by a face's JSON and features per face (the in-memory document grows by more than 5 KB per face).
"""

from __future__ import annotations

import dataclasses
import io
import json
import tempfile
import tracemalloc
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

import numpy as np
import pytest

from models import analysis, ranges
from models.analysis import AnalysisSession
from models.doc_stream import ListSpool, VideoMeta, VideoSpool
from models.engagement import EngagementConfig, EngagementModel
from models.faces import FaceDetector
from models.registry import EMOTIONS_8, get_spec
from models.tracking import Tracker
from models.types import EmotionPrediction, Face, FaceResult
from models.video import VideoConfig, conclude_video, video_json
from tests import testdata
from tests.test_engagement import random_keras_weights, write_keras_h5
from tests.videos import Placement, face_patches, random_recognizer, render

MODEL = "enet_b0_8_best_vgaf"  # 1280-d features: engagement is scored
ENGAGEMENT = EngagementConfig(window=6, stride=1, min_features=4, chunk=4)  # several windows and batches per track

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def open_models() -> tuple[FaceDetector, object]:
    """The detector and random-weight model a range worker loads (the same weights as the test's)."""
    return FaceDetector(), random_recognizer(MODEL, seed=0)


@pytest.fixture(scope="module")
def engagement(tmp_path_factory: pytest.TempPathFactory) -> EngagementModel:
    h5 = write_keras_h5(tmp_path_factory.mktemp("eng") / "engagement.h5", random_keras_weights(3))
    return EngagementModel.from_h5(h5, ENGAGEMENT, numpy=True)


@pytest.fixture(scope="module")
def gallery(tmp_path_factory: pytest.TempPathFactory, detector: FaceDetector) -> Path:
    """A 4 s 320x240 gallery at 10 fps: two students sit, one leaves for 2.3 s, one walks along the bottom row."""
    pats = face_patches(detector, testdata.pyfeat_file("multi_face.jpg"), size=64, margin=0.15)[:3]
    pats += face_patches(detector, testdata.astronaut(), size=64, margin=0.15)

    def scene(i: int) -> list[Placement]:
        away = 10 <= i < 32  # the third student leaves for longer than the tracker's gap: two tracks, one person
        sitting = [Placement(0, 24, 20), Placement(1, 128, 20)] + ([] if away else [Placement(2, 232, 20)])
        return [*sitting, Placement(3, 20 + 3 * i, 160)]

    path, _ = render(tmp_path_factory.mktemp("stream") / "gallery.mp4", pats, scene, 40, size=(320, 240), fps=10)
    return path


def session(detector: FaceDetector, engagement: EngagementModel, workers: int) -> AnalysisSession:
    return AnalysisSession(
        detector=detector,
        recognizer=random_recognizer(MODEL, seed=0),
        engagement=engagement,
        video=VideoConfig(detect_every=2),
        range_workers=workers,
        opener=open_models if workers > 1 else None,
    )


@pytest.mark.parametrize("workers", [1, 2])
def test_streamed_document_is_the_in_memory_text(
    gallery: Path,
    detector: FaceDetector,
    engagement: EngagementModel,
    multi_face_jpg: Path,
    workers: int,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(ranges, "MIN_RANGE_S", 0.5)  # the 4 s gallery cut into two ranges
    runs: list[ranges.RangedRun | None] = []

    def run_ranges(*args: Any, **kwargs: Any) -> ranges.RangedRun | None:
        runs.append(ranges.run_ranges(*args, **kwargs))
        return runs[-1]

    monkeypatch.setattr(analysis, "run_ranges", run_ranges)
    s = session(detector, engagement, workers)
    paths = [gallery, multi_face_jpg, gallery]  # a video's faces and tracks, an image's, the video again
    doc, failed = s.analyze_paths(paths, fps=0)
    out = io.StringIO()
    assert s.write_document(paths, out, fps=0, stretch_s=0.5) is failed is False
    assert out.getvalue() == json.dumps(doc, indent=2, ensure_ascii=False)
    video = doc["tracks"][: len(doc["tracks"]) // 2]  # the first of the two copies
    assert len(video) >= 5 and len({t["person"] for t in video}) < len(video)  # tracks joined into persons
    assert sum(len(t["engagement"]["windows"]) > 1 for t in video if t["engagement"]) >= 4
    assert len(runs) == (2 if workers > 1 else 0) and all(r is not None and len(r.results) == 2 for r in runs)


def faces_of(frames: int, seed: int = 0, away: bool = True) -> Iterator[FaceResult]:
    """A 4-student gallery's faces, frame by frame, made as they are needed (nothing held).

    Student 0 moves tile halfway; with ``away`` each student is away for 3 s every 60 frames (tracks of bounded
    length), else the tracks are the same at every length (what grows, grows per face).
    """
    rng = np.random.default_rng(seed)
    base = np.abs(rng.normal(0.3, 0.4, (4, 1280))).astype(np.float32)
    labels = tuple(EMOTIONS_8)
    for fr in range(frames):
        index = 0
        for k in range(4):
            if away and (fr + 11 * k) % 60 < 15:
                continue
            tile = 4 if k == 0 and fr >= frames // 2 else k
            x, y = 40 + 300 * tile + rng.normal(0, 1.5), 100 + rng.normal(0, 1.5)
            logits = rng.normal(0, 1, 8).astype(np.float32)
            probs = np.exp(logits) / np.exp(logits).sum()
            prediction = EmotionPrediction(
                MODEL,
                labels,
                base[k] + np.abs(rng.normal(0, 0.3, 1280)).astype(np.float32),
                logits,
                probs,
                valence=float(rng.uniform(-1, 1)),
                arousal=float(rng.uniform(-1, 1)),
            )
            box = (float(x), float(y), float(x + 90), float(y + 90))
            yield FaceResult("g.mp4", index, Face(box, 0.99), prediction, frame=fr * 5, time_s=fr / 5.0)
            index += 1


def meta(frames: int) -> VideoMeta:
    return VideoMeta(frames, frames, frames * 5, frames / 5.0, 25.0, 5.0, 1280, 720, 0, ())


def streamed(frames: int, engagement: EngagementModel | None, out: IO[str] | None = None, away: bool = True) -> str:
    """The video's part of the document (files item, faces, tracks) written by :class:`VideoSpool` (to ``out``)."""
    faces, tracks, out = ListSpool(), ListSpool(), io.StringIO() if out is None else out
    spool = VideoSpool("g.mp4", VideoConfig(), engagement, MODEL, 1280)
    try:
        spool.add(faces_of(frames, away=away))
        entry = spool.write(meta(frames), faces, tracks)
        out.write(json.dumps([entry], indent=2))
        faces.copy_to(out)
        tracks.copy_to(out)
    finally:
        for f in (spool, faces, tracks):
            f.close()
    return out.getvalue() if isinstance(out, io.StringIO) else ""


def in_memory(frames: int, engagement: EngagementModel | None, away: bool = True) -> str:
    """The same part built as the document held in memory builds it (every face, then conclude and video_json)."""
    config = VideoConfig()
    tracker, faces, run = Tracker(config.tracker), [], []

    def track_frame() -> None:
        feats = np.stack([f.prediction.features for f in run])
        ids = tracker.update(run[0].frame, run[0].time_s, [f.face.box for f in run], feats)
        faces.extend(dataclasses.replace(f, track=tid) for f, tid in zip(run, ids, strict=True))
        run.clear()

    for f in faces_of(frames, away=away):
        if run and f.frame != run[0].frame:
            track_frame()
        run.append(f)
    track_frame()
    m = meta(frames)
    analysis = conclude_video(
        "g.mp4",
        faces,
        tracker.tracks(),
        type("R", (), {"spec": get_spec(MODEL)})(),  # what conclude_video reads of the recognizer
        config=config,
        engagement=engagement,
        frames_sampled=m.frames_sampled,
        frames_analyzed=m.frames_analyzed,
        frames_decoded=m.frames_decoded,
        duration=m.duration,
        fps=m.fps,
        sample_fps=m.sample_fps,
        width=m.width,
        height=m.height,
        rotation=m.rotation,
        warnings=list(m.warnings),
    )
    part = video_json(analysis)
    tracks = [{"file": "g.mp4", **t} for t in part["tracks"]]
    return (
        json.dumps([part["file"]], indent=2)
        + json.dumps(part["faces"], indent=2).replace("\n", "\n  ")
        + json.dumps(tracks, indent=2).replace("\n", "\n  ")
    )


def test_a_long_gallery_streamed_is_the_in_memory_text(engagement: EngagementModel) -> None:
    text = streamed(400, engagement)
    assert text == in_memory(400, engagement)
    entry, n_tracks = json.loads(text[: text.index("\n]") + 2])[0], text.count('"track": ')
    assert entry["n_persons"] < entry["summary"]["n_tracks"] > 4 and entry["summary"]["engagement"] is not None
    assert n_tracks > entry["n_faces"]  # every face, and each track


def _allocated(frames: int, engagement: EngagementModel | None, how: str) -> int:
    """Peak bytes traced while writing a recording of ``frames`` frames' part of the document (to a file)."""
    with tempfile.TemporaryFile("w+", encoding="utf-8") as out:
        tracemalloc.start()
        try:
            if how == "streamed":
                streamed(frames, engagement, out, away=False)
            else:
                out.write(in_memory(frames, engagement, away=False))
            return tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()


@pytest.mark.parametrize("how", ["streamed", "in_memory"])
def test_memory_does_not_grow_by_a_face_per_face(engagement: EngagementModel, how: str) -> None:
    _allocated(60, engagement, how)  # one-time costs out of the way
    short, long = _allocated(300, engagement, how), _allocated(1200, engagement, how)
    n_short, n_long = (sum(1 for _ in faces_of(n, away=False)) for n in (300, 1200))
    per_face = (long - short) / (n_long - n_short)
    print(f"{how}: {per_face:.0f} bytes per face ({n_short} and {n_long} faces)")
    if how == "streamed":
        assert per_face < 300, f"{per_face:.0f} bytes per face"  # measured: 69 (arrays of numbers per face)
    else:  # the document held in memory: the same bound fails (the bound can fail)
        assert per_face > 300, f"{per_face:.0f} bytes per face"  # measured: 19,315
