"""Storage bench: bytes per stored video face, today's layout beside the compact one, and what compact features change.

A synthetic 16-student gallery recording (the students of ``bench_gallery.py``: real faces from the test data,
1280x720, 4x4 tiles) is analysed twice through the product path (``affectlab.analysis.AnalysisService``, the
default session: detection every 2nd frame, 5 fps sampling, the recording kept), with random-weight models in the
published formats (emotion EfficientNet-B0 and the engagement attention model, no inference faked):

- before: the layout of revision 0005: every crop stored as PNG, features float32 (``keep_video_crops`` and
  ``feature_codec='float32'``);
- rows: crops re-cut from the kept recording, features compact (uint8, per-vector minimum and step) in the faces'
  rows (the defaults before revision 0029);
- after: the defaults: as rows, but the finished video's features in one file beside the recording
  (:mod:`db.feature_store`).

Printed side by side: database growth per face (SQLite pages in use), of it crops, features and prediction
probabilities, the features file, the store beyond the media file per face, extrapolated to a 60-minute 16-student
lecture at 5 fps (288,000 faces), and `db compact --drop-features` on the after store. Then what compact features
change, on the same faces: tracks and persons (face to track and to person, equal or not), engagement per track
(max |score difference|, labels equal), the emotion head on the stored features (what fine-tuning fits: top class
agreement, max |probability difference|), that re-cut crops are pixel-equal to the stored ones, and the imagefolder
export's time per face from stored crops and from re-cut ones. ``--synthetic N`` stores N faces through
``store_chunk`` (no inference) and prints the database growth while the video is analysed and once it is finished.

    PYTHONPATH=. .venv/bin/python bench/bench_storage.py [--seconds 12]
"""

from __future__ import annotations

import argparse
import shutil
import sqlite3
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

LECTURE_FACES = 16 * 5 * 3600


def db_used_bytes(path: Path) -> int:
    """Bytes of the SQLite database's pages in use (file pages minus free pages), after a checkpoint."""
    con = sqlite3.connect(path)
    try:
        con.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        page = con.execute("PRAGMA page_size").fetchone()[0]
        count = con.execute("PRAGMA page_count").fetchone()[0]
        free = con.execute("PRAGMA freelist_count").fetchone()[0]
        return int(page * (count - free))
    finally:
        con.close()


def column_bytes(path: Path, sql: str) -> int:
    """The total of a ``SELECT sum(length(...))`` query."""
    con = sqlite3.connect(path)
    try:
        return int(con.execute(sql).fetchone()[0] or 0)
    finally:
        con.close()


PERSONS_SQL = (
    "SELECT t.track_index, p.person_index FROM tracks t JOIN person_tracks pt ON pt.track_id = t.id "
    "JOIN persons p ON p.id = pt.person_id"
)


def column_rows(path: Path, sql: str) -> list[tuple]:
    """The rows of a query."""
    con = sqlite3.connect(path)
    try:
        return con.execute(sql).fetchall()
    finally:
        con.close()


def make_video(folder: Path, seconds: float) -> Path:
    """The gallery recording at 10 fps (``bench_gallery``'s students and tiles)."""
    from bench.bench_gallery import H, W, layout, students, tile_rect
    from models.faces import DetectorConfig, FaceDetector
    from tests.videos import background, write_video

    pats = students(FaceDetector(DetectorConfig(min_face_size=40, max_side=None)))
    bg = background(W, H)
    fps = 10.0

    def frames():
        for i in range(int(seconds * fps)):
            img = bg.copy()
            for s, k in layout(i / fps):
                x1, y1, x2, y2 = tile_rect(k)
                img[y1:y2, x1:x2] = pats[s]
            yield img

    return write_video(folder / "gallery.mp4", frames(), fps=fps)


def weights(folder: Path) -> Path:
    """Random-weight emotion and engagement models in the published formats."""
    from models.engagement import ENGAGEMENT_MODEL
    from models.weights import weights_path
    from tests.checkpoints import install_random_weights
    from tests.test_engagement import random_keras_weights, write_keras_h5

    install_random_weights(["enet_b0_8_best_vgaf"], folder, seed=3)
    write_keras_h5(Path(weights_path(ENGAGEMENT_MODEL, folder)), random_keras_weights(0))
    return folder


