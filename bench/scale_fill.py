"""A study of a given size in the product's own schema, filled through the product's own ingest path (no inference).

The shape is the one of issue 19: gallery-view lecture recordings of ``--minutes`` (60) minutes with ``--students`` (16)
students sampled at 5 fps (25 fps video, every 5th frame), each student's faces split into tracks of 200-400 faces (a
short gap where the tracker lost the face), every track of a student one person; each face with an 8-class prediction
(probabilities around the student's mood), valence and arousal, ``--feature-dim`` (1280, EfficientNet-B0) float32
features (moved into the recording's feature file at the finish, as the product does); each track with its engagement
windows (128 faces, stride 1, as ``models.engagement`` scores them). Recordings are added until the study holds
``faces`` faces (the last one cut short). Then the people's part: 2-3 annotators vote on ``vote_share`` (3 %) of the
faces (class, valence, arousal) through the labels import, on ``track_vote_share`` (5 %) of the tracks, undo
``undo_share`` (5 %) of their face votes and skip ``skip_share`` (0.2 %) of the faces (undos and skips capped at
:data:`MAX_ONE_BY_ONE` each: they are one transaction apiece), and each recording gets four lecture segments.

Layouts (``--layout``):

- ``product`` (default): as the product stores a video whose file it keeps: the recording's file is kept (a still
  1280x720 25 fps gallery video made once per shape by :mod:`scale_video`, seekable as a real one) and the faces
  have no crop row: Review, Library and the exports re-cut each crop from the file (:mod:`db.crops`).
- ``crops``: a ``--crop``-pixel PNG crop in every face row and no kept file (the layout of stores before revision
  0007 and of studies that set ``keep_video_crops``): ~22 KB per face.

Paths (``--path``):

- ``product`` (default): exactly what the analysis service (``affectlab.analysis``) does with a video:
  :meth:`Ingest.begin_video`, one :meth:`Ingest.store_chunk` per 30 s of video with typed
  :class:`models.types.FaceResult` s (in the ``crops`` layout the crop is PNG-encoded per face by
  :func:`db.ingest.face_in`, as in the product), then :meth:`Ingest.finish_video` with
  :class:`models.types.TrackResult` s (tracks, engagement windows, persons). Votes by
  :meth:`Review.import_labels` (a CSV per annotator), track votes by :meth:`Review.correct_track`, undos by
  :meth:`Review.undo`, skips by :meth:`Review.skip`, segments by :meth:`Classroom.add_segment`.
- ``bulk``: the same rows, with the faces and predictions of each 30 s stretch written by two bulk inserts (the
  crops of a recording encoded once per crop of the pool instead of once per face) instead of the ORM unit of work;
  everything else as ``product``. ``tests/test_bench_scale.py`` checks both paths store equal tables.

Why ``bulk`` exists (measured at 10^4 faces, SQLite, the 2-core machine): the product path stores 200-350 faces/s,
so 10^6 faces would take about an hour. Of its time, ~60 % is PNG-encoding each crop (2 ms per 96-pixel crop in
:func:`db.ingest.face_in`), ~25 % the ORM unit of work of ``store_chunk`` (one ``Face`` and one ``Prediction``
object per face, ~1 ms), and ``finish_video`` then UPDATEs every face's ``track_id`` one row at a time: on SQLite an
UPDATE rewrites the whole row, crop and features included, so the file ends at ~50 KB per face instead of ~31 KB
(free pages left behind). ``bulk`` stores ~1,200-1,600 faces/s, bound by writing ~31 KB per face.

Usage::

    python bench/scale_fill.py --faces 100000 [--path product|bulk] [--layout product|crops]
        [--engine sqlite|postgresql] [--keep DIR]

It prints the phases' seconds, faces per second, the database's bytes per face and the kept files' (feature files
and recordings) bytes per face. ``10**7`` faces are refused
unless ``--allow-huge`` is given and the disk has room for them (estimated from ``--crop`` and ``--feature-dim``).
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import math
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
for _p in (str(ROOT), str(ROOT / "bench")):
    if _p not in sys.path:
        sys.path.insert(0, _p)

from db.ingest import MediaInfo  # noqa: E402
from db.services import LabelStore  # noqa: E402
from models.registry import EMOTIONS_8  # noqa: E402

STUDY = "scale"
OWNER = "owner"
ANNOTATORS = ("ann1", "ann2", "ann3")
MODEL = "enet_b0_8_va_mtl"
WEIGHTS_HASH = "bench-scale-synthetic"
VIDEO_FPS = 25.0
SAMPLE_EVERY = 5
"""Frames of the 25 fps video between analysed frames (5 fps)."""
WIDTH, HEIGHT = 1280, 720
CHUNK_S = 30.0
"""Seconds of video per stored stretch (the analysis service's ``Options.commit_every_s``)."""
WINDOW = 128
"""Engagement window in faces (``models.engagement.EngagementConfig.window``), stride 1."""
MAX_ONE_BY_ONE = 400
"""Most undos, skips and track votes made one transaction apiece per study (they are timed by the bench anyway)."""
SEGMENTS = (("introduction", 0.0, 0.1), ("lecture", 0.1, 0.6), ("group work", 0.6, 0.9), ("questions", 0.9, 1.0))
HUGE = 5_000_000
LAYOUTS = ("product", "crops")
VIDEO_CACHE = Path(tempfile.gettempdir()) / "affectlab-scale-video"
"""Where the product layout's gallery videos are made once and kept (:func:`scale_video.gallery_video`)."""


@dataclass(frozen=True)
class Shape:
    """The study to fill (defaults: issue 19's course)."""

    faces: int
    students: int = 16
    minutes: float = 60.0
    feature_dim: int = 1280
    crop: int = 96
    """Side of the square crops of the ``crops`` layout in pixels (0: no crops nor kept file, features-only)."""
    layout: str = "product"
    """``product``: the recording's file kept (:mod:`scale_video`), no crop row, crops re-cut from the file, as the
    product stores a video; ``crops``: a PNG crop in every face row and no kept file (the layout before revision
    0007, and a study that sets ``keep_video_crops``)."""
    vote_share: float = 0.03
    track_vote_share: float = 0.05
    undo_share: float = 0.05
    skip_share: float = 0.002
    seed: int = 0


@dataclass
class FillReport:
    """What a fill stored and how long each phase took."""

    faces: int = 0
    recordings: int = 0
    tracks: int = 0
    windows: int = 0
    votes: int = 0
    track_votes: int = 0
    undos: int = 0
    skips: int = 0
    segments: int = 0
    seconds: dict[str, float] = field(default_factory=dict)
    db_bytes: int = 0
    """Growth of the database's size on disk from the empty, migrated one."""
    free_bytes: int = 0
    """Of ``db_bytes``, SQLite's free pages (the last recording's pending features, moved into its file at the finish:
    the next recording's pending features reuse them)."""
    feature_bytes: int = 0
    """The recordings' feature files (``*.features.npy`` under the media root)."""
    media_bytes: int = 0
    """The kept recording files (the ``product`` layout's videos)."""

    @property
    def faces_per_s(self) -> float:
        t = self.seconds.get("faces", 0.0) + self.seconds.get("tracks", 0.0)
        return self.faces / t if t > 0 else 0.0

    def line(self) -> str:
        secs = ", ".join(f"{k} {v:.1f} s" for k, v in self.seconds.items())
        n = max(self.faces, 1)
        return (
            f"{self.faces} faces in {self.recordings} recordings, {self.tracks} tracks, {self.windows} windows, "
            f"{self.votes} votes, {self.track_votes} track votes, {self.undos} undos, {self.skips} skips, "
            f"{self.segments} segments; {secs}; {self.faces_per_s:.0f} faces/s; "
            f"database {self.db_bytes / 1e6:.1f} MB ({self.db_bytes / n:.0f} bytes per face, "
            f"{self.free_bytes / n:.0f} of them free pages), "
            f"feature files {self.feature_bytes / 1e6:.1f} MB ({self.feature_bytes / n:.0f} bytes per face), "
            f"recordings {self.media_bytes / 1e6:.1f} MB"
        )


# ------------------------------------------------------------------------------------------------ synthetic analysis


@dataclass(frozen=True)
class Segment:
    """One track of a student: analysed samples ``[start, end)``."""

    student: int
    start: int
    end: int


@dataclass(frozen=True)
class Recording:
    """One synthetic recording: its samples, its tracks in order of first appearance, and each sample's students."""

    index: int
    samples: int
    tracks: tuple[Segment, ...]
    n_faces: int

    @property
    def name(self) -> str:
        return f"lecture{self.index:03d}.mp4"

    @property
    def duration_s(self) -> float:
        return self.samples / (VIDEO_FPS / SAMPLE_EVERY)

    def sha256(self, seed: int) -> str:
        return hashlib.sha256(f"bench-scale {seed} {self.index}".encode()).hexdigest()

    def present(self) -> Iterator[tuple[int, list[tuple[int, int]]]]:
        """Each sample with its ``(student, track number)`` pairs, students in order."""
        by_student: dict[int, list[tuple[int, Segment]]] = {}
        for number, t in enumerate(self.tracks):
            by_student.setdefault(t.student, []).append((number, t))
        pos = dict.fromkeys(by_student, 0)
        for sample in range(self.samples):
            here = []
            for student in sorted(by_student):
                segs = by_student[student]
                while pos[student] < len(segs) and segs[pos[student]][1].end <= sample:
                    pos[student] += 1
                if pos[student] < len(segs) and segs[pos[student]][1].start <= sample:
                    here.append((student, segs[pos[student]][0]))
            yield sample, here


def plan(shape: Shape) -> list[Recording]:
    """The recordings of a study of ``shape.faces`` faces (the last one cut at exactly that many)."""
    rng = np.random.default_rng(shape.seed)
    full = int(shape.minutes * 60 * VIDEO_FPS / SAMPLE_EVERY)
    out: list[Recording] = []
    left = shape.faces
    while left > 0:
        segs: list[Segment] = []
        for student in range(shape.students):
            t = int(rng.integers(0, 20))
            while t < full:
                n = int(rng.integers(200, 401))
                segs.append(Segment(student, t, min(full, t + n)))
                t += n + int(rng.integers(1, 11))
        segs.sort(key=lambda s: (s.start, s.student))
        total = sum(s.end - s.start for s in segs)
        if total > left:  # the last recording: cut at the sample where the count reaches ``left``
            per_sample = np.zeros(full + 1, dtype=np.int64)
            for s in segs:
                per_sample[s.start] += 1
                per_sample[s.end] -= 1
            cum = np.cumsum(np.cumsum(per_sample)[:full])
            cut = int(np.searchsorted(cum, left)) + 1
            segs = [Segment(s.student, s.start, min(s.end, cut)) for s in segs if s.start < cut]
            full_here, total = cut, sum(s.end - s.start for s in segs)
        else:
            full_here = full
        out.append(Recording(index=len(out), samples=full_here, tracks=tuple(segs), n_faces=total))
        left -= total
    return out


def _crop_pool(side: int, seed: int, n: int = 16) -> list[np.ndarray]:
    """Face-like crops (smooth shading plus sensor noise) whose PNGs weigh about what real crops weigh."""
    rng = np.random.default_rng(seed + 1)
    yy, xx = np.mgrid[0:side, 0:side].astype(np.float32) / max(side, 1)
    out = []
    for _ in range(n):
        base = rng.uniform(60, 200, 3).astype(np.float32)
        shade = 60 * np.exp(-((xx - 0.5) ** 2 + (yy - 0.45) ** 2) / 0.08)
        img = base[None, None, :] + shade[..., None] + rng.normal(0, 7, (side, side, 3)).astype(np.float32)
        out.append(np.clip(img, 0, 255).astype(np.uint8))
    return out


@dataclass(frozen=True)
class FaceBatch:
    """The faces of one stretch of a recording, as arrays (one row per face, in storing order)."""

    samples: np.ndarray
    students: np.ndarray
    tracks: np.ndarray
    index: np.ndarray
    boxes: np.ndarray
    det: np.ndarray
    probs: np.ndarray
    valence: np.ndarray
    arousal: np.ndarray
    features: np.ndarray
    crops: np.ndarray

    @property
    def frames(self) -> np.ndarray:
        return self.samples * SAMPLE_EVERY

    @property
    def times(self) -> np.ndarray:
        return self.samples / (VIDEO_FPS / SAMPLE_EVERY)


def batches(rec: Recording, shape: Shape) -> Iterator[tuple[FaceBatch, int]]:
    """The recording's faces in stretches of :data:`CHUNK_S` seconds, each with its last sample."""
    rng = np.random.default_rng((shape.seed, rec.index))
    moods = rng.dirichlet(np.full(len(EMOTIONS_8), 0.6), shape.students)
    cols = 4
    rows = math.ceil(shape.students / cols)
    cw, ch = WIDTH / cols, HEIGHT / rows
    per_chunk = int(CHUNK_S * VIDEO_FPS / SAMPLE_EVERY)
    pending: list[tuple[int, int, int, int]] = []

    def make(items: list[tuple[int, int, int, int]]) -> FaceBatch:
        a = np.asarray(items, dtype=np.int64).reshape(-1, 4)
        n = len(a)
        students = a[:, 1]
        cx = (students % cols + 0.5) * cw + rng.normal(0, 6, n)
        cy = (students // cols + 0.5) * ch + rng.normal(0, 4, n)
        w = rng.uniform(70, 90, n)
        h = w * 1.2
        boxes = np.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], axis=1)
        logits = np.log(moods[students] + 1e-3) + rng.normal(0, 0.8, (n, len(EMOTIONS_8)))
        p = np.exp(logits - logits.max(axis=1, keepdims=True))
        p = (p / p.sum(axis=1, keepdims=True)).astype(np.float32)
        return FaceBatch(
            samples=a[:, 0],
            students=students,
            tracks=a[:, 2],
            index=a[:, 3],
            boxes=boxes,
            det=rng.uniform(0.9, 1.0, n),
            probs=p,
            valence=np.tanh(rng.normal(0, 0.5, n)),
            arousal=np.tanh(rng.normal(0.1, 0.4, n)),
            features=rng.standard_normal((n, shape.feature_dim), dtype=np.float32),
            crops=rng.integers(0, 16, n),
        )

    last = -1
    for sample, here in rec.present():
        pending.extend((sample, student, number, i) for i, (student, number) in enumerate(here))
        last = sample
        if (sample + 1) % per_chunk == 0 and pending:
            yield make(pending), sample
            pending = []
    if pending:
        yield make(pending), last


