"""A streamed video's finish written from compact arrays: tracks, engagement windows, the faces' tracks, persons.

The finish step (:mod:`affectlab.finish`) replays the tracker over a recording's stored faces and scores each
track's engagement in read transactions, holding per face only NumPy arrays (:class:`FaceTracks`: face id and track
number; :class:`TrackWindows`: the engagement windows), never a Python object per face. :func:`store_finish` then
writes them in one write transaction, a chunk of :data:`CHUNK` rows at a time, so neither the transaction nor the
session holds a row object or a parameter dict per face. :meth:`db.service_ingest.Ingest.finish_video` (tracks given as
:class:`models.types.TrackResult` with their windows) ends here too. Functions take the caller's session and never
commit.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from sqlalchemy import insert, update
from sqlalchemy.orm import Session

from db import claims, feature_store, repo, status
from db.claims import Claimant
from db.errors import StoreError
from db.persons import store_persons
from db.schema import EngagementWindow, Face, Media, Track
from models.types import TrackResult

CHUNK = 5000
"""Faces (or windows) written per statement."""


class AnalysisStateError(StoreError):
    """A chunk stored for a media item that is not being analysed (the message says what to do)."""


@dataclass(frozen=True, eq=False)
class FaceTracks:
    """Every face of a recording with its track number, as arrays.

    Attributes:
        face_ids: Face ids, int64.
        tracks: Each face's track number, int32 (same length).
    """

    face_ids: np.ndarray
    tracks: np.ndarray

    @classmethod
    def of(cls, face_tracks: Mapping[int, int]) -> FaceTracks:
        """From a face id -> track number map."""
        return cls(
            np.fromiter(face_tracks.keys(), dtype=np.int64, count=len(face_tracks)),
            np.fromiter(face_tracks.values(), dtype=np.int32, count=len(face_tracks)),
        )


@dataclass(frozen=True, eq=False)
class TrackWindows:
    """The engagement windows of a recording's tracks, as arrays of one length.

    Attributes:
        tracks: The window's track number, int32.
        start_s: Its first row's time, float64.
        end_s: Its last row's time, float64.
        p_engaged: P(engaged), float64.
    """

    tracks: np.ndarray
    start_s: np.ndarray
    end_s: np.ndarray
    p_engaged: np.ndarray

    @classmethod
    def of(cls, tracks: Sequence[TrackResult]) -> TrackWindows:
        """The windows of tracks' engagement results, in track order."""
        rows = [
            (t.track, w.start_s, w.end_s, w.p_engaged) for t in tracks if t.engagement for w in t.engagement.windows
        ]
        arr = np.array(rows, dtype=np.float64).reshape(-1, 4)
        return cls(arr[:, 0].astype(np.int32), arr[:, 1].copy(), arr[:, 2].copy(), arr[:, 3].copy())

    @classmethod
    def join(cls, parts: Sequence[TrackWindows]) -> TrackWindows:
        """Several tracks' windows, one after the other."""
        if not parts:
            return cls.of(())
        cat = [np.concatenate([getattr(p, k) for p in parts]) for k in ("tracks", "start_s", "end_s", "p_engaged")]
        return cls(*cat)


def store_finish(
    session: Session,
    media_id: int,
    faces: FaceTracks,
    tracks: Sequence[TrackResult],
    windows: TrackWindows,
    *,
    duration_s: float | None,
    fps: float | None,
    width: int | None,
    height: int | None,
    claimant: Claimant | None = None,
) -> int:
    """Stores a partial video's tracks, engagement and persons and marks it complete.

    Args:
        session: The caller's session.
        media_id: The media item.
        faces: Each face's track number.
        tracks: The tracks (span, engagement score and label, person); their ``engagement.windows`` are not read.
        windows: The tracks' engagement windows.
        duration_s: The video's duration.
        fps: Its average frame rate.
        width: Upright frame width.
        height: Upright frame height.
        claimant: The run holding the claim, if any (checked, then released).

    Returns:
        Tracks stored.

    Raises:
        ClaimLostError: ``claimant`` no longer holds the video's claim.
        AnalysisStateError: The video is complete already.
    """
    media = repo.get_row(session, Media, media_id, "media")
    if claimant is not None:
        claims.check(session, media.study_id, media.sha256, claimant)
        claims.release(session, media.study_id, media.sha256, claimant)
    if media.analysis_status != "partial":
        raise AnalysisStateError(f"media {media_id} is already analysed completely; delete it to analyse it again")
    row_of = _store_tracks(session, media_id, tracks)
    for i in range(0, len(windows.tracks), CHUNK):
        part = slice(i, i + CHUNK)
        ids = row_of[windows.tracks[part]]
        session.execute(
            insert(EngagementWindow),
            [
                {"track_id": int(t), "start_s": float(s), "end_s": float(e), "p_engaged": float(p)}
                for t, s, e, p in zip(
                    ids, windows.start_s[part], windows.end_s[part], windows.p_engaged[part], strict=True
                )
            ],
        )
    for i in range(0, len(faces.face_ids), CHUNK):
        fids = faces.face_ids[i : i + CHUNK].tolist()
        rows = row_of[faces.tracks[i : i + CHUNK]].tolist()
        session.execute(update(Face), [{"id": f, "track_id": r} for f, r in zip(fids, rows, strict=True)])
        # The review read model of these faces brought up to date now, a chunk at a time, rather than noted for the
        # commit (status.mark), which would hold every face of the recording in sets until then.
        status.refresh(session, status._Dirty(faces=set(fids)))
    store_persons(session, media_id, {t.track: t.person for t in tracks})
    media.analysis_status = "complete"
    media.analysed_until_s = media.analysed_until_frame = media.analysed_samples = None
    media.duration_s, media.fps = duration_s, fps
    media.width, media.height = width, height
    session.flush()
    feature_store.move_video(session, media_id)  # finished: its features go to its file (db.feature_store)
    return len(tracks)


def _store_tracks(session: Session, media_id: int, tracks: Sequence[TrackResult]) -> np.ndarray:
    """The track rows; returns track number -> row id as an array indexed by number (-1: no such track)."""
    rows: dict[int, Track] = {}
    for t in tracks:
        eng = t.engagement
        row = Track(
            media_id=media_id,
            track_index=t.track,
            n_faces=t.n_faces,
            start_s=t.start_s,
            end_s=t.end_s,
            engagement_score=None if eng is None else eng.score,
            engagement_label=None if eng is None else eng.label,
        )
        session.add(row)
        rows[t.track] = row
    session.flush()
    row_of = np.full(max(rows, default=-1) + 1, -1, dtype=np.int64)
    for number, row in rows.items():
        row_of[number] = row.id
    return row_of
