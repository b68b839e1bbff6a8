"""Kept media files belong to the label store: written with the insert (atomically, owner-only), found, removed
with the media item; base names only; owner-only database files and backups; animated GIFs played as MP4."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from db import media_files
from db.engine import make_engine
from db.migrate import upgrade
from db.services import LabelStore
from tests.pg import fake_results, png_bytes, tracks_of

ROOT = Path(__file__).resolve().parents[1]
BOXES = [(10.0, 10.0, 50.0, 60.0), (60.0, 10.0, 100.0, 60.0)]


def _mode(p: Path) -> int:
    return stat.S_IMODE(p.stat().st_mode)


def _video_results(name: str, seed: int = 1) -> tuple[list, list]:
    results = fake_results(
        name, BOXES * 2, ["Happiness", "Neutral"] * 2, frames=[0, 0, 2, 2], tracks=[1, 2, 1, 2], seed=seed
    )
    tracks = tracks_of([{"track": t, "n_faces": 2, "start_s": 0.0, "end_s": 0.2, "engagement": None} for t in (1, 2)])
    return results, tracks


def test_ingest_keeps_the_file_owner_only_and_delete_media_removes_it(store: LabelStore, tmp_path: Path) -> None:
    store.media_root = tmp_path / "media"
    data = png_bytes(3)
    rep = store.ingest.ingest_results(
        "s", data, "/srv/uploads/a.png", fake_results("a.png", BOXES, ["Fear", "Anger"]), keep_file=True
    )
    (mid,) = rep.media_ids
    path = store.recordings.media_path(mid)
    assert path is not None and path.read_bytes() == data
    assert store.recordings.media("s")[0].filename == "a.png"  # a base name, never the server path
    assert path.name.endswith(".png") and path.parent.parent == tmp_path / "media"
    assert _mode(path) == 0o600 and _mode(path.parent) == 0o700 and _mode(tmp_path / "media") == 0o700
    assert not [p for p in path.parent.iterdir() if p.name.endswith(".tmp")]
    # The same bytes again: nothing new, the file is left as it is.
    again = store.ingest.ingest_results(
        "s", data, "a.png", fake_results("a.png", BOXES, ["Fear", "Anger"]), keep_file=True
    )
    assert again.media_new == 0 and store.recordings.media_path(mid) == path
    # A media item ingested without keep_file has no file.
    other = store.ingest.ingest_results("s", png_bytes(4), "b.png", fake_results("b.png", BOXES, ["Fear", "Anger"]))
    assert store.recordings.media_path(other.media_ids[0]) is None

    removed = store.upkeep.delete_media(mid)
    assert removed["files"] == 1 and removed["faces"] == 2
    assert not path.exists()
    assert store.upkeep.delete_media(other.media_ids[0])["files"] == 0


def test_delete_track_keeps_the_media_file(store: LabelStore, tmp_path: Path) -> None:
    store.media_root = tmp_path / "media"
    results, tracks = _video_results("v.mp4")
    rep = store.ingest.ingest_results("s", png_bytes(5), "v.mp4", results, tracks, keep_file=True)
    path = store.recordings.media_path(rep.media_ids[0])
    assert path is not None
    track_id = store.recordings.faces("s")[0].track_id
    removed = store.upkeep.delete_track(track_id)
    assert removed == {"track": 1, "faces": 2, "face_annotations": 0}  # a track has no file of its own
    assert path.is_file()


def test_features_only_mode_keeps_no_file(migrated_url: str, tmp_path: Path) -> None:
    store = LabelStore(migrated_url, store_crops=False, data_dir=tmp_path / "data")
    try:
        rep = store.ingest.ingest_results(
            "s", png_bytes(6), "a.png", fake_results("a.png", BOXES, ["Fear", "Anger"]), keep_file=True
        )
        assert store.recordings.media_path(rep.media_ids[0]) is None
        assert not (tmp_path / "data" / "media").exists()
    finally:
        store.close()


def test_a_failed_insert_keeps_no_new_file(store: LabelStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    store.media_root = tmp_path / "media"
    real = store.transaction

    def failing_commit(fn, **kwargs):  # the file is written, then the transaction fails
        def work(s):
            fn(s)
            raise RuntimeError("commit failed")

        return real(work, **kwargs)

    monkeypatch.setattr(store, "transaction", failing_commit)
    with pytest.raises(RuntimeError, match="commit failed"):
        store.ingest.ingest_results(
            "s", png_bytes(7), "a.png", fake_results("a.png", BOXES, ["Fear", "Anger"]), keep_file=True
        )
    monkeypatch.undo()
    assert store.recordings.studies() == [] or store.recordings.media("s") == []
    assert (tmp_path / "media").is_dir() and not [p for p in (tmp_path / "media").rglob("*") if p.is_file()]


def test_webapp_media_functions_delegate_to_the_store(store: LabelStore, tmp_path: Path) -> None:
    from webapp.services import library, studies

    store.media_root = tmp_path / "media"
    rep = store.ingest.ingest_results(
        "s", png_bytes(8), "a.png", fake_results("a.png", BOXES, ["Fear", "Anger"]), keep_file=True
    )
    (media,) = studies.study_media(store, "s")
    kept = library.kept_media_file(tmp_path / "media", store, "s", media)
    assert kept == store.recordings.media_path(rep.media_ids[0]) and kept is not None and kept.is_file()
    assert library.kept_media_file(None, store, "s", media) is None  # features-only mode
    assert library.playable_media_file(store, media) == kept  # an image needs no conversion
    from db.errors import NotAllowedError

    with pytest.raises(NotAllowedError):
        library.delete_media(store, "s", media.id, tmp_path / "media", owner=False)
    assert kept.exists(), "a refused delete touches nothing"
    counts = library.delete_media(store, "s", media.id, tmp_path / "media", owner=True)
    assert counts["files"] == 1 and not kept.exists()


def test_cli_delete_media_removes_the_file(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    url = f"sqlite:///{data_dir / 'affectlab.sqlite3'}"
    store = LabelStore(url, data_dir=data_dir)
    store.upgrade()
    rep = store.ingest.ingest_results(
        "s", png_bytes(9), "a.png", fake_results("a.png", BOXES, ["Fear", "Anger"]), keep_file=True
    )
    path = store.recordings.media_path(rep.media_ids[0])
    store.close()
    assert path is not None and path.is_file() and path.is_relative_to(data_dir / "media")
    env = {**os.environ, "PYTHONPATH": str(ROOT), "AFFECTLAB_DATA_DIR": str(data_dir), "DATABASE_URL": url}
    proc = subprocess.run(
        [sys.executable, "-m", "db", "delete-media", str(rep.media_ids[0])],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    assert "1 kept file" in proc.stdout
    assert not path.exists()


def test_ingest_analysis_stores_base_names(store: LabelStore, tmp_path: Path) -> None:
    folder = tmp_path / "abs" / "path"
    folder.mkdir(parents=True)
    name = str(folder / "x.png")  # the JSON names a server path
    (folder / "x.png").write_bytes(png_bytes(10))
    res = fake_results(name, BOXES, ["Sadness", "Surprise"])
    doc = {
        "model": "enet_b0_8_best_vgaf",
        "weights_hash": "7219cfb0",
        "labels": [],
        "files": [{"file": name, "kind": "image", "width": 160, "height": 120, "n_faces": 2, "error": None}],
        "faces": [r.to_json() for r in res],
    }
    store.ingest.ingest_analysis("s", doc, cut_crops=None)
    assert [m.filename for m in store.recordings.media("s")] == ["x.png"]


@pytest.mark.parametrize(
    ("given", "stored"),
    [("/abs/path/x.jpg", "x.jpg"), ("C:\\Users\\me\\y.png", "y.png"), ("z.gif", "z.gif"), ("dir/", "dir")],
)
def test_base_name(given: str, stored: str) -> None:
    assert media_files.base_name(given) == stored


def test_sqlite_files_and_backups_are_owner_only(tmp_path: Path) -> None:
    db_path = tmp_path / "new" / "affectlab.sqlite3"
    url = f"sqlite:///{db_path}"
    engine = make_engine(url)
    try:
        upgrade(engine)
    finally:
        engine.dispose()
    store = LabelStore(url, data_dir=tmp_path / "new")
    try:
        store.ingest.ingest_results("s", png_bytes(11), "a.png", fake_results("a.png", BOXES, ["Fear", "Anger"]))
        assert _mode(db_path) == 0o600 and _mode(db_path.parent) == 0o700
        for suffix in ("-wal", "-shm"):
            side = db_path.with_name(db_path.name + suffix)
            if side.exists():
                assert _mode(side) == 0o600, suffix
        backup = store.upkeep.backup()
        assert _mode(backup) == 0o600 and _mode(backup.parent) == 0o700
    finally:
        store.close()
    # An existing file made by someone with a looser umask is tightened on the next connection.
    os.chmod(db_path, 0o644)
    engine = make_engine(url)
    with engine.connect():
        pass
    engine.dispose()
    assert _mode(db_path) == 0o600


# ---------------------------------------------------------------------------------------------------- GIF playback


def _gif(path: Path, n: int = 7) -> Path:
    from PIL import Image

    frames = [Image.fromarray(np.random.default_rng(i).integers(0, 255, (37, 51, 3), dtype=np.uint8)) for i in range(n)]
    frames[0].save(
        path, save_all=True, append_images=frames[1:], duration=[100, 50, 200, 100, 100, 80, 100][:n], loop=0
    )
    return path


def _frames(path: Path) -> tuple[int, str, list[float]]:
    import av

    with av.open(str(path)) as c:
        st = c.streams.video[0]
        times = [float(f.time) for f in c.decode(st)]
        return len(times), st.codec_context.name, times


def test_to_browser_video_keeps_every_frame(tmp_path: Path) -> None:
    from models.playable import browser_suffix, to_browser_video

    src = _gif(tmp_path / "a.gif")
    dst = to_browser_video(src, tmp_path / f"a{browser_suffix()}")
    n_src, _, t_src = _frames(src)
    n_dst, codec, t_dst = _frames(dst)
    assert n_dst == n_src == 7 and codec in ("h264", "vp9", "vp8")
    assert t_dst == pytest.approx(t_src, abs=0.011)  # the GIF's own delays
    assert _mode(dst) == 0o600


def test_to_browser_video_refuses_what_is_not_a_video(tmp_path: Path) -> None:
    from models.errors import BadInputError
    from models.playable import to_browser_video

    bad = tmp_path / "x.gif"
    bad.write_bytes(b"GIF89a not really")
    with pytest.raises(BadInputError):
        to_browser_video(bad, tmp_path / "x.mp4")
    assert not (tmp_path / "x.mp4").exists()


def test_store_serves_an_animated_gif_as_a_playable_copy(store: LabelStore, tmp_path: Path) -> None:
    from db.ingest import MediaInfo
    from webapp.services import library, studies

    store.media_root = tmp_path / "media"
    gif = _gif(tmp_path / "clip.gif")
    results, tracks = _video_results("clip.gif")
    rep = store.ingest.ingest_results(
        "s",
        gif.read_bytes(),
        "clip.gif",
        results,
        tracks,
        keep_file=True,
        media_info=MediaInfo(kind="video", width=51, height=37),
    )
    mid = rep.media_ids[0]
    kept = store.recordings.media_path(mid)
    play = store.recordings.playable_media_path(mid)
    assert kept is not None and play is not None and play != kept
    assert play.parent == kept.parent and play.name.startswith(kept.stem + ".play.")
    assert _frames(play)[0] == _frames(kept)[0] == 7
    assert store.recordings.playable_media_path(mid) == play  # converted once
    (media,) = studies.study_media(store, "s")
    assert library.playable_media_file(store, media) == play
    files = 3 if store.feature_root is not None else 2  # with feature files (SQLite): the features file too
    assert store.upkeep.delete_media(mid)["files"] == files  # the recording, its playable copy
    assert not kept.exists() and not play.exists()


def test_deleted_crops_leave_no_bytes_in_the_sqlite_file_or_its_wal(tmp_path: Path) -> None:
    """Deleting media checkpoints the WAL (secure_delete zeroes the pages): no crop byte stays in either file; VACUUM
    (``python -m db vacuum``) then shrinks the file."""
    import sqlite3

    db_file = tmp_path / "affectlab.sqlite3"
    store = LabelStore(f"sqlite:///{db_file}", data_dir=tmp_path / "data")
    store.upgrade()
    try:
        results = fake_results("a.png", BOXES * 20, ["Fear", "Anger"] * 20, seed=7)
        (mid,) = store.ingest.ingest_results("s", png_bytes(5), "a.png", results).media_ids
        keep = store.ingest.ingest_results("s", png_bytes(6), "b.png", fake_results("b.png", BOXES, ["Fear", "Anger"]))
        with sqlite3.connect(db_file) as raw:
            crops = [
                bytes(r[0])
                for r in raw.execute("SELECT crop_png FROM faces WHERE media_id = ?", (mid,)).fetchall()
                if r[0]
            ]
        assert len(crops) == 40
        probes = [c[len(c) // 2 : len(c) // 2 + 32] for c in crops]  # from inside each crop's compressed data

        def found() -> int:
            blob = b"".join(p.read_bytes() for p in (db_file, Path(f"{db_file}-wal")) if p.exists())
            return sum(probe in blob for probe in probes)

        assert found() == len(probes), "the probe sees the crops before the delete"
        store.upkeep.delete_media(mid)
        assert found() == 0, "deleted crop bytes remain in the database file or its WAL"
        assert store.recordings.media("s")[0].id == keep.media_ids[0], "the other media item is untouched"
        before = db_file.stat().st_size
        assert store.upkeep.vacuum() == before - db_file.stat().st_size > 0
        assert store.upkeep.integrity_check() == "ok" and found() == 0
    finally:
        store.close()
