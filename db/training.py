"""Fine-tuning on a study's corrections: gather the training data, judge a new head, save it as a version.

This is the service behind ``python -m affectlab finetune --study S`` and the Models page's fine-tune control. The
backbone stays frozen: stored features of the base model are used (compact, see :mod:`db.codecs`), and faces
analysed with another backbone, or whose features were dropped (``python -m db compact --drop-features``), get them
extracted again from their crop, stored or re-cut from the recording (faces with neither are left out and counted
in the notes).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
from sqlalchemy import select
from sqlalchemy.orm import Session

from db import crops, feature_store
from db.codecs import features_from_bytes
from db.rows import FaceLabel
from db.schema import Face
from db.services import LabelStore
from models.errors import AffectLabError
from models.finetune import (
    FineTuneReport,
    Target,
    TrainingSet,
    cross_validate,
    fit_head,
    version_name,
)
from models.recognizer import EmotionRecognizer
from models.versions import ModelVersion, head_tensors, save_version


@dataclass(frozen=True)
class FineTuneOutcome:
    """What a fine-tuning run produced.

    Attributes:
        report: The before/after report (``report.enough`` False: nothing saved).
        version: The saved version, or None.
        notes: Faces left out and why.
    """

    report: FineTuneReport
    version: ModelVersion | None
    notes: tuple[str, ...] = field(default_factory=tuple)


def _base_name(model: str | None) -> str:
    return (model or "").split("@", 1)[0]


def _load_features(
    store: LabelStore, rows: Sequence[FaceLabel], recognizer: EmotionRecognizer, notes: list[str]
) -> dict[int, np.ndarray]:
    """The base model's features of the faces: stored ones, else extracted again from their crops.

    Crops come from :mod:`db.crops`: stored, or re-cut from the kept recording (videos stored compactly, or whose
    features ``python -m db compact --drop-features`` dropped). Stored features are the compact form of
    :mod:`db.codecs` (the README quotes what that changes for a fitted head).
    """
    base = recognizer.spec.name
    ids = [r.face_id for r in rows]

    def work(s: Session) -> dict[int, tuple[bytes | None, int | None, str | None]]:
        out: dict[int, tuple[bytes | None, int | None, str | None]] = {}
        stored = feature_store.stored_bytes(s, ids)  # rows, or finished videos' files
        for i in range(0, len(ids), 512):
            stmt = select(Face.id, Face.feature_model).where(Face.id.in_(ids[i : i + 512]))
            for fid, fmodel in s.execute(stmt):
                data, dim = stored.get(fid, (None, None))
                out[fid] = (data, dim, fmodel)
        return out

    raw = store.transaction(work, write=False)
    feats: dict[int, np.ndarray] = {}
    need: list[int] = []
    for fid in ids:
        data, dim, fmodel = raw.get(fid, (None, None, None))
        if data is not None and dim == recognizer.spec.feature_dim and _base_name(fmodel) == base:
            feats[fid] = features_from_bytes(data, dim)
        else:
            need.append(fid)
    recomputed = 0
    if need:
        sources = store.transaction(lambda s: crops.crop_sources(s, store.media_root, need), write=False)
        batch: list[tuple[int, np.ndarray]] = []

        def flush() -> None:
            out = recognizer.extract_features([c for _, c in batch])
            feats.update({fid: out[i] for i, (fid, _) in enumerate(batch)})
            batch.clear()

        for fid, crop in crops.crop_arrays(sources):
            batch.append((fid, crop))
            recomputed += 1
            if len(batch) >= 256:
                flush()
        if batch:
            flush()
    if recomputed:
        notes.append(f"{recomputed} faces had no {base} features; extracted again from their crops")
    missing = len(need) - recomputed
    if missing:
        notes.append(
            f"{missing} corrected faces have neither {base} features nor a crop (features-only mode with another "
            "model, or a video whose recording is not kept); left out"
        )
    return feats


def training_set(
    store: LabelStore, study: str, recognizer: EmotionRecognizer, target: Target
) -> tuple[TrainingSet, list[str]]:
    """The study's human-corrected faces for ``target``, with the original head's outputs as the baseline.

    Args:
        store: The label store.
        study: Study name.
        recognizer: The model to fine-tune (its backbone gives the features, its head the baseline).
        target: ``emotion``, ``va`` or ``engagement``.

    Returns:
        The training set and notes on faces left out.
    """
    spec = recognizer.spec
    notes: list[str] = []
    rows = store.recordings.faces(study)
    if target == "emotion":
        chosen = [r for r in rows if r.label_source == "human" and r.label is not None]
        outside = [r for r in chosen if r.label not in spec.labels]
        if outside:
            notes.append(
                f"{len(outside)} faces labelled with classes {spec.name} does not have "
                f"({', '.join(sorted({str(r.label) for r in outside}))}); left out"
            )
        chosen = [r for r in chosen if r.label in spec.labels]
    elif target == "va":
        if not spec.has_va:
            raise AffectLabError(f"{spec.name} has no valence/arousal outputs; fine-tune V/A on a *_va_mtl model")
        chosen = [
            r
            for r in rows
            if "human" in (r.valence_source, r.arousal_source) and r.valence is not None and r.arousal is not None
        ]
    else:
        chosen = [r for r in rows if r.engagement_source == "human" and r.engagement is not None]
        no_model = [r for r in chosen if r.model_engagement is None]
        if no_model:
            notes.append(
                f"{len(no_model)} faces with an engagement correction but no model engagement score "
                "(images, or tracks too short); left out"
            )
        chosen = [r for r in chosen if r.model_engagement is not None]
    feats = _load_features(store, chosen, recognizer, notes)
    chosen = [r for r in chosen if r.face_id in feats]
    dim = spec.feature_dim
    x = np.stack([feats[r.face_id] for r in chosen]) if chosen else np.zeros((0, dim), np.float32)
    k = len(spec.labels)
    raw = recognizer.logits(np.ascontiguousarray(x, dtype=np.float32)) if len(x) else np.zeros((0, k + 2))
    y: np.ndarray
    baseline: np.ndarray
    if target == "emotion":
        y = np.array([spec.labels.index(r.label) for r in chosen], dtype=np.int64)
        baseline = raw[:, :k].argmax(1) if len(x) else np.zeros(0, dtype=np.int64)
    elif target == "va":
        y = np.array([[r.valence, r.arousal] for r in chosen], dtype=np.float64).reshape(-1, 2)
        baseline = np.clip(raw[:, k : k + 2], -1, 1) if len(x) else np.zeros((0, 2))
    else:
        y = np.array([r.engagement for r in chosen], dtype=np.float64)
        baseline = np.array([r.model_engagement for r in chosen], dtype=np.float64)
    data = TrainingSet(
        features=x.astype(np.float32),
        targets=y,
        groups=np.array([r.group for r in chosen]),
        baseline=baseline,
        classes=spec.labels if target == "emotion" else (),
        face_ids=tuple(r.face_id for r in chosen),
    )
    return data, notes


def finetune_study(
    store: LabelStore,
    study: str,
    recognizer: EmotionRecognizer,
    target: Target,
    weights_dir: Path,
    *,
    save: bool = True,
    n_folds: int = 5,
) -> FineTuneOutcome:
    """Cross-validates a fine-tuned head on the study's corrections and, if there is enough data, saves it.

    The head is saved as a new version even when it does not beat the original (the report says so, and the
    version is only used when someone picks it); nothing is saved when there is too little data to judge.

    Args:
        store: The label store.
        study: Study name.
        recognizer: The model to fine-tune (a registry model; a version is fine-tuned from its base head).
        target: ``emotion``, ``va`` or ``engagement``.
        weights_dir: The weights folder (versions go to its ``finetuned/``).
        save: Save the head fitted on all the data as a version.
        n_folds: Cross-validation folds (at most).

    Returns:
        The outcome.
    """
    spec = recognizer.spec
    data, notes = training_set(store, study, recognizer, target)
    k = len(spec.labels)
    w_all, b_all = recognizer.head.weight, recognizer.head.bias
    rows = slice(0, k) if target == "emotion" else slice(k, k + 2)
    head_w = w_all[rows] if target != "engagement" else None
    head_b = b_all[rows] if target != "engagement" else None
    # cross_validate ignores the head for the engagement target; its annotation does not admit None yet.
    report = cross_validate(data, target, head_w, head_b, n_folds=n_folds)  # type: ignore[arg-type]
    if not report.enough or not save:
        return FineTuneOutcome(report, None, tuple(notes))
    w, b = fit_head(data.features, data.targets, target, head_w, head_b)
    if target == "engagement":  # the emotion head unchanged, plus a per-face engagement-level head
        tensors = head_tensors(w_all, b_all) | {
            k.replace("head.", "engagement."): v for k, v in head_tensors(w, b).items()
        }
    else:
        new_w, new_b = w_all.copy(), b_all.copy()
        new_w[rows], new_b[rows] = w, b
        tensors = head_tensors(new_w, new_b)
    base_sha1 = recognizer.weights_hash.split("+", 1)[0]
    now = datetime.now(UTC)
    version = save_version(
        version_name(spec.name, study, target, now),
        spec.name,
        base_sha1,
        "head",
        target,
        tensors,
        data.fingerprint(),
        {**report.to_json(), "study": study, "notes": notes},
        now.isoformat(),
        weights_dir,
    )
    return FineTuneOutcome(report, version, tuple(notes))
