"""Resumable analysis of long videos into the label store, shared by ``affectlab analyze`` and the web app.

A video is analysed stretch by stretch (:func:`models.video.analyze_video_chunks`, ``commit_every_s`` seconds of
video each) and each stretch's faces are stored, with how far the analysis got, in one transaction
(:mod:`db.resumable`): memory holds one stretch, whatever the recording's length, and a run that is stopped
(process killed, app closed) leaves a ``partial`` media item that the next run of the same file (same bytes)
resumes after its last stored frame, instead of starting over.

Tracks, engagement and persons need the whole recording: they are computed at the end from every stored face
(positions and features are stored per face) by replaying the tracker over them in frame order
(:class:`models.video.FaceReplay`), so a resumed run ends with the same tracks as a straight one; then the media item
becomes ``complete``. A run stopped during that last step simply does it again.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from db.services import LabelStore
    from models.analysis import AnalysisSession

log = logging.getLogger(__name__)

ChunkProgress = Callable[[float, float | None], None]
"""Called as ``progress(seconds_done, duration_or_None)`` as the analysis goes."""


class TimeLeft:
    """Progress text with the time left, from the pace of this run so far (resumed runs start their clock anew)."""

    def __init__(self) -> None:
        """Starts the clock."""
        self._start: tuple[float, float] | None = None

    def text(self, done: float, duration: float) -> str:
        """``"12.0 of 3600.0 s analysed, about 41 min left"`` (no estimate before the pace is known)."""
        import time

        now = time.monotonic()
        if self._start is None:
            self._start = (now, done)
            return f"{done:.1f} of {duration:.1f} s analysed"
        t0, d0 = self._start
        rate = (done - d0) / (now - t0) if now > t0 else 0.0
        if rate <= 0:
            return f"{done:.1f} of {duration:.1f} s analysed"
        left = max(0.0, duration - done) / rate
        when = f"{left / 60:.0f} min" if left >= 90 else f"{left:.0f} s"
        return f"{done:.1f} of {duration:.1f} s analysed, about {when} left"


@dataclass(frozen=True)
class LongVideoOutcome:
    """What analysing one video into the store did.

    Attributes:
        media_id: The media item.
        skipped: True when the study already held the video completely analysed (nothing was run).
        resumed_from_s: Time of the last frame a stopped run had stored, when this run resumed one, else None.
        n_faces: Faces stored for the video in all (this run's and a stopped run's).
        faces_new: Faces this run stored.
        crops_stored: Crops this run stored.
        features_stored: Features this run stored.
        n_tracks: Tracks of the video.
        n_persons: Persons (tracks joined) of the video.
        frames_analyzed: Sampled frames this run analysed.
        frames_decoded: Frames this run decoded.
        chunks: Stretches this run stored.
        duration_s: The video's duration.
        warnings: Problems that did not stop the analysis.
    """

    media_id: int
    skipped: bool = False
    resumed_from_s: float | None = None
    n_faces: int = 0
    faces_new: int = 0
    crops_stored: int = 0
    features_stored: int = 0
    n_tracks: int = 0
    n_persons: int = 0
    frames_analyzed: int = 0
    frames_decoded: int = 0
    chunks: int = 0
    duration_s: float | None = None
    warnings: tuple[str, ...] = ()


def analyze_long_video(
    session: AnalysisSession,
    store: LabelStore,
    study: str,
    path: Path,
    name: str,
    *,
    fps: float = 5.0,
    uploaded_by: str | None = None,
    keep_file: bool = True,
    commit_every_s: float = 30.0,
    progress: ChunkProgress | None = None,
    data: bytes | None = None,
    sha256: str | None = None,
) -> LongVideoOutcome:
    """Analyses a video into ``study`` stretch by stretch, resuming a stopped run of the same bytes.

    Args:
        session: The loaded models.
        store: The label store.
        study: The study (created when new).
        path: The video file.
        name: Its name as the user gave it.
        fps: Sampling rate (0 for every frame).
        uploaded_by: Who ran the analysis.
        keep_file: Keep the file in the store (thumbnails, boxes and the player need it).
        commit_every_s: Seconds of video per stored stretch.
        progress: Called with the seconds analysed and the duration after each chunk of frames.
        data: The file's bytes when already read (else read from ``path``).
        sha256: The file's hex sha256 when already computed (else computed by the store).

    Returns:
        What was stored.

    Raises:
        BadInputError: Not a readable video (a new media item is left ``partial`` with no face only when the
            failure comes after the first stretch; an unreadable file never gets one).
    """
    from db.ingest import MediaInfo
    from models.decode import ResumePoint, probe_video
    from models.engagement import engagement_note, engagement_status
    from models.types import Face, TrackResult
    from models.video import FaceReplay, analyze_video_chunks

    probe = probe_video(path, name)
    info = MediaInfo(kind="video", width=probe.width, height=probe.height, duration_s=probe.duration, fps=probe.fps)
    state = store.begin_video(
        study,
        data if data is not None else path,
        name,
        info,
        uploaded_by=uploaded_by,
        keep_file=keep_file,
        sha256=sha256,
    )
    if state.status == "complete":
        return LongVideoOutcome(media_id=state.media_id, skipped=True, n_faces=state.n_faces)
    resume = None
    if state.until_s is not None and state.until_frame is not None and state.samples:
        resume = ResumePoint(
            time_s=state.until_s,
            index=state.until_frame,
            sample=state.samples - 1,
            faces=tuple(Face(box=box, det_score=score) for box, score in state.faces),
        )
        log.info("%s: resuming after %.2f s (frame %d)", name, state.until_s, state.until_frame)
    config = replace(session.video, keep_crops=True)
    faces_new = crops = feats = chunks = 0
    last = None
    for chunk in analyze_video_chunks(
        path,
        name,
        session.detector,
        session.recognizer,
        fps or None,
        config=config,
        resume=resume,
        commit_every_s=commit_every_s,
        progress=progress,
    ):
        last = chunk
        if chunk.until is None or (resume is not None and chunk.until.index == resume.index):
            continue
        n, c, f = store.store_chunk(
            state.media_id,
            chunk.faces,
            until_s=chunk.until.time_s,
            until_frame=chunk.until.index,
            samples=chunk.until.sample + 1,
        )
        faces_new, crops, feats, chunks = faces_new + n, crops + c, feats + f, chunks + 1
    assert last is not None
    warnings = list(last.warnings)

    # Tracks, engagement and persons from every stored face.
    replay = FaceReplay(config.tracker)
    face_tracks: dict[int, int] = {}
    track_faces: dict[int, list[tuple[int, float]]] = {}
    after = -1
    while batch := store.stored_frames(state.media_id, after):
        for fr in batch:
            ids = replay.add(fr.frame, fr.time_s, list(fr.boxes), fr.features)
            for fid, tid in zip(fr.face_ids, ids, strict=True):
                face_tracks[fid] = tid
                track_faces.setdefault(tid, []).append((fid, fr.time_s))
            after = fr.frame
    spec = session.recognizer.spec
    status = engagement_status(session.engagement, spec.feature_dim)
    engagement_model = session.engagement if status == "ok" else None
    if status != "ok":
        warnings.append(f"engagement: {engagement_note(status, spec.name, spec.feature_dim)}")
    persons = replay.persons(config.persons)
    tracks = []
    for t in replay.tracks():
        eng = None
        if engagement_model is not None:
            ids = [fid for fid, _ in track_faces.get(t.track, [])]
            eng = engagement_model.score_sequence(store.features_of(ids), [ts for _, ts in track_faces[t.track]])
        tracks.append(
            TrackResult(
                track=t.track,
                n_faces=t.n_faces,
                start_s=t.start_s,
                end_s=t.end_s,
                engagement=eng,
                person=persons.get(t.track, t.track),
            )
        )
    duration = last.duration if last.duration else probe.duration
    store.finish_video(
        state.media_id,
        face_tracks,
        tracks,
        duration_s=duration,
        fps=last.fps or probe.fps,
        width=last.width or probe.width,
        height=last.height or probe.height,
    )
    return LongVideoOutcome(
        media_id=state.media_id,
        resumed_from_s=None if resume is None else resume.time_s,
        n_faces=len(face_tracks),
        faces_new=faces_new,
        crops_stored=crops,
        features_stored=feats,
        n_tracks=len(tracks),
        n_persons=len(set(persons.values())),
        frames_analyzed=last.frames_analyzed,
        frames_decoded=last.frames_decoded,
        chunks=chunks,
        duration_s=duration,
        warnings=tuple(warnings),
    )
