"""Streamed exports (keyset pages, bounded memory) write what the whole-study exports write."""

from __future__ import annotations

import zipfile

import numpy as np
import pandas as pd
import pytest

from db import export_stream, exports, labels, quality, repo
from tests.pg import fake_results, png_bytes

BOXES = [(10.0, 10.0, 50.0, 60.0), (60.0, 10.0, 100.0, 60.0)]
LABELS = ["Happiness", "Fear", "Neutral", "Sadness", "Anger", "Surprise"]


def _fill(store):
    """Images and a tracked video, with votes of three annotators, track votes, a note, undos and a formula."""
    for i in range(5):
        labels_ = [LABELS[i % 6], LABELS[(i + 1) % 6]]
        store.ingest.ingest_results(
            "s", png_bytes(100 + i), f"=img{i}.png", fake_results(f"img{i}.png", BOXES, labels_, seed=i)
        )
    res = fake_results(
        "v.mp4", BOXES * 4, ["Neutral", "Sadness"] * 4, frames=[0, 0, 5, 5, 9, 9, 12, 12], tracks=[0, 1] * 4, seed=50
    )
    store.ingest.ingest_results("s", png_bytes(999), "v.mp4", res)
    # A second model run: one face gets a second prediction, a new face has only that run's.
    store.ingest.ingest_results(
        "s", png_bytes(555), "two.png", fake_results("two.png", BOXES, ["Fear", "Anger"], model="m2")
    )
    store.ingest.ingest_results("s", png_bytes(555), "two.png", fake_results("two.png", BOXES[:1], ["Disgust"], seed=9))
    faces = store.recordings.faces("s")
    f = [r.face_id for r in faces]
    store.review.correct_face(f[0], "alice", label="Anger", valence=0.2)
    store.review.correct_face(f[0], "bob", label="Anger", valence=0.4, note="-looks angry")
    store.review.correct_face(f[0], "carol", label="Fear")
    store.review.correct_face(f[1], "alice", engagement=0.66)
    store.review.correct_face(f[2], "bob", label="Contempt")
    store.review.undo("bob", face_id=f[2])
    store.review.correct_face(f[3], "alice", label="Surprise")
    store.review.correct_face(f[3], "alice", label="Happiness", arousal=-0.3)
    track = next(r.track_id for r in faces if r.track_id is not None)
    store.review.correct_track(track, "carol", label="Sadness", valence=-0.5)
    store.review.correct_track(track, "bob", label="Neutral")
    video_face = next(r.face_id for r in faces if r.track_id == track)
    store.review.correct_face(video_face, "bob", label="Happiness")
    return faces


def _reference(store, fmt, out):
    """Today's whole-study export (every face loaded into Python, then written)."""

    def work(s):
        st = repo.get_study(s, "s")
        rows, primary = labels.face_labels(s, st.id, None)
        stats = quality.compute_stats(st.name, rows, repo.count_rows(s, st.id), primary)
        return exports.export(s, "s", rows, stats, primary, fmt, out)

    return store.transaction(work, write=False)


def _stream(store, fmt, out, page_size=3):
    seen = []
    rep = store.transaction(
        lambda s: exports.export_stream(
            s, "s", fmt, out, page_size=page_size, progress=lambda done, total: seen.append((done, total))
        ),
        write=False,
    )
    return rep, seen


def test_streamed_csv_is_byte_equal_to_the_whole_study_csv(store, tmp_path):
    faces = _fill(store)
    ref = _reference(store, "csv", tmp_path / "ref.csv")
    rep, seen = _stream(store, "csv", tmp_path / "new.csv")
    assert (tmp_path / "new.csv").read_bytes() == (tmp_path / "ref.csv").read_bytes()
    assert (rep.n_faces, rep.n_human, rep.n_model_only, rep.splits, rep.notes) == (
        ref.n_faces,
        ref.n_human,
        ref.n_model_only,
        ref.splits,
        ref.notes,
    )
    card = (tmp_path / "new.README.md").read_text().split("\n", 14)[14]
    assert card == (tmp_path / "ref.README.md").read_text().split("\n", 14)[14]
    # Several pages, with progress after each; a track's faces span pages.
    assert len(seen) >= len(faces) // 3 and seen[-1] == (len(faces), len(faces))
    assert [d for d, _ in seen] == sorted(d for d, _ in seen)
    assert "'-looks angry" in (tmp_path / "new.csv").read_text() and "'=img0.png" in (tmp_path / "new.csv").read_text()


