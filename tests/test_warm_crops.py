"""The Review page cuts the next faces' crops (their own and their track strip's) while a face is looked at."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from db import crops
from db.services import LabelStore
from tests.testdata import pyfeat_file
from webapp.services import review


@pytest.fixture(scope="module")
def recut_store(tmp_path_factory: pytest.TempPathFactory, random_weights_dir: Path):
    """A real video analysed through the product path into a study that re-cuts its crops from the kept file."""
    from affectlab.analysis import AnalysisService, Options, Source
    from models.analysis import AnalysisSession

    tmp = tmp_path_factory.mktemp("warm")
    video = tmp / "lecture.mp4"
    shutil.copy(pyfeat_file("single_face.mp4"), video)
    store = LabelStore(f"sqlite:///{tmp / 'a.sqlite3'}", data_dir=tmp / "data")
    store.upgrade()
    session = AnalysisSession.open("enet_b0_8_best_vgaf", random_weights_dir)
    service = AnalysisService(store, "recut", lambda: session, Options(fps=5.0, keep_file=True))
    assert service.analyze(Source("lecture.mp4", path=video)).status == "stored"
    yield store
    store.close()


def _strip(store: LabelStore, face_id: int) -> list[int]:
    face = store.recordings.faces_by_id("recut", [face_id])[0]
    assert face.track_id is not None
    times = store.recordings.track_face_times("recut", face.track_id)
    return review._strip_ids([i for i, _ in times], face_id)


def test_the_next_faces_crops_are_cut_ahead_and_the_key_press_finds_them(recut_store, monkeypatch) -> None:
    store = recut_store
    faces = store.recordings.faces("recut")
    nxt = faces[len(faces) // 2].face_id
    want = _strip(store, nxt)
    assert len(want) > 1 and nxt in want
    store.crop_cache = crops.CropCache()  # cold
    thread = review.warm_next(store, "recut", [nxt])
    assert thread is not None
    thread.join(120)
    assert not thread.is_alive()
    assert len(store.crop_cache) >= len(want)

    def no_decoding(sources):  # the key press: every crop it shows must come from the cache
        if sources:
            raise AssertionError("re-cut on the key press")
        return iter(())

    monkeypatch.setattr(crops, "recut", no_decoding)
    got = review.face_crops(store, want, "recut")
    assert set(got) == set(want)
    store.crop_cache = crops.CropCache()  # and cold, the same call does decode (the check can fail)
    with pytest.raises(AssertionError, match="re-cut on the key press"):
        review.face_crops(store, want, "recut")


def test_one_warm_up_at_a_time_and_none_for_nothing_or_another_study(recut_store) -> None:
    store = recut_store
    face_id = store.recordings.faces("recut")[0].face_id
    assert review.warm_next(store, "recut", []) is None
    with review._WARMING:  # one running: key presses faster than the page do not pile up threads
        assert review.warm_next(store, "recut", [face_id]) is None
    store.crop_cache = crops.CropCache()
    thread = review.warm_next(store, "another study", [face_id])  # not that study's face: nothing cut
    assert thread is not None
    thread.join(60)
    assert len(store.crop_cache) == 0
