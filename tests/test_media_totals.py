"""The kept totals of a recording (:class:`db.schema.MediaTotals`) count its tracks once the analysis adds them.

The Dataset statistics and ``db stats`` read these totals instead of counting a study's rows. New tracks were noted
in the flush under the branch for faces, predictions and annotations, which has no case for a track, so a video
analysed in stretches (tracks only at its finish) kept 0 tracks (found by issue 19's scale bench: its two fill paths
disagreed).
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

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


def _totals(store: LabelStore) -> list[tuple[int, int, int, int, int, int]]:
    from sqlalchemy import select

    from db.schema import MediaTotals as T

    stmt = select(T.media_id, T.faces, T.predictions, T.tracks, T.crops, T.features).order_by(T.media_id)
    return [tuple(r) for r in store.transaction(lambda s: s.execute(stmt).all(), write=False)]


@pytest.mark.parametrize("layout", scale_fill.LAYOUTS)
def test_totals_moved_by_each_stretch_equal_a_recount(tmp_path: Path, layout: str) -> None:
    """A stretch of a video moves its recording's totals by its own faces and predictions (no recount of the
    recording per stretch); after every stretch, and at the end, they equal a recount of the rows."""
    from sqlalchemy import event, func, select

    from db.schema import Face, Media
    from db.status_counts import recount_media

    store = LabelStore(f"sqlite:///{tmp_path / 's.sqlite3'}", data_dir=tmp_path / "data")
    store.upgrade()
    shape = scale_fill.Shape(faces=700, students=2, minutes=1.5, feature_dim=4, crop=8, layout=layout)
    rec = scale_fill.plan(shape)[0]
    seen: list[list[tuple[int, int, int, int, int, int]]] = []
    counted: list[int] = []
    statements: list[str] = []
    real = store.ingest.store_chunk

    def note(_conn: object, _cur: object, sql: str, *_a: object) -> None:
        statements.append(" ".join(sql.split()))

    def checked(*args: object, **kwargs: object) -> object:
        if not seen:  # the first stretch counts what the recording has (its kept totals begin there)
            out = real(*args, **kwargs)  # type: ignore[arg-type]
            seen.append(_totals(store))
            counted.append(store.transaction(lambda s: s.scalar(select(func.count()).select_from(Face)), write=False))
            return out
        event.listen(store.engine, "before_cursor_execute", note)
        try:
            out = real(*args, **kwargs)  # type: ignore[arg-type]
        finally:
            event.remove(store.engine, "before_cursor_execute", note)
        seen.append(_totals(store))
        counted.append(store.transaction(lambda s: s.scalar(select(func.count()).select_from(Face)), write=False))
        return out

    try:
        store.ingest.store_chunk = checked  # type: ignore[method-assign]
        rep = scale_fill.FillReport()
        scale_fill.fill_recording(store, rec, shape, "product", rep)
        store.ingest.store_chunk = real  # type: ignore[method-assign]
        kept = _totals(store)

        def recount(s: object) -> None:
            recount_media(s, list(s.scalars(select(Media.id))))  # type: ignore[attr-defined]

        store.transaction(recount)
        recounted = _totals(store)
    finally:
        store.close()
    assert len(seen) >= 3 and len({t[0][1] for t in seen}) == len(seen), "each stretch added faces"
    assert [t[0][1] for t in seen] == counted, "after each stretch the totals are the recording's faces"
    # a later stretch counts its own rows, not the recording's (the recount grew with the recording)
    whole = [q for q in statements if "count(" in q and "faces.media_id = ?" in q]
    assert whole == [], whole[:3]
    assert kept == recounted
    assert kept[0][1] == rep.faces and kept[0][2] == rep.faces and kept[0][3] == rep.tracks
