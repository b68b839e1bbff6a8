"""Video crops re-cut from the kept recording are pixel-equal to the stored ones; compact stores and the migration."""

from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path

import numpy as np
import pytest
from sqlalchemy import select

from db.codecs import decode_png, features_codec
from db.migrate import downgrade, upgrade
from db.schema import Face, Media
from db.services import LabelStore
from models.decode import FrameReader, frames_at
from tests.testdata import pyfeat_file

REAL_VIDEOS = ["WolfgangLanger_Pexels.mp4", "single_face.mp4", "face_noface.mov"]


@pytest.mark.parametrize("name", REAL_VIDEOS)
def test_frames_at_gives_the_analysis_frames_pixel_equal(name: str) -> None:
    path = pyfeat_file(name)
    with FrameReader(path, fps=5.0) as reader:
        frames = [(f.time_s, f.image) for f in reader]
    assert len(frames) >= 8
    # Every third sampled frame, and one far ahead of the rest (decoding seeks there with a short gap).
    chosen = frames[::3] + ([frames[-1]] if (len(frames) - 1) % 3 else [])
    got = list(frames_at(path, [t for t, _ in chosen], seek_gap_s=0.5))
    assert [t for t, _ in got] == [t for t, _ in chosen]
    for (t, want), (_, image) in zip(chosen, got, strict=True):
        assert image is not None, f"{name}: no frame at {t}"
        np.testing.assert_array_equal(image, want)
    # A time between frames that no frame lies near gives None, not a wrong frame.
    assert next(iter(frames_at(path, [frames[-1][0] + 10.0])))[1] is None


@pytest.fixture(scope="module")
def analysed_store(tmp_path_factory: pytest.TempPathFactory, random_weights_dir: Path):
    """A real video analysed through the product path twice: a study that keeps its crops, one that re-cuts them."""
    from affectlab.analysis import AnalysisService, Options, Source
    from models.analysis import AnalysisSession

    tmp = tmp_path_factory.mktemp("recut")
    video = tmp / "lecture.mp4"
    shutil.copy(pyfeat_file("single_face.mp4"), video)
    store = LabelStore(f"sqlite:///{tmp / 'a.sqlite3'}", data_dir=tmp / "data")
    store.upgrade()
    session = AnalysisSession.open("enet_b0_8_best_vgaf", random_weights_dir)
    store.upkeep.set_keep_video_crops("kept", True)  # a new study, set before its first analysis
    for study in ("kept", "recut"):
        service = AnalysisService(store, study, lambda: session, Options(fps=5.0, keep_file=True))
        out = service.analyze(Source("lecture.mp4", path=video))
        assert out.status == "stored" and out.n_faces >= 8
    yield store
    store.close()


def _by_key(store: LabelStore, study: str) -> dict:
    return {(f.frame, round(f.box[0], 3), round(f.box[1], 3)): f for f in store.recordings.faces(study)}


def test_recut_crops_equal_the_stored_ones_and_the_tables_are_equal(analysed_store: LabelStore) -> None:
    store = analysed_store
    kept, recut = _by_key(store, "kept"), _by_key(store, "recut")
    assert kept.keys() == recut.keys()
    n_stored = store.transaction(
        lambda s: s.scalar(
            select(Face.id).join(Media).where(Media.filename == "lecture.mp4", Face.crop_png.is_not(None)).limit(1)
        ),
        write=False,
    )
    assert n_stored is not None  # the "kept" study stored its crops
    assert store.exports.stats("recut").counts["crops"] == len(recut)  # every face has a crop: re-cut
    a = store.recordings.face_crops([f.face_id for f in kept.values()])
    b = store.recordings.face_crops([f.face_id for f in recut.values()])
    assert len(a) == len(b) == len(kept)
    for key, f in kept.items():
        np.testing.assert_array_equal(decode_png(b[recut[key].face_id]), decode_png(a[f.face_id]))
    # The same results: labels, probabilities, tracks and engagement.
    for key, f in kept.items():
        g = recut[key]
        assert (f.model_label, f.model_confidence, f.has_crop) == (g.model_label, g.model_confidence, g.has_crop)
        assert (f.model_engagement, f.track_index) == (g.model_engagement, g.track_index)
    # One face on its own (the Review page's path) is re-cut too, and then served from the cache.
    fid = next(iter(recut.values())).face_id
    assert store.recordings.face_crop(fid) == b[fid] and len(store.crop_cache) > 0


