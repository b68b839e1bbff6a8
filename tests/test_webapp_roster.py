"""The Roster page through AppTest: every participant's row with its reason, and who is who saved in one form."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from db import roster_services as rs
from tests.apphelpers import no_exception, opened_store, page_on, stored_data
from tests.test_roster import _ingest

pytestmark = pytest.mark.slow


def test_roster_page_assigns_a_whole_recording(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, random_weights_dir: Path
) -> None:
    from webapp.state import Keys

    roster_csv = tmp_path / "r.csv"
    roster_csv.write_text("participant,name,group\nS01,Ann,A\nS02,Bob,B\n", encoding="utf-8")

    def fill(store):
        mid = _ingest(store, study="default")
        rs.import_roster(store, "default", roster_csv, owner=True)
        return mid, {p.person_index: p for p in store.classroom.persons(mid)}

    data, (mid, persons) = stored_data(tmp_path, fill)
    at = page_on("roster", data, monkeypatch, random_weights_dir)
    no_exception(at)
    rows = next(pd.DataFrame(d.value) for d in at.dataframe if "reason" in pd.DataFrame(d.value).columns)
    assert dict(zip(rows["participant"], rows["reason"], strict=True)) == {"S01": "not detected", "S02": "not detected"}
    assert any("Type your name" in c.value for c in at.caption)
    at.sidebar.text_input(key=Keys.ANNOTATOR).input("alice").run()
    no_exception(at)
    next(s for s in at.selectbox if s.label.startswith("P0 ")).set_value("S01")
    next(s for s in at.selectbox if s.label.startswith("P1 ")).set_value("S02")
    next(b for b in at.button if b.label == "Save assignments").click().run()
    no_exception(at)
    with opened_store(data) as store:
        r = rs.recording_roster(store, "default", mid)
        assert r.persons == {persons[0].person_id: "S01", persons[1].person_id: "S02"}
        assert {h.annotator for h in rs.assignment_history(store, "default", mid)} == {"alice"}
    rows = next(pd.DataFrame(d.value) for d in at.dataframe if "reason" in pd.DataFrame(d.value).columns)
    assert list(rows["reason"]) == ["visible", "visible"]
    # P2 (30-34 s) given S02 as well while P1 (0-59 s) has it: refused with the reason, nothing stored
    next(s for s in at.selectbox if s.label.startswith("P2 ")).set_value("S02")
    next(b for b in at.button if b.label == "Save assignments").click().run()
    assert any("seen at the same time" in e.value for e in at.error)
    with opened_store(data) as store:
        assert len(rs.assignment_history(store, "default", mid)) == 2
