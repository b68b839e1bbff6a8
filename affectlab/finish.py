"""A streamed video's last step: tracks, engagement and persons from its stored faces, and the ``complete`` mark.

:class:`affectlab.analysis.AnalysisService` streams a long recording into the store in committed stretches
(:class:`Streamed` counts what it stored); :func:`finish_video` then replays the tracker over the stored faces,
scores each track's engagement from its stored features (read in read transactions) and stores the tracks, windows
and persons in one short write transaction (:meth:`db.service_ingest.Ingest.finish_video`).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from affectlab.analysis_types import FileOutcome, Prepared
from db.claims import Claimant
from db.ingest_finish import FaceTracks, TrackWindows
from db.resumable import AnalysisState
from db.services import LabelStore
from models.engagement import EngagementModel, EngagementResult
from models.types import TrackResult

if TYPE_CHECKING:
    from models.analysis import AnalysisSession
    from models.decode import VideoInfo
    from models.video import FaceReplay, VideoChunk

FRAMES_PER_READ = 500
"""Stored frames replayed per read transaction."""
FACES_PER_READ = 2000
"""Features read per read transaction when a track's features are read back."""


@dataclass
class Streamed:
    """What streaming a video into the store did so far."""

    resumed_from_s: float | None
    faces: int = 0
    crops: int = 0
    features: int = 0
    last: VideoChunk | None = None


@dataclass(frozen=True)
class Finished:
    """What the finish step stored.

    Attributes:
        n_faces: Faces given a track.
        tracks: Tracks stored.
        persons: Persons the tracks were joined into.
        status: ``ok``, or why no track has engagement.
        note: What to tell a person about it.
    """

    n_faces: int
    tracks: int
    persons: int
    status: str
    note: str


def finish_video(
    store: LabelStore,
    claimant: Claimant | None,
    name: str,
    prepared: Prepared,
    session: AnalysisSession,
    state: AnalysisState,
    probe: VideoInfo,
    streamed: Streamed,
) -> FileOutcome:
    """Tracks, engagement and persons from every stored face; the media item becomes ``complete``."""
    last = streamed.last
    assert last is not None
    duration = last.duration if last.duration else probe.duration
    done = finish_stored(
        store,
        state.media_id,
        session,
        duration_s=duration,
        fps=last.fps or probe.fps,
        width=last.width or probe.width,
        height=last.height or probe.height,
        claimant=claimant,
    )
    warnings = list(last.warnings)
    if streamed.resumed_from_s is not None:
        warnings.insert(0, f"resumed a stopped analysis after {streamed.resumed_from_s:.1f} s")
    if done.status != "ok":
        warnings.append(f"engagement: {done.note}")
    return FileOutcome(
        name,
        "stored",
        kind="video",
        media_id=state.media_id,
        n_faces=done.n_faces,
        new=state.created,
        faces_new=streamed.faces,
        predictions_new=streamed.faces,
        tracks=done.tracks,
        persons=done.persons,
        crops_stored=streamed.crops,
        features_stored=streamed.features,
        resumed_from_s=streamed.resumed_from_s,
        frames_analyzed=last.frames_analyzed,
        duration_s=duration,
        warnings=tuple(warnings),
    )


def finish_stored(
    store: LabelStore,
    media_id: int,
    session: AnalysisSession,
    *,
    duration_s: float | None,
    fps: float | None,
    width: int | None,
    height: int | None,
    claimant: Claimant | None = None,
    frames_per_read: int = FRAMES_PER_READ,
    faces_per_read: int = FACES_PER_READ,
) -> Finished:
    """Stores a partial video's tracks, engagement and persons from its stored faces and marks it complete.

    ``frames_per_read`` stored frames are replayed per read transaction and ``faces_per_read`` features read per
    read of a track's features (what is stored does not depend on them; the tests compare a tiny and a big read).
    """
    from models.engagement import engagement_note, engagement_status

    replay, faces, times = _replay(store, media_id, session, frames_per_read)
    spec = session.recognizer.spec
    status = engagement_status(session.engagement, spec.feature_dim)
    spans = replay.tracks()
    order = np.argsort(faces.tracks, kind="stable")  # each track's faces, in the order they were replayed
    bounds = np.searchsorted(faces.tracks[order], np.arange(len(spans) + 1))
    scores: dict[int, EngagementResult] = {}
    parts: list[TrackWindows] = []
    if status == "ok" and session.engagement is not None:
        for t in spans:
            at = order[bounds[t.track] : bounds[t.track + 1]]
            got = _score_track(store, session.engagement, t.track, faces.face_ids[at], times[at], faces_per_read)
            if got is not None:
                scores[t.track], part = got
                parts.append(part)
    persons = replay.persons(session.video.persons)
    tracks = [
        TrackResult(t.track, t.n_faces, t.start_s, t.end_s, scores.get(t.track), persons.get(t.track, t.track))
        for t in spans
    ]
    store.ingest.store_finish(
        media_id,
        faces,
        tracks,
        TrackWindows.join(parts),
        duration_s=duration_s,
        fps=fps,
        width=width,
        height=height,
        claimant=claimant,
    )
    note = engagement_note(status, spec.name, spec.feature_dim)
    return Finished(len(faces.face_ids), len(tracks), len(set(persons.values())), status, note)