def test_imagefolder_export_of_recut_crops(analysed_store: LabelStore, tmp_path: Path) -> None:
    import zipfile

    store = analysed_store
    faces = store.recordings.faces("recut")
    for f in faces[:6]:
        store.review.correct_face(f.face_id, "ann", label="Happiness")
    done: list[tuple[int, int]] = []
    rep = store.exports.export("recut", "imagefolder", tmp_path / "x.zip", progress=lambda d, t: done.append((d, t)))
    # Every labelled face (model labels included) is exported, its crop re-cut.
    assert rep.n_faces == len(faces) and done and done[-1] == (len(faces), len(faces))
    with zipfile.ZipFile(tmp_path / "x.zip") as zf:
        pngs = sorted(n for n in zf.namelist() if n.endswith(".png"))
        happy = [n for n in pngs if "/Happiness/" in n]
        assert len(pngs) == len(faces) and len(happy) >= 6
        assert decode_png(zf.read(pngs[0])).shape == (224, 224, 3)


def test_migration_and_compact_move_a_store_of_todays_layout(tmp_path: Path) -> None:
    """A study made with the old layout (float32 features, every crop stored) at revision 0005, upgraded and compacted:
    features compact, crops re-cut pixel-equal, tables equal."""
    from db.ingest import MediaInfo
    from models.faces import crop_face
    from tests.pg import fake_results

    video = tmp_path / "clip.mp4"
    shutil.copy(pyfeat_file("single_face.mp4"), video)
    url = f"sqlite:///{tmp_path / 'old.sqlite3'}"
    store = LabelStore(url, data_dir=tmp_path / "data", feature_codec="float32")
    store.upgrade()
    # Today's layout: crops cut from the analysis frames and stored, float32 features.
    with FrameReader(video, fps=5.0) as reader:
        frames = [(f.index, f.time_s, f.image) for f in reader]
    boxes = [(100.0 + i, 40.0, 260.5 + i, 230.25) for i in range(len(frames))]
    results = []
    for (index, t, image), box in zip(frames, boxes, strict=True):
        (r,) = fake_results("clip.mp4", [box], ["Happiness"], feature_dim=64, seed=index)
        results.append(dataclasses.replace(r, frame=index, time_s=t, crop=crop_face(image, box), track=None))
    store.upkeep.set_keep_video_crops("old", True)  # every crop stored, as today's code does
    store.ingest.ingest_results(
        "old", video, "clip.mp4", results, media_info=MediaInfo(kind="video", width=640, height=360), keep_file=True
    )
    before = store.recordings.faces("old")
    store.close()

    engine = LabelStore(url).engine
    downgrade(engine, "0005", media_root=tmp_path / "data" / "media")  # the video's features file back in rows
    with engine.begin() as conn:
        stored = {
            i: (bytes(c), bytes(f), d)
            for i, c, f, d in conn.exec_driver_sql("SELECT id, crop_png, features, feature_dim FROM faces")
        }
    assert len(stored) == len(frames) and all(c and len(f) == 4 * d for c, f, d in stored.values())
    upgrade(engine)
    store = LabelStore(url, data_dir=tmp_path / "data")
    try:
        feats = store.transaction(
            lambda s: {i: (bytes(f), d) for i, f, d in s.execute(select(Face.id, Face.features, Face.feature_dim))},
            write=False,
        )
        assert all(features_codec(f, d) == "u8" for f, d in feats.values())
        for i, (_, f32, _d) in stored.items():
            want = np.frombuffer(f32, dtype="<f4")
            got = store.recordings.face_features(i)
            assert got is not None and np.abs(got - want).max() <= (want.max() - want.min()) / 510 * 1.001
        rep = store.upkeep.compact("old")
        assert rep.crops_dropped == len(stored) and rep.crops_kept == 0
        left = store.transaction(
            lambda s: s.scalar(select(Face.id).where(Face.crop_png.is_not(None)).limit(1)), write=False
        )
        assert left is None
        crops = store.recordings.face_crops(list(stored))
        for i, (png, _, _) in stored.items():
            np.testing.assert_array_equal(decode_png(crops[i]), decode_png(png))
        after = store.recordings.faces("old")
        assert [(f.face_id, f.model_label, f.model_confidence, f.has_crop) for f in after] == [
            (f.face_id, f.model_label, f.model_confidence, f.has_crop) for f in before
        ]
        assert store.exports.stats("old").counts["crops"] == len(
            stored
        )  # the kept counts follow the compaction: re-cut
        rep = store.upkeep.compact("old", drop_features=True, vacuum=True)
        assert rep.features_dropped == len(stored) and store.recordings.face_features(next(iter(stored))) is None
        assert store.exports.stats("old").counts["features"] == 0
    finally:
        store.close()
