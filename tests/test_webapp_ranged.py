"""The Analyze page cuts a long recording into ranges over worker processes spawned from the app (issue 25 items 1
and 3, the app's path that stores): what it stores equals what one process stores through the same service."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
from sqlalchemy import func, select

from affectlab import ranged
from db.schema import AnalysisRange, Media, Study
from models import ranges
from models.analysis import AnalysisSession
from models.video import VideoConfig
from tests.apphelpers import new_app, no_exception, store_for, use_folders
from tests.test_ranged_store import _same, _stored
from tests.test_ranges import gallery, open_models  # noqa: F401 - the gallery recording (a fixture)

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("one_torch_thread")]


def test_the_analyze_page_cuts_a_recording_over_workers_and_stores_one_process_result(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    random_weights_dir: Path,
    gallery: Path,  # noqa: F811
) -> None:
    from webapp import resources
    from webapp.services import analysis

    data = tmp_path / "data"
    use_folders(monkeypatch, data, random_weights_dir)
    monkeypatch.setattr(ranges, "MIN_RANGE_S", 0.5)  # the 4 s gallery cut into two ranges
    monkeypatch.setattr(ranged, "IN_PROCESS", False)
    detector, recognizer = open_models()
    cut = AnalysisSession(
        detector=detector, recognizer=recognizer, video=VideoConfig(detect_every=2), range_workers=2, opener=open_models
    )
    monkeypatch.setattr(resources, "analysis_session", lambda *a, **k: cut)
    calls: list[dict] = []
    real = analysis.analyze_files

    def spy(uploads, **kwargs):
        calls.append(kwargs)
        return real(uploads, **kwargs)

    monkeypatch.setattr(analysis, "analyze_files", spy)
    at = new_app()
    at.run()
    at.file_uploader(key="w_uploads").set_value(("gallery.mp4", gallery.read_bytes(), "video/mp4"))
    at.run()
    next(b for b in at.button if b.label.startswith("Analyze")).click().run()
    no_exception(at)
    assert not at.error, [e.value for e in at.error]
    assert len(calls) == 1
    kwargs = calls[0]

    store = store_for(data)
    try:
        study = kwargs["study"]
        n_ranges = store.transaction(
            lambda s: s.scalar(
                select(func.count())
                .select_from(AnalysisRange)
                .join(Media, Media.id == AnalysisRange.media_id)
                .join(Study, Study.id == Media.study_id)
                .where(Study.name == study)
            ),
            write=False,
        )
        assert n_ranges == 2, "the page's analysis was cut into two ranges"
        # One process, through the same service with the page's options, into another study of the same store.
        one = dataclasses.replace(cut, range_workers=1)
        ref = {**kwargs, "study": "one", "store": store, "load_session": lambda: one, "progress_for": None}
        ref["pixels"] = None
        out = real([analysis.Upload.of("gallery.mp4", gallery)], **ref)
        assert [o.status for o in out.analysed] == ["stored"]
        straight = _stored(store, "one")
        assert straight[3] == 0
        _same(straight, _stored(store, study))
    finally:
        store.close()
