"""Partial videos in the label store (SQLite and PostgreSQL): chunks with their resume point, then the finish."""

from __future__ import annotations

import numpy as np
import pytest

from db.ingest import MediaInfo
from db.resumable import AnalysisStateError
from tests.pg import fake_results, png_bytes, tracks_of

INFO = MediaInfo(kind="video", width=320, height=240, duration_s=4.0, fps=10.0)


def _chunk(frames: list[int]) -> list[object]:
    boxes = [(10.0 + f, 10.0, 50.0 + f, 60.0) for f in frames] + [(200.0, 10.0, 240.0, 60.0) for _ in frames]
    return fake_results(
        "lecture.mp4",
        boxes,
        ["Happiness"] * len(boxes),
        frames=frames + frames,
        tracks=[None] * len(boxes),
        seed=frames[0],
    )


def test_chunks_resume_point_and_finish(store) -> None:
    data = png_bytes(3)
    state = store.ingest.begin_video("s", data, "lecture.mp4", INFO)
    assert state.status == "partial" and state.created and state.until_s is None
    assert store.ingest.store_chunk(state.media_id, _chunk([0, 1]), until_s=0.1, until_frame=1, samples=2) == (4, 4, 4)
    again = store.ingest.begin_video("s", data, "lecture.mp4", INFO)  # a rerun finds where the stopped one got
    assert not again.created and again.media_id == state.media_id
    assert (again.until_s, again.until_frame, again.samples, again.n_faces) == (0.1, 1, 2, 4)
    assert [box for box, _ in again.faces] == [(11.0, 10.0, 51.0, 60.0), (200.0, 10.0, 240.0, 60.0)]
    (media,) = store.recordings.media("s")
    assert media.analysis_status == "partial" and media.analysed_until_s == 0.1
    store.ingest.store_chunk(state.media_id, _chunk([2, 3]), until_s=0.3, until_frame=3, samples=4)

    frames = store.ingest.stored_frames(state.media_id, -1, max_frames=3)
    assert [f.frame for f in frames] == [0, 1, 2]
    assert [f.frame for f in store.ingest.stored_frames(state.media_id, 2)] == [3]
    assert frames[0].features.shape == (2, 16) and len(frames[0].face_ids) == 2
    ids = [fid for f in frames for fid in f.face_ids]
    feats = store.ingest.features_of(ids[::-1])
    assert feats.shape == (6, 16)
    assert np.array_equal(feats[-1], store.recordings.face_features(ids[0]))

    face_tracks = {fid: i % 2 for f in store.ingest.stored_frames(state.media_id) for i, fid in enumerate(f.face_ids)}
    tracks = [
        {
            "track": t,
            "n_faces": 4,
            "start_s": 0.0,
            "end_s": 0.3,
            "person": 0 if t == 0 else 1,
            "engagement": {
                "score": 0.8,
                "label": "Engaged",
                "windows": [{"start_s": 0.0, "end_s": 0.3, "p_engaged": 0.8}],
            },
        }
        for t in (0, 1)
    ]
    assert (
        store.ingest.finish_video(
            state.media_id, face_tracks, tracks_of(tracks), duration_s=0.4, fps=10.0, width=320, height=240
        )
        == 2
    )
    (media,) = store.recordings.media("s")
    assert media.analysis_status == "complete" and media.analysed_until_s is None and media.duration_s == 0.4
    faces = store.recordings.faces("s")
    assert len(faces) == 8 and {f.track_index for f in faces} == {0, 1}
    assert all(f.model_engagement == pytest.approx(0.8) for f in faces)
    assert sorted(p.track_indexes for p in store.classroom.persons(media.id)) == [(0,), (1,)]
    assert store.ingest.begin_video("s", data, "lecture.mp4", INFO).status == "complete"
    with pytest.raises(AnalysisStateError, match="delete it"):
        store.ingest.store_chunk(state.media_id, _chunk([4]), until_s=0.4, until_frame=4, samples=5)


def test_a_partial_video_is_marked_in_stats_and_exports(store, tmp_path) -> None:
    """While a video is partial, ``db stats`` says so and every export row carries its media_status."""
    import pandas as pd

    from db.quality import format_stats

    state = store.ingest.begin_video("s", png_bytes(3), "lecture.mp4", INFO)
    store.ingest.store_chunk(state.media_id, _chunk([0, 1]), until_s=0.1, until_frame=1, samples=2)
    other = store.ingest.begin_video("s", png_bytes(4), "done.mp4", INFO)
    store.ingest.store_chunk(other.media_id, _chunk([0]), until_s=0.0, until_frame=0, samples=1)
    store.ingest.finish_video(other.media_id, {}, [], duration_s=0.1, fps=10.0, width=320, height=240)
    stats = store.exports.stats("s")
    assert (stats.counts["partial_media"], stats.counts["partial_faces"]) == (1, 4)
    line = [ln for ln in format_stats(stats).splitlines() if ln.startswith("partial:")]
    assert len(line) == 1 and "1 recordings" in line[0] and "4 faces" in line[0]
    for fmt in ("csv", "parquet"):
        out = tmp_path / f"faces.{fmt}"
        store.exports.export("s", fmt, out)
        df = pd.read_csv(out) if fmt == "csv" else pd.read_parquet(out)
        by_file = {f: set(g["media_status"]) for f, g in df.groupby("filename")}
        assert by_file == {"lecture.mp4": {"partial"}, "done.mp4": {"complete"}}, fmt
