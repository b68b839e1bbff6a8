"""A recording in the Library through AppTest: a page of tracks, binned figures that say their bin, corrections shown.

The figures come from SQL summaries (:mod:`db.recording`), never from the recording's resolved faces; an independent
study hides the annotators' classes (and, when it hides the model, the model's values) from non-owners.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from db.review import StudySettings
from tests.apphelpers import new_app, no_exception, opened_store, page, store_for, use_folders
from tests.pg import fake_results, png_bytes
from webapp.state import Keys

pytestmark = pytest.mark.slow

N_TRACKS = 10
BOXES = [(10.0 + 30 * i, 10.0, 35.0 + 30 * i, 40.0) for i in range(N_TRACKS + 1)]


def _fill(store) -> int:
    n_frames = 6
    res = fake_results(
        "lecture.mp4",
        BOXES * n_frames,
        ["Neutral", "Sadness", "Happiness"] * (len(BOXES) * n_frames // 3) + ["Fear"] * (len(BOXES) * n_frames % 3),
        frames=[f * 5 for f in range(n_frames) for _ in BOXES],
        tracks=[*range(N_TRACKS), None] * n_frames,
        valence=[0.2] * (len(BOXES) * n_frames),
        seed=4,
    )
    store.ingest.ingest_results("default", png_bytes(3), "lecture.mp4", res)
    (media,) = store.recordings.media("default")
    faces = store.recordings.faces("default", media_id=media.id)
    track0 = next(f.track_id for f in faces if f.track_index == 0)
    store.review.correct_track(track0, "alice", label="Surprise")
    return media.id


@pytest.fixture
def lecture(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, random_weights_dir: Path) -> Path:
    data = tmp_path / "data"
    use_folders(monkeypatch, data, random_weights_dir)
    with opened_store(data) as store:
        _fill(store)
    return data


def test_a_recording_shows_a_page_of_tracks_with_binned_figures(lecture: Path) -> None:
    at = page(new_app(), "library")
    no_exception(at)
    (button,) = [b for b in at.button if str(b.key or "").startswith(Keys.LIBRARY_OPEN)]
    button.click().run()
    no_exception(at)
    assert [e.label.split(":")[0] for e in at.expander] == [f"Track {i}" for i in range(8)]
    assert any("binned per" in c.value for c in at.caption)
    keys = [c.key for c in at.get("plotly_chart")]
    assert any(k.startswith("hc_") for k in keys), "track 0's correction shows as the annotators' class"
    assert any(k.startswith("pt_") for k in keys) and any(k.startswith("va_") for k in keys)
    (pages,) = [n for n in at.number_input if n.label.startswith("Tracks shown")]
    pages.set_value(2).run()
    no_exception(at)
    assert [e.label.split(":")[0] for e in at.expander] == ["Track 8", "Track 9", "Faces without a track"]
    assert not any(str(c.key).startswith("hc_") for c in at.get("plotly_chart")), "no correction on this page"


def test_independent_study_hides_the_consensus_from_non_owners(lecture: Path) -> None:
    from webapp.services import library

    store = store_for(lecture)
    try:
        (media,) = store.recordings.media("default")
        for rules, owner, model, human in (
            (StudySettings(independent=True), False, True, False),
            (StudySettings(independent=True, hide_model=True), False, False, False),
            (StudySettings(independent=True, hide_model=True), True, True, True),
            (StudySettings(), False, True, True),
        ):
            view = library.recording_view(store, "default", media, rules, owner)
            assert (view.show_model, view.show_human) == (model, human)
            series = list(view.series.values())
            assert any(b.human_counts for s in series for b in s.buckets) == human
            assert any(b.probs for s in series for b in s.buckets) == model
            assert len(view.tracks) == N_TRACKS + 1 and len(view.shown) == library.TRACKS_PER_PAGE
    finally:
        store.close()
