"""Full fine-tuning from an ImageFolder export: a loadable ``full`` version with a before/after; refusals."""

from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from models import train_backbone as tb
from models.export import load_full_model
from models.recognizer import EmotionRecognizer, preprocess
from models.sam import class_weights, smoothed_cross_entropy
from models.train_data import ImageFolderExport, Sample
from models.versions import get_version, list_versions, load_tensors
from tests.checkpoints import install_random_weights

MODEL = "enet_b0_8_best_vgaf"
TINY = ["--epochs", "1", "--head-epochs", "1", "--batch-size", "8", "--device", "cpu"]


@pytest.fixture(scope="module")
def wdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("tb-weights")
    install_random_weights([MODEL], d, seed=7)
    return d


@pytest.fixture(scope="module")
def faces(face_crops: list[np.ndarray]) -> list[np.ndarray]:
    return face_crops


def _png(crop: np.ndarray, size: int = 224) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(crop).resize((size, size), Image.Resampling.BILINEAR).save(buf, format="PNG")
    return buf.getvalue()


def _write_zip(path: Path, layout: dict[str, dict[str, list[np.ndarray]]], extra: dict[str, bytes] | None = None):
    with zipfile.ZipFile(path, "w") as zf:
        for split, classes in layout.items():
            for cls, crops in classes.items():
                for i, c in enumerate(crops):
                    zf.writestr(f"{split}/{cls}/{split}{cls}{i}.png", _png(c))
        for name, data in (extra or {}).items():
            zf.writestr(name, data)
    return path


