"""A streamed video's last step: tracks, engagement and persons from its stored faces, and the ``complete`` mark.

:class:`affectlab.analysis.AnalysisService` streams a long recording into the store in committed stretches
(:class:`Streamed` counts what it stored); :func:`finish_video` then replays the tracker over the stored faces,
scores each track's engagement from its stored features (read in read transactions) and stores the tracks, windows
and persons in one short write transaction (:meth:`db.service_ingest.Ingest.finish_video`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from affectlab.analysis_types import FileOutcome, Prepared
from db.claims import Claimant
from db.resumable import AnalysisState
from db.services import LabelStore

if TYPE_CHECKING:
    from models.analysis import AnalysisSession
    from models.decode import VideoInfo
    from models.tracking import Track
    from models.video import VideoChunk


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
) -> Finished:
    """Stores a partial video's tracks, engagement and persons from its stored faces and marks it complete."""
    from models.track_results import score_tracks
    from models.video import FaceReplay

    config = session.video
    replay = FaceReplay(config.tracker)
    face_tracks: dict[int, int] = {}
    track_faces: dict[int, list[tuple[int, float]]] = {}
    after = -1
    while batch := store.ingest.stored_frames(media_id, after):
        for fr in batch:
            ids = replay.add(fr.frame, fr.time_s, list(fr.boxes), fr.features)
            for fid, tid in zip(fr.face_ids, ids, strict=True):
                face_tracks[fid] = tid
                track_faces.setdefault(tid, []).append((fid, fr.time_s))
            after = fr.frame

    def sequence(t: Track) -> tuple[np.ndarray, list[float]]:
        faces = track_faces.get(t.track, [])
        return store.ingest.features_of([fid for fid, _ in faces]), [ts for _, ts in faces]

    spec = session.recognizer.spec
    scored = score_tracks(
        replay.tracks(),
        sequence,
        session.engagement,
        spec.name,
        spec.feature_dim,
        replay.profiles,
        config.persons,
    )
    tracks = scored.results()
    store.ingest.finish_video(
        media_id, face_tracks, tracks, duration_s=duration_s, fps=fps, width=width, height=height, claimant=claimant
    )
    return Finished(len(face_tracks), len(tracks), len(set(scored.persons.values())), scored.status, scored.note)