def synthetic(n_faces: int) -> None:
    """Database bytes per video face of the compact layout, stored through ``store_chunk`` (no inference), per page
    size: 16 faces per frame, 1280-d features shaped like pooled EfficientNet ones, no crops (re-cut)."""
    import dataclasses

    import db.engine as engine_mod
    from db.ingest import MediaInfo
    from db.services import LabelStore
    from tests.pg import fake_results

    rng = np.random.default_rng(0)
    for page in (4096, 16384):
        engine_mod.SQLITE_PAGE_SIZE = page
        with tempfile.TemporaryDirectory() as tmp:
            db = Path(tmp) / "s.sqlite3"
            store = LabelStore(f"sqlite:///{db}", data_dir=Path(tmp))
            store.upgrade()
            empty = db_used_bytes(db)
            info = MediaInfo(kind="video", width=1280, height=720, duration_s=3600.0, fps=25.0)
            state = store.ingest.begin_video("s", b"x" * 1000, "lecture.mp4", info, keep_file=True)
            boxes = [(80.0 * k, 40.0, 80.0 * k + 104, 144.0) for k in range(16)]
            frame = 0
            while frame * 16 < n_faces:
                results = []
                for fr in range(frame, frame + 150):
                    for r in fake_results("lecture.mp4", boxes, ["Neutral"] * 16, feature_dim=1280, seed=fr):
                        feats = np.abs(rng.normal(0.3, 0.4, 1280)).astype(np.float32)
                        pred = dataclasses.replace(r.prediction, features=feats)
                        results.append(dataclasses.replace(r, frame=fr * 5, time_s=fr * 0.2, prediction=pred))
                store.ingest.store_chunk(
                    state.media_id,
                    results,
                    until_s=(frame + 149) * 0.2,
                    until_frame=(frame + 149) * 5,
                    samples=frame + 150,
                )
                frame += 150
            n = frame * 16
            rows = db_used_bytes(db) - empty  # unfinished: the features in the database (pending, as rows were)
            store.ingest.finish_video(state.media_id, {}, [], duration_s=3600.0, fps=25.0, width=1280, height=720)
            grown = db_used_bytes(db) - empty  # finished: the features in the recording's file (db.feature_store)
            file = sum(p.stat().st_size for p in Path(tmp).rglob("*.features.npy"))
            print(
                f"synthetic, {n} faces, SQLite page {page} B: database growth {rows / n:.0f} bytes per face with "
                f"the features in the database, {grown / n:.0f} with them in the recording's file "
                f"({file / n:.0f} bytes per face there); per 60-min 16-student lecture: database "
                f"{rows / n * LECTURE_FACES / 1e6:.0f} -> "
                f"{grown / n * LECTURE_FACES / 1e6:.0f} MB, store beyond the media file "
                f"{(grown + file) / n * LECTURE_FACES / 1e6:.0f} MB"
            )
            store.close()