def face_results(batch: FaceBatch, rec: Recording, pool: list[np.ndarray] | None) -> list[Any]:
    """The batch as the pipeline's typed results (:class:`models.types.FaceResult`, crop arrays included)."""
    from models.types import EmotionPrediction, Face, FaceResult

    out = []
    empty = np.zeros(0, dtype=np.float32)
    for k in range(len(batch.samples)):
        x1, y1, x2, y2 = (float(v) for v in batch.boxes[k])
        pred = EmotionPrediction(
            model=MODEL,
            labels=EMOTIONS_8,
            features=batch.features[k],
            logits=empty,
            probs=batch.probs[k],
            valence=float(batch.valence[k]),
            arousal=float(batch.arousal[k]),
            weights_hash=WEIGHTS_HASH,
        )
        out.append(
            FaceResult(
                file=rec.name,
                index=int(batch.index[k]),
                face=Face(box=(x1, y1, x2, y2), det_score=float(batch.det[k])),
                prediction=pred,
                frame=int(batch.frames[k]),
                time_s=float(batch.times[k]),
                track=None,
                crop=None if pool is None else pool[int(batch.crops[k])],
            )
        )
    return out


def track_results(rec: Recording) -> list[Any]:
    """The recording's tracks with engagement windows (stride 1) and persons, as ``finish_video`` takes them."""
    from models.engagement import EngagementResult, EngagementWindow, engagement_label
    from models.types import TrackResult

    rng = np.random.default_rng((7, rec.index))
    step = SAMPLE_EVERY / VIDEO_FPS
    out = []
    for number, t in enumerate(rec.tracks):
        n = t.end - t.start
        w = min(WINDOW, n)
        starts = range(0, n - w + 1)
        level = rng.uniform(0.2, 0.9)
        p = np.clip(level + np.cumsum(rng.normal(0, 0.01, len(starts))), 0, 1)
        windows = tuple(
            EngagementWindow(
                start=s,
                end=s + w,
                start_s=(t.start + s) * step,
                end_s=(t.start + s + w - 1) * step,
                p_engaged=float(p[i]),
            )
            for i, s in enumerate(starts)
        )
        score = float(np.mean(p))
        eng = EngagementResult(score=score, label=engagement_label(score), windows=windows, n_features=n, window=w)
        out.append(
            TrackResult(
                track=number,
                n_faces=n,
                start_s=t.start * step,
                end_s=(t.end - 1) * step,
                engagement=eng,
                person=t.student,
            )
        )
    return out


