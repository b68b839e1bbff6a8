"""The web app's actions: one function per user action, over ``models/`` and ``db/``; no streamlit here.

This module is the adapter between the pages and the label store (:class:`db.services.LabelStore`) and the inference
core (:class:`models.analysis.AnalysisSession`, the one way to analyse a file). Pages read their widgets, call one
function of this module and render what it returns; tests call the same functions with the same bytes.

Media files: when crops are stored (the default), the uploaded file itself is kept under
``<data_dir>/media/<study id>/<sha256><suffix>`` so that the pages can draw boxes on it and play videos from a chosen
time. In the features-only privacy mode (``AFFECTLAB_STORE_CROPS=0``) no media file is kept. Deleting a media item
deletes its file too.
"""

from __future__ import annotations

import dataclasses
import functools
import io
import logging
import re
import tempfile
import threading
import time
import zipfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from affectlab.text import plural
from db import review as review_rules
from db.errors import NotAllowedError, NotFoundError, StudyNotFoundError
from db.ingest import MediaInfo
from db.review import ReviewFilter, ReviewQueue, StudySettings
from db.rows import AnnotationRow, FaceLabel, MediaRow, StudyRow, StudyStats, TrackRow
from db.services import LabelStore
from models.errors import AffectLabError, BadInputError
from models.registry import EMOTIONS_8, REGISTRY, app_models, emotion_models
from models.registry import ENGAGEMENT_LEVELS as ENGAGEMENT_LEVELS  # the review page's choices
from models.weights import weights_verified as stored_weights_verified

if TYPE_CHECKING:  # the models load lazily: the first page paints before any of them is imported
    from models.analysis import AnalysisSession

log = logging.getLogger(__name__)

ENGAGEMENT_NAMES: dict[float, str] = {
    0.0: "0 - disengaged",
    0.33: "0.33 - barely",
    0.66: "0.66 - engaged",
    1.0: "1 - highly",
}

EXPORT_FORMATS: dict[str, tuple[str, str, str]] = {
    "csv": ("CSV of faces", "csv", "text/csv"),
    "parquet": ("Parquet of faces", "parquet", "application/vnd.apache.parquet"),
    "imagefolder": ("ImageFolder zip of face crops (train/val/test)", "zip", "application/zip"),
    "features": ("Features NPZ (X, y, groups)", "npz", "application/octet-stream"),
    "hf": ("Hugging Face imagefolder dataset (zip)", "zip", "application/zip"),
}
"""Format -> (description, file suffix, MIME type) of each export offered as a download."""

Progress = Callable[[float, str], None]
"""``progress(fraction_done, message)`` of one file's analysis."""

# ---------------------------------------------------------------------------------------------------- weights


def present_models(weights_dir: Path) -> list[str]:
    """The runnable emotion models whose weights are in ``weights_dir`` (default first), then fine-tuned versions."""
    from models.versions import list_versions
    from models.weights import is_present

    base = [s.name for s in emotion_models() if is_present(s.name, weights_dir)]
    return base + [v.name for v in list_versions(weights_dir) if v.base in base]


def model_versions(weights_dir: Path) -> list[Any]:
    """The fine-tuned versions in the weights folder, newest first (``models.versions.ModelVersion``)."""
    from models.versions import list_versions

    return list_versions(weights_dir)


def require_owner(owner: bool, action: str) -> None:
    """Raises unless the caller is an owner (the flag the app computed from the sign-in, never session state).

    Raises:
        NotAllowedError: For anyone but an owner.
    """
    if not owner:
        log.warning("refused %s: not an owner", action)
        raise NotAllowedError(action)


def remove_version(name: str, weights_dir: Path, *, owner: bool) -> None:
    """Deletes a fine-tuned version; stored predictions keep its name and hash.

    Raises:
        NotAllowedError: For anyone but an owner.
    """
    from models.versions import remove_version as remove

    require_owner(owner, "removing a fine-tuned model version")
    remove(name, weights_dir)


def finetune(store: LabelStore, study: str, recognizer: Any, target: str, weights_dir: Path, *, owner: bool) -> Any:
    """Fine-tunes a head on the study's corrections (``db.training.finetune_study``); returns the outcome.

    Raises:
        NotAllowedError: For anyone but an owner.
    """
    from db.training import finetune_study

    require_owner(owner, "fine-tuning a model")
    return finetune_study(store, study, recognizer, target, weights_dir)  # type: ignore[arg-type]


def model_status(weights_dir: Path) -> list[dict[str, Any]]:
    """Every registered checkpoint with presence and verification (``models.weights.list_models``)."""
    from models.weights import list_models

    return list_models(weights_dir)


def weights_verified(name: str, weights_dir: Path) -> bool | None:
    """Whether the stored weights of ``name`` match the registry's hash (None when absent or unreadable)."""
    return stored_weights_verified(name, weights_dir)


def missing_weights_help(name: str, weights_dir: Path) -> str:
    """What to do when no emotion model has weights (plain text, one paragraph)."""
    return (
        f"No weights for {name} in {weights_dir}. Open the Models page and press Fetch, or run "
        f"`python -m models fetch {name}` (set AFFECTLAB_WEIGHTS_DIR for another folder). Without weights the app "
        "makes no predictions."
    )


