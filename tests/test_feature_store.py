"""Features of finished videos in one file per recording (db.feature_store): every reader, the migration, deletes.

The ``store`` fixture (tests/pg.py) runs each test on SQLite and on PostgreSQL.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from sqlalchemy import func, select

from db import feature_store
from db.ingest import MediaInfo
from db.migrate import downgrade, upgrade
from db.schema import Face, Media
from db.services import LabelStore
from tests.pg import fake_results

VIDEO = MediaInfo(kind="video", width=640, height=360, duration_s=10.0, fps=10.0)


@pytest.fixture
def store(migrated_url: str, tmp_path: Path) -> Iterator[LabelStore]:
    """The store on SQLite and on PostgreSQL, with feature files on (PostgreSQL keeps rows unless asked)."""
    s = LabelStore(migrated_url, data_dir=tmp_path / "data", feature_files=True)
    s.upgrade()
    try:
        yield s
    finally:
        s.close()


def _video(store: LabelStore, study: str, name: str, n: int, seed: int, *, dim: int = 16) -> list:
    boxes = [(10.0 + i, 20.0, 90.0 + i, 110.0) for i in range(n)]
    labels = ["Happiness", "Sadness", "Neutral"] * n
    results = fake_results(
        name, boxes, labels[:n], frames=list(range(n)), tracks=[i % 3 for i in range(n)], seed=seed, feature_dim=dim
    )
    store.ingest.ingest_results(study, f"{name}-{seed}".encode(), name, results, media_info=VIDEO)
    return results


def _still(store: LabelStore, study: str) -> list:
    results = fake_results("photo.jpg", [(1.0, 2.0, 50.0, 60.0), (60.0, 2.0, 110.0, 60.0)], ["Anger", "Fear"], seed=9)
    store.ingest.ingest_results(study, b"photo-bytes", "photo.jpg", results, media_info=MediaInfo(kind="image"))
    return results


def _rows(store: LabelStore) -> dict[int, tuple[bytes | None, str]]:
    stmt = select(Face.id, Face.features, Media.kind).join(Media, Face.media_id == Media.id).order_by(Face.id)
    return store.transaction(lambda s: {int(i): (f, k) for i, f, k in s.execute(stmt)}, write=False)


def test_a_finished_video_keeps_its_features_in_one_file_and_every_reader_reads_them(store: LabelStore) -> None:
    results = _video(store, "s", "lecture.mp4", 12, seed=1)
    _still(store, "s")
    rows = _rows(store)
    video = [i for i, (_, k) in rows.items() if k == "video"]
    still = [i for i, (_, k) in rows.items() if k == "image"]
    assert all(rows[i][0] == b"" for i in video)  # moved: the row says "in the file"
    assert all(rows[i][0] for i in still)  # a still keeps its features in its row
    files = list((store.media_root).rglob(f"*{feature_store.SUFFIX}"))
    assert len(files) == 1 and oct(files[0].stat().st_mode & 0o777) == oct(0o600)
    mid = store.transaction(lambda s: s.scalar(select(Media.id).where(Media.kind == "video")), write=False)
    assert store.transaction(lambda s: feature_store.verify(s, mid), write=False)
    # Every reader: one face, several faces, the counts.
    for fid, r in zip(video, results, strict=True):
        want = np.asarray(r.prediction.features, dtype=np.float32)
        got = store.recordings.face_features(fid)
        assert got is not None and np.abs(got - want).max() <= (want.max() - want.min()) / 510 * 1.001
    np.testing.assert_array_equal(
        store.ingest.features_of(video[::-1]), np.stack([store.recordings.face_features(i) for i in video[::-1]])
    )
    assert store.exports.stats("s").counts["features"] == len(rows)


def test_exports_are_byte_equal_with_features_in_rows_and_in_files(tmp_path: Path) -> None:
    """A study made by today's code; its database taken back to 0027 (rows) and up again (files): equal exports."""
    url = f"sqlite:///{tmp_path / 'm.sqlite3'}"
    root = tmp_path / "data" / "media"
    store = LabelStore(url, data_dir=tmp_path / "data")
    store.upgrade()
    _video(store, "s", "a.mp4", 15, seed=2)
    _video(store, "s", "b.mp4", 9, seed=3)
    _still(store, "s")
    for f in store.recordings.faces("s")[::2]:
        store.review.correct_face(f.face_id, "ann", label="Happiness")
    store.close()

    def exports(tag: str) -> dict[str, bytes]:
        s = LabelStore(url, data_dir=tmp_path / "data")
        try:
            out = {}
            for fmt, suffix in (("features", ".npz"), ("csv", ".csv"), ("parquet", ".parquet")):
                s.exports.export("s", fmt, tmp_path / f"{tag}{suffix}")  # type: ignore[arg-type]
                out[fmt] = (tmp_path / f"{tag}{suffix}").read_bytes()
            out["vectors"] = s.ingest.features_of([f.face_id for f in s.recordings.faces("s")]).tobytes()
            return out
        finally:
            s.close()

    files = exports("files")
    engine = LabelStore(url).engine
    downgrade(engine, "0027", media_root=root)
    with engine.connect() as conn:
        empty = conn.exec_driver_sql("SELECT count(*) FROM faces WHERE length(features) = 0").scalar()
        assert empty == 0
    assert not list(root.rglob(f"*{feature_store.SUFFIX}"))  # back in rows, the files removed
    upgrade(engine)  # to the head, no media root: the rows keep them
    rows = exports("rows")
    downgrade(engine, "0027", media_root=root)
    upgrade(engine, media_root=root)  # the data step moves every finished video's features to its file
    assert len(list(root.rglob(f"*{feature_store.SUFFIX}"))) == 2
    with engine.connect() as conn:
        moved = conn.exec_driver_sql("SELECT count(*) FROM faces WHERE length(features) = 0").scalar()
    assert moved == 24
    again = exports("again")
    assert rows.keys() == files.keys() == again.keys()
    for k in rows:
        assert rows[k] == files[k] == again[k], (k, tmp_path)


