"""The finish step of a streamed video in bounded memory (:mod:`affectlab.finish`, :mod:`db.ingest_finish`).

A gallery recording's faces are stored as ``store_chunk`` leaves them (no track); the finish step then replays the
tracker, scores engagement and writes tracks, windows, the faces' tracks and persons. What it stores must not depend
on how much it reads at a time (one frame and one feature per read against everything at once), must be what the
whole-recording finish it replaced stores (tracker with history, :func:`models.track_results.score_tracks`,
:meth:`db.service_ingest.Ingest.finish_video`), and the memory it allocates must not grow by a Python object per face.
"""

from __future__ import annotations

import tracemalloc
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from sqlalchemy import insert, select

from affectlab import finish
from db import feature_store, ingest_finish, status
from db.codecs import features_to_bytes
from db.ingest import MediaInfo
from db.schema import EngagementWindow, Face, Person, PersonTrack, Prediction, Track
from db.services import LabelStore
from models.engagement import EngagementConfig, EngagementModel
from models.persons import PersonConfig, profile_of
from models.registry import get_spec
from models.track_results import score_tracks
from models.tracking import Tracker
from models.video import VideoConfig
from tests.test_engagement import random_keras_weights, write_keras_h5

FPS = 5.0
MODEL = "enet_b0_8_best_vgaf"


def fill(store: LabelStore, frames: int, students: int = 4, seed: int = 0, away_every: int = 0) -> int:
    """A partial 4x1-tile gallery video of ``frames`` sampled frames; a student moves tile halfway through.

    ``away_every``: each student is away for 3 s every that many frames (tracks of bounded length).
    """
    info = MediaInfo(kind="video", width=1280, height=720, duration_s=frames / FPS, fps=25.0)
    state = store.ingest.begin_video("s", f"gallery {frames} {seed}".encode(), "gallery.mp4", info)
    rng = np.random.default_rng(seed)
    base = np.abs(rng.normal(0.3, 0.4, (students, 1280)))
    faces: list[dict[str, Any]] = []
    feats: list[bytes] = []
    for fr in range(frames):
        for k in range(students):
            if away_every and (fr + 7 * k) % away_every < 15:
                continue
            tile = (k + 1) % students if k == 0 and fr >= frames // 2 else k  # student 0 moves tile (a re-flow)
            if tile != k and tile < students and fr >= frames // 2:
                tile = students  # the tile after the last one
            x, y = 40 + 300 * tile + rng.normal(0, 1.5), 100 + rng.normal(0, 1.5)
            feats.append(features_to_bytes(base[k] + np.abs(rng.normal(0, 0.3, 1280)))[0])
            faces.append(
                {"media_id": state.media_id, "face_index": len(faces), "frame": fr * 5, "time_s": fr / FPS}
                | {"x1": x, "y1": y, "x2": x + 90, "y2": y + 90, "det_score": 0.99, "feature_dim": 1280}
                | {"feature_model": MODEL}
            )

    def work(s: Any) -> None:
        staged = feature_store.staging(s, "video")
        rows = [f | {"features": feature_store.IN_FILE if staged else d} for f, d in zip(faces, feats, strict=True)]
        ids = list(s.scalars(insert(Face).returning(Face.id, sort_by_parameter_order=True), rows))
        if staged:
            feature_store.add_pending(s, state.media_id, list(zip(ids, feats, strict=True)))
        pred = {"model": MODEL, "weights_hash": "random", "model_version": None, "label": "Neutral"}
        s.execute(
            insert(Prediction),
            [pred | {"face_id": i, "probs": {"Neutral": 1.0}, "confidence": 1.0} for i in ids],
        )
        status.mark(s, faces=ids)

    store.transaction(work)
    return state.media_id


class Models:
    """What the finish step reads of an :class:`models.analysis.AnalysisSession`."""

    def __init__(self, engagement: EngagementModel | None, persons: PersonConfig | None = PersonConfig()) -> None:
        self.recognizer = type("R", (), {"spec": get_spec(MODEL)})()
        self.video = VideoConfig(persons=persons)
        self.engagement = engagement


