"""New faces' read model written set-based (:mod:`db.status_new`, PostgreSQL) equals the one row by row.

A scale study is filled twice, through the product's ingest path (a stretch at a time, tracks at the finish, then
votes, track votes, undos, skips and segments) and through the bench's bulk path, once with the set-based writer and
once with every face through :func:`db.status_write.write_faces`: every table of the read model is equal, ``route``
(the sha256 computed in SQL) and the queue counts included.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest

from db import status_new
from db.services import LabelStore

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
import scale_fill

from tests.test_bench_scale import TINY, _dump


@pytest.mark.postgres
@pytest.mark.parametrize("path", ["product", "bulk"])
def test_set_based_read_model_equals_the_row_by_row_one(
    tmp_path: Path, pg_server: Any, monkeypatch: pytest.MonkeyPatch, path: str
) -> None:
    used: list[int] = []
    real = status_new.write_new

    def counted(*args: Any, **kwargs: Any) -> bool:
        done = real(*args, **kwargs)
        used.append(int(done))
        return done

    monkeypatch.setattr("db.status.write_new", counted)
    dumps = {}
    for enabled in (True, False):
        monkeypatch.setattr(status_new, "ENABLED", enabled)
        store = LabelStore(pg_server.new_database(), data_dir=tmp_path / f"{path}-{enabled}")
        store.upgrade()
        try:
            scale_fill.fill(store, TINY, path=path)
            dumps[enabled] = _dump(store)
        finally:
            store.close()
        if enabled:
            assert sum(used) >= 2, "the stretches' new faces went the set-based way"
    for table in dumps[False]:
        assert dumps[True][table] == dumps[False][table], table
    assert len(dumps[True]["face_status"]) >= TINY.faces