@pytest.mark.parametrize("page_size", [1, 4, 1000])
def test_streamed_parquet_and_features_equal_the_whole_study_ones(store, tmp_path, page_size):
    _fill(store)
    _reference(store, "parquet", tmp_path / "ref.parquet")
    _stream(store, "parquet", tmp_path / "new.parquet", page_size)
    pd.testing.assert_frame_equal(pd.read_parquet(tmp_path / "new.parquet"), pd.read_parquet(tmp_path / "ref.parquet"))
    ref = _reference(store, "features", tmp_path / "ref.npz")
    rep, _ = _stream(store, "features", tmp_path / "new.npz", page_size)
    a, b = np.load(tmp_path / "ref.npz"), np.load(tmp_path / "new.npz")
    assert sorted(a.files) == sorted(b.files)
    for k in a.files:
        assert a[k].dtype == b[k].dtype and a[k].shape == b[k].shape, k
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)
    assert (rep.n_faces, rep.splits, rep.notes) == (ref.n_faces, ref.splits, ref.notes)
    assert zipfile.ZipFile(tmp_path / "new.npz").namelist() == zipfile.ZipFile(tmp_path / "ref.npz").namelist()


def test_streamed_exports_of_an_empty_study(store, tmp_path):
    store.ingest.ingest_results("s", png_bytes(1), "a.png", fake_results("a.png", [], []))
    _reference(store, "csv", tmp_path / "ref.csv")
    rep, _ = _stream(store, "csv", tmp_path / "new.csv")
    assert (tmp_path / "new.csv").read_bytes() == (tmp_path / "ref.csv").read_bytes()
    assert rep.n_faces == 0 and rep.notes == ("the study has no faces yet",)
    _stream(store, "parquet", tmp_path / "new.parquet")
    assert list(pd.read_parquet(tmp_path / "new.parquet").columns) == exports.export_columns(quality.class_order([]))


def test_a_large_csv_written_by_two_processes_is_the_same_file(store, tmp_path, monkeypatch):
    """Over the size threshold the second half of the faces is written by a second process, then appended."""
    faces = _fill(store)
    _reference(store, "csv", tmp_path / "ref.csv")
    monkeypatch.setattr(export_stream, "PARALLEL_MIN_FACES", 4)
    seen = []
    rep = store.transaction(
        lambda s: exports.export_stream(
            s, "s", "csv", tmp_path / "two.csv", page_size=3, workers=2, progress=lambda d, t: seen.append((d, t))
        ),
        write=False,
    )
    assert (tmp_path / "two.csv").read_bytes() == (tmp_path / "ref.csv").read_bytes()
    assert rep.n_faces == len(faces) and seen[-1] == (len(faces), len(faces))
    assert not (tmp_path / "two.csv.part").exists()
    card = (tmp_path / "two.README.md").read_text().split("\n", 14)[14]
    assert card == (tmp_path / "ref.README.md").read_text().split("\n", 14)[14]


def test_compact_features_decoded_together_equal_the_ones_decoded_one_by_one():
    from db.codecs import features_from_bytes, features_to_bytes

    rng = np.random.default_rng(3)
    vectors = [rng.normal(size=64).astype(np.float32) * rng.uniform(0.01, 9) for _ in range(50)]
    vectors += [np.full(64, 0.25, np.float32), np.zeros(64, np.float32)]
    stored = [features_to_bytes(v)[0] for v in vectors]
    together = exports.decode_compact(b"".join(stored), 64)
    one_by_one = np.stack([features_from_bytes(b, 64) for b in stored])
    assert together.dtype == np.float32 and together.shape == (52, 64)
    np.testing.assert_array_equal(together, one_by_one)


