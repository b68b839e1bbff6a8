"""Exports: CSV/Parquet with provenance, ImageFolder zip, features NPZ, Hugging Face imagefolder, dataset card."""

from __future__ import annotations

import io
import zipfile

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from db.errors import CropsUnavailableError
from db.services import LabelStore
from tests.pg import fake_results, png_bytes

BOXES = [(10.0, 10.0, 50.0, 60.0), (60.0, 10.0, 100.0, 60.0)]
LABELS = ["Happiness", "Fear", "Neutral", "Sadness", "Anger", "Surprise"]


def _fill(store, n_images=8, video=True):
    for i in range(n_images):
        labels = [LABELS[i % 6], LABELS[(i + 1) % 6]]
        store.ingest.ingest_results(
            "s", png_bytes(100 + i), f"img{i}.png", fake_results(f"img{i}.png", BOXES, labels, seed=i)
        )
    if video:
        res = fake_results(
            "v.mp4", BOXES * 3, ["Neutral", "Sadness"] * 3, frames=[0, 0, 5, 5, 9, 9], tracks=[0, 1] * 3, seed=50
        )
        store.ingest.ingest_results("s", png_bytes(999), "v.mp4", res)
    return store.recordings.faces("s")


def test_predictions_only_exports_say_so(store, tmp_path):
    faces = _fill(store, n_images=3, video=False)
    rep = store.exports.export("s", "csv", tmp_path / "p.csv")
    assert rep.predictions_only and rep.n_faces == len(faces) == 6 and rep.n_human == 0
    df = pd.read_csv(tmp_path / "p.csv")
    assert set(df["label_source"]) == {"model"} and (df["label"] == df["model_label"]).all()
    assert set(df["weights_hash"]) == {"7219cfb037209b253ea8b81cf969e60a00e9181c"}
    from db.exports import export_columns

    assert list(df.columns) == export_columns([c[5:] for c in df.columns if c.startswith("prob_")])
    card = (tmp_path / "p.README.md").read_text()
    assert "Predictions only" in card and "non-commercial" in card and "enet_b0_8_best_vgaf" in card


def test_csv_and_parquet_carry_current_labels_and_provenance(store, tmp_path):
    faces = _fill(store)
    f0, f1 = faces[0].face_id, faces[1].face_id
    store.review.correct_face(f0, "alice", label="Anger", valence=0.2)
    store.review.correct_face(f0, "bob", label="Anger", valence=0.4)
    store.review.correct_face(f0, "carol", label="Fear")
    store.review.correct_face(f1, "alice", engagement=0.66)
    rep = store.exports.export("s", "parquet", tmp_path / "x.parquet")
    assert not rep.predictions_only and rep.n_human == 1
    df = pd.read_parquet(tmp_path / "x.parquet").set_index("face_id")
    row = df.loc[f0]
    assert (row["label"], row["label_source"], row["label_annotators"]) == ("Anger", "human", 3)
    assert row["label_agreement"] == pytest.approx(2 / 3)
    assert row["valence"] == pytest.approx(0.3) and row["valence_agreement"] == pytest.approx(0.9)
    assert row["model_label"] == "Happiness" and row["prob_Happiness"] == pytest.approx(0.6)
    assert df.loc[f1, "engagement"] == 0.66 and df.loc[f1, "engagement_source"] == "human"
    assert df.loc[f1, "label_source"] == "model"
    assert str(df["frame"].dtype) == "Int64" and df["frame"].isna().sum() == 16
    store.exports.export("s", "csv", tmp_path / "x.csv")
    back = pd.read_csv(tmp_path / "x.csv").set_index("face_id")
    assert list(back.columns) == list(df.columns) and back.loc[f0, "label"] == "Anger"


def test_splits_are_disjoint_by_media_and_track(store, tmp_path):
    _fill(store)
    store.exports.export("s", "csv", tmp_path / "x.csv")
    df = pd.read_csv(tmp_path / "x.csv")
    assert set(df["split"]) == {"train", "validation", "test"}
    images = df[df["track"].isna()]
    assert (images.groupby("media_id")["split"].nunique() == 1).all()
    video = df[df["track"].notna()]
    assert (video.groupby("track")["split"].nunique() == 1).all()
    # Same seed, same splits; a media item keeps its split when the study grows.
    before = dict(zip(df["media_sha256"] + df["track"].astype(str), df["split"], strict=True))
    store.ingest.ingest_results(
        "s", png_bytes(5000), "new.png", fake_results("new.png", BOXES, ["Fear", "Fear"], seed=77)
    )
    store.exports.export("s", "csv", tmp_path / "y.csv")
    df2 = pd.read_csv(tmp_path / "y.csv")
    after = dict(zip(df2["media_sha256"] + df2["track"].astype(str), df2["split"], strict=True))
    assert all(after[k] == v for k, v in before.items())


