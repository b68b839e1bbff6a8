"""The analysis file of ``python -m models analyze --json`` read into typed results and stored (``db ingest``).

This is the one place the JSON document becomes typed results again: each face a :class:`models.types.FaceResult`
(its prediction's probabilities, V/A and weights hash; no logits, no features), each track a
:class:`models.types.TrackResult` (engagement windows and person). The JSON holds no crops and no features, so
:func:`prepare_analysis` hashes the files the JSON names and cuts the crops again (:func:`cut_crops`:
``models.images.load_image`` or ``models.decode.iter_frames``, then ``models.faces.crop_face``) and, given a
:data:`FeatureExtractor` (:class:`RecognizerFeatures`: the emotion model the JSON names, from the weights folder),
computes each face's backbone features on those crops. The services run the two halves apart: :func:`prepare_analysis`
(decoding, the model) outside the transaction, :func:`store_analysis` (:func:`db.ingest.store_files`) inside
(``Ingest.ingest_analysis``).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
from sqlalchemy.orm import Session

from db.codecs import sha256_bytes
from db.errors import AnalysisFormatError, FeatureModelMissingError
from db.ingest import AnalysedFile, MediaInfo, face_in, guess_kind, store_files
from db.rows import IngestReport
from db.schema import Study
from models.errors import AffectLabError
from models.types import Box, EmotionPrediction, Face, FaceResult, TrackResult

if TYPE_CHECKING:
    from models.engagement import EngagementResult
    from models.recognizer import EmotionRecognizer

CropCutter = Callable[[Path, str, str, Sequence[int | None], Sequence[Box]], list[np.ndarray | None]]
"""``(path, name, kind, frames, boxes) -> crops``: cuts a file's face crops again (see :func:`cut_crops`)."""
FeatureExtractor = Callable[[str, Sequence[np.ndarray]], tuple[np.ndarray, str]]
"""``(model, crops) -> (features (N, F), weights hash)``: the backbone features of face crops under the model that
analysed them (see :class:`RecognizerFeatures`)."""


def cut_crops(
    path: Path, name: str, kind: str, frames: Sequence[int | None], boxes: Sequence[Box]
) -> list[np.ndarray | None]:
    """Cuts face crops from a file the way the pipeline does (``models.images``/``models.decode``, ``crop_face``).

    Args:
        path: The image or video file.
        name: Its name, for messages.
        kind: ``image`` or ``video``.
        frames: Per face, the index of the decoded frame (videos; None for images).
        boxes: Per face, the box in upright pixels.

    Returns:
        Per face, the RGB crop, or None when its frame was not found in the video.
    """
    from models.faces import crop_face

    if kind == "image":
        from models.images import load_image

        img = load_image(path, name)
        return [crop_face(img, box) for box in boxes]
    from models.decode import iter_frames

    wanted: dict[int, list[int]] = {}
    for i, f in enumerate(frames):
        if f is not None:
            wanted.setdefault(int(f), []).append(i)
    crops: list[np.ndarray | None] = [None] * len(boxes)
    last = max(wanted, default=-1)
    for frame in iter_frames(path, name, fps=None):  # every frame: the JSON's frame numbers count them all
        for i in wanted.get(frame.index, ()):
            crops[i] = crop_face(frame.image, boxes[i])
        if frame.index >= last:
            break
    return crops


class RecognizerFeatures:
    """A :data:`FeatureExtractor` over the emotion models of a weights folder, each loaded once when first named.

    Args:
        weights_dir: The weights folder (``AFFECTLAB_WEIGHTS_DIR`` / ``Settings.weights_dir``).
        device: Torch device of the models.
        backend: ``torch`` or ``onnx``.
    """

    def __init__(self, weights_dir: Path, *, device: str = "cpu", backend: Literal["torch", "onnx"] = "torch") -> None:
        self.weights_dir = Path(weights_dir)
        self.device = device
        self.backend = backend
        self._loaded: dict[str, EmotionRecognizer] = {}

    def __call__(self, model: str, crops: Sequence[np.ndarray]) -> tuple[np.ndarray, str]:
        """The backbone features of ``crops`` under ``model`` and the hash of the weights that computed them.

        Raises:
            FeatureModelMissingError: The model is unknown or its weights are not in the folder.
        """
        from models.errors import WeightsMissingError
        from models.recognizer import EmotionRecognizer
        from models.registry import UnknownModelError

        recognizer = self._loaded.get(model)
        if recognizer is None:
            try:
                recognizer = EmotionRecognizer.load(model, self.weights_dir, device=self.device, backend=self.backend)
            except (WeightsMissingError, UnknownModelError) as e:
                raise FeatureModelMissingError(model, str(e)) from None
            self._loaded[model] = recognizer
        return recognizer.extract_features(list(crops)), recognizer.weights_hash