def missing_app_models(model: str, weights_dir: Path) -> list[str]:
    """The models the app uses by default (``models.registry.app_models``) whose weights are not in ``weights_dir``."""
    from models.weights import is_present

    return [n for n in app_models(model) if not is_present(n, weights_dir)]


def missing_app_models_help(missing: Sequence[str]) -> str:
    """What the Analyze page says when models the app uses are missing (plain text, one paragraph)."""
    names = ", ".join(missing)
    return (
        f"Missing model weights: {names}. Without them the app shows no emotions or no engagement scores. An owner "
        "fetches them on the Models page, or run `python -m models fetch --defaults` where the app runs (the Docker "
        "image does at build; set AFFECTLAB_WEIGHTS_DIR for another folder)."
    )


@dataclass(frozen=True)
class FetchProgress:
    """Progress of a running download: bytes so far and, when the server said, the total."""

    received: int
    total: int | None


def fetch_weights(
    name: str,
    weights_dir: Path,
    on_progress: Callable[[FetchProgress], None] | None = None,
    *,
    owner: bool,
    url: str | None = None,
) -> Path:
    """Downloads, verifies and stores a registered checkpoint (``models.weights.fetch``), reporting bytes received.

    Raises:
        NotAllowedError: For anyone but an owner.
        DownloadError, HashMismatchError, CheckpointFormatError: As ``fetch``.
    """
    from models.weights import fetch

    require_owner(owner, "fetching model weights")
    hook = None if on_progress is None else (lambda received, total: on_progress(FetchProgress(received, total)))
    return fetch(name, weights_dir, progress=False, url=url, on_progress=hook)


def import_weights(
    data: bytes, filename: str, name: str, weights_dir: Path, *, trust_unverified: bool, owner: bool
) -> Path:
    """Stores an uploaded checkpoint under registry name ``name`` after checking its hash.

    Raises:
        NotAllowedError: For anyone but an owner.
        HashMismatchError: The file is not the registered one and ``trust_unverified`` is False (nothing stored).
        CheckpointFormatError: The file could not be converted.
    """
    from models.convert import import_checkpoint

    require_owner(owner, "importing model weights")
    weights_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=weights_dir, prefix=".upload-") as tmp:
        src = Path(tmp) / (_safe_suffix_name(filename) or "checkpoint")
        src.write_bytes(data)
        return import_checkpoint(src, name, weights_dir, trust_unverified=trust_unverified)


def _safe_suffix_name(filename: str) -> str:
    stem = re.sub(r"[^A-Za-z0-9._-]+", "_", Path(filename).name)[:100].lstrip(".")
    return stem


# ---------------------------------------------------------------------------------------------------- studies


def list_studies(store: LabelStore) -> list[StudyRow]:
    """Every study of the store."""
    return store.studies()


def study_id(store: LabelStore, study: str) -> int | None:
    """The id of study ``study``, None when it has no data yet."""
    return next((s.id for s in store.studies() if s.name == study), None)


def study_media(store: LabelStore, study: str) -> list[MediaRow]:
    """The media items of a study (empty for a study that has none yet)."""
    try:
        return store.media(study)
    except StudyNotFoundError:
        return []


def study_faces(store: LabelStore, study: str, media_id: int | None = None) -> list[FaceLabel]:
    """The faces of a study or of one media item, with predictions and current labels."""
    try:
        return store.faces(study, media_id=media_id)
    except StudyNotFoundError:
        return []


def _study_media_ids(store: LabelStore, study: str) -> set[int]:
    return {m.id for m in study_media(store, study)}


def media_tracks(store: LabelStore, media_id: int, study: str) -> list[TrackRow]:
    """The person tracks of a video of ``study`` with their engagement windows (none for another study's video)."""
    if media_id not in _study_media_ids(store, study):
        return []
    return store.tracks(media_id)


def face_crop(store: LabelStore, face_id: int, study: str) -> bytes | None:
    """The stored PNG crop of a face of ``study``, None in features-only mode.

    Raises:
        NotFoundError: No such face in ``study``.
    """
    face_label(store, face_id, study)
    return store.face_crop(face_id)


# ---------------------------------------------------------------------------------------------------- media files


def media_suffix(filename: str) -> str:
    """A safe lowercase suffix of an uploaded file's name (``.mp4``), '' when it has none usable."""
    from db.media_files import media_suffix as suffix

    return suffix(filename)


def media_file(media_dir: Path, study_id_: int, sha256: str, filename: str) -> Path:
    """Where the kept copy of a media item lives (whether or not it is there); see :mod:`db.media_files`."""
    from db.media_files import media_path

    return media_path(media_dir, study_id_, sha256, filename)


def kept_media_file(media_dir: Path | None, store: LabelStore, study: str, media: MediaRow) -> Path | None:
    """The kept copy of a media item, None when none is kept (features-only mode, or deleted).

    The label store owns the files (:meth:`db.services.LabelStore.media_path`); ``media_dir`` None means the
    features-only mode.
    """
    if media_dir is None:
        return None
    return store.media_path(media.id)