def test_imagefolder_zip_has_resized_crops_per_split_and_label(store, tmp_path):
    _fill(store)
    rep = store.exports.export("s", "imagefolder", tmp_path / "if.zip")
    assert rep.n_faces == 22 and sum(rep.splits.values()) == 22
    with zipfile.ZipFile(tmp_path / "if.zip") as zf:
        pngs = [n for n in zf.namelist() if n.endswith(".png")]
        assert len(pngs) == 22
        split, label, _name = pngs[0].split("/")
        assert split in ("train", "validation", "test") and label in LABELS
        with Image.open(io.BytesIO(zf.read(pngs[0]))) as im:
            assert im.size == (224, 224)  # enet_b0_8_best_vgaf's input size
        meta = pd.read_csv(zf.open("metadata.csv"))
        assert len(meta) == 22 and set(meta["label_source"]) == {"model"}
        assert "README.md" in zf.namelist()


def test_features_npz(store, tmp_path):
    _fill(store)
    store.review.correct_face(store.recordings.faces("s")[0].face_id, "alice", label="Contempt")
    rep = store.exports.export("s", "features", tmp_path / "f.npz")
    with np.load(tmp_path / "f.npz") as z:
        assert z["X"].shape == (22, 16) and z["X"].dtype == np.float32
        classes = list(z["classes"])
        assert classes[int(z["y"][0])] == "Contempt" and z["label_source"][0] == "human"
        assert len(set(z["groups"].tolist())) == 8 + 2  # 8 images, 2 tracks
        assert str(z["feature_model"]) == "enet_b0_8_best_vgaf"
    assert rep.n_human == 1


def test_hf_export_loads_with_datasets(store, tmp_path):
    from datasets import load_dataset

    faces = _fill(store)
    store.review.correct_face(faces[0].face_id, "alice", label="Anger")
    out = tmp_path / "hf"
    rep = store.exports.export("s", "hf", out)
    ds = load_dataset("imagefolder", data_dir=str(out), cache_dir=str(tmp_path / "cache"))
    assert set(ds) == set(k for k, v in rep.splits.items() if v)
    assert sum(len(ds[k]) for k in ds) == 22
    for split in ds:
        row = ds[split][0]
        assert row["image"].size == (224, 224)
        assert row["label"] in LABELS and row["label_source"] in ("human", "model")
    card = (out / "README.md").read_text()
    assert card.startswith("---\n") and "Cohen's kappa" in card and "faces corrected by people | 1" in card


def test_features_only_mode_exports_say_crops_are_unavailable(migrated_url, tmp_path):
    store = LabelStore(migrated_url, store_crops=False)
    try:
        _fill(store, n_images=3, video=False)
        for fmt in ("imagefolder", "hf"):
            with pytest.raises(CropsUnavailableError, match="features-only"):
                store.exports.export("s", fmt, tmp_path / f"out-{fmt}")
        rep = store.exports.export("s", "csv", tmp_path / "x.csv")
        assert not rep.crops_available and any("crops unavailable" in n for n in rep.notes)
        assert "Face crops are unavailable" in (tmp_path / "x.README.md").read_text()
        assert rep.n_faces == 6
        assert store.exports.export("s", "features", tmp_path / "f.npz").n_faces == 6
    finally:
        store.close()


def test_stats_agreement(store):
    faces = _fill(store, n_images=4, video=False)
    ids = [f.face_id for f in faces]
    alice = ["Happiness", "Fear", "Fear", "Neutral", "Neutral", "Sadness", "Sadness", "Anger"]
    bob = ["Happiness", "Fear", "Neutral", "Neutral", "Neutral", "Sadness", "Anger", "Anger"]
    for i, fid in enumerate(ids):
        store.review.correct_face(fid, "alice", label=alice[i], valence=i / 10)
        store.review.correct_face(fid, "bob", label=bob[i], valence=i / 10 + 0.05)
    s = store.exports.stats("s")
    from sklearn.metrics import cohen_kappa_score

    assert s.annotator_kappa["alice | bob"] == pytest.approx(cohen_kappa_score(alice, bob), abs=1e-6)
    assert s.fleiss_kappa is not None and s.krippendorff_alpha is not None
    assert s.ccc["valence"]["annotators"] == pytest.approx(0.9, abs=0.1) and s.ccc["valence"]["n"] == 8
    assert s.counts["annotators"] == 2 and s.counts["corrected_faces"] == 8 and s.counts["annotations"] == 16
    assert sum(s.human_counts.values()) == 8 and sum(sum(r) for r in s.confusion) == 8
    assert not s.predictions_only and s.model["name"] == "enet_b0_8_best_vgaf"


def test_empty_study_exports_a_header_and_says_so(store, tmp_path):
    store.ingest.ingest_results("s", png_bytes(1), "noface.png", [])
    rep = store.exports.export("s", "csv", tmp_path / "e.csv")
    assert rep.n_faces == 0 and rep.notes == ("the study has no faces yet",)
    assert pd.read_csv(tmp_path / "e.csv").columns[0] == "face_id"
    with pytest.raises(CropsUnavailableError, match="no faces yet"):
        store.exports.export("s", "hf", tmp_path / "hf")