@dataclass
class PreparedAnalysis:
    """An analysis JSON checked, its files hashed, crops cut and features computed: ready to store.

    Built by :func:`prepare_analysis` outside any transaction (decoding and the model run hold no database lock);
    stored by :func:`store_analysis`.
    """

    files: list[AnalysedFile] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    store_crops: bool = True


# ---------------------------------------------------------------------------------------------------- JSON -> typed


def _need(d: Mapping[str, Any], key: str, where: str, source: str) -> Any:
    if key not in d:
        raise AnalysisFormatError(source, f"{where} has no {key!r}")
    return d[key]


def _opt_float(v: Any) -> float | None:
    return None if v is None else float(v)


def _opt_int(v: Any) -> int | None:
    return None if v is None else int(v)


def engagement_result(obj: Mapping[str, Any]) -> EngagementResult:
    """The :class:`models.engagement.EngagementResult` of a track's ``engagement`` JSON object.

    The file keeps each window's times and probability, not its row numbers (those are 0 here); a label other than
    ``Engaged``/``Distracted`` is replaced by the one the score gives.
    """
    from models.engagement import EngagementResult, EngagementWindow, engagement_label

    score = float(obj["score"])
    label = obj.get("label")
    windows = tuple(
        EngagementWindow(
            start=0, end=0, start_s=float(w["start_s"]), end_s=float(w["end_s"]), p_engaged=float(w["p_engaged"])
        )
        for w in (obj.get("windows") or [])
    )
    return EngagementResult(
        score=score,
        label=label if label in ("Engaged", "Distracted") else engagement_label(score),
        windows=windows,
        n_features=0,
        window=0,
    )


def track_result(obj: Mapping[str, Any]) -> TrackResult:
    """The :class:`models.types.TrackResult` of a ``tracks`` JSON item.

    Raises:
        AnalysisFormatError: It is not an object with a ``track`` number.
    """
    if not isinstance(obj, Mapping) or "track" not in obj:
        raise AnalysisFormatError("tracks", f"a track must be a mapping with a 'track' number, got {obj!r}")
    eng = obj.get("engagement")
    return TrackResult(
        track=int(obj["track"]),
        n_faces=int(obj.get("n_faces") or 0),
        start_s=_opt_float(obj.get("start_s")),
        end_s=_opt_float(obj.get("end_s")),
        engagement=engagement_result(eng) if isinstance(eng, Mapping) and eng.get("score") is not None else None,
        person=_opt_int(obj.get("person")),
    )


def face_result(obj: Mapping[str, Any], file: str, *, model: str, weights_hash: str) -> FaceResult:
    """The :class:`models.types.FaceResult` of a ``faces`` JSON item (``model``/``weights_hash``: the defaults)."""
    probs = {str(k): float(v) for k, v in (obj.get("probs") or {}).items()}
    prediction = EmotionPrediction(
        model=str(obj.get("model") or model),
        labels=tuple(probs),
        features=np.zeros(0, dtype=np.float32),
        logits=np.zeros(0, dtype=np.float32),
        probs=np.array(list(probs.values()), dtype=np.float64),
        valence=_opt_float(obj.get("valence")),
        arousal=_opt_float(obj.get("arousal")),
        weights_hash=str(obj.get("weights_hash") or weights_hash),
        reused=obj.get("reused") is True,
    )
    x1, y1, x2, y2 = (float(v) for v in obj["box"])
    return FaceResult(
        file=file,
        index=int(obj.get("index") or 0),
        face=Face(box=(x1, y1, x2, y2), det_score=float(obj.get("det_score") or 0.0)),
        prediction=prediction,
        frame=_opt_int(obj.get("frame")),
        time_s=_opt_float(obj.get("time_s")),
        track=_opt_int(obj.get("track")),
    )


def _faces_of(analysis: Mapping[str, Any], source_name: str) -> dict[str, list[FaceResult]]:
    top_model = str(analysis.get("model") or "")
    top_hash = str(analysis.get("weights_hash") or "")
    faces_by_file: dict[str, list[FaceResult]] = {}
    for i, fj in enumerate(analysis.get("faces") or []):
        where = f"faces[{i}]"
        box = _need(fj, "box", where, source_name)
        if not isinstance(box, list | tuple) or len(box) != 4:
            raise AnalysisFormatError(source_name, f"{where}.box must be [x1, y1, x2, y2], got {box!r}")
        if not isinstance(fj.get("probs") or {}, Mapping):
            raise AnalysisFormatError(source_name, f"{where}.probs must be an object of class: probability")
        name = str(_need(fj, "file", where, source_name))
        try:
            face = face_result(fj, name, model=top_model, weights_hash=top_hash)
        except (TypeError, ValueError) as e:
            raise AnalysisFormatError(source_name, f"{where}: {e}") from None
        if not face.prediction.model:
            raise AnalysisFormatError(source_name, f"{where} names no model (and the JSON has no top-level 'model')")
        faces_by_file.setdefault(name, []).append(face)
    return faces_by_file