# ---------------------------------------------------------------------------------------------------- storing


def _store_bulk(
    store: LabelStore,
    media_id: int,
    batch: FaceBatch,
    track_ids: dict[int, int],
    pngs: list[bytes] | None,
    first: bool = False,
) -> None:
    """One stretch written as :func:`db.resumable.store_chunk` writes it, by two bulk inserts, track ids set.

    ``first``: the recording's first stretch, whose new model run the study's read model takes (the product's flush
    notes the run of every new prediction; a Core insert is not seen, so the study is named for the check).
    """
    from sqlalchemy import insert, select

    from db import feature_store, status
    from db.codecs import features_to_bytes
    from db.schema import Face, Media, Prediction

    names = list(EMOTIONS_8)
    n = len(batch.samples)
    frames, times = batch.frames, batch.times
    face_rows = [
        {
            "media_id": media_id,
            "track_id": track_ids[int(batch.tracks[k])],
            "face_index": int(batch.index[k]),
            "frame": int(frames[k]),
            "time_s": float(times[k]),
            "x1": float(batch.boxes[k, 0]),
            "y1": float(batch.boxes[k, 1]),
            "x2": float(batch.boxes[k, 2]),
            "y2": float(batch.boxes[k, 3]),
            "det_score": float(batch.det[k]),
            "crop_png": None if pngs is None else pngs[int(batch.crops[k])],
            "features": features_to_bytes(batch.features[k])[0],  # the store's codec (compact uint8)
            "feature_dim": int(batch.features.shape[1]),
            "feature_model": MODEL,
        }
        for k in range(n)
    ]

    def work(s: Any) -> None:
        # as store_chunk: where the store keeps feature files, the features wait in pending_features until the
        # finish and the rows hold IN_FILE (written into the rows and moved out, they left each faces page mostly
        # empty: 1.5 KB per face of a 10^6-face SQLite study)
        staged = [r["features"] for r in face_rows] if feature_store.staging(s, "video") else None
        if staged is not None:
            for r in face_rows:
                r["features"] = feature_store.IN_FILE
        if s.get_bind().dialect.name == "postgresql":
            ids = _copy_faces(s, face_rows)
        else:
            ids = list(s.scalars(insert(Face).returning(Face.id, sort_by_parameter_order=True), face_rows))
        if staged is not None:
            feature_store.add_pending(s, media_id, list(zip(ids, staged, strict=True)))
        preds = []
        for k, fid in enumerate(ids):
            probs = {c: float(v) for c, v in zip(names, batch.probs[k], strict=True)}
            preds.append(
                {
                    "face_id": fid,
                    "model": MODEL,
                    "weights_hash": WEIGHTS_HASH,
                    "model_version": None,
                    "probs": probs,
                    "label": names[int(np.argmax(batch.probs[k]))],
                    "confidence": max(probs.values()),
                    "valence": float(batch.valence[k]),
                    "arousal": float(batch.arousal[k]),
                    "engagement": None,
                }
            )
        if s.get_bind().dialect.name == "postgresql":
            _copy_rows(s, "predictions", preds, PREDICTION_COLUMNS)
        else:
            s.execute(insert(Prediction), preds)
        # the review read model, as store_chunk's flush has it kept
        status.mark(
            s, faces=ids, studies=[s.scalar(select(Media.study_id).where(Media.id == media_id))] if first else []
        )

    store.transaction(work)