def playable_media_file(store: LabelStore, media: MediaRow) -> Path | None:
    """The file the browser's video player can play for a kept video, None when no file is kept.

    An animated GIF is converted to MP4 (WebM without an H.264 encoder) once and kept beside it by the store; when
    that fails, the kept file itself is returned (and the failure logged).
    """
    try:
        return store.playable_media_path(media.id)
    except AffectLabError:
        log.warning("media %s: no playable copy, serving the kept file", media.id, exc_info=True)
        return store.media_path(media.id)


# ---------------------------------------------------------------------------------------------------- analysis


@dataclass(frozen=True)
class Upload:
    """A file the user gave the app.

    Attributes:
        name: Its name as given (kept as data; shown as text only).
        data: Its bytes.
    """

    name: str
    data: bytes

    @functools.cached_property
    def sha256(self) -> str:
        """Hex sha256 of the bytes, computed once (the stored-already check and the store share it)."""
        from db.codecs import sha256_bytes

        return sha256_bytes(self.data)


@dataclass(frozen=True)
class FileOutcome:
    """What analysing one uploaded file gave.

    Attributes:
        file: The file's name as given.
        kind: ``image``, ``video`` or ``unknown`` (failed before its kind was known).
        media_id: The stored media item, None when the file failed.
        n_faces: Faces found.
        error: Why the file could not be analysed (the other files go on), None when it worked.
        warnings: Problems that did not stop the analysis.
        new: Whether the media item is new to the study (False for a file uploaded before).
    """

    file: str
    kind: str
    media_id: int | None
    n_faces: int = 0
    error: str | None = None
    warnings: tuple[str, ...] = ()
    new: bool = True


def stored_media(store: LabelStore, study: str, upload: Upload) -> MediaRow | None:
    """The media item of the study holding exactly these bytes, None when the file is new to the study."""
    return store.media_by_sha256(study, upload.sha256)


def thumbnail(path: Path, kind: str, time_s: float = 0.0, max_side: int = 240) -> np.ndarray:
    """A small picture of a kept media file: the image, or the video's frame at ``time_s``.

    Raises:
        BadInputError: The file cannot be read.
    """
    from PIL import Image

    img = video_frame(path, time_s) if kind == "video" else load_media_image(path)
    h, w = img.shape[:2]
    scale = max_side / max(h, w)
    if scale >= 1:
        return img
    small = Image.fromarray(img).resize((max(1, round(w * scale)), max(1, round(h * scale))), Image.BILINEAR)
    return np.asarray(small)


def upload_kind(upload: Upload) -> str:
    """``video`` or ``image``, by the suffix (``models.decode.VIDEO_SUFFIXES``; a GIF is probed: animated = video)."""
    from models.decode import VIDEO_SUFFIXES, is_video

    suffix = Path(upload.name).suffix.lower()
    if suffix == ".gif":
        with tempfile.NamedTemporaryFile(suffix=".gif") as tmp:
            tmp.write(upload.data)
            tmp.flush()
            return "video" if is_video(tmp.name) else "image"
    return "video" if suffix in VIDEO_SUFFIXES else "image"


def analyze_upload(
    upload: Upload,
    *,
    study: str,
    store: LabelStore,
    session: AnalysisSession,
    media_dir: Path | None,
    uploaded_by: str | None = None,
    fps: float = 5.0,
    progress: Progress | None = None,
) -> FileOutcome:
    """Analyses one uploaded image or video with the session's models and stores the results in ``study``.

    A bad file never raises: its :class:`FileOutcome` carries the reason, and nothing stored is touched.

    Args:
        upload: The file.
        study: The study to store the results in (created when new).
        store: The label store.
        session: The loaded models (``webapp.resources.analysis_session``): detector, emotion and engagement
            models and the video settings.
        media_dir: Where media files are kept, None in the features-only mode.
        uploaded_by: Who uploaded it.
        fps: Video sampling rate.
        progress: Called with ``(fraction, message)`` as the analysis advances.

    Returns:
        The outcome.
    """
    report = progress or (lambda _f, _m: None)
    kind = "unknown"
    try:
        if not upload.data:
            raise BadInputError(upload.name, "the file is empty")
        kind = upload_kind(upload)
        report(0.05, "decoding")
        if kind == "video":
            return _analyze_video(upload, study, store, session, media_dir, uploaded_by, fps, report)
        return _analyze_image(upload, study, store, session, media_dir, uploaded_by, report)
    except AffectLabError as exc:
        reason = exc.reason if isinstance(exc, BadInputError) else str(exc)
        return FileOutcome(file=upload.name, kind=kind, media_id=None, error=reason)
    except Exception as exc:  # an unexpected failure of one file must not stop the others
        log.exception("analysis of an uploaded file failed")
        return FileOutcome(
            file=upload.name, kind=kind, media_id=None, error=f"unexpected error ({type(exc).__name__}: {exc})"
        )