def _assign_tracks(
    tracks_json: Sequence[Any],
    names: list[str],
    entries: list[Mapping[str, Any]],
    faces_by_file: dict[str, list[FaceResult]],
    source: str,
) -> dict[str, list[TrackResult]]:
    """Tracks per file: by their ``file`` key, else by the only video whose faces use the track number."""
    out: dict[str, list[TrackResult]] = {}
    videos = [n for n, e in zip(names, entries, strict=True) if (e.get("kind") or guess_kind(n)) == "video"]
    for i, tj in enumerate(tracks_json):
        try:
            t = track_result(tj)
        except (AnalysisFormatError, KeyError, TypeError, ValueError) as e:
            raise AnalysisFormatError(source, f"tracks[{i}]: {e}") from None
        name = tj.get("file")
        if name is None:
            users = [v for v in videos if any(f.track == t.track for f in faces_by_file.get(v, []))]
            if len(users) != 1 and len(videos) == 1:
                users = videos
            if len(users) != 1:
                raise AnalysisFormatError(
                    source, f"tracks[{i}] has no 'file' and track {t.track} cannot be tied to exactly one video"
                )
            name = users[0]
        out.setdefault(str(name), []).append(t)
    return out


# ---------------------------------------------------------------------------------------------------- crops, features


def _locate(name: str, media_dirs: Sequence[Path]) -> Path | None:
    p = Path(name)
    candidates = [d / name for d in media_dirs] + [d / p.name for d in media_dirs] + [p]
    for c in candidates:
        if c.is_file():
            return c
    return None


def _with_features(
    name: str, faces: list[FaceResult], features: FeatureExtractor, warnings: list[str], hash_warned: set[str]
) -> list[FaceResult]:
    """The faces with the features of those that have a crop, per model, computed the way the pipeline does."""
    by_model: dict[str, list[int]] = {}
    for i, f in enumerate(faces):
        if f.crop is not None and f.crop.size > 0:
            by_model.setdefault(f.prediction.model, []).append(i)
    out = list(faces)
    for model, group in by_model.items():
        crops = [c for c in (faces[i].crop for i in group) if c is not None]
        feats, whash = features(model, crops)
        for i, vec in zip(group, feats, strict=True):
            f = faces[i]
            out[i] = dataclasses.replace(f, prediction=dataclasses.replace(f.prediction, features=vec))
        analysed_with = {faces[i].prediction.weights_hash for i in group if faces[i].prediction.weights_hash}
        if whash and analysed_with - {whash} and model not in hash_warned:
            hash_warned.add(model)
            warnings.append(
                f"{name}: features computed with weights {whash} of {model}, but the analysis used "
                f"{', '.join(sorted(analysed_with))}; analyse the media again with these weights to keep "
                "predictions and features consistent"
            )
    return out


