"""Face detection settings (issue 24 item 6): presets, the auto choice, what reaches the detector and the store."""

from __future__ import annotations

from pathlib import Path

import pytest

from affectlab import detection
from db.detection import DetectionSettings, detection_settings, record
from tests.test_resumable import class_video  # noqa: F401 - the 12 s recording with three faces (a fixture)

MODEL = "enet_b0_8_best_vgaf"


def test_presets_from_frame_size_and_faces() -> None:
    assert detection.gallery_min_face(1280, 720, 25) == 24  # 5 x 5 tiles at 720p
    assert detection.gallery_min_face(1920, 1080, 16) == 40  # 45 clamped to the webcam size
    assert detection.gallery_min_face(640, 360, 36) == 12  # clamped: MTCNN's smallest useful face
    auto = detection.choose("auto", None, 1280, 720, probe_faces=12)
    assert (auto.preset, auto.requested, auto.min_face_size, auto.probe_faces) == ("gallery", "auto", 30, 12)
    one = detection.choose("auto", None, 1280, 720, probe_faces=1)
    assert (one.preset, one.min_face_size) == ("webcam", 40)
    assert detection.choose(None, None, 1280, 720) == DetectionSettings("webcam", "webcam", 40)
    assert detection.choose(None, 24, 1280, 720) == DetectionSettings("custom", "custom", 24)
    assert detection.choose("gallery", 18, 1280, 720).min_face_size == 18  # by hand wins
    with pytest.raises(ValueError, match="probe"):
        detection.choose("auto", None, 1280, 720)
    with pytest.raises(ValueError, match="unknown gallery preset"):
        detection.choose("grid", None, 1280, 720)


def test_settings_are_stored_once_per_recording(store) -> None:
    from tests.test_db_classes import _ingest

    mid = _ingest(store)
    first = DetectionSettings("gallery", "auto", 24, None, 9)
    assert store.transaction(lambda s: detection_settings(s, mid), write=False) is None
    assert store.transaction(lambda s: record(s, mid, first)) == first
    later = DetectionSettings("webcam", "webcam", 40)
    assert store.transaction(lambda s: record(s, mid, later)) == first, "a resumed run keeps the first settings"
    assert store.transaction(lambda s: detection_settings(s, mid), write=False) == first
    with pytest.raises(ValueError, match="positive"):
        DetectionSettings("webcam", "webcam", 0)


def test_a_detector_with_other_settings_shares_its_nets(multi_face_jpg: Path) -> None:
    import numpy as np
    from PIL import Image

    from models.faces import DetectorConfig, FaceDetector

    det = FaceDetector()
    image = np.asarray(Image.open(multi_face_jpg).convert("RGB"))
    big_only = det.with_config(DetectorConfig(min_face_size=min(image.shape[:2]) // 2))
    assert big_only._mtcnn is det._mtcnn and det.config.min_face_size == 40
    assert len(det.detect(image)) > len(big_only.detect(image))
    assert detection.probe_faces(det, [image]) == len(det.with_config(DetectorConfig(min_face_size=16)).detect(image))


@pytest.mark.slow
def test_the_service_chooses_stores_and_applies_the_settings(
    class_video: Path,  # noqa: F811
    multi_face_jpg: Path,
    tmp_path: Path,
    random_weights_dir: Path,
) -> None:
    from affectlab.analysis import AnalysisService, Options, Source
    from db.services import LabelStore
    from models.analysis import AnalysisSession

    store = LabelStore(f"sqlite:///{tmp_path / 's.sqlite3'}", data_dir=tmp_path)
    store.upgrade()
    session = AnalysisSession.open(MODEL, random_weights_dir)
    try:
        auto = AnalysisService(store, "a", lambda: session, Options(fps=2.0, gallery_preset="auto"))
        got = auto.analyze(Source.file(class_video))
        assert got.status == "stored", got.error
        stored = store.transaction(lambda s: detection_settings(s, got.media_id), write=False)
        assert stored is not None and stored.requested == "auto" and stored.probe_faces == 3
        assert stored == detection.choose("auto", None, 320, 240, 3)
        assert stored.preset == "gallery" and stored.min_face_size == detection.gallery_min_face(320, 240, 3)

        huge = AnalysisService(store, "b", lambda: session, Options(min_face_size=500))
        still = huge.analyze(Source.file(multi_face_jpg))
        assert still.status == "stored" and still.n_faces == 0, "the minimum face size reached the detector"
        kept = store.transaction(lambda s: detection_settings(s, still.media_id), write=False)
        assert kept == DetectionSettings("custom", "custom", 500)
        plain = AnalysisService(store, "c", lambda: session).analyze(Source.file(multi_face_jpg))
        assert plain.n_faces > 0
        assert session.detector.config.min_face_size == 40, "the shared session is left as it was"
    finally:
        store.close()


def test_the_cli_hands_the_settings_to_the_workers(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from affectlab import cli, distribute

    seen = []

    def fake_many(job, files, **kwargs):
        seen.append(job.options)
        return []

    monkeypatch.setattr(distribute, "analyze_many", fake_many)
    monkeypatch.setenv("AFFECTLAB_DATA_DIR", str(tmp_path))
    for name in ("a.jpg", "b.jpg"):
        (tmp_path / name).write_bytes(b"x")
    args = [
        "analyze",
        str(tmp_path / "a.jpg"),
        str(tmp_path / "b.jpg"),
        "--study",
        "s",
        "--workers",
        "2",
        "--gallery-preset",
        "auto",
        "--min-face-size",
        "24",
        "--weights-dir",
        str(tmp_path),
    ]
    cli.main(args)
    assert [(o.gallery_preset, o.min_face_size) for o in seen] == [("auto", 24)]
    with pytest.raises(SystemExit):
        cli.build_parser().parse_args(["analyze", "x", "--study", "s", "--min-face-size", "0"])


def test_range_workers_open_their_models_with_the_files_settings() -> None:
    """A long video cut over range workers: each worker loads its detector from the session's opener, which carries
    the file's minimum face size too."""
    import functools

    from models.analysis import AnalysisSession, open_models
    from models.faces import FaceDetector

    opener = functools.partial(open_models, "m", "/w", device="cpu", min_face_size=40, detect_max_side=None)
    session = AnalysisSession(detector=FaceDetector(), recognizer=None, opener=opener)  # type: ignore[arg-type]
    assert session.with_detection(40, None) is session
    small = session.with_detection(18, None)
    assert small.detector.config.min_face_size == 18 and session.detector.config.min_face_size == 40
    assert isinstance(small.opener, functools.partial)
    assert small.opener.keywords["min_face_size"] == 18 and small.opener.args == ("m", "/w")
