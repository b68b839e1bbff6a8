"""Privacy for minors through AppTest: with the study's blur setting on, non-owners see blurred faces, owners don't.

The pixels the app sent are read back from Streamlit's media file storage and compared with the stored crops.
"""

from __future__ import annotations

import io
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from streamlit.runtime.memory_media_file_storage import MemoryMediaFileStorage

from db.review import StudySettings
from tests.apphelpers import new_app, no_exception, opened_store, page, store_for
from webapp.state import Keys

pytestmark = pytest.mark.slow

ACCESS, OWNER = "pupils only", "owners only"


@pytest.fixture
def sent(monkeypatch: pytest.MonkeyPatch) -> dict[str, bytes]:
    """Every media file the app hands to the browser, by file id."""
    files: dict[str, bytes] = {}
    original = MemoryMediaFileStorage.load_and_get_id

    def spy(self, path_or_data, mimetype, kind, filename=None):
        fid = original(self, path_or_data, mimetype, kind, filename)
        files[fid] = path_or_data if isinstance(path_or_data, bytes) else Path(path_or_data).read_bytes()
        return fid

    monkeypatch.setattr(MemoryMediaFileStorage, "load_and_get_id", spy)
    return files


def shown(at, sent: dict[str, bytes]) -> list[np.ndarray]:
    """The pictures of the last script run, decoded to RGB."""
    out = []
    for el in at.get("image"):
        for url in el.value:
            data = sent[Path(url).stem]
            out.append(np.asarray(Image.open(io.BytesIO(data)).convert("RGB")))
    return out


def decode(data: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))


@pytest.fixture
def blurred_study(multi_face_app_dir: Path, monkeypatch: pytest.MonkeyPatch) -> dict[int, np.ndarray]:
    """The study with blur on, the app behind an access code and an owners' code; the stored crops by face id."""
    store = store_for(multi_face_app_dir)
    store.review.set_study_settings("default", StudySettings(blur_faces=True))
    crops = {
        fid: decode(b)
        for fid, b in store.recordings.face_crops([f.face_id for f in store.recordings.faces("default")]).items()
    }
    store.close()
    assert len(crops) == 5
    monkeypatch.setenv("AFFECTLAB_ACCESS_CODE", ACCESS)
    monkeypatch.setenv("AFFECTLAB_OWNER_CODE", OWNER)
    return crops


def enter(owner: bool):
    at = new_app()
    at.run()
    at.text_input(key=Keys.ACCESS_CODE).input(ACCESS)
    at.button[0].click().run()
    no_exception(at)
    if owner:  # the sidebar's "Another code" form
        at.sidebar.text_input(key=Keys.OWNER_CODE).input(OWNER)
        next(b for b in at.sidebar.button if b.label == "Enter").click().run()
        no_exception(at)
    return at


def open_library_item(at):
    page(at, "library")
    (button,) = [b for b in at.button if str(b.key or "").startswith(Keys.LIBRARY_OPEN)]
    button.click().run()
    no_exception(at)
    return at


def same_size(images: list[np.ndarray], crops: dict[int, np.ndarray]) -> list[tuple[np.ndarray, np.ndarray]]:
    """Pairs (shown, stored) of the crops shown on the page; a stored crop wider than the page's 110 px is resized
    as Streamlit resizes it."""
    pairs = []
    for crop in crops.values():
        h, w = crop.shape[:2]
        want = (
            crop
            if w <= 110
            else np.asarray(Image.fromarray(crop).resize((110, int(h * 110 / w)), Image.Resampling.LANCZOS))
        )
        match = [im for im in images if im.shape == want.shape]
        assert match, ("every face crop is shown", crop.shape, [im.shape for im in images])
        pairs.append((min(match, key=lambda im: float(np.abs(im.astype(float) - want).mean())), want))
    return pairs


def close(a: np.ndarray, b: np.ndarray) -> bool:
    """The same picture, up to Streamlit's re-encoding (JPEG, resize): blurring moves pixels ten times more."""
    return float(np.abs(a.astype(float) - b).mean()) < 6.0


def test_non_owner_sees_blurred_crops_boxed_image_and_thumbnails(blurred_study, sent) -> None:
    at = enter(owner=False)
    page(at, "library")
    (thumb,) = shown(at, sent)  # the library card's thumbnail is blurred as a whole
    assert thumb.std() < 60
    open_library_item(at)
    images = shown(at, sent)
    assert len(images) == 6  # the boxed image and five crops
    for seen, stored in same_size(images, blurred_study):
        assert not close(seen, stored)
        assert np.abs(seen.astype(float) - stored).mean() > 15, "blurred, not merely re-encoded"
        # a blur keeps the colours: the mean stays close
        assert abs(float(seen.mean()) - float(stored.mean())) < 10


def test_owner_sees_faces_sharp_and_may_turn_blur_off(blurred_study, sent, multi_face_app_dir: Path) -> None:
    at = enter(owner=True)
    open_library_item(at)
    images = shown(at, sent)
    for seen, stored in same_size(images, blurred_study):
        assert close(seen, stored)
    page(at, "review")
    toggle = at.toggle(key=Keys.STUDY_BLUR_FACES)
    assert toggle.value is True
    toggle.set_value(False).run()
    no_exception(at)
    store = store_for(multi_face_app_dir)
    try:
        assert store.review.study_settings("default").blur_faces is False
    finally:
        store.close()