FACE_COLUMNS = (
    "id",
    "media_id",
    "track_id",
    "face_index",
    "frame",
    "time_s",
    "x1",
    "y1",
    "x2",
    "y2",
    "det_score",
    "crop_png",
    "features",
    "feature_dim",
    "feature_model",
    "created_at",
)
"""The ``faces`` columns the bulk fill writes on PostgreSQL (``COPY``)."""
FACE_TYPES = ("int4",) * 5 + ("float8",) * 6 + ("bytea", "bytea", "int4", "varchar", "timestamptz")
"""Their PostgreSQL types, in order (a binary ``COPY``: the crops and features are sent as they are, not as hex)."""
PREDICTION_COLUMNS = (
    "face_id",
    "model",
    "weights_hash",
    "model_version",
    "probs",
    "label",
    "confidence",
    "valence",
    "arousal",
    "engagement",
    "created_at",
)
"""The ``predictions`` columns, as :data:`FACE_COLUMNS`."""


def _copy_rows(
    s: Any, table: str, rows: list[dict[str, Any]], cols: Sequence[str], types: Sequence[str] | None = None
) -> None:
    """Writes ``rows`` into ``table`` by one ``COPY ... FROM STDIN`` on the session's own psycopg connection.

    PostgreSQL only (the bench's bulk fill): the bulk ``INSERT`` of the same rows stored 150-350 faces/s there, its
    time in building and sending statements of thousands of parameters. Binary ``COPY`` with ``types`` (PostgreSQL
    type names, one per column), else text (psycopg adapts each value); ``created_at`` is the time of the copy, as
    the column's Python default gives the product's rows.
    """
    import json
    from datetime import UTC, datetime

    now = datetime.now(UTC)
    raw = s.connection().connection.driver_connection
    fmt = " WITH (FORMAT BINARY)" if types else ""
    with raw.cursor() as cur, cur.copy(f"COPY {table} ({', '.join(cols)}) FROM STDIN{fmt}") as cp:
        if types:
            cp.set_types(list(types))
        for r in rows:
            values = {**r, "created_at": now}
            if "probs" in values:
                values["probs"] = json.dumps(values["probs"])
            cp.write_row([values.get(c) for c in cols])


