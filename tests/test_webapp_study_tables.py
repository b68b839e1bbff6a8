"""The Classroom page's study tables and recording details: owners only, through AppTest and the page's services."""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

import pytest

from db.errors import NotAllowedError
from tests.apphelpers import no_exception, opened_store, page_on, stored_data
from tests.test_db_classes import _ingest

pytestmark = pytest.mark.slow


def test_owner_edits_recording_details_and_downloads_the_study_tables(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, random_weights_dir: Path
) -> None:
    from webapp.services import classroom

    def fill(store):
        mid = _ingest(store, study="default")
        store.classroom.add_segment(mid, "quiz", 0, 30)
        return mid

    data, mid = stored_data(tmp_path, fill)
    at = page_on("classroom", data, monkeypatch, random_weights_dir)
    no_exception(at)
    assert "Study tables" in [h.value for h in at.subheader]
    next(t for t in at.text_input if t.label == "Course").input("PSY101")
    next(t for t in at.text_input if t.label == "Date (YYYY-MM-DD)").input("2026-10-05")
    next(b for b in at.button if b.label == "Save").click().run()
    no_exception(at)
    next(t for t in at.text_input if t.label == "Date (YYYY-MM-DD)").input("5 Oct")
    next(b for b in at.button if b.label == "Save").click().run()
    assert any("YYYY-MM-DD" in e.value for e in at.error)
    with opened_store(data) as store:
        info = classroom.recording_info(store, "default", mid)
        assert (info.course, info.date) == ("PSY101", "2026-10-05")  # the bad date changed nothing
        with pytest.raises(NotAllowedError):
            classroom.study_tables_zip(store, "default", "sav", owner=False)
        with pytest.raises(NotAllowedError):
            classroom.set_recording_info(store, "default", mid, "X", "", "", owner=False)
        body = classroom.study_tables_zip(store, "default", "sav", owner=True)
    with zipfile.ZipFile(io.BytesIO(body)) as zf:
        names = sorted(Path(n).name for n in zf.namelist())
        book = zf.read("study-tables-sav/codebook.md").decode()
    assert names == sorted(
        ["participant-recordings.sav", "participant-segments.sav", "participants.sav", "codebook.md", "codebook.csv"]
    )
    assert "PSY101" not in book and "lecture.mp4" in book  # the codebook names recordings, not their courses