def _analyze_image(
    upload: Upload,
    study: str,
    store: LabelStore,
    session: AnalysisSession,
    media_dir: Path | None,
    uploaded_by: str | None,
    report: Progress,
) -> FileOutcome:
    report(0.2, "finding faces and classifying them")
    result = session.analyze_image(upload.data, upload.name, keep_crops=True)
    report(0.8, f"storing {plural(len(result.faces), 'face')}")
    info = MediaInfo(kind="image", width=result.width, height=result.height)
    rep = store.ingest_results(
        study,
        upload.data,
        upload.name,
        result.faces,
        media_info=info,
        uploaded_by=uploaded_by,
        keep_file=media_dir is not None,
        sha256=upload.sha256,
    )
    report(1.0, plural(len(result.faces), "face"))
    return FileOutcome(
        file=upload.name,
        kind="image",
        media_id=rep.media_ids[0] if rep.media_ids else None,
        n_faces=len(result.faces),
        warnings=rep.warnings,
        new=rep.media_new > 0,
    )


def _analyze_video(
    upload: Upload,
    study: str,
    store: LabelStore,
    session: AnalysisSession,
    media_dir: Path | None,
    uploaded_by: str | None,
    fps: float,
    report: Progress,
) -> FileOutcome:
    from affectlab.longvideo import TimeLeft, analyze_long_video

    with tempfile.TemporaryDirectory(prefix="affectlab-video-") as tmp:
        path = Path(tmp) / f"upload{media_suffix(upload.name) or '.bin'}"
        path.write_bytes(upload.data)
        # Stored chunk by chunk: bounded memory, and an analysis stopped midway (app closed) resumes when the same
        # file is analysed again. A video the study already holds is analysed again in memory instead, so that a
        # new model's predictions join its stored faces.
        left = TimeLeft()

        def on_progress(done: float, duration: float | None) -> None:
            if duration:
                report(0.05 + 0.9 * min(1.0, done / duration), left.text(done, duration))
            else:
                report(0.5, f"{done:.1f} s analysed")

        long = analyze_long_video(
            session,
            store,
            study,
            path,
            upload.name,
            fps=fps,
            uploaded_by=uploaded_by,
            keep_file=media_dir is not None,
            progress=on_progress,
            data=upload.data,
            sha256=upload.sha256,
        )
        if not long.skipped:
            resumed = (
                ()
                if long.resumed_from_s is None
                else (f"resumed a stopped analysis after {long.resumed_from_s:.1f} s",)
            )
            report(1.0, f"{plural(long.n_faces, 'face')} in {plural(long.n_tracks, 'track')}")
            return FileOutcome(
                file=upload.name,
                kind="video",
                media_id=long.media_id,
                n_faces=long.n_faces,
                warnings=resumed + long.warnings,
                new=True,
            )

        def on_chunk(done: float, duration: float | None) -> None:
            if duration:
                report(0.05 + 0.85 * min(1.0, done / duration), f"{done:.1f} of {duration:.1f} s analysed")
            else:
                report(0.5, f"{done:.1f} s analysed")

        analysis = session.analyze_video(path, upload.name, fps=fps, keep_crops=True, progress=on_chunk)
    report(0.92, f"storing {plural(len(analysis.faces), 'face')}")
    info = MediaInfo(
        kind="video", width=analysis.width, height=analysis.height, duration_s=analysis.duration, fps=analysis.fps
    )
    rep = store.ingest_results(
        study,
        upload.data,
        upload.name,
        analysis.faces,
        analysis.track_results(),
        media_info=info,
        uploaded_by=uploaded_by,
        keep_file=media_dir is not None,
        sha256=upload.sha256,
    )
    warnings = tuple(analysis.warnings) + tuple(rep.warnings)
    if analysis.engagement_status != "ok":
        warnings += (f"engagement: {analysis.engagement_status}",)
    report(1.0, f"{plural(len(analysis.faces), 'face')} in {plural(len(analysis.tracks), 'track')}")
    return FileOutcome(
        file=upload.name,
        kind="video",
        media_id=rep.media_ids[0] if rep.media_ids else None,
        n_faces=len(analysis.faces),
        warnings=warnings,
        new=rep.media_new > 0,
    )


def key_frames(path: Path, frames: Sequence[int], n: int = 4) -> list[tuple[float, int, np.ndarray]]:
    """Up to ``n`` of the given frames of a video, evenly spread over them, decoded.

    Args:
        path: The video file.
        frames: Indices of the frames with faces.
        n: How many to pick.

    Returns:
        ``(time_s, frame index, RGB image)`` per chosen frame, in time order.
    """
    from models.decode import iter_frames

    ordered = sorted(set(frames))
    if not ordered:
        return []
    picks = sorted({ordered[round(i * (len(ordered) - 1) / max(1, n - 1))] for i in range(min(n, len(ordered)))})
    wanted = set(picks)
    out: list[tuple[float, int, np.ndarray]] = []
    for frame in iter_frames(path, path.name, fps=0):
        if frame.index in wanted:
            out.append((frame.time_s, frame.index, frame.image))
            if len(out) == len(wanted):
                break
        if frame.index > picks[-1]:
            break
    return out


