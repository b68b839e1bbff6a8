"""The Analyze page through Streamlit's AppTest: uploads, webcam, errors, a correction, no weights."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.apphelpers import new_app, no_exception, store_for, use_folders

pytestmark = pytest.mark.slow

HOSTILE = "<img src=x onerror=alert(1)>**bold**`tick`.jpg"


@pytest.fixture
def app_dirs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, random_weights_dir: Path) -> Path:
    data = tmp_path / "data"
    use_folders(monkeypatch, data, random_weights_dir)
    return data


def test_upload_two_files_one_bad_then_correct(app_dirs: Path, multi_face_jpg: Path) -> None:
    at = new_app()
    at.run()
    no_exception(at)
    assert [t.value for t in at.title] == ["Analyze"]
    good = ("multi_face.jpg", multi_face_jpg.read_bytes(), "image/jpeg")
    at.file_uploader(key="w_uploads").set_value([(HOSTILE, b"this is not an image", "image/jpeg"), good])
    at.run()
    analyze = next(b for b in at.button if b.label.startswith("Analyze"))
    assert analyze.label == "Analyze 2 files"
    analyze.click().run()
    no_exception(at)
    # The bad file: an error naming it as literal text (a code span), the reason; the other file went on.
    errors = [e.value for e in at.error]
    assert len(errors) == 1
    assert f"``{HOSTILE}``" in errors[0] and "not an image" in errors[0]
    assert not any(getattr(m, "allow_html", False) for m in at.markdown)
    # The good file: its name as a heading, 5 faces each with a correction control and a probability chart.
    assert [s.value for s in at.subheader] == ["`multi_face.jpg`"]
    assert [p.label for p in at.pills] == [f"Correct face {i}" for i in range(1, 6)]
    assert all(p.disabled for p in at.pills), "no annotator yet: corrections are disabled"
    assert len(at.get("plotly_chart")) == 5, "one probability bar per face; no circumplex: this model has no V/A"
    assert len(at.get("image")) == 6, "the annotated image and 5 face crops"

    store = store_for(app_dirs)
    media = store.recordings.media("default")
    assert [m.filename for m in media] == ["multi_face.jpg"]
    assert media[0].n_faces == 5

    at.text_input(key="w_annotator").input("alice").run()
    assert not any(p.disabled for p in at.pills)
    at.pills[1].set_value("Surprise").run()
    no_exception(at)
    assert any("Surprise" in s.value for s in at.success)
    faces = store.recordings.faces("default")
    corrected = [f for f in faces if f.label_source == "human"]
    assert len(corrected) == 1 and corrected[0].label == "Surprise"
    assert corrected[0].judgements[0].annotator == "alice"
    store.close()


def test_onnx_backend_setting_analyses_with_onnx_runtime(
    app_dirs: Path, multi_face_jpg: Path, random_weights_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """AFFECTLAB_BACKEND=onnx: the app analyses with ONNX Runtime and stores what the torch backend predicts."""
    import numpy as np

    from models.analysis import AnalysisSession
    from models.faces import FaceDetector, crop_face
    from models.images import load_image
    from models.recognizer import EmotionRecognizer

    monkeypatch.setenv("AFFECTLAB_BACKEND", "onnx")
    opened = []
    real_open = AnalysisSession.open.__func__

    def spy(cls, *args, **kwargs):
        session = real_open(cls, *args, **kwargs)
        opened.append(session.recognizer.backend)
        return session

    monkeypatch.setattr(AnalysisSession, "open", classmethod(spy))
    from webapp import resources

    resources.forget_models()  # onnx is also the default: an earlier test may have cached this very session
    at = new_app()
    at.run()
    at.file_uploader(key="w_uploads").set_value([("multi_face.jpg", multi_face_jpg.read_bytes(), "image/jpeg")])
    at.run()
    next(b for b in at.button if b.label.startswith("Analyze")).click().run()
    no_exception(at)
    assert opened == ["onnx"]
    store = store_for(app_dirs)
    stored = store.recordings.faces("default")
    store.close()
    img = load_image(multi_face_jpg)
    faces = FaceDetector().detect(img)
    want = EmotionRecognizer.load("enet_b0_8_best_vgaf", random_weights_dir).predict(
        [crop_face(img, f.box) for f in faces]
    )
    by_box = {tuple(round(v, 2) for v in f.box): p for f, p in zip(faces, want, strict=True)}
    assert len(stored) == len(by_box) == 5
    for row in stored:
        p = by_box[tuple(round(v, 2) for v in row.box)]
        assert row.model_label == p.label
        got = np.array([row.model_probs[k] for k in p.labels])
        assert np.abs(got - p.probs).max() < 1e-4


def test_invalid_backend_setting_is_named() -> None:
    from core.settings import Settings

    assert Settings.from_env({"AFFECTLAB_BACKEND": " ONNX "}).backend == "onnx"
    assert Settings.from_env({}).backend == "onnx"  # the measured faster default (README, Benchmarks)
    assert Settings.from_env({"AFFECTLAB_BACKEND": "torch"}).backend == "torch"
    assert Settings.from_env({}).detect_every >= 1
    assert Settings.from_env({"AFFECTLAB_DETECT_EVERY": "1"}).detect_every == 1
    with pytest.raises(ValueError, match="AFFECTLAB_BACKEND must be one of torch, onnx, not 'tensorrt'"):
        Settings.from_env({"AFFECTLAB_BACKEND": "tensorrt"})


def test_video_upload_shows_tracks_and_player(app_dirs: Path, pyfeat) -> None:
    video = pyfeat("single_face.mp4")
    at = new_app()
    at.run()
    at.slider(key="w_fps").set_value(2.0)
    at.file_uploader(key="w_uploads").set_value(("single_face.mp4", video.read_bytes(), "video/mp4"))
    at.run()
    next(b for b in at.button if b.label.startswith("Analyze")).click().run()
    no_exception(at)
    assert not at.error, [e.value for e in at.error]
    assert [s.value for s in at.subheader] == ["`single_face.mp4`"]
    assert at.get("video"), "the video player is shown"
    assert any(s.label == "Play from (seconds)" for s in at.slider)
    assert any(e.label.startswith("Track 0") for e in at.expander)
    store = store_for(app_dirs)
    (media,) = store.recordings.media("default")
    assert media.kind == "video" and media.n_faces >= 3
    assert store.recordings.tracks(media.id)
    store.close()
    _reopen_without_a_model(video, media.id)


def _no_model(*_args, **_kwargs):
    raise AssertionError("a model was loaded for stored results")


def _reopen_without_a_model(video: Path, media_id: int) -> None:
    """After a reload: uploading the stored video again, and opening it in the Library, run no model."""
    from webapp import resources

    mp = pytest.MonkeyPatch()
    mp.setattr(resources, "analysis_session", _no_model)
    try:
        at = new_app()  # a new browser session: nothing of the first one is left
        at.run()
        at.file_uploader(key="w_uploads").set_value(("again.mp4", video.read_bytes(), "video/mp4"))
        at.run()
        next(b for b in at.button if b.label.startswith("Analyze")).click().run()
        no_exception(at)
        assert any("already in the study" in c.value and "no model was run" in c.value for c in at.caption)
        assert [s.value for s in at.subheader] == ["`single_face.mp4`"], "the stored item, under its stored name"
        assert any(e.label.startswith("Track 0") for e in at.expander)

        at = new_app()
        at.query_params["open"] = str(media_id)
        at.run()
        at.switch_page("views/library.py")
        at.run()
        no_exception(at)
        assert [s.value for s in at.subheader] == ["`single_face.mp4`"]
        assert at.get("video") and any(e.label.startswith("Track 0") for e in at.expander)
        at.button[0].click().run()  # back to the library grid
        no_exception(at)
        assert any(b.label == "Open" for b in at.button) and at.get("image"), "a card with a thumbnail"
    finally:
        mp.undo()


def test_webcam_snapshot_with_a_va_model_shows_the_circumplex(app_dirs: Path, single_face_jpg: Path) -> None:
    at = new_app()
    at.run()
    at.selectbox(key="w_analyze_model").set_value("enet_b0_8_va_mtl").run()
    at.toggle[0].set_value(True).run()
    at.camera_input(key="w_camera").upload("snapshot.jpg", single_face_jpg.read_bytes())
    at.run()
    next(b for b in at.button if b.label.startswith("Analyze")).click().run()
    no_exception(at)
    assert len(at.pills) == 1
    assert at.subheader[0].value.startswith("`webcam-")
    keys = [c.key for c in at.get("plotly_chart")]
    assert any(k.startswith("va_") for k in keys), keys
    (face,) = store_for(app_dirs).recordings.faces("default")
    assert face.model == "enet_b0_8_va_mtl" and face.model_valence is not None


def test_without_weights_the_app_says_what_is_missing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    use_folders(monkeypatch, tmp_path / "data", tmp_path / "empty-weights")
    at = new_app()
    at.run()
    no_exception(at)
    (warning,) = at.warning
    assert "Missing model weights: enet_b0_8_best_vgaf, engagement_single_attention." in warning.value
    assert "python -m models fetch --defaults" in warning.value
    assert not at.file_uploader, "nothing to analyse with: no upload offered"
    assert not at.pills and not at.get("plotly_chart")


def test_missing_engagement_weights_are_named_on_the_first_page(app_dirs: Path) -> None:
    """The random weights folder has the emotion models but not the engagement model: the warning names it alone."""
    at = new_app()
    at.run()
    no_exception(at)
    (missing,) = [w.value for w in at.warning if w.value.startswith("Missing model weights")]
    assert missing.startswith("Missing model weights: engagement_single_attention. Without them")
    assert at.file_uploader, "the emotion model is there: uploads are offered"
    uploads = next(c.value for c in at.caption if c.value.startswith("Uploads are stored"))
    assert "everyone who can open that study sees them" in uploads and "Dataset page" in uploads
    assert "after 24 hours" in uploads


def test_try_a_sample_analyses_into_the_demo_study(
    app_dirs: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, multi_face_jpg: Path
) -> None:
    """One click: the samples are analysed into study `demo`, which the sidebar then shows with their results."""
    import dataclasses

    from affectlab import samples

    one = dataclasses.replace(
        samples.SAMPLES[0],
        name="multi_face.jpg",
        kind="image",
        source="multi_face.jpg",
        sha256=samples.sha256(multi_face_jpg),
    )
    monkeypatch.setattr(samples, "SAMPLES", (one,))
    folder = tmp_path / "samples"
    folder.mkdir()
    (folder / "multi_face.jpg").write_bytes(multi_face_jpg.read_bytes())
    monkeypatch.setenv("AFFECTLAB_SAMPLES_DIR", str(folder))
    at = new_app()
    at.run()
    button = next(b for b in at.button if b.label == "Try a sample (into study demo)")
    button.click().run()
    no_exception(at)
    assert at.sidebar.selectbox(key="w_study").value == "default", "the person's study stays as it was"
    assert any("1 sample analysed into study `demo`" in s.value and "still `default`" in s.value for s in at.success)
    assert at.subheader[0].value == "`multi_face.jpg`" and len(at.get("plotly_chart")) == 5
    store = store_for(app_dirs)
    assert [m.filename for m in store.recordings.media("demo")] == ["multi_face.jpg"]
    assert "default" not in {s.name for s in store.recordings.studies()} or not store.recordings.media("default")
    store.close()


def test_the_demo_study_is_cleared_after_its_ttl(
    app_dirs: Path, random_weights_dir: Path, multi_face_jpg: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from datetime import timedelta

    from tests.apphelpers import analyze_into
    from webapp.services import demo

    analyze_into(app_dirs, random_weights_dir, [multi_face_jpg], study="demo")
    analyze_into(app_dirs, random_weights_dir, [multi_face_jpg], study="kept")
    store = store_for(app_dirs)
    media_dir = app_dirs.resolve() / "media"
    (m,) = store.recordings.media("demo")
    kept_file = store.recordings.media_path(m.id)
    assert kept_file is not None and kept_file.is_file()
    created = m.created_at
    assert demo.clear_demo(store, media_dir, 24, now=created + timedelta(hours=23)) == 0
    assert demo.clear_demo(store, media_dir, 0, now=created + timedelta(days=30)) == 0, "0 keeps them"
    assert demo.clear_demo(store, media_dir, 24, now=created + timedelta(hours=25)) == 1
    assert store.recordings.media("demo") == [] and not kept_file.exists()
    assert len(store.recordings.media("kept")) == 1, "only the demo study is cleared"
    monkeypatch.setattr(demo, "_SWEEPS", demo._Sweeps())
    assert demo.clear_demo_if_due(store, media_dir, 24) == 0, "the first run sweeps"
    assert demo.clear_demo_if_due(store, media_dir, 24) is None, "then not again within the hour"
    store.close()


def test_a_spooled_upload_is_analysed_from_disk(
    tmp_path: Path, random_weights_dir: Path, pyfeat, single_face_jpg: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An upload the guard spooled (``Upload.of(name, path)``): a video is analysed and kept from its file without
    being read whole into memory, an image like one in memory; both stored with the file's own hash and bytes."""
    import hashlib
    import shutil

    from models.analysis import AnalysisSession
    from webapp.services import analysis

    spool = tmp_path / "spool"
    spool.mkdir()
    video, photo = spool / "tok1.mp4", spool / "tok2.jpg"
    shutil.copyfile(pyfeat("single_face.mp4"), video)
    shutil.copyfile(single_face_jpg, photo)
    read_whole = Path.read_bytes

    def no_whole_video(self: Path) -> bytes:
        assert self.resolve() != video.resolve(), "the spooled video was read whole into memory"
        return read_whole(self)

    monkeypatch.setattr(Path, "read_bytes", no_whole_video)
    data = tmp_path / "data"
    store = store_for(data)
    store.upgrade()
    session = AnalysisSession.open("enet_b0_8_best_vgaf", random_weights_dir)
    try:
        for name, path, kind in (("class.mp4", video, "video"), ("face.jpg", photo, "image")):
            upload = analysis.Upload.of(name, path)
            assert upload.size == path.stat().st_size and not upload.data
            out = analysis.analyze_upload(
                upload, study="s", store=store, session=session, media_dir=data / "media", fps=2.0
            )
            assert out.error is None and out.kind == kind and out.n_faces >= 1, out
            row = next(m for m in store.recordings.media("s") if m.id == out.media_id)
            assert row.sha256 == hashlib.sha256(read_whole(path)).hexdigest()
            kept = store.recordings.media_path(row.id)
            assert kept is not None and read_whole(kept) == read_whole(path)
    finally:
        store.close()


