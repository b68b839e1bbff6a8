"""Idempotent ingest of in-memory results and of analysis JSON, on SQLite and PostgreSQL."""

from __future__ import annotations

import json

import numpy as np
import pytest

from db.codecs import decode_png
from db.errors import AnalysisFormatError
from db.services import LabelStore
from tests.pg import fake_results, png_bytes, tracks_of

BOXES = [(10.0, 12.0, 50.0, 64.0), (80.0, 10.0, 120.0, 58.0)]


def test_same_file_twice_is_one_media_row_and_another_model_adds_predictions(store):
    data = png_bytes(1)
    first = store.ingest.ingest_results("s", data, "a.png", fake_results("a.png", BOXES, ["Happiness", "Fear"]))
    assert (first.media_new, first.faces_new, first.predictions_new, first.crops_stored) == (1, 2, 2, 2)

    again = store.ingest.ingest_results(
        "s", data, "renamed.png", fake_results("renamed.png", BOXES, ["Happiness", "Fear"])
    )
    assert (again.media_new, again.media_existing, again.faces_new, again.faces_reused) == (0, 1, 0, 2)
    assert (again.predictions_new, again.predictions_existing, again.crops_stored) == (0, 2, 0)

    # Another model, boxes off by a rounding error (JSON keeps 2 decimals): same faces, new predictions.
    nudged = [tuple(v + 0.004 for v in b) for b in BOXES]
    other = fake_results("a.png", nudged, ["Neutral", "Fear"], model="enet_b2_8", weights_hash="eed81e63", seed=3)
    third = store.ingest.ingest_results("s", data, "a.png", other)
    assert (third.faces_new, third.faces_reused, third.predictions_new) == (0, 2, 2)

    media = store.recordings.media("s")
    assert len(media) == 1 and media[0].filename == "a.png" and media[0].n_faces == 2
    assert (media[0].width, media[0].height, media[0].kind) == (160, 120, "image")
    faces = store.recordings.faces("s")
    preds = store.recordings.predictions(faces[0].face_id)
    assert [p["model"] for p in preds] == ["enet_b0_8_best_vgaf", "enet_b2_8"]
    assert preds[0]["label"] == "Happiness" and abs(preds[0]["confidence"] - 0.6) < 1e-6
    # The export follows the study's most used model run; both ran on two faces, the latest wins ties.
    assert faces[0].model == "enet_b2_8" and faces[0].model_label == "Neutral"
    assert store.recordings.faces("s", model="enet_b0_8_best_vgaf")[0].model_label == "Happiness"
    # Same bytes in another study are another media row.
    store.ingest.ingest_results("t", data, "a.png", fake_results("a.png", BOXES[:1], ["Fear"]))
    assert len(store.recordings.media("t")) == 1 and len(store.recordings.media("s")) == 1


def test_crops_and_features_round_trip(store):
    results = fake_results("a.png", BOXES, ["Happiness", "Fear"], feature_dim=32)
    store.ingest.ingest_results("s", png_bytes(2), "a.png", results)
    face = store.recordings.faces("s")[0]
    assert face.has_crop and face.feature_model == "enet_b0_8_best_vgaf"
    np.testing.assert_array_equal(decode_png(store.recordings.face_crop(face.face_id)), results[0].crop)
    # Compact features (db/codecs.py): every value within half a step (1/510 of the vector's range).
    want = np.asarray(results[0].prediction.features, dtype=np.float32)
    got = store.recordings.face_features(face.face_id)
    assert got is not None and got.dtype == np.float32
    assert np.abs(got - want).max() <= (want.max() - want.min()) / 510 * 1.001


def test_float32_features_round_trip_exactly(migrated_url):
    store = LabelStore(migrated_url, feature_codec="float32")
    try:
        results = fake_results("a.png", BOXES, ["Happiness", "Fear"], feature_dim=32)
        store.ingest.ingest_results("s", png_bytes(2), "a.png", results)
        face = store.recordings.faces("s")[0]
        np.testing.assert_array_equal(store.recordings.face_features(face.face_id), results[0].prediction.features)
    finally:
        store.close()


def test_features_only_mode_stores_no_crops(migrated_url, tmp_path):
    store = LabelStore(migrated_url, store_crops=False)
    try:
        rep = store.ingest.ingest_results(
            "s", png_bytes(3), "a.png", fake_results("a.png", BOXES, ["Happiness", "Fear"])
        )
        assert rep.crops_stored == 0 and rep.features_stored == 2
        face = store.recordings.faces("s")[0]
        assert store.recordings.face_crop(face.face_id) is None and not face.has_crop
        assert store.recordings.face_features(face.face_id) is not None
        assert store.exports.stats("s").counts["crops"] == 0
    finally:
        store.close()


