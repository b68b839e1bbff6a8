"""The Classroom page through AppTest: segments, students, tables and figure of a stored lecture recording."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from tests.apphelpers import new_app, no_exception, page, store_for, use_folders
from tests.test_db_classes import _ingest

pytestmark = pytest.mark.slow


def test_classroom_page_shows_students_and_tables(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, random_weights_dir: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    store = store_for(data)
    store.upgrade()
    mid = _ingest(store, study="default")
    store.add_segment(mid, "intro", 0, 30)
    store.close()
    use_folders(monkeypatch, data, random_weights_dir)
    at = page(new_app(), "classroom")
    no_exception(at)
    frames = [pd.DataFrame(d.value) for d in at.dataframe]
    students = next(f for f in frames if "person" in f.columns and "tracks" in f.columns)
    assert sorted(students["person"]) == ["P0", "P1", "P2"]
    assert any("minute" in f.columns and len(f) == 2 * 3 for f in frames)