def test_uploads_are_charged_to_an_hourly_pixel_budget(
    app_dirs: Path, single_face_jpg: Path, pyfeat, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Stills and videos from the Analyze page are charged, from their headers and before any decoding, to one
    hourly budget of the client (the session under AppTest); over it a file is refused by name with the limit and
    nothing is stored, before any model is reached."""
    from models.images import PixelLedger
    from webapp.services import analysis

    ledger = PixelLedger(limit=10_000_000)
    monkeypatch.setattr(analysis, "PIXELS", ledger)
    at = new_app()
    at.run()
    video = pyfeat("single_face.mp4")
    at.file_uploader(key="w_uploads").set_value(
        [("face.jpg", single_face_jpg.read_bytes(), "image/jpeg"), ("class.mp4", video.read_bytes(), "video/mp4")]
    )
    at.run()
    next(b for b in at.button if b.label.startswith("Analyze")).click().run()
    no_exception(at)
    errors = [e.value for e in at.error]
    assert len(errors) == 1 and "class.mp4" in errors[0] and "10,000,000-pixel hourly limit" in errors[0], errors
    [(key, _)] = [(k, q) for k, q in ledger._spent.items() if q]
    assert key.startswith("session:") and 0 < ledger.used(key) < ledger.limit, "the still was charged"
    store = store_for(app_dirs)
    assert [m.filename for m in store.recordings.media("default")] == ["face.jpg"], "the refused video stored nothing"
    store.close()
    out = analysis.analyze_upload(  # refused before the models: none is given
        analysis.Upload("class.mp4", video.read_bytes()),
        study="default",
        store=store_for(app_dirs),
        session=None,  # type: ignore[arg-type]  # never reached: refused by the ledger first
        media_dir=None,
        pixels=PixelLedger(limit=1),
        client="client:203.0.113.9",
    )
    assert out.error is not None and "1-pixel hourly limit" in out.error and out.media_id is None


def test_the_face_detection_options_reach_the_analysis_and_are_stored(app_dirs: Path, multi_face_jpg: Path) -> None:
    from db.detection import DetectionSettings, detection_settings
    from webapp.state import Keys

    at = new_app()
    at.run()
    at.selectbox(key=Keys.GALLERY_PRESET).set_value("gallery")
    at.number_input(key=Keys.MIN_FACE_SIZE).set_value(500)  # larger than any face of the photo
    at.file_uploader(key="w_uploads").set_value([("multi_face.jpg", multi_face_jpg.read_bytes(), "image/jpeg")])
    at.run()
    next(b for b in at.button if b.label.startswith("Analyze")).click().run()
    no_exception(at)
    store = store_for(app_dirs)
    try:
        (media,) = store.recordings.media("default")
        assert media.n_faces == 0, "the minimum face size reached the detector"
        got = store.transaction(lambda s: detection_settings(s, media.id), write=False)
        assert got == DetectionSettings("gallery", "gallery", 500)
    finally:
        store.close()