def test_video_tracks_and_engagement_windows(store):
    results = fake_results(
        "v.mp4", BOXES * 2, ["Happiness", "Fear"] * 2, frames=[0, 0, 20, 20], tracks=[0, 1, 0, 1], fps=10.0
    )
    tracks = [
        {
            "track": 0,
            "n_faces": 2,
            "start_s": 0.0,
            "end_s": 2.0,
            "engagement": {
                "score": 0.7,
                "label": "Engaged",
                "windows": [
                    {"start_s": 0.0, "end_s": 1.0, "p_engaged": 0.9},
                    {"start_s": 1.0, "end_s": 2.0, "p_engaged": 0.2},
                ],
            },
        },
        {"track": 1, "n_faces": 2, "start_s": 0.0, "end_s": 2.0, "engagement": None},
    ]
    rep = store.ingest.ingest_results("s", png_bytes(4), "v.mp4", results, tracks_of(tracks))
    assert rep.tracks_new == 2 and rep.faces_new == 4
    media = store.recordings.media("s")[0]
    assert media.kind == "video"
    listed = store.recordings.tracks(media.id)
    assert [(t.track_index, t.engagement_score, len(t.windows)) for t in listed] == [(0, 0.7, 2), (1, None, 0)]
    by_frame = {(f.frame, f.track_index): f for f in store.recordings.faces("s")}
    assert by_frame[(0, 0)].model_engagement == 0.9  # window covering t = 0 s
    assert by_frame[(20, 0)].model_engagement == 0.2  # t = 2 s
    assert by_frame[(0, 1)].model_engagement is None
    # Re-ingest: nothing new.
    again = store.ingest.ingest_results("s", png_bytes(4), "v.mp4", results, tracks_of(tracks))
    assert (again.tracks_new, again.faces_new, again.predictions_new) == (0, 0, 0)


def _analysis(tmp_path, names, model="enet_b0_8_best_vgaf", whash="7219cfb0"):
    files, faces = [], []
    for i, name in enumerate(names):
        (tmp_path / name).write_bytes(png_bytes(10 + i))
        files.append({"file": name, "kind": "image", "width": 160, "height": 120, "n_faces": 2, "error": None})
        res = fake_results(name, BOXES, ["Sadness", "Surprise"], model=model, weights_hash=whash, seed=i)
        faces += [r.to_json() for r in res]
    return {"model": model, "weights_hash": whash, "labels": [], "files": files, "faces": faces}


def _fake_cutter(path, name, kind, frames, boxes):
    return [np.full((8, 8, 3), 7, dtype=np.uint8) for _ in boxes]


def test_ingest_analysis_json_is_idempotent(store, tmp_path):
    analysis = _analysis(tmp_path, ["a.png", "b.png"])
    rep = store.ingest.ingest_analysis("s", analysis, media_dirs=[tmp_path], cut_crops=_fake_cutter)
    assert (rep.media_new, rep.faces_new, rep.predictions_new, rep.crops_stored) == (2, 4, 4, 4)
    rep = store.ingest.ingest_analysis("s", analysis, media_dirs=[tmp_path], cut_crops=_fake_cutter)
    assert (rep.media_new, rep.faces_new, rep.predictions_new, rep.crops_stored) == (0, 0, 0, 0)
    other = _analysis(tmp_path, ["a.png", "b.png"], model="enet_b2_8", whash="eed81e63")
    rep = store.ingest.ingest_analysis("s", other, media_dirs=[tmp_path], cut_crops=_fake_cutter)
    assert (rep.media_existing, rep.faces_reused, rep.predictions_new) == (2, 4, 4)
    assert store.exports.stats("s").counts == {
        "media": 2,
        "faces": 4,
        "predictions": 8,
        "tracks": 0,
        "crops": 4,
        "features": 0,
        "annotations": 0,
        "annotators": 0,
        "corrected_faces": 0,
        "partial_media": 0,
        "partial_faces": 0,
    }


def test_ingest_analysis_missing_file_stores_nothing(store, tmp_path):
    analysis = _analysis(tmp_path, ["a.png", "b.png"])
    (tmp_path / "b.png").unlink()
    with pytest.raises(AnalysisFormatError, match=r"'b.png'.*--media-dir"):
        store.ingest.ingest_analysis("s", analysis, media_dirs=[tmp_path], cut_crops=_fake_cutter)
    assert store.recordings.studies() == []


def test_ingest_analysis_skips_failed_files_and_warns(store, tmp_path):
    analysis = _analysis(tmp_path, ["a.png"])
    analysis["files"].append({"file": "broken.jpg", "kind": "image", "n_faces": 0, "error": "cannot identify image"})
    rep = store.ingest.ingest_analysis("s", analysis, media_dirs=[tmp_path], cut_crops=None)
    assert rep.media_new == 1 and rep.crops_stored == 0
    assert any("broken.jpg" in w for w in rep.warnings)


def test_empty_crops_are_not_stored(store):
    results = fake_results("a.png", BOXES, ["Happiness", "Fear"])
    object.__setattr__(results[1], "crop", np.zeros((0, 5, 3), dtype=np.uint8))
    rep = store.ingest.ingest_results("s", png_bytes(1), "a.png", results)
    assert rep.crops_stored == 1 and rep.faces_new == 2