@pytest.fixture(scope="module")
def engagement(tmp_path_factory: pytest.TempPathFactory) -> EngagementModel:
    h5 = write_keras_h5(tmp_path_factory.mktemp("eng") / "engagement.h5", random_keras_weights(0))
    return EngagementModel.from_h5(h5, EngagementConfig(window=16, stride=2, min_features=4), numpy=True)


def stored(store: LabelStore, media_id: int) -> dict[str, Any]:
    """What the finish stored, by face order and track number (row ids differ between stores)."""

    def read(s: Any) -> dict[str, Any]:
        tracks = s.execute(
            select(Track.id, Track.track_index, Track.n_faces, Track.start_s, Track.end_s)
            .add_columns(Track.engagement_score, Track.engagement_label)
            .where(Track.media_id == media_id)
            .order_by(Track.track_index)
        ).all()
        number = {r.id: r.track_index for r in tracks}
        faces = [
            number.get(t) for t in s.scalars(select(Face.track_id).where(Face.media_id == media_id).order_by(Face.id))
        ]
        windows = [
            (number[t], a, b, p)
            for t, a, b, p in s.execute(
                select(EngagementWindow.track_id, EngagementWindow.start_s, EngagementWindow.end_s)
                .add_columns(EngagementWindow.p_engaged)
                .order_by(EngagementWindow.id)
            )
        ]
        persons = dict(
            s.execute(
                select(Track.track_index, Person.person_index)
                .join(PersonTrack, PersonTrack.track_id == Track.id)
                .join(Person, Person.id == PersonTrack.person_id)
                .where(Track.media_id == media_id)
            ).all()
        )
        return {"tracks": [tuple(r)[1:] for r in tracks], "faces": faces, "windows": windows, "persons": persons}

    return store.transaction(read, write=False)


def whole_recording_finish(store: LabelStore, media_id: int, models: Models, frames_per_read: int = 500) -> None:
    """The finish as it was before: the tracker's history, every face in dicts, then one write from objects."""
    tracker = Tracker(models.video.tracker)
    sums: dict[int, np.ndarray] = {}
    face_tracks: dict[int, int] = {}
    track_faces: dict[int, list[tuple[int, float]]] = {}
    after = -1
    while batch := store.ingest.stored_frames(media_id, after, frames_per_read):
        for fr in batch:
            ids = tracker.update(fr.frame, fr.time_s, list(fr.boxes), fr.features)
            feats = np.asarray(fr.features, dtype=np.float64)
            for fid, tid, v in zip(fr.face_ids, ids, feats, strict=True):
                face_tracks[fid] = tid
                track_faces.setdefault(tid, []).append((fid, fr.time_s))
                unit = v / np.linalg.norm(v)
                sums[tid] = unit if tid not in sums else sums[tid] + unit
            after = fr.frame
    tracks = tracker.tracks()
    scored = score_tracks(
        tracks,
        lambda t: (
            store.ingest.features_of([f for f, _ in track_faces[t.track]]),
            [s for _, s in track_faces[t.track]],
        ),
        models.engagement,
        MODEL,
        1280,
        lambda: [profile_of(t, sums[t.track] / t.n_faces) for t in tracks],
        models.video.persons,
    )
    store.ingest.finish_video(
        media_id, face_tracks, scored.results(), duration_s=None, fps=25.0, width=1280, height=720
    )


def _store(tmp_path: Path, name: str, feature_files: bool = True) -> LabelStore:
    (tmp_path / name).mkdir()
    url = f"sqlite:///{tmp_path / name / 'db.sqlite3'}"
    store = LabelStore(url, data_dir=tmp_path / name, feature_files=feature_files)
    store.upgrade()
    return store


def _finish(
    store: LabelStore,
    media_id: int,
    models: Models,
    frames_per_read: int = finish.FRAMES_PER_READ,
    faces_per_read: int = finish.FACES_PER_READ,
) -> finish.Finished:
    return finish.finish_stored(
        store,
        media_id,
        models,  # type: ignore[arg-type]
        duration_s=None,
        fps=25.0,
        width=1280,
        height=720,
        frames_per_read=frames_per_read,
        faces_per_read=faces_per_read,
    )