FORMULAS = ['=HYPERLINK("x","y")', "+1+1", "-2+3", "@SUM(A1)", "\tTAB", "\rCR"]


def test_csv_text_cells_are_neutralised_numbers_stay_numbers(store, tmp_path):
    import csv

    from db.exports import neutralise_cell, unneutralise_cell

    for i, name in enumerate(FORMULAS):
        store.ingest.ingest_results(
            "s", png_bytes(300 + i), name + ".png", fake_results(name + ".png", BOXES[:1], ["Fear"])
        )
    faces = store.recordings.faces("s")
    store.review.correct_face(faces[0].face_id, "alice", valence=-0.5, note="=1+2 looks cross")
    store.review.correct_face(faces[1].face_id, "alice", note="-- unsure")
    store.exports.export("s", "csv", tmp_path / "x.csv")
    with (tmp_path / "x.csv").open(newline="", encoding="utf-8") as f:
        rows = {int(r["face_id"]): r for r in csv.DictReader(f)}
    names = sorted(r["filename"] for r in rows.values())
    from db.media_files import base_name

    assert names == sorted(neutralise_cell(base_name(n + ".png")) for n in FORMULAS)
    assert all(n.startswith("'") for n in names)
    r0 = rows[faces[0].face_id]
    assert r0["note"] == r0["exported_note"] == "'=1+2 looks cross"
    assert rows[faces[1].face_id]["note"] == "'-- unsure"
    assert r0["valence"] == r0["exported_valence"] == "-0.5"  # a number, not a neutralised text
    assert float(r0["valence"]) == -0.5
    for r in rows.values():  # no text cell of any column starts a formula
        assert not any(v.startswith(("=", "+", "@", "\t", "\r")) for v in r.values())
        assert all(
            not v.startswith("-") or v.lstrip("-").replace(".", "", 1).replace("e", "").isdigit() for v in r.values()
        )
    # Parquet keeps the raw text; the card says what the CSV does.
    store.exports.export("s", "parquet", tmp_path / "x.parquet")
    df = pd.read_parquet(tmp_path / "x.parquet").set_index("face_id")
    assert df.loc[faces[0].face_id, "note"] == "=1+2 looks cross" and df.loc[faces[0].face_id, "valence"] == -0.5
    for card in ("x.README.md",):
        text = (tmp_path / card).read_text()
        assert "leading apostrophe" in text and "OWASP" in text and "Parquet export keeps the raw text" in text
    # imagefolder metadata.csv too
    store.exports.export("s", "imagefolder", tmp_path / "x.zip")
    with zipfile.ZipFile(tmp_path / "x.zip") as zf:
        meta = zf.read("metadata.csv").decode()
    assert "'=HYPERLINK" in meta and "\n=" not in meta and ",=" not in meta
    for v in ["=a", "+a", "-a", "@a", "\ta", "\ra", "'=a", "a=b", "", "'plain"]:
        assert unneutralise_cell(neutralise_cell(v)) == v or v == "'=a"


def test_neutralised_note_reimports_unchanged(store, tmp_path):
    _fill(store, n_images=2, video=False)
    faces = store.recordings.faces("s")
    store.review.correct_face(faces[0].face_id, "alice", note="=cmd|'/C calc'!A0")
    store.review.correct_face(faces[1].face_id, "alice", note="+ smiling", valence=-0.5)
    store.exports.export("s", "csv", tmp_path / "e.csv")
    n_before = len(store.recordings.history(face_id=faces[0].face_id)) + len(
        store.recordings.history(face_id=faces[1].face_id)
    )
    for who in ("alice", "bob"):
        rep = store.review.import_labels("s", tmp_path / "e.csv", who)
        assert rep.annotations_added == 0, who
    n_after = len(store.recordings.history(face_id=faces[0].face_id)) + len(
        store.recordings.history(face_id=faces[1].face_id)
    )
    assert n_after == n_before
    assert store.recordings.face(faces[0].face_id).note == "=cmd|'/C calc'!A0"
    # A plain labels file holding the neutralised text is alice's current note: nothing added.
    plain = tmp_path / "plain.csv"
    plain.write_text(f"face_id,note\n{faces[0].face_id},\"'=cmd|'/C calc'!A0\"\n", encoding="utf-8")
    assert store.review.import_labels("s", plain, "alice").annotations_added == 0
    # An edited neutralised note is stored without the apostrophe.
    text = (tmp_path / "e.csv").read_text(encoding="utf-8").replace("'+ smiling", "'+ grinning", 1)
    (tmp_path / "edited.csv").write_text(text, encoding="utf-8")
    assert store.review.import_labels("s", tmp_path / "edited.csv", "bob").annotations_added == 1
    assert [h.note for h in store.recordings.history(face_id=faces[1].face_id) if h.annotator == "bob"] == [
        "+ grinning"
    ]