def _copy_faces(s: Any, face_rows: list[dict[str, Any]]) -> list[int]:
    """Writes the faces by ``COPY`` with ids taken from the table's sequence, in storing order; returns the ids."""
    from sqlalchemy import text

    seq = s.scalar(text("SELECT pg_get_serial_sequence('faces', 'id')"))
    got = s.scalars(text(f"SELECT nextval('{seq}') FROM generate_series(1, :n)"), {"n": len(face_rows)})
    ids = sorted(int(i) for i in got)
    _copy_rows(s, "faces", [{**r, "id": i} for r, i in zip(face_rows, ids, strict=True)], FACE_COLUMNS, FACE_TYPES)
    return ids


def _track_ids(store: LabelStore, media_id: int) -> dict[int, int]:
    from sqlalchemy import select

    from db.schema import Track

    stmt = select(Track.track_index, Track.id).where(Track.media_id == media_id)
    return store.transaction(lambda s: {int(i): int(t) for i, t in s.execute(stmt)}, write=False)


def _face_ids(store: LabelStore, media_id: int) -> list[int]:
    from sqlalchemy import select

    from db.schema import Face

    return store.transaction(
        lambda s: list(s.scalars(select(Face.id).where(Face.media_id == media_id).order_by(Face.id))), write=False
    )