def test_cli_ingest_cuts_crops_with_the_pipeline_functions(tmp_path, monkeypatch, random_weights_dir):
    from db.cli import main
    from models.faces import crop_face
    from models.images import load_image

    analysis = _analysis(tmp_path, ["a.png"])
    (tmp_path / "analysis.json").write_text(json.dumps(analysis))
    monkeypatch.setenv("AFFECTLAB_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("AFFECTLAB_WEIGHTS_DIR", str(random_weights_dir))
    monkeypatch.delenv("DATABASE_URL", raising=False)
    assert main(["upgrade"]) == 0
    assert main(["ingest", str(tmp_path / "analysis.json"), "--study", "s"]) == 0
    store = LabelStore(f"sqlite:///{tmp_path / 'data' / 'affectlab.sqlite3'}")
    face = store.recordings.faces("s")[0]
    expected = crop_face(load_image(tmp_path / "a.png", "a.png"), face.box)
    np.testing.assert_array_equal(decode_png(store.recordings.face_crop(face.face_id)), expected)
    store.close()


def _write_mpeg4(path, n=10, size=(96, 64)):
    import av

    with av.open(str(path), "w") as c:
        st = c.add_stream("mpeg4", rate=10)
        st.width, st.height, st.pix_fmt = size[0], size[1], "yuv420p"
        for i in range(n):
            img = np.zeros((size[1], size[0], 3), dtype=np.uint8)
            img[:, :] = (20 * i, 255 - 20 * i, 100)
            for packet in st.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                c.mux(packet)
        for packet in st.encode():
            c.mux(packet)


def test_analysis_json_video_crops_are_cut_from_the_decoded_frames(store, tmp_path):
    from models.decode import iter_frames
    from models.faces import crop_face

    _write_mpeg4(tmp_path / "v.mp4")
    res = fake_results("v.mp4", [(8.0, 8.0, 40.0, 40.0)] * 2, ["Fear", "Fear"], frames=[2, 7], tracks=[0, 0])
    doc = {
        "model": "enet_b0_8_best_vgaf",
        "weights_hash": "7219cfb0",
        "labels": [],
        "files": [
            {
                "file": "v.mp4",
                "kind": "video",
                "width": 96,
                "height": 64,
                "n_faces": 2,
                "error": None,
                "duration_s": 1.0,
                "fps": 10.0,
            }
        ],
        "faces": [r.to_json() for r in res],
        "tracks": [{"track": 0, "n_faces": 2, "start_s": 0.2, "end_s": 0.7, "engagement": None}],
    }
    rep = store.ingest.ingest_analysis("s", doc, media_dirs=[tmp_path])
    assert rep.crops_stored == 2 and rep.tracks_new == 1 and not rep.warnings
    frames = {f.index: f.image for f in iter_frames(tmp_path / "v.mp4", "v.mp4", fps=None)}
    for face in store.recordings.faces("s"):
        expected = crop_face(frames[face.frame], face.box)
        np.testing.assert_array_equal(decode_png(store.recordings.face_crop(face.face_id)), expected)
    media = store.recordings.media("s")[0]
    assert (media.kind, media.fps, media.duration_s) == ("video", 10.0, 1.0)


def test_a_reused_prediction_is_marked_in_the_store(store, tmp_path):
    """A video face whose prediction was reused from the face it follows (the classifier's stride) is stored so,
    and listed so for Review; the faces classified are not."""
    import dataclasses

    results = fake_results("v.mp4", BOXES * 2, ["Happiness", "Fear"] * 2, frames=[0, 0, 1, 1], tracks=[0, 1, 0, 1])
    results = [
        dataclasses.replace(r, prediction=dataclasses.replace(r.prediction, reused=r.frame == 1))  # type: ignore[attr-defined]
        for r in results
    ]
    store.ingest.ingest_results("s", png_bytes(5), "v.mp4", results)
    got = {(f.frame, f.box[0]): f.model_reused for f in store.recordings.faces("s")}
    assert got == {(0, 10.0): False, (0, 80.0): False, (1, 10.0): True, (1, 80.0): True}
    # ... and exported so, by the column path and the whole-study frame alike; a vote does not change it
    import pandas as pd

    judged = next(f for f in store.recordings.faces("s") if f.frame == 1 and f.box[0] == 10.0)
    store.review.correct_face(judged.face_id, "ann", label="Sadness")
    want = {(0, 10.0): False, (0, 80.0): False, (1, 10.0): True, (1, 80.0): True}
    for fmt in ("csv", "parquet"):
        out = tmp_path / f"faces.{fmt}"
        store.exports.export("s", fmt, out)
        df = pd.read_csv(out) if fmt == "csv" else pd.read_parquet(out)
        assert {(int(r.frame), float(r.x1)): bool(r.model_reused) for r in df.itertuples()} == want, fmt
