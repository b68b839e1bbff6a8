"""The kept totals of a recording (:class:`db.schema.MediaTotals`) count its tracks once the analysis adds them.

The Dataset statistics and ``db stats`` read these totals instead of counting a study's rows. New tracks were noted
in the flush under the branch for faces, predictions and annotations, which has no case for a track, so a video
analysed in stretches (tracks only at its finish) kept 0 tracks (found by issue 19's scale bench: its two fill paths
disagreed).
"""

from __future__ import annotations

import sys
from pathlib import Path

from db.services import LabelStore

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
import scale_fill


def test_a_video_analysed_in_stretches_counts_its_tracks(tmp_path: Path) -> None:
    store = LabelStore(f"sqlite:///{tmp_path / 's.sqlite3'}", data_dir=tmp_path / "data")
    store.upgrade()
    try:
        rep = scale_fill.fill(store, scale_fill.Shape(faces=600, students=2, minutes=1.0, feature_dim=4, crop=0))
        counts = store.exports.stats(scale_fill.STUDY).counts
    finally:
        store.close()
    assert rep.tracks > 0
    assert counts["tracks"] == rep.tracks
    assert counts["faces"] == rep.faces
