"""``python -m db ingest`` computes each face's backbone features, as the web app's path stores them."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from db.cli import main
from db.services import LabelStore

MODEL = "enet_b0_8_best_vgaf"


@pytest.fixture(scope="module")
def analysed(random_weights_dir: Path, multi_face_jpg: Path, tmp_path_factory: pytest.TempPathFactory):
    """The ``models analyze --json`` document of multi_face.jpg (copied into a folder of its own), and the features
    the in-memory pipeline gives its faces (what the web app stores)."""
    from models.analysis import AnalysisSession
    from models.pipeline import analyze_image

    folder = tmp_path_factory.mktemp("analysed")
    image = folder / "multi_face.jpg"
    shutil.copy(multi_face_jpg, image)
    session = AnalysisSession.open(MODEL, random_weights_dir)
    doc, failed = session.analyze_paths([image])
    assert not failed and len(doc["faces"]) == 5
    path = folder / "analysis.json"
    path.write_text(json.dumps(doc, indent=2))  # exactly what `python -m models analyze --json` prints
    result = analyze_image(image, str(image), session.detector, session.recognizer, keep_crops=True)
    web = {tuple(round(float(v), 2) for v in r.face.box): r.prediction.features for r in result.faces}
    return path, web


@pytest.fixture
def cli_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, migrated_url: str, random_weights_dir: Path) -> str:
    monkeypatch.setenv("AFFECTLAB_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("DATABASE_URL", migrated_url)
    monkeypatch.setenv("AFFECTLAB_WEIGHTS_DIR", str(random_weights_dir))
    monkeypatch.delenv("AFFECTLAB_STORE_CROPS", raising=False)
    return migrated_url


def test_ingest_stores_features_of_every_face_and_the_features_export_works(analysed, cli_env, tmp_path, capsys):
    path, web = analysed
    assert main(["ingest", str(path), "--study", "s"]) == 0
    out, err = capsys.readouterr()
    assert "faces 5 new" in out and "5 crops, 5 features" in out
    assert "warning" not in err  # the JSON's weights hash is the one that computed the features
    store = LabelStore(cli_env)
    try:
        faces = store.recordings.faces("s")
        assert len(faces) == 5
        for face in faces:
            assert face.feature_model == MODEL and face.has_crop
            feats = store.recordings.face_features(face.face_id)
            assert feats is not None and feats.shape == (1280,)
            # The same numbers the web app stores from the in-memory results of the same file.
            expected = web[tuple(round(float(v), 2) for v in face.box)]
            # Stored compactly (db/codecs.py): within half a step (1/510 of the vector's range) of those numbers.
            half_step = (float(expected.max()) - float(expected.min())) / 510
            np.testing.assert_allclose(feats, expected, atol=half_step * 1.001 + 1e-4, rtol=0)
    finally:
        store.close()
    # Ingesting again adds nothing (the features are there).
    assert main(["ingest", str(path), "--study", "s"]) == 0
    again = capsys.readouterr().out
    assert "faces 0 new, 5 reused" in again and "0 crops, 0 features" in again
    # The batch workflow can now feed fine-tuning.
    npz = tmp_path / "features.npz"
    assert main(["export", "--study", "s", "--format", "features", "--out", str(npz)]) == 0
    data = np.load(npz)
    assert data["X"].shape == (5, 1280) and str(data["feature_model"]) == MODEL


def test_features_only_mode_stores_features_and_no_crops(analysed, cli_env, monkeypatch, capsys):
    path, _ = analysed
    monkeypatch.setenv("AFFECTLAB_STORE_CROPS", "0")
    assert main(["ingest", str(path), "--study", "s"]) == 0
    assert "0 crops, 5 features" in capsys.readouterr().out
    store = LabelStore(cli_env)
    try:
        faces = store.recordings.faces("s")
        assert len(faces) == 5
        assert all(not f.has_crop and store.recordings.face_crop(f.face_id) is None for f in faces)
        assert all(store.recordings.face_features(f.face_id).shape == (1280,) for f in faces)
        assert store.exports.stats("s").counts["crops"] == 0 and store.exports.stats("s").counts["features"] == 5
    finally:
        store.close()


def test_missing_weights_is_a_setup_error_that_stores_nothing(analysed, cli_env, monkeypatch, tmp_path, capsys):
    path, _ = analysed
    monkeypatch.setenv("AFFECTLAB_WEIGHTS_DIR", str(tmp_path / "no-weights"))
    assert main(["ingest", str(path), "--study", "s"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: ")
    assert f"python -m models fetch {MODEL}" in err and "--no-features" in err
    store = LabelStore(cli_env)
    try:
        assert store.recordings.studies() == []
        # --no-features: the faces and crops are stored, without features.
        assert main(["ingest", str(path), "--study", "s", "--no-features"]) == 0
        assert "5 crops, 0 features" in capsys.readouterr().out
        assert store.exports.stats("s").counts["features"] == 0
    finally:
        store.close()


def test_undecodable_media_is_a_warning_naming_the_file(analysed, cli_env, tmp_path, capsys):
    path, _ = analysed
    doc = json.loads(path.read_text())
    for item in doc["files"] + doc["faces"]:  # names relative to the JSON's folder, where the file is now garbage
        item["file"] = "multi_face.jpg"
    (tmp_path / "multi_face.jpg").write_text("not an image any more")
    (tmp_path / "analysis.json").write_text(json.dumps(doc))
    assert main(["ingest", str(tmp_path / "analysis.json"), "--study", "s"]) == 0
    out, err = capsys.readouterr()
    assert "faces 5 new" in out and "0 crops, 0 features" in out
    assert "multi_face.jpg: crops and features not stored, the file could not be decoded again" in err


def test_features_from_other_weights_are_flagged(store, tmp_path):
    from tests.pg import fake_results, png_bytes

    calls = []

    def extractor(model, crops):
        calls.append((model, len(crops)))
        return np.ones((len(crops), 4), np.float32), "other-hash"

    (tmp_path / "a.png").write_bytes(png_bytes(1))
    res = fake_results("a.png", [(10.0, 10.0, 50.0, 60.0), (60.0, 10.0, 100.0, 60.0)], ["Fear", "Fear"])
    doc = {
        "model": MODEL,
        "weights_hash": "7219cfb0",
        "labels": [],
        "faces": [r.to_json() for r in res],
        "files": [{"file": "a.png", "kind": "image", "width": 160, "height": 120, "n_faces": 2, "error": None}],
    }
    rep = store.ingest.ingest_analysis("s", doc, media_dirs=[tmp_path], features=extractor)
    assert calls == [(MODEL, 2)] and rep.features_stored == 2
    assert any("a.png" in w and "other-hash" in w and "analyse the media again" in w for w in rep.warnings)
    np.testing.assert_array_equal(
        store.recordings.face_features(store.recordings.faces("s")[0].face_id), np.ones(4, np.float32)
    )