@pytest.mark.parametrize("windows", ["product", "sparse"])
def test_tiny_and_big_reads_store_what_the_whole_recording_finish_stored(
    tmp_path: Path, engagement: EngagementModel, windows: str
) -> None:
    if windows == "sparse":  # windows far apart, few per batch: rows between them are never read
        config = EngagementConfig(window=4, stride=9, min_features=4, chunk=2)
        engagement = EngagementModel(engagement.net, config)
    stores = {n: _store(tmp_path, n) for n in ("tiny", "big", "before")}
    media = {n: fill(s, 120, away_every=50) for n, s in stores.items()}
    models = Models(engagement)
    tiny = _finish(stores["tiny"], media["tiny"], models, frames_per_read=1, faces_per_read=1)
    big = _finish(stores["big"], media["big"], models, frames_per_read=10_000, faces_per_read=1_000_000)
    whole_recording_finish(stores["before"], media["before"], models)
    got = {n: stored(s, media[n]) for n, s in stores.items()}
    assert got["tiny"] == got["big"] == got["before"]
    assert tiny == big and tiny.status == "ok" and tiny.tracks == len(got["tiny"]["tracks"])
    assert None not in got["tiny"]["faces"]  # every face has its track
    assert len(got["tiny"]["tracks"]) > 4 and got["tiny"]["windows"]  # students come back: several tracks each
    assert len(set(got["tiny"]["persons"].values())) < len(got["tiny"]["tracks"])  # tracks joined into persons
    for s in stores.values():
        s.close()


def _allocated(
    tmp_path: Path, frames: int, engagement: EngagementModel, how: str, monkeypatch: pytest.MonkeyPatch
) -> tuple[int, int]:
    """Peak bytes traced while finishing a recording of ``frames`` frames, and its faces.

    Every read and write goes by batches of a size that does not depend on the length (small here, so that these
    short recordings span several). The features stay in their rows (no feature file): moving them into the file
    at the end is :mod:`db.feature_store`'s, measured by its own tests and by ``bench/bench_long.py``.
    """
    monkeypatch.setattr(feature_store, "BATCH", 50)
    monkeypatch.setattr(ingest_finish, "CHUNK", 50)
    store = _store(tmp_path, f"{how}{frames}", feature_files=False)
    media_id = fill(store, frames)  # the same tracks at every length: what grows, grows per face
    models = Models(None)  # no engagement: its model's buffers (a few MB) would hide what grows
    tracemalloc.start()
    try:
        if how == "streamed":  # reads of a size that does not depend on the length
            _finish(store, media_id, models, frames_per_read=20, faces_per_read=100)
        else:
            whole_recording_finish(store, media_id, models, frames_per_read=20)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    n = store.transaction(lambda s: len(s.scalars(select(Face.id).where(Face.media_id == media_id)).all()))
    store.close()
    return peak, n


@pytest.mark.parametrize("how", ["streamed", "before"])
def test_finish_memory_does_not_grow_per_face(
    tmp_path: Path, engagement: EngagementModel, how: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    _allocated(tmp_path, 100, engagement, how, monkeypatch)  # one-time costs (statement caches) out of the way
    short, n_short = _allocated(tmp_path, 150, engagement, how, monkeypatch)
    long, n_long = _allocated(tmp_path, 600, engagement, how, monkeypatch)
    per_face = (long - short) / (n_long - n_short)
    print(f"{how}: {per_face:.0f} bytes per face ({n_short} and {n_long} faces)")
    if how == "streamed":
        assert per_face < 250, f"{per_face:.0f} bytes per face"  # measured: 138 (arrays: face id, track, time)
    else:  # the finish it replaced: the same bound fails (the bound can fail)
        assert per_face > 250, f"{per_face:.0f} bytes per face"  # measured: 382
