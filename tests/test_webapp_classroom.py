"""The Classroom page through AppTest: segments, students, tables and figure of a stored lecture recording."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from tests.apphelpers import no_exception, opened_store, page_on, stored_data
from tests.test_db_classes import _ingest

pytestmark = pytest.mark.slow


def test_classroom_page_shows_students_and_tables(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, random_weights_dir: Path
) -> None:
    data, _ = stored_data(
        tmp_path, lambda store: store.classroom.add_segment(_ingest(store, study="default"), "intro", 0, 30)
    )
    at = page_on("classroom", data, monkeypatch, random_weights_dir)
    no_exception(at)
    frames = [pd.DataFrame(d.value) for d in at.dataframe]
    students = next(f for f in frames if "person" in f.columns and "tracks" in f.columns)
    assert sorted(students["person"]) == ["P0", "P1", "P2"]
    assert any("minute" in f.columns and len(f) == 2 * 3 for f in frames)


def test_rename_merge_and_split_through_the_forms(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, random_weights_dir: Path
) -> None:
    from webapp.state import Keys

    data, mid = stored_data(tmp_path, lambda store: _ingest(store, study="default"))
    at = page_on("classroom", data, monkeypatch, random_weights_dir)
    assert any("Type your name" in c.value for c in at.caption), "no change without a name"
    at.sidebar.text_input(key=Keys.ANNOTATOR).input("alice").run()
    no_exception(at)

    def box(label: str):
        return next(s for s in at.selectbox if s.label == label)

    def submit(label: str) -> None:
        next(b for b in at.button if b.label == label).click().run()
        no_exception(at)

    box("Person").set_value("P1")
    next(t for t in at.text_input if t.label == "Participant id").input("S-017")
    submit("Rename")
    box("Keep").set_value("P0")
    box("Merge into it").set_value("P2")
    submit("Merge")
    with opened_store(data) as store:
        persons = {p.label: p for p in store.classroom.persons(mid)}
        assert persons["S-017"].track_indexes == (1,)
        assert persons["P0"].track_indexes == (0, 3, 2)  # by start and "P2" not in persons
    assert "P0: track 2" in box("Track holding another student").options
    box("Track holding another student").set_value("P0: track 2")
    submit("Split off")
    with opened_store(data) as store:
        persons = store.classroom.persons(mid)
        assert sorted(p.track_indexes for p in persons) == [(0, 3), (1,), (2,)]
        assert [h.kind for h in store.classroom.person_history(mid)] == ["rename", "merge", "split"]
        assert {h.annotator for h in store.classroom.person_history(mid)} == {"alice"}
    students = next(pd.DataFrame(d.value) for d in at.dataframe if "tracks" in pd.DataFrame(d.value).columns)
    assert sorted(students["person"]) == sorted(p.label for p in persons), "the table follows the corrections"


def test_forged_ids_from_another_study_are_refused(tmp_path: Path) -> None:
    """Ids a page sends are checked against the study's recording: another study's persons, tracks and recordings
    cannot be renamed, merged, split or given segments, and nothing is changed."""
    from db.errors import NotFoundError
    from webapp.services import classroom

    with opened_store(tmp_path / "data") as store:
        mine = _ingest(store, study="mine")
        theirs = _ingest(store, study="theirs")
        their_persons = store.classroom.persons(theirs)
        p0, p1 = their_persons[0].person_id, their_persons[1].person_id
        their_track = their_persons[0].track_ids[0]
        attempts = [
            lambda: classroom.rename_person(store, "mine", mine, "eve", p0, "X", owner=True),
            lambda: classroom.rename_person(store, "mine", theirs, "eve", p0, "X", owner=True),
            lambda: classroom.merge_persons(store, "mine", mine, "eve", p0, p1, owner=True),
            lambda: classroom.split_track(store, "mine", mine, "eve", their_track, owner=True),
            lambda: classroom.add_segment(store, "mine", "eve", theirs, "s", 0, 10),
        ]
        for attempt in attempts:
            with pytest.raises(NotFoundError):
                attempt()
        assert store.classroom.person_history(theirs) == [] and store.classroom.segments("theirs") == []
        assert [p.label for p in store.classroom.persons(theirs)] == [p.label for p in their_persons]
        # The same actions on the study's own ids go through.
        own = store.classroom.persons(mine)
        classroom.rename_person(store, "mine", mine, "eve", own[0].person_id, "S-1", owner=True)
        assert any(p.label == "S-1" for p in store.classroom.persons(mine))


def test_figures_of_the_page_and_their_files(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, random_weights_dir: Path
) -> None:
    """The page draws the chosen figure from the class tables, offers PNG/SVG (drawn on the click) and explains
    what a figure cannot show."""
    from webapp.services import classroom
    from webapp.state import Keys

    data, (mid, tables) = stored_data(
        tmp_path, lambda store: (_ingest(store, study="default"), store.classroom.class_tables("default"))
    )
    at = page_on("classroom", data, monkeypatch, random_weights_dir)
    at.session_state[Keys.CLASSROOM_FIGURE_OPEN] = True  # the figure's expander opened
    at.run()
    no_exception(at)
    figure = next(s for s in at.selectbox if s.label == "Figure")
    assert figure.value == "class-mean"
    assert "dominant_emotion" not in next(s for s in at.selectbox if s.label == "Value").options
    mean = [r["engagement_p"] for r in tables.minutes if r["media_id"] == mid and r["minute"] == 0]
    drawn = classroom.class_figure(tables, mid, "class-mean").data[1].y[0]
    assert drawn == pytest.approx(sum(v for v in mean if v is not None) / sum(v is not None for v in mean))
    labels = [b.label for b in at.get("download_button")]
    if classroom.figure_export_problem() is None:
        assert {"Download PNG", "Download SVG"} <= set(labels)
    at.selectbox(key=Keys.CLASSROOM_FIGURE).set_value("segment-bars").run()
    no_exception(at)
    assert any("no lecture segments" in i.value for i in at.info), "bars without segments say what to do"
    at.selectbox(key=Keys.CLASSROOM_FIGURE_VALUE).set_value("dominant_emotion").run()
    at.selectbox(key=Keys.CLASSROOM_FIGURE).set_value("participant-lines").run()
    no_exception(at)
    assert any(m.label.startswith("Students") for m in at.multiselect)


def test_the_class_figure_is_drawn_only_once_asked_for(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, random_weights_dir: Path
) -> None:
    """The page shows its heading, tables and downloads without drawing the figure (plotly, in the browser the
    page's largest cost); opening the figure's expander draws it from the tables the page computed."""
    from webapp.services import classroom
    from webapp.state import Keys

    drawn: list[str] = []
    draw = classroom.class_figure

    def counted(*args: object, **kwargs: object):
        drawn.append(str(args[2]))
        return draw(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(classroom, "class_figure", counted)
    data, _ = stored_data(tmp_path, lambda store: _ingest(store, study="default"))
    at = page_on("classroom", data, monkeypatch, random_weights_dir)
    no_exception(at)
    assert any(h.value == "Class over time" for h in at.subheader)
    assert any("minute" in pd.DataFrame(d.value).columns for d in at.dataframe), "the tables are shown"
    assert not drawn and not at.get("plotly_chart"), "no figure before it is asked for"
    assert not [s for s in at.selectbox if s.label == "Figure"]
    at.session_state[Keys.CLASSROOM_FIGURE_OPEN] = True
    at.run()
    no_exception(at)
    assert drawn == ["class-mean"]
    assert [c.key for c in at.get("plotly_chart")] == ["class_figure"]