def load_media_image(path: Path) -> np.ndarray:
    """The upright RGB image of a kept image file."""
    from models.images import load_image

    return load_image(path, path.name)


# ---------------------------------------------------------------------------------------------------- review


def class_names(face: FaceLabel | None = None) -> list[str]:
    """The classes a correction of ``face`` can use: its model's classes, or the 8 AffectNet classes."""
    if face is not None and face.model_probs:
        names = list(face.model_probs)
        return names + [c for c in EMOTIONS_8 if c not in names]
    return list(EMOTIONS_8)


def review_queue(
    store: LabelStore, study: str, by: str, annotator: str | None, flt: ReviewFilter | None = None, limit: int = 50
) -> ReviewQueue:
    """``annotator``'s queue: faces they have neither labelled nor skipped, most in need first, with counts left."""
    try:
        return store.review_queue(study, by, limit=limit, annotator=annotator, flt=flt)  # type: ignore[arg-type]
    except StudyNotFoundError:
        return ReviewQueue(items=(), left=0, total=0, left_by_media={}, total_by_media={}, skipped=0)


def my_labels(store: LabelStore, study: str, annotator: str, flt: ReviewFilter | None = None) -> list[FaceLabel]:
    """The faces ``annotator`` has labelled in a study (own or through a track label), for browsing and editing."""
    base = flt or ReviewFilter()
    try:
        return store.browse(study, dataclasses.replace(base, labelled_by=annotator))
    except StudyNotFoundError:
        return []


def skip(store: LabelStore, annotator: str | None, face_id: int) -> None:
    """Keeps a face out of ``annotator``'s queue (stored: it holds across reloads and devices).

    Raises:
        ValueError: Without an annotator name.
    """
    if not annotator:
        raise ValueError("enter your name as annotator before skipping: skips are kept per annotator")
    store.skip(face_id, annotator)


def unskip_all(store: LabelStore, study: str, annotator: str) -> int:
    """Puts every face ``annotator`` skipped in the study back into their queue; returns how many."""
    try:
        return store.unskip(study, annotator)
    except StudyNotFoundError:
        return 0


def undo_last(store: LabelStore, study: str, annotator: str) -> AnnotationRow | None:
    """Reverts ``annotator``'s newest active correction in the study (from any tab or device); None if none."""
    try:
        last = store.last_correction(study, annotator)
    except StudyNotFoundError:
        return None
    if last is None:
        return None
    return store.undo(annotator, annotation_id=last.id)


def study_settings(store: LabelStore, study: str) -> StudySettings:
    """The study's labelling rules."""
    return store.study_settings(study)


def set_study_settings(store: LabelStore, study: str, settings: StudySettings, *, owner: bool) -> StudySettings:
    """Stores the study's labelling rules.

    Raises:
        NotAllowedError: For anyone but a study owner.
    """
    require_owner(owner, "changing a study's labelling rules")
    return store.set_study_settings(study, settings)


def visible_face(face: FaceLabel, annotator: str | None, settings: StudySettings) -> FaceLabel:
    """What ``annotator`` may see of a face under the study's rules (independent labelling hides others' votes)."""
    return review_rules.visible_face(face, annotator, settings)


def face_crops(store: LabelStore, face_ids: Sequence[int], study: str) -> dict[int, bytes]:
    """Stored crops of several faces of ``study`` at once (absent in features-only mode; other studies' left out)."""
    mine = {f.face_id for f in study_faces(store, study)}
    return store.face_crops([i for i in face_ids if i in mine])


def video_frame(path: Path, time_s: float) -> np.ndarray:
    """The frame of a kept video at ``time_s`` (seeking, not decoding from the start)."""
    from models.decode import frame_at

    return frame_at(path, time_s, path.name)


def face_label(store: LabelStore, face_id: int, study: str) -> FaceLabel:
    """One face of ``study`` with its prediction and current labels.

    Raises:
        NotFoundError: No such face in ``study`` (another study's face id, from a URL or an old tab, reads the same).
    """
    face = store.face(face_id)
    if face.media_id not in _study_media_ids(store, study):
        raise NotFoundError(f"face of study {study!r}", face_id)  # the same answer as for no face at all
    return face


def correct(
    store: LabelStore,
    annotator: str,
    *,
    face_id: int | None = None,
    track_id: int | None = None,
    label: str | None = None,
    valence: float | None = None,
    arousal: float | None = None,
    engagement: float | None = None,
    note: str | None = None,
) -> AnnotationRow:
    """Appends a correction of one face, or of a whole track, by ``annotator``.

    Raises:
        ValueError: Without an annotator name, or without exactly one of face_id and track_id.
        InvalidLabelError: For a class or value out of range.
        NotFoundError: For a face or track that no longer exists.
    """
    name = (annotator or "").strip()
    if not name:
        raise ValueError("enter your name as annotator before the first correction")
    if (face_id is None) == (track_id is None):
        raise ValueError("a correction needs exactly one of a face or a track")
    kw = {"label": label, "valence": valence, "arousal": arousal, "engagement": engagement, "note": note}
    if track_id is not None:
        return store.correct_track(track_id, name, **kw)
    assert face_id is not None
    return store.correct_face(face_id, name, **kw)


