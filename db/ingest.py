"""Storing what the inference core produced: media, faces (crops, features), predictions, tracks.

Ingest is idempotent. A media item is identified by the sha256 of its bytes within a study, so the same file
uploaded twice is one row (the first upload's file name is kept). A face is identified by its media item, frame and
box: analysing the file again, with the same or another model, reuses the faces whose box overlaps a stored one on the
same frame with IoU >= :data:`FACE_MATCH_IOU`, and adds a prediction only for a model run (model, weights hash,
version) the face does not have yet. Crops and features fill in where a face has none; nothing is overwritten.

Two entry points, both taking the caller's Session (the services own the transaction):

- :func:`ingest_results` for the web app, with the in-memory :class:`models.types.FaceResult` list (features and
  crops included);
- :func:`ingest_analysis` for ``python -m db ingest``, with the JSON of ``python -m models analyze --json``; it
  hashes the files the JSON names and cuts the crops again (``models.images.load_image`` or
  ``models.video.iter_frames``, then ``models.faces.crop_face``), since the JSON holds neither, and, given a
  :data:`FeatureExtractor` (:class:`RecognizerFeatures`: the emotion model the JSON names, from the weights folder),
  computes each face's backbone features on those crops. The services run its two halves apart:
  :func:`prepare_analysis` (decoding, the model) outside the transaction, :func:`store_analysis` inside.

Both entry points end in the same storing code, so a face gets ``features``, ``feature_dim`` and ``feature_model``
the same way whichever path it came by.
"""

from __future__ import annotations

import hashlib
import io
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Literal

import numpy as np
from sqlalchemy import select
from sqlalchemy.orm import Session

from db import repo
from db.errors import AnalysisFormatError, FeatureModelMissingError
from db.media_files import base_name
from db.persons import store_persons
from db.rows import IngestReport
from db.schema import EngagementWindow, Face, Media, Prediction, Study, Track
from models.errors import AffectLabError

FACE_MATCH_IOU = 0.9
"""Boxes on the same frame overlapping at least this much are the same face."""

