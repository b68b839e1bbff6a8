"""Fine-tuning heads on corrections: a learnable shift is learnt on held-out groups; too little data refuses."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from models.finetune import MIN_FACES, TrainingSet, cross_validate, fit_ridge
from models.registry import EMOTIONS_8

ROOT = Path(__file__).resolve().parents[1]


def clusters(n_per: int, n_groups: int, dim: int = 32, seed: int = 0):
    """Features in one Gaussian cluster per class, spread over groups (media items)."""
    rng = np.random.default_rng(seed)
    centers = rng.standard_normal((len(EMOTIONS_8), dim)) * 3
    x, cls, groups = [], [], []
    for c in range(len(EMOTIONS_8)):
        for i in range(n_per):
            x.append(centers[c] + rng.standard_normal(dim))
            cls.append(c)
            groups.append(f"media:{(c * n_per + i) % n_groups}")
    return np.array(x, np.float32), np.array(cls), np.array(groups), centers


def test_learnable_shift_beats_original_on_held_out_groups() -> None:
    x, cls, groups, centers = clusters(n_per=12, n_groups=10)
    # The original head recognises each cluster as its class ...
    w0, b0 = centers.astype(np.float32) / 3, -0.5 * (centers**2).sum(1).astype(np.float32) / 9
    assert (np.argmax(x @ w0.T + b0, 1) == cls).mean() > 0.9
    # ... but in this population the annotators call Neutral faces Sadness and Contempt faces Anger.
    shift = {
        EMOTIONS_8.index("Neutral"): EMOTIONS_8.index("Sadness"),
        EMOTIONS_8.index("Contempt"): EMOTIONS_8.index("Anger"),
    }
    human = np.array([shift.get(c, c) for c in cls])
    data = TrainingSet(
        features=x,
        targets=human,
        groups=groups,
        baseline=np.argmax(x @ w0.T + b0, 1),
        classes=EMOTIONS_8,
        face_ids=tuple(range(len(x))),
    )
    report = cross_validate(data, "emotion", w0, b0)
    assert report.enough and report.n_folds == 5
    assert report.after["accuracy"] > report.before["accuracy"] + 0.15
    assert report.after["macro_f1"] > report.before["macro_f1"]
    assert report.improved
    cm = np.array(report.after["confusion"])
    assert cm.sum() == len(x) and cm.shape == (8, 8)
    assert "better than" in report.message


def test_va_shift_is_learnt() -> None:
    x, _, groups, _ = clusters(n_per=8, n_groups=8, seed=1)
    rng = np.random.default_rng(2)
    w0 = rng.standard_normal((2, x.shape[1])).astype(np.float32) * 0.05
    b0 = np.zeros(2, np.float32)
    truth = np.clip((x @ w0.T + b0) * 0.5 + np.array([0.4, -0.3]), -1, 1)  # annotators: shifted and compressed
    data = TrainingSet(features=x, targets=truth, groups=groups, baseline=np.clip(x @ w0.T + b0, -1, 1))
    report = cross_validate(data, "va", w0, b0)
    assert report.after["ccc_mean"] > report.before["ccc_mean"] + 0.2


def test_ridge_towards_initial_head_recovers_exact_solution() -> None:
    rng = np.random.default_rng(0)
    x = rng.standard_normal((200, 5))
    w = rng.standard_normal((2, 5))
    y = x @ w.T + np.array([0.5, -1.0])
    wf, bf = fit_ridge(x, y, np.zeros((2, 5)), l2=1e-9)
    assert np.allclose(wf, w, atol=1e-4) and np.allclose(bf, [0.5, -1.0], atol=1e-4)


@pytest.mark.parametrize(("n_faces", "n_groups"), [(MIN_FACES - 1, 5), (40, 2)])
def test_too_few_corrections_refuse_and_say_how_many(n_faces: int, n_groups: int) -> None:
    x, cls, _, centers = clusters(n_per=6, n_groups=4)
    x, cls = x[:n_faces], cls[:n_faces]
    groups = np.array([f"media:{i % n_groups}" for i in range(len(x))])
    data = TrainingSet(features=x, targets=cls, groups=groups, baseline=cls, classes=EMOTIONS_8)
    report = cross_validate(data, "emotion", centers.astype(np.float32), np.zeros(8, np.float32))
    assert not report.enough and report.n_folds == 0
    assert f"at least {MIN_FACES} faces" in report.message and "Nothing was saved" in report.message


# ------------------------------------------------------------------ through the label store, the CLI and a version


def clustered_study(store, weights_dir: Path, study: str = "s") -> None:
    """48 faces with features of the random enet_b0_8_best_vgaf in ``study``, all corrected by "ann"."""
    from models.recognizer import EmotionRecognizer
    from models.types import Face, FaceResult
    from tests.pg import png_bytes

    rec = EmotionRecognizer.load("enet_b0_8_best_vgaf", weights_dir)
    rng = np.random.default_rng(0)
    centers = rng.standard_normal((2, 1280)).astype(np.float32)
    for m in range(8):  # 8 media items, 6 faces each: 3 of "cluster 0", 3 of "cluster 1"
        results = []
        for i in range(6):
            c = i % 2
            feat = centers[c] + 0.3 * rng.standard_normal(1280).astype(np.float32)
            pred = rec.classify(feat[None])[0]
            results.append(
                FaceResult(
                    file=f"m{m}.png",
                    index=i,
                    face=Face(box=(10.0 * i, 0, 10.0 * i + 9, 9), det_score=0.99),
                    prediction=pred,
                    crop=rng.integers(0, 255, (12, 10, 3), dtype=np.uint8),
                )
            )
        (media_id,) = store.ingest.ingest_results(study, png_bytes(m), f"m{m}.png", results).media_ids
        # Annotators: cluster 0 is Happiness, cluster 1 is Sadness (the random head knows neither). Faces are
        # stored in detector order: face i is of cluster i % 2.
        for i, face in enumerate(sorted(store.recordings.faces(study, media_id=media_id), key=lambda f: f.face_id)):
            store.review.correct_face(face.face_id, "ann", label="Happiness" if i % 2 == 0 else "Sadness")


@pytest.fixture()
def study_db(tmp_path: Path, random_weights_dir: Path):
    """A SQLite store whose study has 48 faces with features of the random enet_b0_8_best_vgaf, all corrected."""
    from db.services import LabelStore

    url = f"sqlite:///{tmp_path / 'db.sqlite3'}"
    store = LabelStore(url, data_dir=tmp_path)
    store.upgrade()
    clustered_study(store, random_weights_dir)
    yield url, store
    store.close()


def _cli(*args: str, env: dict[str, str], package: str = "models") -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", package, *args],
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "PYTHONPATH": str(ROOT), **env},
        cwd=ROOT,
    )


def test_finetune_study_saves_a_usable_version(study_db, random_weights_dir: Path, tmp_path: Path) -> None:
    import shutil

    from models.recognizer import EmotionRecognizer
    from models.versions import list_versions

    url, store = study_db
    wdir = tmp_path / "weights"
    shutil.copytree(random_weights_dir, wdir)
    env = {"DATABASE_URL": url, "AFFECTLAB_WEIGHTS_DIR": str(wdir)}
    proc = _cli("finetune", "--study", "s", "--json", env=env, package="affectlab")
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    rep = out["report"]
    assert rep["enough"] and rep["n_faces"] == 48 and rep["n_groups"] == 8
    assert rep["after"]["accuracy"] > rep["before"]["accuracy"]
    name = out["version"]
    assert name.startswith("enet_b0_8_best_vgaf@s-emotion-")
    (version,) = list_versions(wdir)
    assert version.name == name and version.base == "enet_b0_8_best_vgaf" and len(version.data_fingerprint) == 64
    # The version is a model like any other: it predicts the annotators' classes on these features.
    rec = EmotionRecognizer.load(name, wdir)
    assert rec.name == name and "+" in rec.weights_hash
    feats = np.stack([store.recordings.face_features(f.face_id) for f in store.recordings.faces("s")])
    labels = {p.label for p in rec.classify(feats)}
    assert labels == {"Happiness", "Sadness"}
    # Predictions stored from the version record it.
    from models.types import Face, FaceResult
    from tests.pg import png_bytes

    pred = rec.classify(feats[:1])[0]
    store.ingest.ingest_results(
        "s",
        png_bytes(99),
        "new.png",
        [FaceResult(file="new.png", index=0, face=Face(box=(0.0, 0.0, 9.0, 9.0), det_score=0.99), prediction=pred)],
    )
    new_face = next(f for f in store.recordings.faces("s") if f.filename == "new.png")
    assert [(p["model"], p["model_version"]) for p in store.recordings.predictions(new_face.face_id)] == [(name, name)]
    # It shows in `list`, and can be removed.
    assert name in _cli("list", env=env).stdout
    assert _cli("remove-version", name, env=env).returncode == 0
    assert list_versions(wdir) == []


def test_finetune_cli_refuses_too_few(tmp_path: Path, random_weights_dir: Path) -> None:
    from db.services import LabelStore

    url = f"sqlite:///{tmp_path / 'empty.sqlite3'}"
    LabelStore(url).upgrade()
    proc = _cli(
        "finetune",
        "--study",
        "nobody",
        env={"DATABASE_URL": url, "AFFECTLAB_WEIGHTS_DIR": str(random_weights_dir)},
        package="affectlab",
    )
    assert proc.returncode != 0
    assert "nobody" in proc.stderr or "at least" in proc.stdout


def test_finetune_text_report_through_the_affectlab_cli(study_db, random_weights_dir: Path) -> None:
    url, _ = study_db
    proc = _cli(
        "finetune",
        "--study",
        "s",
        "--no-save",
        env={"DATABASE_URL": url, "AFFECTLAB_WEIGHTS_DIR": str(random_weights_dir)},
        package="affectlab",
    )
    assert proc.returncode == 0, proc.stderr
    assert "corrected faces: 48 in 8 groups" in proc.stdout and "confusion (fine-tuned" in proc.stdout
    assert "saved as version" not in proc.stdout


def test_models_finetune_points_to_affectlab(tmp_path: Path) -> None:
    """`python -m models` has no finetune (it reads the store): refused with exit 2, and its help names the command."""
    proc = _cli("finetune", "--study", "s", env={"DATABASE_URL": f"sqlite:///{tmp_path / 'x.sqlite3'}"})
    assert proc.returncode == 2 and proc.stdout == "" and "invalid choice: 'finetune'" in proc.stderr
    helped = _cli("--help", env={})
    assert helped.returncode == 0 and "python -m affectlab analyze|finetune" in " ".join(helped.stdout.split())