# ---------------------------------------------------------------------------------------------------- dataset


def study_stats(store: LabelStore, study: str) -> StudyStats | None:
    """Counts, confusion and agreement of a study, None for a study without data."""
    try:
        return store.stats(study)
    except StudyNotFoundError:
        return None


def export_file_name(study: str, fmt: str) -> str:
    """The download's file name: ``affectlab-<study>-<format>.<suffix>``, safe characters only."""
    safe = re.sub(r"[^A-Za-z0-9_-]+", "-", study).strip("-") or "study"
    return f"affectlab-{safe}-{fmt}.{EXPORT_FORMATS[fmt][1]}"


def export_bytes(store: LabelStore, study: str, fmt: str, *, owner: bool) -> bytes:
    """One export of a study as the bytes of the file offered for download.

    CSV, Parquet and features NPZ are the export files themselves; the ImageFolder export is its zip; the Hugging
    Face layout (a folder) is zipped.

    Raises:
        NotAllowedError: For anyone but an owner of the study.
        CropsUnavailableError, FeaturesUnavailableError, StoreError: As ``LabelStore.export``.
    """
    require_owner(owner, f"exporting study {study!r}")
    if fmt not in EXPORT_FORMATS:
        raise ValueError(f"unknown export format {fmt!r}")
    with tempfile.TemporaryDirectory(prefix="affectlab-export-") as tmp:
        out = Path(tmp) / ("export" if fmt == "hf" else f"export.{EXPORT_FORMATS[fmt][1]}")
        store.export(study, fmt, out)
        if fmt != "hf":
            return out.read_bytes()
        buf = io.BytesIO()
        with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_DEFLATED) as zf:
            for f in sorted(out.rglob("*")):
                if f.is_file():
                    zf.write(f, f.relative_to(out).as_posix())
        return buf.getvalue()


def dataset_card(store: LabelStore, study: str, *, owner: bool) -> str:
    """The dataset card (README) of a study: counts, label sources, agreement, licence notes.

    Raises:
        NotAllowedError: For anyone but an owner of the study.
    """
    require_owner(owner, f"exporting the dataset card of study {study!r}")
    with tempfile.TemporaryDirectory(prefix="affectlab-card-") as tmp:
        out = Path(tmp) / "faces.csv"
        store.export(study, "csv", out)
        return out.with_name("faces.README.md").read_text(encoding="utf-8")


def delete_media(
    store: LabelStore, study: str, media_id: int, media_dir: Path | None, *, owner: bool
) -> dict[str, int]:
    """Deletes a media item of ``study`` with everything derived from it, and its kept file.

    Returns:
        What was removed, per kind.

    Raises:
        NotAllowedError: For anyone but an owner of the study.
        NotFoundError: No such media item in ``study``.
    """
    require_owner(owner, f"deleting media of study {study!r}")
    media = next((m for m in study_media(store, study) if m.id == media_id), None)
    if media is None:
        raise NotFoundError(f"media item of study {study!r}", media_id)
    return _delete_media_item(store, study, media, media_dir)


# ---------------------------------------------------------------------------------------------------- samples

DEMO_STUDY = "demo"
"""The study "Try a sample" analyses into; its media are deleted after ``AFFECTLAB_DEMO_TTL_HOURS``."""

DEMO_SWEEP_EVERY_S = 3600.0
"""Least seconds between two sweeps of the demo study by one server process."""


def sample_names(samples_dir: Path) -> list[str]:
    """The sample files ready in ``samples_dir`` (``affectlab.samples``), empty when they are absent or wrong."""
    from affectlab.samples import present_samples

    return [p.name for p in present_samples(samples_dir)]


def try_samples(
    samples_dir: Path,
    *,
    store: LabelStore,
    session: AnalysisSession,
    media_dir: Path | None,
    uploaded_by: str | None,
    fps: float = 5.0,
    progress: Progress | None = None,
) -> list[FileOutcome]:
    """Analyses every sample into the demo study; a sample the study holds already is not analysed again.

    Args:
        samples_dir: The samples folder (``AFFECTLAB_SAMPLES_DIR``).
        store: The label store.
        session: The loaded models.
        media_dir: Where media files are kept, None in the features-only mode.
        uploaded_by: Who asked.
        fps: Video sampling rate.
        progress: Called with ``(fraction of all samples, message)``.

    Returns:
        One outcome per sample, in manifest order (empty when the samples are absent).
    """
    from affectlab.samples import present_samples

    paths = present_samples(samples_dir)
    report = progress or (lambda _f, _m: None)
    outcomes: list[FileOutcome] = []
    for i, path in enumerate(paths):
        upload = Upload(path.name, path.read_bytes())
        stored = stored_media(store, DEMO_STUDY, upload)
        if stored is not None:
            outcomes.append(
                FileOutcome(file=path.name, kind=stored.kind, media_id=stored.id, n_faces=stored.n_faces, new=False)
            )
            continue

        def on_file(fraction: float, message: str, i: int = i, name: str = path.name) -> None:
            report((i + fraction) / len(paths), f"{name}: {message}")

        outcomes.append(
            analyze_upload(
                upload,
                study=DEMO_STUDY,
                store=store,
                session=session,
                media_dir=media_dir,
                uploaded_by=uploaded_by,
                fps=fps,
                progress=on_file,
            )
        )
    report(1.0, "done")
    return outcomes