def prepare_analysis(
    analysis: Mapping[str, Any],
    *,
    media_dirs: Sequence[Path] = (),
    source_name: str = "analysis JSON",
    store_crops: bool = True,
    cut_crops: CropCutter | None = cut_crops,
    features: FeatureExtractor | None = None,
) -> PreparedAnalysis:
    """Checks an analysis JSON and readies its files for :func:`store_analysis` (no database involved).

    Each file the JSON names is looked up in ``media_dirs`` (as given, then by base name) and then as given
    (relative to the working folder), hashed, and its face crops cut again with ``cut_crops`` (videos are decoded
    up to the last frame a face is on). With ``features``, each face's backbone features are computed on its crop
    with the model the JSON names for it; in the features-only mode (``store_crops`` False) the crops are cut for
    that and then dropped.

    Args:
        analysis: The parsed JSON.
        media_dirs: Folders to look for the files in.
        source_name: The JSON's name, for messages.
        store_crops: False for the features-only mode (no crops stored).
        cut_crops: ``(path, name, kind, frames, boxes) -> crops``; None cuts no crops (then no features either).
        features: ``(model, crops) -> (features, weights hash)``, e.g. :class:`RecognizerFeatures`; None stores
            no features.

    Returns:
        The files, ready to store, and warnings (files the analysis failed on, files that could not be decoded
        again).

    Raises:
        AnalysisFormatError: If the JSON is malformed or names a file that cannot be found.
        FeatureModelMissingError: If ``features`` cannot load a model the JSON names.
    """
    if not isinstance(analysis, Mapping):
        raise AnalysisFormatError(source_name, "expected a JSON object as written by `python -m models analyze --json`")
    files = _need(analysis, "files", "the JSON", source_name)
    faces_by_file = _faces_of(analysis, source_name)
    file_entries = [f for f in files if isinstance(f, Mapping)]
    if len(file_entries) != len(files):
        raise AnalysisFormatError(source_name, "every entry of 'files' must be an object with a 'file' name")
    names = [str(_need(f, "file", f"files[{i}]", source_name)) for i, f in enumerate(file_entries)]
    unknown = set(faces_by_file) - set(names)
    if unknown:
        raise AnalysisFormatError(source_name, f"faces name files missing from 'files': {sorted(unknown)!r}")
    tracks_by_file = _assign_tracks(analysis.get("tracks") or [], names, file_entries, faces_by_file, source_name)

    prepared = PreparedAnalysis(store_crops=store_crops)
    located = _locate_all(file_entries, names, media_dirs, source_name, prepared.warnings)
    hash_warned: set[str] = set()
    for entry, name, path, kind in located:
        data = path.read_bytes()
        info = MediaInfo(
            kind=kind,
            width=_opt_int(entry.get("width")),
            height=_opt_int(entry.get("height")),
            duration_s=_opt_float(entry.get("duration_s")),
            fps=_opt_float(entry.get("fps")),
        )
        faces = faces_by_file.get(name, [])
        if faces and cut_crops is not None and (store_crops or features is not None):
            faces = _cut_faces(path, name, kind, faces, cut_crops, features, prepared, hash_warned)
        prepared.files.append(
            AnalysedFile(
                name=name,
                sha256=sha256_bytes(data),
                size=len(data),
                info=info,
                faces=[face_in(f, store_crops=store_crops) for f in faces],
                tracks=tracks_by_file.get(name, []),
            )
        )
    return prepared


def _locate_all(
    file_entries: Sequence[Mapping[str, Any]],
    names: Sequence[str],
    media_dirs: Sequence[Path],
    source_name: str,
    warnings: list[str],
) -> list[tuple[Mapping[str, Any], str, Path, str]]:
    """``(entry, name, path, kind)`` of each file the analysis did not fail on (a warning for each it failed on).

    Raises:
        AnalysisFormatError: For a file that cannot be found or a kind neither image nor video.
    """
    located: list[tuple[Mapping[str, Any], str, Path, str]] = []
    for entry, name in zip(file_entries, names, strict=True):
        if entry.get("error"):
            warnings.append(f"{name}: skipped, the analysis failed on it ({entry['error']})")
            continue
        path = _locate(name, media_dirs)
        if path is None:
            where = ", ".join(str(d) for d in media_dirs) or "the working folder"
            raise AnalysisFormatError(
                source_name, f"file {name!r} it names was not found (looked in {where}); pass --media-dir FOLDER"
            )
        kind = str(entry.get("kind") or guess_kind(name))
        if kind not in ("image", "video"):
            raise AnalysisFormatError(source_name, f"{name}: kind must be 'image' or 'video', got {kind!r}")
        located.append((entry, name, path, kind))
    return located


def _cut_faces(
    path: Path,
    name: str,
    kind: str,
    faces: list[FaceResult],
    cut_crops: CropCutter,
    features: FeatureExtractor | None,
    prepared: PreparedAnalysis,
    hash_warned: set[str],
) -> list[FaceResult]:
    """The faces of one file with their crops cut again and, with ``features``, their features (warnings on failure)."""
    lost = (
        "crops not stored"
        if features is None
        else ("crops and features not stored" if prepared.store_crops else "features not stored")
    )
    try:
        crops = cut_crops(path, name, kind, [f.frame for f in faces], [f.face.box for f in faces])
    except ImportError as e:
        prepared.warnings.append(f"{name}: {lost}, the media loader is not available ({e})")
    except AffectLabError as e:
        prepared.warnings.append(f"{name}: {lost}, the file could not be decoded again ({e})")
    else:
        faces = [dataclasses.replace(f, crop=c) for f, c in zip(faces, crops, strict=True)]
        missing = sum(c is None for c in crops)
        if missing:
            prepared.warnings.append(f"{name}: {missing} face crops not found in the file (frames missing)")
        if features is not None:
            faces = _with_features(name, faces, features, prepared.warnings, hash_warned)
    return faces


def store_analysis(
    session: Session, study: str | Study, prepared: PreparedAnalysis, *, uploaded_by: str | None = None
) -> IngestReport:
    """Stores what :func:`prepare_analysis` readied (the caller's session; not committed here).

    Returns:
        What was added and what was found already stored, with the preparation's warnings.
    """
    return store_files(
        session,
        study,
        prepared.files,
        uploaded_by=uploaded_by,
        store_crops=prepared.store_crops,
        warnings=prepared.warnings,
    )