VIDEO_SUFFIXES = {".mp4", ".mov", ".avi", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg", ".wmv"}

Box = tuple[float, float, float, float]
CropCutter = Callable[[Path, str, str, Sequence[int | None], Sequence[Box]], list[np.ndarray | None]]
"""``(path, name, kind, frames, boxes) -> crops``: cuts a file's face crops again (see :func:`cut_crops`)."""
FeatureExtractor = Callable[[str, Sequence[np.ndarray]], tuple[np.ndarray, str]]
"""``(model, crops) -> (features (N, F), weights hash)``: the backbone features of face crops under the model that
analysed them (see :class:`RecognizerFeatures`)."""


@dataclass(frozen=True)
class MediaInfo:
    """What is known about a media file besides its bytes."""

    kind: str
    width: int | None = None
    height: int | None = None
    duration_s: float | None = None
    fps: float | None = None


@dataclass
class FaceIn:
    """A face to store with one prediction (the common form of both entry points)."""

    index: int
    frame: int | None
    time_s: float | None
    track: int | None
    box: tuple[float, float, float, float]
    det_score: float
    model: str
    weights_hash: str
    label: str | None
    probs: dict[str, float]
    valence: float | None = None
    arousal: float | None = None
    model_version: str | None = None
    features: np.ndarray | None = None
    feature_model: str | None = None
    crop: np.ndarray | None = None


@dataclass
class TrackIn:
    """A track to store."""

    track: int
    n_faces: int = 0
    start_s: float | None = None
    end_s: float | None = None
    score: float | None = None
    label: str | None = None
    windows: list[tuple[float, float, float]] = field(default_factory=list)
    person: int | None = None


@dataclass
class _Counts:
    media_new: int = 0
    media_existing: int = 0
    faces_new: int = 0
    faces_reused: int = 0
    predictions_new: int = 0
    predictions_existing: int = 0
    tracks_new: int = 0
    crops_stored: int = 0
    features_stored: int = 0
    media_ids: list[int] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    def report(self, study: str) -> IngestReport:
        values = {f.name: getattr(self, f.name) for f in fields(self)}
        return IngestReport(study=study, **{k: tuple(v) if isinstance(v, list) else v for k, v in values.items()})


# ---------------------------------------------------------------------------------------------------- helpers


def version_of(model: str | None) -> str | None:
    """The fine-tuned version a model name denotes (``base@...``, see ``models.versions``), else None."""
    return model if model and "@" in model else None


def sha256_bytes(data: bytes) -> str:
    """Hex sha256 of ``data``."""
    return hashlib.sha256(data).hexdigest()


def sha256_source(source: bytes | Path) -> tuple[str, int]:
    """Hex sha256 and size of bytes or of a file (read in blocks)."""
    if isinstance(source, bytes):
        return sha256_bytes(source), len(source)
    h = hashlib.sha256()
    size = 0
    with open(source, "rb") as fh:
        while block := fh.read(1 << 20):
            h.update(block)
            size += len(block)
    return h.hexdigest(), size


def encode_png(crop: np.ndarray) -> bytes:
    """PNG bytes of an RGB (or grey) uint8 array."""
    from PIL import Image

    arr = np.ascontiguousarray(crop)
    if arr.dtype != np.uint8:
        arr = np.clip(arr, 0, 255).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG", optimize=False)
    return buf.getvalue()


def decode_png(data: bytes) -> np.ndarray:
    """The RGB uint8 array of stored crop bytes."""
    from PIL import Image

    with Image.open(io.BytesIO(data)) as im:
        return np.asarray(im.convert("RGB"))


def features_to_bytes(features: np.ndarray) -> tuple[bytes, int]:
    """Little-endian float32 bytes of a feature vector and its length."""
    arr = np.asarray(features, dtype="<f4").reshape(-1)
    return arr.tobytes(), int(arr.size)


def features_from_bytes(data: bytes, dim: int) -> np.ndarray:
    """The float32 feature vector stored as ``data``."""
    arr = np.frombuffer(data, dtype="<f4")
    if arr.size != dim:
        raise ValueError(f"stored features hold {arr.size} values, expected {dim}")
    return arr.astype(np.float32)


def iou(a: Sequence[float], b: Sequence[float]) -> float:
    """Intersection over union of two ``(x1, y1, x2, y2)`` boxes."""
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def guess_kind(filename: str) -> str:
    """``video`` for common video suffixes, else ``image``."""
    return "video" if Path(filename).suffix.lower() in VIDEO_SUFFIXES else "image"


def image_size(data: bytes) -> tuple[int | None, int | None]:
    """Upright ``(width, height)`` of an image from its header (EXIF rotations swap them), Nones if unreadable."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(data)) as im:
            w, h = im.size
            orientation = im.getexif().get(0x0112, 1)
    except (UnidentifiedImageError, OSError, ValueError):
        return None, None
    return (h, w) if orientation in (5, 6, 7, 8) else (w, h)


def cut_crops(
    path: Path, name: str, kind: str, frames: Sequence[int | None], boxes: Sequence[Box]
) -> list[np.ndarray | None]:
    """Cuts face crops from a file the way the pipeline does (``models.images``/``models.video``, ``crop_face``).

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
    from models.video import iter_frames

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


def _engagement_at(track: TrackIn | None, time_s: float | None) -> float | None:
    if track is None:
        return None
    if time_s is not None:
        for start, end, p in track.windows:
            if start <= time_s <= end:
                return float(p)
    return track.score


def _opt_float(v: Any) -> float | None:
    return None if v is None else float(v)


# ---------------------------------------------------------------------------------------------------- core


def _store_media(
    session: Session,
    study: Study,
    counts: _Counts,
    *,
    sha256: str,
    size: int,
    filename: str,
    info: MediaInfo,
    uploaded_by: str | None,
    faces: list[FaceIn],
    tracks: list[TrackIn],
    store_crops: bool,
) -> Media:
    media, created = repo.get_or_create(
        session,
        Media,
        defaults={
            "filename": base_name(filename),
            "kind": info.kind,
            "size_bytes": size,
            "width": info.width,
            "height": info.height,
            "duration_s": info.duration_s,
            "fps": info.fps,
            "uploaded_by": uploaded_by,
        },
        study_id=study.id,
        sha256=sha256,
    )
    if created:
        counts.media_new += 1
        existing_faces: list[Face] = []
    else:
        counts.media_existing += 1
        existing_faces = list(session.scalars(select(Face).where(Face.media_id == media.id)))
    stored = select(Face.id, Face.crop_png.is_not(None), Face.features.is_not(None)).where(Face.media_id == media.id)
    has_crop = {i for i, c, _ in session.execute(stored) if c} if existing_faces else set()
    has_features = {i for i, _, f in session.execute(stored) if f} if existing_faces else set()
    counts.media_ids.append(media.id)

    # Tracks (those listed, and any a face names without a listing).
    stored_tracks = {t.track_index: t for t in session.scalars(select(Track).where(Track.media_id == media.id))}
    track_in = {t.track: t for t in tracks}
    for f in faces:
        if f.track is not None and f.track not in track_in:
            track_in[f.track] = TrackIn(track=f.track)
    for number, t in sorted(track_in.items()):
        row = stored_tracks.get(number)
        if row is None:
            row = Track(
                media_id=media.id,
                track_index=number,
                n_faces=t.n_faces or sum(1 for f in faces if f.track == number),
                start_s=t.start_s,
                end_s=t.end_s,
                engagement_score=t.score,
                engagement_label=t.label,
            )
            session.add(row)
            session.flush()
            session.add_all(EngagementWindow(track_id=row.id, start_s=s, end_s=e, p_engaged=p) for s, e, p in t.windows)
            stored_tracks[number] = row
            counts.tracks_new += 1
        elif row.engagement_score is None and t.score is not None:
            row.engagement_score, row.engagement_label = t.score, t.label
            has_windows = session.scalar(select(EngagementWindow.id).where(EngagementWindow.track_id == row.id))
            if not has_windows:
                session.add_all(
                    EngagementWindow(track_id=row.id, start_s=s, end_s=e, p_engaged=p) for s, e, p in t.windows
                )

    # Faces: reuse by (frame, box), else insert.
    by_frame: dict[int | None, list[Face]] = {}
    for face in existing_faces:
        by_frame.setdefault(face.frame, []).append(face)
    used: set[int] = set()
    matched: list[tuple[FaceIn, Face]] = []
    for f in faces:
        candidates = [c for c in by_frame.get(f.frame, []) if c.id not in used]
        best = max(candidates, key=lambda c: iou(c.box, f.box), default=None)
        if best is not None and iou(best.box, f.box) >= FACE_MATCH_IOU:
            used.add(best.id)
            counts.faces_reused += 1
            face = best
            if f.track is not None and face.track_id is None:
                face.track_id = stored_tracks[f.track].id
        else:
            x1, y1, x2, y2 = (float(v) for v in f.box)
            face = Face(
                media_id=media.id,
                track_id=stored_tracks[f.track].id if f.track is not None else None,
                face_index=f.index,
                frame=f.frame,
                time_s=f.time_s,
                x1=x1,
                y1=y1,
                x2=x2,
                y2=y2,
                det_score=float(f.det_score),
            )
            session.add(face)
            counts.faces_new += 1
        if store_crops and f.crop is not None and f.crop.size > 0 and face.id not in has_crop:
            face.crop_png = encode_png(f.crop)
            counts.crops_stored += 1
            if face.id is not None:
                has_crop.add(face.id)
        if f.features is not None and face.id not in has_features:
            face.features, face.feature_dim = features_to_bytes(f.features)
            if face.id is not None:
                has_features.add(face.id)
            face.feature_model = f.feature_model or f.model
            counts.features_stored += 1
        matched.append((f, face))
    session.flush()

    # Predictions: one per face and model run, never replaced.
    face_ids = [face.id for _, face in matched]
    have = set()
    if face_ids:
        stmt = select(Prediction.face_id, Prediction.model, Prediction.weights_hash, Prediction.model_version)
        have = {tuple(r) for r in session.execute(stmt.where(Prediction.face_id.in_(face_ids)))}
    for f, face in matched:
        key = (face.id, f.model, f.weights_hash, f.model_version)
        if key in have:
            counts.predictions_existing += 1
            continue
        probs = {str(k): float(v) for k, v in f.probs.items()}
        label = f.label or (max(probs, key=lambda k: probs[k]) if probs else "")
        session.add(
            Prediction(
                face_id=face.id,
                model=f.model,
                weights_hash=f.weights_hash,
                model_version=f.model_version,
                probs=probs,
                label=label,
                confidence=max(probs.values()) if probs else 0.0,
                valence=_opt_float(f.valence),
                arousal=_opt_float(f.arousal),
                engagement=_engagement_at(track_in.get(f.track) if f.track is not None else None, f.time_s),
            )
        )
        have.add(key)
        counts.predictions_new += 1
    session.flush()
    if track_in:
        store_persons(session, media.id, {n: t.person for n, t in track_in.items()})
    return media


def _study(session: Session, study: str | Study) -> Study:
    return study if isinstance(study, Study) else repo.get_or_create_study(session, study)


# ---------------------------------------------------------------------------------------------------- web app entry


def _track_in(obj: Any) -> TrackIn:
    d = obj.to_json() if hasattr(obj, "to_json") else obj
    if not isinstance(d, Mapping) or "track" not in d:
        raise AnalysisFormatError("tracks", f"a track must be a mapping with a 'track' number, got {d!r}")
    eng = d.get("engagement") or {}
    windows = [(float(w["start_s"]), float(w["end_s"]), float(w["p_engaged"])) for w in (eng.get("windows") or [])]
    return TrackIn(
        track=int(d["track"]),
        n_faces=int(d.get("n_faces") or 0),
        start_s=_opt_float(d.get("start_s")),
        end_s=_opt_float(d.get("end_s")),
        score=_opt_float(eng.get("score")),
        label=eng.get("label"),
        windows=windows,
        person=None if d.get("person") is None else int(d["person"]),
    )


def face_in(result: Any, *, store_crops: bool = True, model_version: str | None = None) -> FaceIn:
    """The face to store of a :class:`models.types.FaceResult` (its crop dropped unless ``store_crops``)."""
    p = result.prediction
    return FaceIn(
        index=int(result.index),
        frame=result.frame,
        time_s=result.time_s,
        track=result.track,
        box=tuple(float(v) for v in result.face.box),  # type: ignore[arg-type]
        det_score=float(result.face.det_score),
        model=p.model,
        weights_hash=p.weights_hash,
        label=p.label,
        probs=p.probs_dict(),
        valence=p.valence,
        arousal=p.arousal,
        model_version=model_version or version_of(p.model),
        features=None if p.features is None or np.size(p.features) == 0 else p.features,
        feature_model=p.model,
        crop=result.crop if store_crops else None,
    )


def ingest_results(
    session: Session,
    study: str | Study,
    source: Path | str | bytes,
    filename: str,
    results: Iterable[Any],
    tracks: Iterable[Any] = (),
    *,
    media_info: MediaInfo | None = None,
    uploaded_by: str | None = None,
    store_crops: bool = True,
    model_version: str | None = None,
) -> IngestReport:
    """Stores one analysed file with its in-memory results (the web app's entry point).

    Args:
        session: The caller's session (not committed here).
        study: Study name (created when missing) or row.
        source: The file's bytes, or its path.
        filename: The file's original name (kept as data only).
        results: The file's :class:`models.types.FaceResult` objects (features and crops are stored from them).
        tracks: The video's tracks, as the analyze JSON's ``tracks`` entries or objects with ``to_json()``.
        media_info: Kind, size, duration and fps; guessed from the name and the image header when omitted.
        uploaded_by: Who uploaded the file.
        store_crops: False for the features-only mode: crops are dropped, never stored.
        model_version: Version of a fine-tuned head that made the predictions.

    Returns:
        What was added and what was found already stored.
    """
    data = source if isinstance(source, bytes) else Path(source).read_bytes()
    results = list(results)
    if media_info is None:
        kind = "video" if any(r.frame is not None for r in results) else guess_kind(filename)
        w, h = image_size(data) if kind == "image" else (None, None)
        media_info = MediaInfo(kind=kind, width=w, height=h)
    faces = [face_in(r, store_crops=store_crops, model_version=model_version) for r in results]
    st = _study(session, study)
    counts = _Counts()
    _store_media(
        session,
        st,
        counts,
        sha256=sha256_bytes(data),
        size=len(data),
        filename=filename,
        info=media_info,
        uploaded_by=uploaded_by,
        faces=faces,
        tracks=[_track_in(t) for t in tracks],
        store_crops=store_crops,
    )
    return counts.report(st.name)


# ---------------------------------------------------------------------------------------------------- JSON entry


def _need(d: Mapping[str, Any], key: str, where: str, source: str) -> Any:
    if key not in d:
        raise AnalysisFormatError(source, f"{where} has no {key!r}")
    return d[key]


def _locate(name: str, media_dirs: Sequence[Path]) -> Path | None:
    p = Path(name)
    candidates = [d / name for d in media_dirs] + [d / p.name for d in media_dirs] + [p]
    for c in candidates:
        if c.is_file():
            return c
    return None


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
        self._loaded: dict[str, Any] = {}

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
class _FileIn:
    """One file of an analysis JSON, hashed, with its faces (crops and features filled in) and tracks."""

    name: str
    sha256: str
    size: int
    info: MediaInfo
    faces: list[FaceIn]
    tracks: list[TrackIn]


@dataclass
class PreparedAnalysis:
    """An analysis JSON checked, its files hashed, crops cut and features computed: ready to store.

    Built by :func:`prepare_analysis` outside any transaction (decoding and the model run hold no database lock);
    stored by :func:`store_analysis`.
    """

    files: list[_FileIn] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    store_crops: bool = True


def _faces_of(analysis: Mapping[str, Any], source_name: str) -> dict[str, list[FaceIn]]:
    top_model = analysis.get("model") or ""
    top_hash = analysis.get("weights_hash") or ""
    faces_by_file: dict[str, list[FaceIn]] = {}
    for i, fj in enumerate(analysis.get("faces") or []):
        where = f"faces[{i}]"
        box = _need(fj, "box", where, source_name)
        if not isinstance(box, list | tuple) or len(box) != 4:
            raise AnalysisFormatError(source_name, f"{where}.box must be [x1, y1, x2, y2], got {box!r}")
        probs = fj.get("probs") or {}
        if not isinstance(probs, Mapping):
            raise AnalysisFormatError(source_name, f"{where}.probs must be an object of class: probability")
        try:
            face = FaceIn(
                index=int(fj.get("index") or 0),
                frame=None if fj.get("frame") is None else int(fj["frame"]),
                time_s=_opt_float(fj.get("time_s")),
                track=None if fj.get("track") is None else int(fj["track"]),
                box=tuple(float(v) for v in box),
                det_score=float(fj.get("det_score") or 0.0),
                model=str(fj.get("model") or top_model),
                weights_hash=str(fj.get("weights_hash") or top_hash),
                label=fj.get("label"),
                probs={str(k): float(v) for k, v in probs.items()},
                valence=_opt_float(fj.get("valence")),
                arousal=_opt_float(fj.get("arousal")),
                model_version=fj.get("model_version") or version_of(str(fj.get("model") or top_model)),
            )
        except (TypeError, ValueError) as e:
            raise AnalysisFormatError(source_name, f"{where}: {e}") from None
        if not face.model:
            raise AnalysisFormatError(source_name, f"{where} names no model (and the JSON has no top-level 'model')")
        faces_by_file.setdefault(str(_need(fj, "file", where, source_name)), []).append(face)
    return faces_by_file


def _add_features(
    name: str, faces: list[FaceIn], features: FeatureExtractor, warnings: list[str], hash_warned: set[str]
) -> None:
    """Computes the features of the faces that have a crop, per model, the way the pipeline does (same crops)."""
    by_model: dict[str, list[FaceIn]] = {}
    for f in faces:
        if f.crop is not None and f.crop.size > 0:
            by_model.setdefault(f.model, []).append(f)
    for model, group in by_model.items():
        feats, whash = features(model, [f.crop for f in group])
        for f, vec in zip(group, feats, strict=True):
            f.features, f.feature_model = vec, model
        analysed_with = {f.weights_hash for f in group if f.weights_hash}
        if whash and analysed_with - {whash} and model not in hash_warned:
            hash_warned.add(model)
            warnings.append(
                f"{name}: features computed with weights {whash} of {model}, but the analysis used "
                f"{', '.join(sorted(analysed_with))}; analyse the media again with these weights to keep "
                "predictions and features consistent"
            )


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

    located: list[tuple[Mapping[str, Any], str, Path]] = []
    prepared = PreparedAnalysis(store_crops=store_crops)
    for entry, name in zip(file_entries, names, strict=True):
        if entry.get("error"):
            prepared.warnings.append(f"{name}: skipped, the analysis failed on it ({entry['error']})")
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
        located.append((entry, name, path))

    hash_warned: set[str] = set()
    lost = (
        "crops not stored"
        if features is None
        else ("crops and features not stored" if store_crops else "features not stored")
    )
    for entry, name, path in located:
        data = path.read_bytes()
        kind = str(entry.get("kind") or guess_kind(name))
        info = MediaInfo(
            kind=kind,
            width=None if entry.get("width") is None else int(entry["width"]),
            height=None if entry.get("height") is None else int(entry["height"]),
            duration_s=_opt_float(entry.get("duration_s")),
            fps=_opt_float(entry.get("fps")),
        )
        faces = faces_by_file.get(name, [])
        if faces and cut_crops is not None and (store_crops or features is not None):
            try:
                crops = cut_crops(path, name, kind, [f.frame for f in faces], [f.box for f in faces])
            except ImportError as e:
                prepared.warnings.append(f"{name}: {lost}, the media loader is not available ({e})")
            except AffectLabError as e:
                prepared.warnings.append(f"{name}: {lost}, the file could not be decoded again ({e})")
            else:
                for f, c in zip(faces, crops, strict=True):
                    f.crop = c
                missing = sum(c is None for c in crops)
                if missing:
                    prepared.warnings.append(f"{name}: {missing} face crops not found in the file (frames missing)")
                if features is not None:
                    _add_features(name, faces, features, prepared.warnings, hash_warned)
                if not store_crops:
                    for f in faces:
                        f.crop = None
        prepared.files.append(
            _FileIn(
                name=name,
                sha256=sha256_bytes(data),
                size=len(data),
                info=info,
                faces=faces,
                tracks=tracks_by_file.get(name, []),
            )
        )
    return prepared


def store_analysis(
    session: Session, study: str | Study, prepared: PreparedAnalysis, *, uploaded_by: str | None = None
) -> IngestReport:
    """Stores what :func:`prepare_analysis` readied (the caller's session; not committed here).

    Returns:
        What was added and what was found already stored, with the preparation's warnings.
    """
    st = _study(session, study)
    counts = _Counts(warnings=list(prepared.warnings))
    for item in prepared.files:
        _store_media(
            session,
            st,
            counts,
            sha256=item.sha256,
            size=item.size,
            filename=item.name,
            info=item.info,
            uploaded_by=uploaded_by,
            faces=item.faces,
            tracks=item.tracks,
            store_crops=prepared.store_crops,
        )
    return counts.report(st.name)


def ingest_analysis(
    session: Session,
    study: str | Study,
    analysis: Mapping[str, Any],
    *,
    media_dirs: Sequence[Path] = (),
    source_name: str = "analysis JSON",
    uploaded_by: str | None = None,
    store_crops: bool = True,
    cut_crops: CropCutter | None = cut_crops,
    features: FeatureExtractor | None = None,
) -> IngestReport:
    """Stores the results of ``python -m models analyze --json`` (:func:`prepare_analysis`, :func:`store_analysis`).

    Args:
        session: The caller's session (not committed here).
        study: Study name (created when missing) or row.
        analysis: The parsed JSON.
        media_dirs: Folders to look for the files in.
        source_name: The JSON's name, for messages.
        uploaded_by: Who ran the analysis.
        store_crops: False for the features-only mode (no crops stored).
        cut_crops: ``(path, name, kind, frames, boxes) -> crops``; None stores no crops.
        features: ``(model, crops) -> (features, weights hash)``; None stores no features.

    Returns:
        What was added and what was found already stored.

    Raises:
        AnalysisFormatError: If the JSON is malformed or names a file that cannot be found; nothing is stored then
            (the caller's transaction is rolled back by the service).
        FeatureModelMissingError: If ``features`` cannot load a model the JSON names; nothing is stored.
    """
    prepared = prepare_analysis(
        analysis,
        media_dirs=media_dirs,
        source_name=source_name,
        store_crops=store_crops,
        cut_crops=cut_crops,
        features=features,
    )
    return store_analysis(session, study, prepared, uploaded_by=uploaded_by)


def _assign_tracks(
    tracks_json: Sequence[Any],
    names: list[str],
    entries: list[Mapping[str, Any]],
    faces_by_file: dict[str, list[FaceIn]],
    source: str,
) -> dict[str, list[TrackIn]]:
    """Tracks per file: by their ``file`` key, else by the only video whose faces use the track number."""
    out: dict[str, list[TrackIn]] = {}
    videos = [n for n, e in zip(names, entries, strict=True) if (e.get("kind") or guess_kind(n)) == "video"]
    for i, tj in enumerate(tracks_json):
        try:
            t = _track_in(tj)
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