def clear_demo(store: LabelStore, media_dir: Path | None, ttl_hours: float, now: datetime | None = None) -> int:
    """Deletes the demo study's media older than ``ttl_hours`` (with their faces, labels and kept files).

    Returns:
        How many media items were deleted (0 when ``ttl_hours`` is 0: demo media are then kept).
    """
    if ttl_hours <= 0:
        return 0
    now = now or datetime.now(UTC)
    now = now if now.tzinfo else now.replace(tzinfo=UTC)  # SQLite returns naive UTC times
    cutoff = now - timedelta(hours=ttl_hours)
    n = 0
    for m in study_media(store, DEMO_STUDY):
        created = m.created_at if m.created_at.tzinfo else m.created_at.replace(tzinfo=UTC)
        if created <= cutoff:
            _delete_media_item(store, DEMO_STUDY, m, media_dir)
            n += 1
    if n:
        log.info("deleted %d media item(s) of the demo study older than %g h", n, ttl_hours)
    return n


class _Sweeps:
    """When this process last swept the demo study (a sweep at most every :data:`DEMO_SWEEP_EVERY_S`)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.last: float | None = None

    def due(self, now_s: float) -> bool:
        with self.lock:
            if self.last is not None and now_s - self.last < DEMO_SWEEP_EVERY_S:
                return False
            self.last = now_s
            return True


_SWEEPS = _Sweeps()


def clear_demo_if_due(store: LabelStore, media_dir: Path | None, ttl_hours: float) -> int | None:
    """:func:`clear_demo` on the app's first run in this process and then at most once an hour.

    Returns:
        How many media items were deleted, None when no sweep was due.
    """
    if not _SWEEPS.due(time.monotonic()):
        return None
    try:
        return clear_demo(store, media_dir, ttl_hours)
    except Exception:  # a failed sweep must not stop the page; the next one tries again
        log.exception("sweeping the demo study failed")
        return None


def _delete_media_item(store: LabelStore, study: str, media: MediaRow, media_dir: Path | None) -> dict[str, int]:
    path = kept_media_file(media_dir, store, study, media) if media_dir is not None else None
    counts = store.delete_media(media.id)
    if path is not None:
        path.unlink(missing_ok=True)
    return counts


def registry_names() -> list[str]:
    """Every registered checkpoint's name, registry order."""
    return list(REGISTRY)


# ---------------------------------------------------------------------------------------------------- classes


CLASS_TABLES = {
    "class-minutes": "per student per minute",
    "class-segments": "per student per segment",
    "class-overall": "per segment for the class",
}


def class_videos(store: LabelStore, study: str) -> list[MediaRow]:
    """The study's recordings (videos), newest first."""
    return [m for m in study_media(store, study) if m.kind == "video"]


def class_persons(store: LabelStore, media_id: int) -> list[Any]:
    """The current persons of a recording, corrections applied."""
    return store.persons(media_id)


def person_history(store: LabelStore, media_id: int) -> list[Any]:
    """The renames, merges and splits of a recording's persons, oldest first."""
    return store.person_history(media_id)


def _who(annotator: str | None) -> str:
    if not annotator:
        raise NotAllowedError("type your name in the sidebar first: every change to the persons records who made it")
    return annotator


def rename_person(store: LabelStore, annotator: str | None, person_id: int, participant: str) -> None:
    """Gives a person a participant id (recorded with who and when)."""
    store.rename_person(person_id, participant, _who(annotator))


def merge_persons(store: LabelStore, annotator: str | None, person_id: int, other_person_id: int) -> None:
    """Merges a person into another; refused with the reason when both were on screen at the same time."""
    store.merge_persons(person_id, other_person_id, _who(annotator))


def split_track(store: LabelStore, annotator: str | None, track_id: int) -> None:
    """Splits a track off its person into a new person."""
    store.split_track(track_id, _who(annotator))


def lecture_segments(store: LabelStore, study: str, media_id: int | None = None) -> list[Any]:
    """The lecture segments of the study (or of one recording)."""
    return store.segments(study, media_id)


def add_segment(store: LabelStore, who: str | None, media_id: int, name: str, start_s: float, end_s: float) -> None:
    """Adds a lecture segment (refused with the reason when it overlaps another or leaves the recording)."""
    store.add_segment(media_id, name, start_s, end_s, created_by=who)


def import_segments(store: LabelStore, study: str, data: bytes, who: str | None) -> int:
    """Adds the segments of an uploaded CSV file, all or nothing; returns how many."""
    with tempfile.TemporaryDirectory(prefix="affectlab-segments-") as tmp:
        path = Path(tmp) / "segments.csv"
        path.write_bytes(data)
        return len(store.import_segments(study, path, created_by=who))


def delete_segment(store: LabelStore, segment_id: int) -> None:
    """Removes a lecture segment."""
    store.delete_segment(segment_id)