@pytest.fixture(scope="module")
def export_zip(faces: list[np.ndarray], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """2 classes x 6 crops of real faces (4 train, 1 validation, 1 test each), plus a class the model lacks."""
    happy = faces  # 6 faces
    sad = [np.ascontiguousarray(f[:, ::-1]) for f in faces[::-1]]  # the same faces mirrored, another order
    layout = {
        "train": {"Happiness": happy[:4], "Sadness": sad[:4], "Boredom": happy[:1]},
        "validation": {"Happiness": happy[4:5], "Sadness": sad[4:5]},
        "test": {"Happiness": happy[5:6], "Sadness": sad[5:6]},
    }
    return _write_zip(
        tmp_path_factory.mktemp("tb-data") / "study-export.zip",
        layout,
        {"metadata.csv": b"face_id\n", "README.md": b"card"},
    )


def test_train_backbone_saves_a_full_version_that_the_recognizer_runs(wdir, export_zip, faces, capsys):
    code = tb.main(["--data", str(export_zip), "--model", MODEL, "--weights-dir", str(wdir), "--json", *TINY])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    report = json.loads(captured.out)
    assert report["n_images"] == {"train": 8, "validation": 2, "test": 2}
    assert report["skipped"] == {"train/Boredom": 1}
    assert report["class_counts"] == {"Happiness": 4, "Sadness": 4}
    for key in ("before", "after"):
        assert 0 <= report[key]["accuracy"] <= 1 and 0 <= report[key]["macro_f1"] <= 1
        assert np.asarray(report[key]["confusion"]).shape == (8, 8)
        assert np.asarray(report[key]["confusion"]).sum() == 2
    assert [(h["phase"], h["epoch"]) for h in report["history"]] == [(1, 1), (2, 1)]
    assert all(h["val_accuracy"] is not None for h in report["history"])
    assert "phase 2 (all layers) epoch 1/1" in captured.err

    version = get_version(report["version"], wdir)
    assert version.kind == "full" and version.base == MODEL and version.name.startswith(f"{MODEL}@study-export-full-")
    assert len(version.data_fingerprint) == 64 and version.report["before"]["accuracy"] == report["before"]["accuracy"]
    tensors = load_tensors(version)
    assert "conv_stem.weight" in tensors and "classifier.weight" in tensors

    tuned = EmotionRecognizer.load(version.name, wdir)
    base = EmotionRecognizer.load(MODEL, wdir)
    got, orig = tuned.predict(faces[:2]), base.predict(faces[:2])
    assert len(got) == 2 and got[0].model == version.name and got[0].probs.shape == (8,)
    assert np.isfinite(got[0].logits).all()
    assert np.abs(got[0].features - orig[0].features).max() > 0  # the backbone changed, not only the head
    # The export path builds the same full model from the version.
    loaded = load_full_model(version.name, wdir)
    with torch.no_grad():
        raw = loaded.model(preprocess(faces[:2], loaded.spec)).numpy()
    np.testing.assert_allclose(raw[:, :8], np.stack([g.logits for g in got]), atol=1e-4, rtol=0)


def test_train_backbone_reads_a_folder_and_its_fingerprint_is_stable(wdir, export_zip, tmp_path):
    folder = tmp_path / "export"
    with zipfile.ZipFile(export_zip) as zf:
        zf.extractall(folder)
    a = ImageFolderExport(export_zip, ("Happiness", "Sadness", "Anger"))
    b = ImageFolderExport(folder, ("happiness", "sadness", "anger"))  # matched ignoring case
    assert sorted(s.key for s in a.samples) == sorted(s.key for s in b.samples)
    assert len(a.samples) == 12 and a.skipped == {"train/Boredom": 1}
    assert a.load(a.samples[0]).shape == (224, 224, 3)
    # Same files and labels, same fingerprint; the fingerprint changes with a label.
    assert a.fingerprint(a.samples) == ImageFolderExport(folder, ("Happiness", "Sadness", "Anger")).fingerprint(
        b.samples
    )
    relabelled = [Sample(s.key, s.split, 2 if i == 0 else s.label) for i, s in enumerate(a.samples)]
    assert a.fingerprint(relabelled) != a.fingerprint(a.samples)


def test_export_reads_the_image_suffixes_affectlab_reads(faces, tmp_path):
    """The reader takes models.images.IMAGE_SUFFIXES (a GIF too) and ignores other files."""
    gif = io.BytesIO()
    Image.fromarray(faces[0]).save(gif, format="GIF")
    path = tmp_path / "mixed.zip"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("train/Happiness/a.GIF", gif.getvalue())
        zf.writestr("train/Happiness/b.png", _png(faces[1]))
        zf.writestr("train/Happiness/notes.txt", b"not an image")
    data = ImageFolderExport(path, ("Happiness",))
    assert [s.key for s in data.samples] == ["train/Happiness/a.GIF", "train/Happiness/b.png"]
    assert data.load(data.samples[0]).shape[2] == 3


def test_loss_and_class_weights_follow_the_reference():
    w = class_weights([0, 0, 0, 1], 3)
    assert w.tolist() == pytest.approx([1.0, 3.0, 0.0])
    logits = torch.tensor([[2.0, 0.0, -1.0], [0.0, 1.0, 0.0]])
    target = torch.tensor([0, 1])
    plain = torch.nn.functional.cross_entropy(logits, target, label_smoothing=0.1)
    assert smoothed_cross_entropy(logits, target, None, 0.1).item() == pytest.approx(plain.item(), rel=1e-6)


@pytest.mark.parametrize(
    ("layout", "why"),
    [
        ({"train": {"Happiness": 2, "Sadness": 2}, "validation": {"Happiness": 1}}, "test split is empty"),
        ({"train": {"Happiness": 3}, "test": {"Happiness": 1, "Sadness": 1}}, "at least 2 classes"),
        ({"train": {"Boredom": 3}, "test": {"Boredom": 1}}, "no image in train/validation/test"),
    ],
)
def test_too_little_data_is_refused_and_nothing_is_saved(wdir, faces, tmp_path, capsys, layout, why):
    crops = {split: {c: faces[:n] for c, n in classes.items()} for split, classes in layout.items()}
    data = _write_zip(tmp_path / "small.zip", crops)
    before = {v.name for v in list_versions(wdir)}
    code = tb.main(["--data", str(data), "--model", MODEL, "--weights-dir", str(wdir), *TINY])
    err = capsys.readouterr().err
    assert code == 2 and why in err and "error:" in err
    assert {v.name for v in list_versions(wdir)} == before


def test_missing_or_damaged_export_is_a_bad_input(wdir, tmp_path, capsys):
    assert tb.main(["--data", str(tmp_path / "nope.zip"), "--model", MODEL, "--weights-dir", str(wdir)]) == 1
    bad = tmp_path / "bad.zip"
    bad.write_bytes(b"not a zip")
    assert tb.main(["--data", str(bad), "--model", MODEL, "--weights-dir", str(wdir)]) == 1
    assert "not a readable zip" in capsys.readouterr().err
