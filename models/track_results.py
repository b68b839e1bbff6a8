"""Tracks -> engagement -> persons -> stored track results: the one place a video's tracks are scored and joined.

Both ways of analysing a video end here: :func:`models.video.analyze_video` (faces held in memory) and the
resumable analysis of long recordings (:mod:`affectlab.analysis`, whose faces are replayed from the store by
:class:`models.video.FaceReplay`). Each passes its tracks, a way to read one track's features and times, and the
track profiles persons are joined from; :func:`score_tracks` returns the engagement per track, why there is none
(:data:`models.engagement.EngagementStatus`), the persons, and the :class:`models.types.TrackResult` rows to store.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from models.engagement import EngagementModel, EngagementResult, EngagementStatus, engagement_note, engagement_status
from models.persons import PersonConfig, TrackProfile, link_tracks
from models.tracking import Track
from models.types import TrackResult

TrackSequence = Callable[[Track], tuple[np.ndarray, Sequence[float]]]
"""One track's features (N, D), in time order, and their times in seconds."""


@dataclass(frozen=True)
class ScoredTracks:
    """A video's tracks with their engagement and persons.

    Attributes:
        tracks: The tracks, by id.
        engagement: Track id to engagement result (empty when ``status`` is not ``ok``).
        status: ``ok``, or why there is no engagement.
        note: What to tell a person about ``status`` (``ok`` when it is ``ok``).
        persons: Track id to person number.
    """

    tracks: tuple[Track, ...]
    engagement: dict[int, EngagementResult | None]
    status: EngagementStatus
    note: str
    persons: dict[int, int]

    def results(self) -> list[TrackResult]:
        """The tracks as they are stored (span, engagement, person), by id."""
        return [
            TrackResult(
                track=t.track,
                n_faces=t.n_faces,
                start_s=t.start_s,
                end_s=t.end_s,
                engagement=self.engagement.get(t.track),
                person=self.persons.get(t.track, t.track),
            )
            for t in self.tracks
        ]


def score_tracks(
    tracks: Sequence[Track],
    sequence: TrackSequence,
    engagement: EngagementModel | None,
    model: str,
    feature_dim: int,
    profiles: Callable[[], Sequence[TrackProfile]],
    persons: PersonConfig | None,
) -> ScoredTracks:
    """Scores every track's engagement and joins the tracks into persons.

    Args:
        tracks: The tracks, by id.
        sequence: Reads one track's features and times (called once per track, only when engagement is scored).
        engagement: The engagement model, or None when its weights are absent.
        model: The emotion model's name (for the note).
        feature_dim: Its feature size (engagement reads 1280-d enet_b0 features only).
        profiles: Gives the tracks' profiles (called only when ``persons`` is set).
        persons: How tracks are joined into persons, or None for one person per track.
    """
    status = engagement_status(engagement, feature_dim)
    scores: dict[int, EngagementResult | None] = {}
    if status == "ok" and engagement is not None:
        for t in tracks:
            feats, times = sequence(t)
            if len(feats):
                scores[t.track] = engagement.score_sequence(feats, list(times))
    joined = {t.track: t.track for t in tracks} if persons is None else link_tracks(profiles(), persons)
    return ScoredTracks(
        tracks=tuple(tracks),
        engagement=scores,
        status=status,
        note=engagement_note(status, model, feature_dim),
        persons=joined,
    )