def test_crops_resized_by_two_threads_come_in_order_equal_to_one_thread():
    rng = np.random.default_rng(5)
    crops = [(i, rng.integers(0, 255, (20 + i, 24, 3), dtype=np.uint8)) for i in range(150)]
    one = list(exports.resized_pngs(iter(crops), 32, threads=1))
    two = list(exports.resized_pngs(iter(crops), 32, threads=2, chunk=16))
    assert [f for f, _ in two] == list(range(150)) and two == one
    assert one[3][1] == exports.resized_png(crops[3][1], 32)


def _row_path_csv(store, out, page_size):
    """The CSV written row by row (:func:`tests.export_reference.iter_row_pages` and the csv module), for comparison."""
    from collections import Counter

    from db import export_rows, splits
    from db.dataset_card import CardCounts
    from db.export_table import row_values
    from tests import export_reference

    def work(s):
        st = repo.get_study(s, "s")
        primary = labels.choose_model(s, st.id, None)
        classes = exports.export_classes(s, st.id, primary)
        by_group = splits.group_splits(splits.group_sizes(s, st.id), 0)
        tally = export_rows.Tally(quality.StatsAccumulator(), CardCounts(), Counter())
        with out.open("w", encoding="utf-8", newline="") as f:
            w = export_stream._row_writer(f, exports.export_columns(classes))
            w.header(exports.export_columns(classes))
            pages = export_reference.iter_row_pages(
                s, st.id, primary, classes, by_group, tally, row_values, page_size=page_size
            )
            for rows in pages:
                w.write_rows(rows)
        return tally

    return store.transaction(work, write=False)


def _fill_hostile(store):
    """Media and notes named like formulas (= + - @, tab), quotes, commas and line breaks, on top of :func:`_fill`."""
    faces = _fill(store)
    for i, name in enumerate(["+1.png", "-2+3.png", "@SUM(1).png", "=cmd|calc.png", 'a,"b".png']):
        store.ingest.ingest_results("s", png_bytes(300 + i), name, fake_results(name, BOXES, ["Fear", "Anger"], seed=i))
    more = [r.face_id for r in store.recordings.faces("s")][len(faces) :]
    store.review.correct_face(more[0], "dave", label="Fear", note='=1+1, "two"\nlines')
    store.review.correct_face(more[1], "erin", label="Anger", note="+indented")
    store.review.correct_face(more[2], "erin", label="Happiness", valence=-0.25, note="@mention")
    store.review.undo("erin", face_id=more[2])
    return store.recordings.faces("s")


@pytest.mark.parametrize("page_size", [1, 4, 1000])
def test_the_column_path_writes_the_row_paths_csv(store, tmp_path, page_size):
    """Pages built column-wise (faces nobody judged) equal the rows of the vote rules, byte for byte, with the
    same card: votes, undos, track votes, two runs, hostile names and notes, pages cutting tracks and judged faces."""
    faces = _fill_hostile(store)
    tally = _row_path_csv(store, tmp_path / "rows.csv", page_size)
    rep, _ = _stream(store, "csv", tmp_path / "columns.csv", page_size)
    rows, columns = (tmp_path / "rows.csv").read_bytes(), (tmp_path / "columns.csv").read_bytes()
    assert columns == rows
    text = columns.decode("utf-8")
    assert "'+1.png" in text and "'-2+3.png" in text and "'@SUM(1).png" in text and "'=cmd|" in text
    assert '"\'=1+1, ""two""\nlines"' in text and "'+indented" in text
    assert (rep.n_faces, rep.n_human, rep.n_model_only) == (len(faces), tally.card.human, tally.card.model_only)
    assert rep.splits == dict(tally.splits)
    _reference(store, "csv", tmp_path / "ref.csv")
    assert columns == (tmp_path / "ref.csv").read_bytes()
    card = (tmp_path / "columns.README.md").read_text().split("\n", 14)[14]
    assert card == (tmp_path / "ref.README.md").read_text().split("\n", 14)[14]