def test_a_new_model_run_on_a_finished_video_merges_into_its_file(store: LabelStore) -> None:
    _video(store, "s", "lecture.mp4", 6, seed=4)
    before = {i: store.recordings.face_features(i) for i in _rows(store)}
    # The same video again with more faces (another run found more): the new ones join the file.
    _video(store, "s", "lecture.mp4", 10, seed=4)
    rows = _rows(store)
    assert len(rows) == 10 and all(f == b"" for f, _ in rows.values())
    for i, v in before.items():
        np.testing.assert_array_equal(store.recordings.face_features(i), v)
    assert all(store.recordings.face_features(i) is not None for i in rows)


def test_a_damaged_or_missing_file_is_named_and_nothing_else_breaks(store: LabelStore) -> None:
    _video(store, "s", "lecture.mp4", 5, seed=5)
    (path,) = store.media_root.rglob(f"*{feature_store.SUFFIX}")
    fid = next(iter(_rows(store)))
    path.write_bytes(path.read_bytes()[:-3])
    with pytest.raises(feature_store.FeatureFileError, match=str(path)):
        store.recordings.face_features(fid)
    path.unlink()
    with pytest.raises(feature_store.FeatureFileError, match="missing"):
        store.ingest.features_of([fid])
    assert len(store.recordings.faces("s")) == 5  # the rest of the store reads as before


def test_delete_and_drop_features_remove_the_file(store: LabelStore) -> None:
    _video(store, "s", "a.mp4", 4, seed=6)
    _video(store, "t", "b.mp4", 4, seed=7)
    files = sorted(store.media_root.rglob(f"*{feature_store.SUFFIX}"))
    assert len(files) == 2
    rep = store.upkeep.compact("s", crops=False, drop_features=True)
    assert rep.features_dropped == 4 and not files[0].exists() and files[1].exists()
    assert store.exports.stats("s").counts["features"] == 0
    mid = store.transaction(lambda s: s.scalar(select(Media.id).where(Media.filename == "b.mp4")), write=False)
    counts = store.upkeep.delete_media(mid)
    assert counts["files"] == 1 and not files[1].exists()
    left = store.transaction(lambda s: s.scalar(select(func.count(Face.id))), write=False)
    assert left == 4  # study s keeps its faces (features dropped)


def test_a_video_analysed_in_stretches_keeps_its_features_apart_then_in_its_file(store: LabelStore) -> None:
    from db.schema import PendingFeatures

    state = store.ingest.begin_video("s", b"long-lecture", "long.mp4", VIDEO)
    boxes = [(10.0, 20.0, 90.0, 110.0), (100.0, 20.0, 180.0, 110.0)]
    vectors = {}
    for k in range(3):
        results = fake_results("long.mp4", boxes, ["Neutral", "Anger"], frames=[k, k], seed=10 + k)
        store.ingest.store_chunk(state.media_id, results, until_s=k * 0.1, until_frame=k, samples=k + 1)
        vectors.update({(k, i): r.prediction.features for i, r in enumerate(results)})
    pending = store.transaction(lambda s: s.scalar(select(func.count()).select_from(PendingFeatures)), write=False)
    assert pending == 6 and all(f == b"" for f, _ in _rows(store).values())
    ids = sorted(_rows(store))
    while_partial = {i: store.recordings.face_features(i) for i in ids}  # readers read the pending ones
    assert all(v is not None and v.size == 16 for v in while_partial.values())
    store.ingest.finish_video(state.media_id, {}, [], duration_s=1.0, fps=10.0, width=640, height=360)
    pending = store.transaction(lambda s: s.scalar(select(func.count()).select_from(PendingFeatures)), write=False)
    assert pending == 0 and len(list(store.media_root.rglob(f"*{feature_store.SUFFIX}"))) == 1
    for i in ids:
        np.testing.assert_array_equal(store.recordings.face_features(i), while_partial[i])