def recording_file(shape: Shape) -> Path:
    """The product layout's recording file (one gallery video per shape, made once in :data:`VIDEO_CACHE`)."""
    import scale_video

    return scale_video.gallery_video(VIDEO_CACHE, shape.students, shape.minutes, shape.seed)


def fill_recording(store: LabelStore, rec: Recording, shape: Shape, path: str, rep: FillReport) -> int:
    """Stores one recording through ``path``; returns its media id."""
    from db import feature_store, status
    from db.codecs import encode_png

    t0 = time.perf_counter()
    product = shape.layout == "product"
    pool = _crop_pool(shape.crop, shape.seed) if shape.crop > 0 and not product else None
    pngs = [encode_png(c) for c in pool] if pool is not None and path == "bulk" else None
    info = MediaInfo(kind="video", width=WIDTH, height=HEIGHT, duration_s=rec.duration_s, fps=VIDEO_FPS)
    # the product layout keeps the recording's file (crops re-cut from it); the crops layout keeps none
    data: bytes | Path = recording_file(shape) if product else f"bench-scale {shape.seed} {rec.index}".encode()
    state = store.ingest.begin_video(
        STUDY, data, rec.name, info, uploaded_by=OWNER, sha256=rec.sha256(shape.seed), keep_file=product
    )
    media_id = state.media_id
    tracks = track_results(rec)
    t_tracks = 0.0
    if path == "bulk":
        # Tracks, windows and persons first (the product's finish_video, with no face yet), then the faces with
        # their track ids: on SQLite the product's later UPDATE of every face's track id rewrites each row whole,
        # crop and features included.
        t1 = time.perf_counter()
        store.ingest.finish_video(
            media_id, {}, tracks, duration_s=rec.duration_s, fps=VIDEO_FPS, width=WIDTH, height=HEIGHT
        )
        t_tracks = time.perf_counter() - t1
        track_ids = _track_ids(store, media_id)
        for k, (batch, _last) in enumerate(batches(rec, shape)):
            _store_bulk(store, media_id, batch, track_ids, pngs, first=k == 0)
        # as the product's finish does: the finished video's features into its file (db.feature_store)
        store.transaction(lambda s: feature_store.move_video(s, media_id))
        # the recording's kept totals (faces, crops, features), which the product's flush of new faces recounts
        store.transaction(lambda s: status.mark(s, media=[media_id]))
        n_faces = len(_face_ids(store, media_id))
        t_faces = time.perf_counter() - t0 - t_tracks
    else:
        order: list[int] = []
        for batch, last in batches(rec, shape):
            order.extend(int(t) for t in batch.tracks)
            store.ingest.store_chunk(
                media_id,
                face_results(batch, rec, pool),
                until_s=float(last * SAMPLE_EVERY / VIDEO_FPS),
                until_frame=int(last * SAMPLE_EVERY),
                samples=last + 1,
            )
        t_faces = time.perf_counter() - t0
        t1 = time.perf_counter()
        ids = _face_ids(store, media_id)
        if len(ids) != len(order):
            raise RuntimeError(f"{rec.name}: {len(ids)} faces stored, {len(order)} made")
        store.ingest.finish_video(
            media_id,
            dict(zip(ids, order, strict=True)),
            tracks,
            duration_s=rec.duration_s,
            fps=VIDEO_FPS,
            width=WIDTH,
            height=HEIGHT,
        )
        n_faces = len(ids)
        t_tracks = time.perf_counter() - t1
    rep.seconds["faces"] = rep.seconds.get("faces", 0.0) + t_faces
    rep.seconds["tracks"] = rep.seconds.get("tracks", 0.0) + t_tracks
    rep.faces += n_faces
    rep.recordings += 1
    rep.tracks += len(tracks)
    rep.windows += sum(len(t.engagement.windows) for t in tracks if t.engagement is not None)
    return media_id