def class_tables(store: LabelStore, study: str) -> Any:
    """The online-class tables of the study (:class:`db.classroom.ClassTables`)."""
    return store.class_tables(study)


def class_table_bytes(store: LabelStore, study: str, table: str, fmt: str = "csv") -> tuple[bytes, str]:
    """One class table as a download (CSV or Parquet, no image) and its dataset card."""
    if table not in CLASS_TABLES or fmt not in ("csv", "parquet"):
        raise ValueError(f"unknown table {table!r} or format {fmt!r}")
    with tempfile.TemporaryDirectory(prefix="affectlab-class-") as tmp:
        out = Path(tmp) / f"{table}.{fmt}"
        store.export(study, table, out)
        return out.read_bytes(), out.with_name(out.stem + ".README.md").read_text(encoding="utf-8")


def class_figure(tables: Any, segments: Sequence[Any], media_id: int, students: Sequence[str], value: str) -> Any:
    """The class-over-time figure of one recording."""
    from webapp.figures import class_timeline

    rows = [r for r in tables.minutes if r["media_id"] == media_id]
    segs = [(s.name, s.start_s, s.end_s) for s in segments if s.media_id == media_id]
    return class_timeline(rows, segs, f"Class {value.replace('_', ' ')} per minute", students, value)


def blur_image(
    image: np.ndarray, boxes: Sequence[tuple[float, float, float, float]], keep: int | None = None, radius: int = 12
) -> np.ndarray:
    """The image with every face box blurred (privacy for minors), except box number ``keep``."""
    from PIL import Image, ImageFilter

    im = Image.fromarray(np.asarray(image, dtype=np.uint8))
    for k, (x1, y1, x2, y2) in enumerate(boxes):
        if k == keep:
            continue
        box = (max(0, int(x1)), max(0, int(y1)), min(im.width, int(x2) + 1), min(im.height, int(y2) + 1))
        if box[2] > box[0] and box[3] > box[1]:
            im.paste(im.crop(box).filter(ImageFilter.GaussianBlur(radius)), box[:2])
    return np.asarray(im)


def blurs(settings: StudySettings, owner: bool) -> bool:
    """Whether faces are blurred for this viewer: the study blurs faces (privacy for minors) and it is no owner."""
    return bool(settings.blur_faces) and not owner


def blurred_frame(
    image: np.ndarray,
    boxes: Sequence[tuple[float, float, float, float]],
    settings: StudySettings,
    owner: bool,
    keep: int | None = None,
) -> np.ndarray:
    """A picture (image or video frame) as this viewer may see it.

    Its face boxes are blurred when :func:`blurs` says so, except box number ``keep`` (the face being labelled).
    """
    return blur_image(image, boxes, keep=keep) if blurs(settings, owner) else image


def viewer_crops(
    store: LabelStore,
    face_ids: Sequence[int],
    settings: StudySettings,
    owner: bool,
    study: str,
    sharp: int | None = None,
) -> dict[int, bytes]:
    """Stored crops of a study's faces as this viewer may see them (face ``sharp``, the one being labelled, sharp).

    Faces of other studies are left out, like in :func:`face_crops`.
    """
    return {
        fid: blurred_crop(data, settings, owner, own_face=fid == sharp)
        for fid, data in face_crops(store, face_ids, study).items()
    }


def person_thumbnails(
    store: LabelStore, media_id: int, persons: Sequence[Any], settings: StudySettings, owner: bool
) -> dict[int, bytes]:
    """One face crop per person of a recording (its first track's best detection), as this viewer may see it."""
    best = store.best_faces(media_id)
    chosen = {p.person_id: best[t] for p in persons for t in p.track_ids[:1] if t in best}
    crops = {
        fid: blurred_crop(data, settings, owner, own_face=False)
        for fid, data in store.face_crops(list(chosen.values())).items()
    }  # faces of this media item only
    return {pid: crops[fid] for pid, fid in chosen.items() if fid in crops}


def frame_faces(store: LabelStore, study: str, face: FaceLabel) -> tuple[list[tuple[float, float, float, float]], int]:
    """The boxes of every face on the frame (or image) of ``face``, and the index of ``face`` among them."""
    same = [f for f in store.faces(study, media_id=face.media_id) if f.frame == face.frame]
    boxes = [f.box for f in same]
    keep = next((i for i, f in enumerate(same) if f.face_id == face.face_id), None)
    if keep is None:
        boxes.append(face.box)
        keep = len(boxes) - 1
    return boxes, keep


def blurred_crop(data: bytes, settings: StudySettings, owner: bool, own_face: bool) -> bytes:
    """A face crop as the app may show it (privacy for minors).

    Blurred when the study blurs faces and the viewer is neither an owner nor the annotator labelling this face.
    """
    if not settings.blur_faces or owner or own_face:
        return data
    from PIL import Image, ImageFilter

    im = Image.open(io.BytesIO(data)).convert("RGB").filter(ImageFilter.GaussianBlur(8))
    buf = io.BytesIO()
    im.save(buf, format="PNG")
    return buf.getvalue()