def _replay(
    store: LabelStore, media_id: int, session: AnalysisSession, frames_per_read: int
) -> tuple[FaceReplay, FaceTracks, np.ndarray]:
    """The tracker replayed over the stored faces, read by batches; each face's track and time as arrays."""
    from models.video import FaceReplay as Replay

    replay = Replay(session.video.tracker)
    ids: list[np.ndarray] = []  # one array per batch of frames
    tracks: list[np.ndarray] = []
    times: list[np.ndarray] = []
    after = -1
    while batch := store.ingest.stored_frames(media_id, after, frames_per_read):
        got: list[int] = []
        for fr in batch:
            got += replay.add(fr.frame, fr.time_s, list(fr.boxes), fr.features)
            after = fr.frame
        ids.append(np.fromiter((f for fr in batch for f in fr.face_ids), dtype=np.int64, count=len(got)))
        tracks.append(np.asarray(got, dtype=np.int32))
        times.append(np.fromiter((fr.time_s for fr in batch for _ in fr.face_ids), dtype=np.float64, count=len(got)))
        del batch, got
    if not ids:
        return replay, FaceTracks(np.zeros(0, np.int64), np.zeros(0, np.int32)), np.zeros(0, np.float64)
    return replay, FaceTracks(np.concatenate(ids), np.concatenate(tracks)), np.concatenate(times)


def _score_track(
    store: LabelStore, engagement: EngagementModel, track: int, face_ids: np.ndarray, times: np.ndarray, per_read: int
) -> tuple[EngagementResult, TrackWindows] | None:
    """One track's engagement (its windows as arrays), its features read ``per_read`` at a time as the windows go.

    What :meth:`models.engagement.EngagementModel.score_sequence` computes for the whole sequence, window batch by
    window batch (the same batches), holding only the rows the next batch needs. A track where some face has no
    features is read whole and scored by ``score_sequence`` itself.
    """
    from models.engagement import FEATURE_DIM, engagement_label, window_rows, window_starts

    c, n = engagement.config, len(face_ids)
    if n < c.min_features:
        return None
    w = min(c.window, n)
    starts = window_starts(n, w, c.stride)
    buf, lo, hi = np.zeros((0, FEATURE_DIM), dtype=np.float32), 0, 0  # rows lo..hi of the track
    p_engaged = np.empty(len(starts), dtype=np.float64)
    for i in range(0, len(starts), c.chunk):
        chunk = starts[i : i + c.chunk]
        if chunk[0] >= hi:  # nothing held is needed any more
            buf, lo, hi = buf[:0], chunk[0], chunk[0]
        buf, lo = buf[chunk[0] - lo :], chunk[0]
        while hi < chunk[-1] + w:
            ids = face_ids[hi : hi + per_read]
            part = store.ingest.features_of(ids.tolist())
            if len(part) != len(ids) or part.shape[1] != FEATURE_DIM:
                return _score_whole(store, engagement, track, face_ids, times, per_read)
            buf, hi = np.concatenate([buf, part]), hi + len(part)
        probs = engagement.predict_windows(np.stack([window_rows(buf, s - lo, w) for s in chunk]))
        p_engaged[i : i + len(chunk)] = probs[:, 1]
    first = np.asarray(starts, dtype=np.int64)
    score = float(np.mean(p_engaged.tolist()))
    result = EngagementResult(
        score=score, label=engagement_label(score, c.threshold), windows=(), n_features=n, window=w
    )
    windows = TrackWindows(np.full(len(starts), track, dtype=np.int32), times[first], times[first + w - 1], p_engaged)
    return result, windows


def _score_whole(
    store: LabelStore, engagement: EngagementModel, track: int, face_ids: np.ndarray, times: np.ndarray, per_read: int
) -> tuple[EngagementResult, TrackWindows] | None:
    """One track's engagement from its whole feature sequence (faces without features left out, as before)."""
    feats = _track_features(store, face_ids, per_read)
    result = engagement.score_sequence(feats, times.tolist()) if len(feats) else None
    if result is None:
        return None
    return dataclasses.replace(result, windows=()), _windows(track, result)  # the windows as arrays


def _track_features(store: LabelStore, face_ids: np.ndarray, per_read: int) -> np.ndarray:
    """One track's stored features (N, D) float32 in the order given, read ``per_read`` at a time into one array."""
    out: np.ndarray | None = None
    n = 0
    for i in range(0, len(face_ids), per_read):
        part = store.ingest.features_of(face_ids[i : i + per_read].tolist())
        if not len(part):
            continue
        if out is None:
            out = np.empty((len(face_ids), part.shape[1]), dtype=np.float32)
        out[n : n + len(part)] = part
        n += len(part)
    return np.zeros((0, 0), dtype=np.float32) if out is None else out[:n]


def _windows(track: int, result: EngagementResult) -> TrackWindows:
    """One track's engagement windows as arrays."""
    w = result.windows
    return TrackWindows(
        np.full(len(w), track, dtype=np.int32),
        np.fromiter((x.start_s for x in w), dtype=np.float64, count=len(w)),
        np.fromiter((x.end_s for x in w), dtype=np.float64, count=len(w)),
        np.fromiter((x.p_engaged for x in w), dtype=np.float64, count=len(w)),
    )