def add_people(store: LabelStore, shape: Shape, media_ids: list[int], rep: FillReport, tmp: Path) -> None:
    """Votes (labels import), track votes, undos, skips and lecture segments, through the store's services."""
    from sqlalchemy import select

    from db.schema import Face, Media, Prediction, Track

    t0 = time.perf_counter()
    rng = np.random.default_rng(shape.seed + 2)

    def ids_of(s: Any) -> tuple[np.ndarray, list[str], np.ndarray]:
        rows = s.execute(
            select(Face.id, Prediction.label)
            .join(Prediction, Prediction.face_id == Face.id)
            .join(Media, Media.id == Face.media_id)
            .where(Media.id.in_(media_ids))
            .order_by(Face.id)
        ).all()
        tracks = s.scalars(select(Track.id).where(Track.media_id.in_(media_ids)).order_by(Track.id)).all()
        return np.array([r[0] for r in rows], dtype=np.int64), [r[1] for r in rows], np.array(tracks, dtype=np.int64)

    face_ids, model_labels, track_ids = store.transaction(ids_of, write=False)
    n_vote = max(1, round(shape.vote_share * len(face_ids)))
    picked = np.sort(rng.choice(len(face_ids), size=min(n_vote, len(face_ids)), replace=False))
    voters = rng.integers(2, 4, len(picked))  # 2 or 3 annotators per face
    classes = list(EMOTIONS_8)
    voted: dict[str, list[int]] = {a: [] for a in ANNOTATORS}
    for i, ann in enumerate(ANNOTATORS):
        mine = picked[voters > i] if i == 2 else picked
        path = tmp / f"votes-{ann}.csv"
        with path.open("w", newline="") as fh:
            w = csv.writer(fh)
            w.writerow(["face_id", "label", "valence", "arousal"])
            for k in mine:
                agree = rng.random() < 0.7
                label = model_labels[k] if agree else classes[int(rng.integers(len(classes)))]
                w.writerow([int(face_ids[k]), label, f"{rng.uniform(-1, 1):.2f}", f"{rng.uniform(-1, 1):.2f}"])
        store.review.import_labels(STUDY, path, ann)
        voted[ann] = [int(face_ids[k]) for k in mine]
        rep.votes += len(mine)
    rep.seconds["votes"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    n_tv = min(MAX_ONE_BY_ONE, len(track_ids), max(1, round(shape.track_vote_share * len(track_ids))))
    for k in rng.choice(len(track_ids), size=n_tv, replace=False):
        for ann in ANNOTATORS[: int(rng.integers(1, 3))]:
            store.review.correct_track(int(track_ids[k]), ann, label=classes[int(rng.integers(len(classes)))])
            rep.track_votes += 1
    for ann in ANNOTATORS:
        n_undo = min(MAX_ONE_BY_ONE // len(ANNOTATORS), round(shape.undo_share * len(voted[ann])))
        for fid in rng.choice(voted[ann], size=n_undo, replace=False) if n_undo else []:
            store.review.undo(ann, face_id=int(fid))
            rep.undos += 1
    n_skip = min(MAX_ONE_BY_ONE, round(shape.skip_share * len(face_ids)))
    for k in rng.choice(len(face_ids), size=n_skip, replace=False):
        store.review.skip(int(face_ids[k]), ANNOTATORS[int(rng.integers(len(ANNOTATORS)))])
        rep.skips += 1
    durations = store.transaction(
        lambda s: dict(s.execute(select(Media.id, Media.duration_s).where(Media.id.in_(media_ids))).all()),
        write=False,
    )
    for mid in media_ids:
        d = float(durations[mid] or 0.0)
        for name, a, b in SEGMENTS:
            if d * b > d * a:
                store.classroom.add_segment(mid, name, round(d * a, 1), round(d * b, 1), created_by=OWNER)
                rep.segments += 1
    rep.seconds["people"] = time.perf_counter() - t0


def db_bytes(store: LabelStore) -> int:
    """The database's size on disk (SQLite file with its WAL, or ``pg_database_size``)."""
    from sqlalchemy import text

    url = store.engine.url
    if url.get_backend_name() == "sqlite":
        db = Path(url.database or "")
        return sum(p.stat().st_size for p in (db, Path(f"{db}-wal")) if p.exists())
    with store.engine.connect() as c:
        return int(c.execute(text("SELECT pg_database_size(current_database())")).scalar_one())


def free_bytes(store: LabelStore) -> int:
    """SQLite's free pages in bytes (0 on PostgreSQL)."""
    from sqlalchemy import text

    if store.engine.url.get_backend_name() != "sqlite":
        return 0
    with store.engine.connect() as c:
        pages = int(c.execute(text("PRAGMA freelist_count")).scalar_one())
        return pages * int(c.execute(text("PRAGMA page_size")).scalar_one())


def estimate_bytes(shape: Shape) -> int:
    """A generous estimate of the database's size for ``shape`` (to refuse fills the disk cannot hold)."""
    crop = 0 if shape.crop <= 0 or shape.layout == "product" else int(shape.crop * shape.crop * 3 * 0.75)
    return int(shape.faces * (1500 + 4 * shape.feature_dim + crop) * 1.3)


def fill(
    store: LabelStore, shape: Shape, *, path: str = "product", log: Callable[[str], None] | None = None
) -> FillReport:
    """Fills the study :data:`STUDY` of an upgraded, empty store with ``shape``; returns what it did."""
    if path not in ("product", "bulk"):
        raise ValueError(f"unknown fill path {path!r}: use product or bulk")
    if shape.layout not in LAYOUTS:
        raise ValueError(f"unknown layout {shape.layout!r}: use product or crops")
    from db.maintenance import checkpoint

    rep = FillReport()
    checkpoint(store.engine)  # an upgrade's writes may still sit in the WAL: the empty store's size is its file's
    empty = db_bytes(store)
    recs = plan(shape)
    media_ids = []
    for rec in recs:
        media_ids.append(fill_recording(store, rec, shape, path, rep))
        if log:
            log(f"  {rec.name}: {rec.n_faces} faces, {len(rec.tracks)} tracks ({rep.faces}/{shape.faces})")
    with tempfile.TemporaryDirectory(prefix="affectlab-scale-votes-") as tmp:
        add_people(store, shape, media_ids, rep, Path(tmp))
    checkpoint(store.engine)  # the WAL into the file: its size is the study's
    rep.db_bytes = db_bytes(store) - empty
    rep.free_bytes = free_bytes(store)
    rep.feature_bytes, rep.media_bytes = file_bytes(store.media_root)
    return rep


def file_bytes(media_root: Path) -> tuple[int, int]:
    """Bytes of the kept feature files and of the other kept files (recordings) under ``media_root``."""
    features = media = 0
    for p in media_root.rglob("*") if media_root.is_dir() else []:
        if p.is_file():
            if p.name.endswith(".features.npy"):
                features += p.stat().st_size
            else:
                media += p.stat().st_size
    return features, media


# ---------------------------------------------------------------------------------------------------- databases


class Database:
    """A fresh, upgraded database of one engine for a bench run (SQLite file, or a throwaway PostgreSQL server)."""

    def __init__(self, engine: str, folder: Path) -> None:
        self.engine = engine
        self.folder = folder
        self._pg: Any = None
        self._n = 0

    def __enter__(self) -> Database:
        if self.engine == "postgresql":
            from tests.pg import PgServer, find_pg_bin

            bindir = find_pg_bin()
            if bindir is None:
                raise RuntimeError("no PostgreSQL server binaries under /usr/lib/postgresql/*/bin")
            self._pg = PgServer(bindir)
            self._pg.start()
        elif self.engine != "sqlite":
            raise ValueError(f"unknown engine {self.engine!r}: use sqlite or postgresql")
        return self

    def __exit__(self, *exc: object) -> None:
        if self._pg is not None:
            self._pg.stop()

    def new_store(self, name: str) -> LabelStore:
        """A new, upgraded store."""
        self._n += 1
        url = self._pg.new_database() if self._pg is not None else f"sqlite:///{self.folder / f'{name}.sqlite3'}"
        data = self.folder / f"{name}-data"
        data.mkdir(parents=True, exist_ok=True)
        store = LabelStore(url, data_dir=data)
        store.upgrade()
        return store


def check_disk(shape: Shape, folder: Path, allow_huge: bool) -> None:
    """Refuses a fill the disk cannot hold, and over :data:`HUGE` faces without ``allow_huge``."""
    if shape.faces > HUGE and not allow_huge:
        raise SystemExit(f"{shape.faces} faces: pass --allow-huge (and check the disk: df -h {folder})")
    need = estimate_bytes(shape)
    free = shutil.disk_usage(folder).free
    if need > free * 0.8:
        raise SystemExit(f"{shape.faces} faces need about {need / 1e9:.1f} GB; {folder} has {free / 1e9:.1f} GB free")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--faces", type=int, default=10_000)
    ap.add_argument("--path", choices=("product", "bulk"), default="product")
    ap.add_argument("--engine", choices=("sqlite", "postgresql"), default="sqlite")
    ap.add_argument("--students", type=int, default=16)
    ap.add_argument("--minutes", type=float, default=60.0)
    ap.add_argument("--feature-dim", type=int, default=1280)
    ap.add_argument("--layout", choices=LAYOUTS, default="product", help="product: kept file, crops re-cut")
    ap.add_argument("--crop", type=int, default=96, help="crops layout: crop side in pixels; 0: no crops")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--keep", type=Path, help="fill a SQLite database in this folder and keep it")
    ap.add_argument("--allow-huge", action="store_true", help=f"allow more than {HUGE} faces")
    args = ap.parse_args(argv)
    shape = Shape(
        faces=args.faces,
        students=args.students,
        minutes=args.minutes,
        feature_dim=args.feature_dim,
        crop=args.crop,
        layout=args.layout,
        seed=args.seed,
    )
    folder = args.keep or Path(tempfile.mkdtemp(prefix="affectlab-scale-"))
    folder.mkdir(parents=True, exist_ok=True)
    check_disk(shape, folder, args.allow_huge)
    try:
        with Database(args.engine, folder) as db:
            store = db.new_store(f"size-{args.faces}")  # the name bench_scale --keep DIR --reuse times
            rep = fill(store, shape, path=args.path, log=print)
            store.close()
        print(f"{args.engine} {args.path}: {rep.line()}")
    finally:
        if args.keep is None:
            shutil.rmtree(folder, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