def effects(n: int = 2000) -> None:
    """What compact features change for the emotion head and the engagement model (random weights in the published
    layouts), on feature vectors shaped like pooled EfficientNet ones (non-negative, smooth)."""
    from db.codecs import features_from_bytes, features_to_bytes
    from models.engagement import EngagementModel
    from tests.test_engagement import random_keras_weights, write_keras_h5
    from tests.videos import random_recognizer

    rng = np.random.default_rng(1)
    base = np.abs(rng.normal(0.3, 0.4, (1, 1280)))
    f32 = (base + np.abs(rng.normal(0, 0.3, (n, 1280)))).astype(np.float32)
    u8 = np.stack([features_from_bytes(features_to_bytes(v)[0], v.size) for v in f32])
    rec = random_recognizer()
    pb = np.stack([p.probs for p in rec.classify(f32)])
    pa = np.stack([p.probs for p in rec.classify(u8)])
    print(
        f"{n} feature vectors: max |error| {np.abs(f32 - u8).max():.2e} (range {np.ptp(f32, axis=1).mean():.2f}); "
        f"emotion head: top class equal {100 * np.mean(pb.argmax(1) == pa.argmax(1)):.2f} %, "
        f"max |probability difference| {np.abs(pb - pa).max():.2e}"
    )
    with tempfile.TemporaryDirectory() as t:
        eng = EngagementModel.from_h5(write_keras_h5(Path(t) / "e.h5", random_keras_weights(0)))
        diffs, same = [], []
        for k in range(n // 200):
            part = slice(k * 200, (k + 1) * 200)
            times = [i * 0.2 for i in range(200)]
            a, b = eng.score_sequence(f32[part], times), eng.score_sequence(u8[part], times)
            assert a is not None and b is not None
            diffs.append(abs(a.score - b.score))
            same.append(a.label == b.label)
        print(
            f"engagement, {len(diffs)} tracks of 200 faces: max |score difference| {max(diffs):.2e}, "
            f"labels equal {all(same)}"
        )


def analyse(tmp: Path, name: str, codec: str, keep: bool, video: Path, session: Any, *, in_rows: bool) -> Any:
    """The recording analysed into a new store (``in_rows``: its features kept in the faces' rows, as before
    :mod:`db.feature_store`); the store and its bytes per face."""
    from affectlab.analysis import AnalysisService, Options, Source
    from db import feature_store
    from db.services import LabelStore

    db = tmp / f"{name}.sqlite3"
    store = LabelStore(f"sqlite:///{db}", data_dir=tmp / name, feature_codec=codec)
    store.upgrade()
    store.upkeep.set_keep_video_crops("lecture", keep)
    empty = db_used_bytes(db)
    bind = feature_store.bind
    if in_rows:  # sessions without a media root keep the features in rows (the layout before revision 0029)
        feature_store.bind = lambda s, _root: bind(s, None)  # type: ignore[assignment]
    try:
        t0 = time.perf_counter()
        service = AnalysisService(store, "lecture", lambda: session, Options(fps=5.0, keep_file=True))
        out = service.analyze(Source("lecture.mp4", path=video))
        took = time.perf_counter() - t0
    finally:
        feature_store.bind = bind
    n = out.n_faces
    files = [p for p in (tmp / name / "media").rglob("*") if p.is_file()]
    feats = sum(p.stat().st_size for p in files if p.name.endswith(feature_store.SUFFIX))
    return store, {
        "faces": n,
        "db": (db_used_bytes(db) - empty) / n,
        "crops": column_bytes(db, "SELECT sum(length(crop_png)) FROM faces") / n,
        "features": column_bytes(db, "SELECT sum(length(features)) FROM faces") / n,
        "pending": column_bytes(db, "SELECT sum(length(features)) FROM pending_features") / n,
        "file": feats / n,
        "probs": column_bytes(db, "SELECT sum(length(probs)) FROM predictions") / n,
        "media": sum(p.stat().st_size for p in files) - feats,
        "took": took,
    }


def print_sizes(sizes: dict[str, dict[str, float]], seconds: float) -> None:
    """The bytes per face of the three layouts, side by side."""
    b, r, a = sizes["before"], sizes["rows"], sizes["after"]
    print(
        f"gallery 1280x720, 16 students, {seconds:g} s analysed at 5 fps: {int(a['faces'])} faces "
        f"(analysis {b['took']:.0f} / {r['took']:.0f} / {a['took']:.0f} s); recording {a['media'] / 1e6:.2f} MB kept"
    )
    print("before: revision 0005 (crops and float32 features stored); rows: compact features in the faces' rows;")
    print("after: the features of the finished video in its file beside the recording (db.feature_store)")
    print(f"{'bytes per video face':<44}{'before':>10}{'rows':>10}{'after':>10}")
    for key, label in (
        ("db", "database growth (pages in use)"),
        ("crops", "  of it: PNG crops"),
        ("features", "  of it: features in the faces' rows"),
        ("pending", "  of it: pending features"),
        ("probs", "  of it: prediction probabilities (JSON)"),
        ("file", "features file beside the recording"),
    ):
        print(f"{label:<44}{b[key]:>10.0f}{r[key]:>10.0f}{a[key]:>10.0f}")
    total = {k: v["db"] + v["file"] for k, v in sizes.items()}
    lec_db = {k: v["db"] * LECTURE_FACES / 1e6 for k, v in sizes.items()}
    lec_all = {k: v * LECTURE_FACES / 1e6 for k, v in total.items()}
    for label, row, fmt in (
        ("store beyond the media file", total, ".0f"),
        ("60-min lecture (288,000 faces): database, MB", lec_db, ".0f"),
        ("60-min lecture: store beyond the media, MB", lec_all, ".0f"),
    ):
        print(f"{label:<44}" + "".join(f"{row[k]:>10{fmt}}" for k in ("before", "rows", "after")))


def main() -> int:
    """Runs the bench."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=12.0)
    ap.add_argument("--synthetic", type=int, default=0, help="only the storage path: this many faces, no inference")
    args = ap.parse_args()
    if args.synthetic:
        synthetic(args.synthetic)
        effects()
        return 0
    from db.codecs import FEATURES_F32, decode_png, features_from_bytes, features_to_bytes
    from models.analysis import AnalysisSession

    tmp = Path(tempfile.mkdtemp(prefix="bench-storage-"))
    try:
        video = make_video(tmp, args.seconds)
        session = AnalysisSession.open("enet_b0_8_best_vgaf", weights(tmp / "weights"))
        assert session.engagement is not None
        stores: dict[str, Any] = {}
        sizes: dict[str, dict[str, float]] = {}
        for name, codec, keep in (("before", FEATURES_F32, True), ("rows", "u8", False), ("after", "u8", False)):
            stores[name], sizes[name] = analyse(tmp, name, codec, keep, video, session, in_rows=name != "after")
        print_sizes(sizes, args.seconds)

        # What compact features change, on the same faces (the analysis is deterministic: same boxes).
        fb, fa = stores["before"].recordings.faces("lecture"), stores["after"].recordings.faces("lecture")
        kb = {(f.frame, f.box): f for f in fb}
        ka = {(f.frame, f.box): f for f in fa}
        same = kb.keys() == ka.keys()
        track_pairs = {(kb[k].track_index, ka[k].track_index) for k in kb if k in ka}
        tracks_equal = len(track_pairs) == len({t for t, _ in track_pairs}) == len({t for _, t in track_pairs})
        pb_of = dict(column_rows(tmp / "before.sqlite3", PERSONS_SQL))
        pa_of = dict(column_rows(tmp / "after.sqlite3", PERSONS_SQL))
        person_pairs = {(pb_of.get(kb[k].track_index), pa_of.get(ka[k].track_index)) for k in kb if k in ka}
        persons_equal = len(person_pairs) == len({p for p, _ in person_pairs}) == len({p for _, p in person_pairs})
        eng_b = {
            t.track_index: t
            for t in stores["before"].recordings.tracks(stores["before"].recordings.media("lecture")[0].id)
        }
        eng_a = {
            t.track_index: t
            for t in stores["after"].recordings.tracks(stores["after"].recordings.media("lecture")[0].id)
        }
        diffs = [
            abs((eng_b[tb].engagement_score or 0) - (eng_a[ta].engagement_score or 0))
            for tb, ta in track_pairs
            if tb in eng_b and ta in eng_a
        ]
        labels_eq = all(eng_b[tb].engagement_label == eng_a[ta].engagement_label for tb, ta in track_pairs)
        print(
            f"same faces: {same}; face->track equal up to numbering: {tracks_equal}; face->person equal: "
            f"{persons_equal}; engagement per track: max |score difference| {max(diffs, default=0):.2e}, "
            f"labels equal: {labels_eq}"
        )
        # The emotion head on float32 vs compact features of the same faces (what fine-tuning fits a head on).
        ids = [f.face_id for f in fb]
        raw = column_rows(tmp / "before.sqlite3", "SELECT id, features, feature_dim FROM faces ORDER BY id")
        f32 = np.stack([features_from_bytes(bytes(d), int(n)) for _, d, n in raw])
        u8 = np.stack([features_from_bytes(features_to_bytes(v)[0], v.size) for v in f32])
        pb = np.stack([p.probs for p in session.recognizer.classify(f32)])
        pa = np.stack([p.probs for p in session.recognizer.classify(u8)])
        agree = float(np.mean(pb.argmax(1) == pa.argmax(1)))
        print(
            f"emotion head on compact features ({len(ids)} faces): top class equal {100 * agree:.2f} %, "
            f"max |probability difference| {np.abs(pb - pa).max():.2e}; feature error max "
            f"{np.abs(f32 - u8).max():.2e} (values up to {np.abs(f32).max():.2f})"
        )
        # Re-cut crops equal the stored ones.
        cb = stores["before"].recordings.face_crops(ids[:400])
        ca = stores["after"].recordings.face_crops([ka[(f.frame, f.box)].face_id for f in fb[:400]])
        equal = sum(
            np.array_equal(decode_png(cb[f.face_id]), decode_png(ca[ka[(f.frame, f.box)].face_id])) for f in fb[:400]
        )
        print(f"re-cut crops pixel-equal to the stored ones: {equal} of {min(400, len(fb))}")
        # The imagefolder export: stored crops (before) vs re-cut ones, each recording decoded once (after).
        took_export = {}
        for name, store in stores.items():
            t0 = time.perf_counter()
            rep_x = store.exports.export("lecture", "imagefolder", tmp / f"{name}.zip")
            took_export[name] = (time.perf_counter() - t0) / max(rep_x.n_faces, 1)
        print(
            f"imagefolder export: {1000 * took_export['before']:.1f} ms per face from stored crops, "
            f"{1000 * took_export['after']:.1f} ms per face re-cut from the recording "
            f"(100,000 faces: {took_export['before'] * 1e5 / 60:.0f} / {took_export['after'] * 1e5 / 60:.0f} min)"
        )
        t0 = time.perf_counter()
        rep = stores["after"].upkeep.compact("lecture", drop_features=True, vacuum=True)
        dropped = db_used_bytes(tmp / "after.sqlite3") / sizes["after"]["faces"]
        print(
            f"after `db compact --drop-features --vacuum` ({time.perf_counter() - t0:.1f} s, "
            f"{rep.features_dropped} features dropped): {dropped:.0f} bytes per face in the database "
            f"(schema included), {dropped * LECTURE_FACES / 1e6:.0f} MB per lecture"
        )
        for s in stores.values():
            s.close()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