def test_review_keeps_the_labelled_face_sharp_and_blurs_the_others(
    blurred_study, sent, multi_face_app_dir: Path
) -> None:
    at = enter(owner=False)
    at.sidebar.text_input(key=Keys.ANNOTATOR).input("ann").run()
    page(at, "review")
    no_exception(at)
    text = " ".join(m.value for m in at.markdown)
    face_id = int(re.search(r"Face (\d+), file", text).group(1))  # type: ignore[union-attr]
    images = shown(at, sent)
    assert any(im.shape == blurred_study[face_id].shape and close(im, blurred_study[face_id]) for im in images), (
        "the face being labelled is sharp"
    )
    store = store_for(multi_face_app_dir)
    try:
        faces = store.recordings.faces("default")
        path = next(iter((multi_face_app_dir / "media").rglob("*.jpg")))
    finally:
        store.close()
    original = np.asarray(Image.open(path).convert("RGB"))
    whole = [im for im in images if im.shape == original.shape]
    assert whole, "the whole image is shown"
    for f in faces:
        x1, y1, x2, y2 = (int(v) for v in f.box)
        mx, my = (x2 - x1) // 4, (y2 - y1) // 4
        inner = (slice(y1 + my, y2 - my), slice(x1 + mx, x2 - mx))
        diff = np.abs(whole[0][inner].astype(float) - original[inner]).mean()
        assert (diff < 6.0) if f.face_id == face_id else (diff > 10.0), (f.face_id, diff)


def test_class_table_exports_hold_no_image(tmp_path: Path) -> None:
    from tests.test_db_classes import _ingest
    from webapp.services import classroom

    with opened_store(tmp_path / "data") as store:
        _ingest(store, study="default")
        for table in classroom.CLASS_TABLES:
            body, _card = classroom.class_table_bytes(store, "default", table)
            assert b"\x89PNG" not in body and b"iVBORw0KGgo" not in body and b"data:image" not in body
            assert not re.search(rb"crop|png", body.split(b"\n", 1)[0], re.IGNORECASE), table


@pytest.mark.parametrize("owner", [False, True])
def test_classroom_thumbnails_blurred_for_non_owners(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, random_weights_dir: Path, sent, owner: bool, face_crops: list
) -> None:
    import dataclasses

    from db.ingest import MediaInfo
    from tests.apphelpers import use_folders
    from tests.pg import fake_results, png_bytes, tracks_of

    data = tmp_path / "data"
    data.mkdir()
    store = store_for(data)
    store.upgrade()
    # three students over 10 s, each with a real face crop (a random-noise crop tells JPEG from blur badly)
    boxes = [(10.0 + 100 * k, 10.0, 60.0 + 100 * k, 70.0) for _ in range(10) for k in range(3)]
    results = fake_results(
        "lecture.mp4",
        boxes,
        ["Neutral"] * 30,
        frames=[i // 3 for i in range(30)],
        tracks=[i % 3 for i in range(30)],
        fps=1.0,
    )
    results = [dataclasses.replace(r, crop=face_crops[i % 3]) for i, r in enumerate(results)]
    tracks = [{"track": k, "n_faces": 10, "start_s": 0.0, "end_s": 9.0, "person": k} for k in range(3)]
    info = MediaInfo(kind="video", width=320, height=240, duration_s=10.0, fps=1.0)
    mid = store.ingest.ingest_results(
        "default", png_bytes(5), "lecture.mp4", results, tracks_of(tracks), media_info=info
    ).media_ids[0]
    store.review.set_study_settings("default", StudySettings(blur_faces=True))
    from webapp.services.privacy import blurred_crop

    stored = store.recordings.face_crops(list(store.recordings.best_faces(mid).values())).values()
    crops = [decode(b) for b in stored]
    blurred = [decode(blurred_crop(b, StudySettings(blur_faces=True), owner=False, own_face=False)) for b in stored]
    store.close()
    use_folders(monkeypatch, data, random_weights_dir)
    monkeypatch.setenv("AFFECTLAB_ACCESS_CODE", ACCESS)
    monkeypatch.setenv("AFFECTLAB_OWNER_CODE", OWNER)
    at = enter(owner=owner)
    page(at, "classroom")
    no_exception(at)
    images = shown(at, sent)
    assert len(images) == 3  # one per student

    def nearest(im: np.ndarray, pool: list[np.ndarray]) -> float:
        size = (im.shape[1], im.shape[0])
        fitted = [np.asarray(Image.fromarray(c).resize(size, Image.Resampling.LANCZOS)) for c in pool]
        return min(float(np.abs(im.astype(float) - c).mean()) for c in fitted)

    # Streamlit re-encodes (JPEG): compare with the nearest sharp and the nearest blurred stored crop
    sharp = [nearest(im, crops) < nearest(im, blurred) for im in images]
    assert all(sharp) if owner else not any(sharp)
    assert any(t.label.startswith("Blur faces") for t in at.toggle) == owner