def test_a_session_without_a_media_root_keeps_the_features_in_rows(tmp_path: Path) -> None:
    from sqlalchemy.orm import Session

    from db.ingest import analysed_file, store_files

    store = LabelStore(f"sqlite:///{tmp_path / 'b.sqlite3'}", data_dir=tmp_path / "data")
    store.upgrade()
    try:
        results = fake_results("v.mp4", [(1.0, 2.0, 50.0, 60.0)], ["Anger"], frames=[0], tracks=[0], seed=1)
        with Session(store.engine) as s, s.begin():
            store_files(s, "s", [analysed_file(b"v-bytes", "v.mp4", results, media_info=VIDEO)])
        rows = _rows(store)
        assert all(f for f, _ in rows.values()) and not list(tmp_path.rglob(f"*{feature_store.SUFFIX}"))
        assert store.recordings.face_features(next(iter(rows))) is not None
    finally:
        store.close()


def test_a_backup_copies_the_feature_files_beside_the_database(tmp_path: Path) -> None:
    store = LabelStore(f"sqlite:///{tmp_path / 'k.sqlite3'}", data_dir=tmp_path / "data")
    store.upgrade()
    try:
        _video(store, "s", "a.mp4", 5, seed=8)
        (path,) = store.media_root.rglob(f"*{feature_store.SUFFIX}")
        out = store.upkeep.backup(tmp_path / "b" / "copy.sqlite3")
        copy = out.with_name(out.name + ".features") / path.parent.name / path.name
        assert copy.read_bytes() == path.read_bytes() and oct(copy.stat().st_mode & 0o777) == oct(0o600)
    finally:
        store.close()


WRITE_IN_CHILD = """
import resource, sys
import numpy as np
from pathlib import Path
from db import feature_store as fs
out, n, length, batch = Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), 4096
ids = np.arange(1, n + 1, dtype=np.int64) * 3
row = np.arange(length, dtype=np.uint8).tobytes()
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
batches = ([(int(i), row) for i in ids[a : a + batch]] for a in range(0, n, batch))
fs._write(out, ids, length, None, batches)
print((resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) * 1024)
"""


def test_a_lecture_sized_feature_file_is_written_in_bounded_memory(tmp_path: Path) -> None:
    """The file goes to disk a batch at a time (a writable memory map held the whole file in the process's memory:
    ~370 MB for a 60-minute 16-student lecture); the result is what ``np.save`` writes for the same rows."""
    import subprocess
    import sys

    n, length = 120_000, 1280  # ~155 MB of file
    out = tmp_path / "v.features.npy"
    proc = subprocess.run(
        [sys.executable, "-c", WRITE_IN_CHILD, str(out), str(n), str(length)],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=Path(__file__).resolve().parents[1],
    )
    assert proc.returncode == 0, proc.stderr
    grown = int(proc.stdout.strip())
    size = out.stat().st_size
    assert size > 150e6 and grown < size / 4, (grown, size)
    arr = np.load(out, mmap_mode="r")
    assert (
        arr.shape == (n,)
        and int(arr["id"][-1]) == 3 * n
        and bytes(arr["f"][n // 2]) == np.arange(length, dtype=np.uint8).tobytes()
    )


def test_moving_a_videos_features_reads_each_face_once(tmp_path: Path) -> None:
    """Each batch of the move walks the primary key from where the last ended (SQLite's plan of every batch read).

    By the (media, frame) index every batch read and sorted all the video's faces, crops included: quadratic in a
    video's faces (~20 minutes for a 60-minute 16-student lecture, issue 19's scale bench).
    """
    from sqlalchemy import event

    s = LabelStore(f"sqlite:///{tmp_path / 'f.sqlite3'}", data_dir=tmp_path / "data", feature_files=True)
    s.upgrade()
    sent: dict[str, object] = {}

    def note(_conn: object, _cur: object, stmt: str, params: object, _ctx: object, many: bool) -> None:
        if not many and stmt.lstrip().upper().startswith("SELECT") and "faces.features" in stmt and "LIMIT" in stmt:
            sent.setdefault(stmt, params)

    event.listen(s.engine, "before_cursor_execute", note)
    try:
        _video(s, "s", "lecture.mp4", 12, seed=1)
    finally:
        event.remove(s.engine, "before_cursor_execute", note)
    assert sent, "the move read the faces' features in batches"
    raw = s.engine.raw_connection()
    try:
        plans = [[str(r[3]) for r in raw.cursor().execute("EXPLAIN QUERY PLAN " + q, p)] for q, p in sent.items()]
    finally:
        raw.close()
        s.close()
    for plan in plans:
        assert any("INTEGER PRIMARY KEY" in line for line in plan), plan
        assert not any("TEMP B-TREE" in line or "ix_faces_media_id_frame" in line for line in plan), plan
    assert feature_store.move_video  # the path under test
