"""Analysing uploaded files: one upload or several, with the loaded models, stored into a study.

The adapter between the Analyze page and the analysis service (:class:`affectlab.analysis.AnalysisService`, the one
way files are analysed into a study, shared with ``affectlab analyze``): it turns uploads into sources and the
service's progress into the page's bars. A bad file never raises, its outcome says why; a video whose analysis
stopped midway (app closed) is resumed when the same file is uploaded again.
"""

from __future__ import annotations

import functools
import logging
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from affectlab.analysis import AnalysisService, FileOutcome, Options, Source, TimeLeft
from core.text import plural
from db.media_files import media_suffix
from db.services import LabelStore
from models.errors import AffectLabError, BadInputError
from models.images import PixelLedger

if TYPE_CHECKING:  # the models load lazily: the first page paints before any of them is imported
    from models.analysis import AnalysisSession

log = logging.getLogger(__name__)

__all__ = [
    "PIXELS",
    "AnalysisRun",
    "FileOutcome",
    "Progress",
    "SessionLoader",
    "Upload",
    "analyze_files",
    "analyze_upload",
    "charge_pixels",
]

Progress = Callable[[float, str], None]
"""``progress(fraction_done, message)`` of one file's analysis."""

SessionLoader = Callable[[], "AnalysisSession"]
"""Loads the models when a file needs them (``webapp.resources.analysis_session`` with the page's choices)."""
DETECTION_PRESETS = {
    "webcam": "Webcam: one face filling much of the frame",
    "gallery": "Gallery view: a grid of small tiles",
    "auto": "Auto: chosen per file from its first minute",
}
"""The face detection presets of the Analyze page (:mod:`affectlab.detection`)."""
Detection = tuple[str | None, int | None]
"""The face detection asked for: preset (``auto``, ``webcam``, ``gallery``; None: webcam), minimum face size (None)."""


@dataclass(frozen=True)
class Upload:
    """A file the user gave the app.

    Attributes:
        name: Its name as given (kept as data; shown as text only).
        data: Its bytes, when held in memory (AppTest, the webcam); empty when it is on disk.
        path: Where it is on disk (an upload the guard spooled, ``webapp.guard.UploadSpool``), None when in memory.
            A video is analysed and kept from there without being read whole; an image is read once.
    """

    name: str
    data: bytes = b""
    path: Path | None = None

    @classmethod
    def of(cls, name: str, content: bytes | Path) -> Upload:
        """An upload of bytes or of a file on disk (what ``webapp.guard.upload_content`` gives)."""
        return cls(name, content) if isinstance(content, bytes) else cls(name, path=Path(content))

    @property
    def content(self) -> bytes | Path:
        """The bytes, or the file holding them."""
        return self.path if self.path is not None else self.data

    @property
    def size(self) -> int:
        """Bytes in the file."""
        return self.path.stat().st_size if self.path is not None else len(self.data)

    def read(self) -> bytes:
        """The bytes (read from disk when spooled)."""
        return self.path.read_bytes() if self.path is not None else self.data

    @functools.cached_property
    def sha256(self) -> str:
        """Hex sha256 of the bytes, computed once, in blocks (the stored-already check and the store share it)."""
        from db.codecs import sha256_source

        return sha256_source(self.content)[0]

    @property
    def source(self) -> Source:
        """The upload as a source of the analysis service (a spooled file by its path; its hash computed once)."""
        if self.path is not None:
            return Source(self.name, path=self.path, sha256=self.sha256)
        return Source(self.name, data=self.data, sha256=self.sha256)


@dataclass(frozen=True)
class AnalysisRun:
    """What the Analyze button gave for several files.

    Attributes:
        stored: Files the study held already, in upload order: their stored results are shown, no model ran.
        analysed: Outcomes of the files that were new to the study, in upload order (empty when the models did
            not load).
        load_error: Why the models could not be loaded (the new files were then not analysed), None when they
            loaded or were not needed.
    """

    stored: tuple[FileOutcome, ...]
    analysed: tuple[FileOutcome, ...]
    load_error: str | None = None

    @property
    def media_ids(self) -> list[int]:
        """The media items to show: the stored ones, then the analysed ones, each once."""
        ids: list[int] = []
        for o in (*self.stored, *self.analysed):
            if o.media_id is not None and o.media_id not in ids:
                ids.append(o.media_id)
        return ids


def _service(
    store: LabelStore,
    study: str,
    load_session: SessionLoader,
    media_dir: Path | None,
    uploaded_by: str | None,
    fps: float,
    commit_every_s: float = 30.0,
    detection: Detection = (None, None),
) -> AnalysisService:
    options = Options(
        fps=fps,
        uploaded_by=uploaded_by,
        commit_every_s=commit_every_s,
        keep_file=media_dir is not None,
        gallery_preset=detection[0],
        min_face_size=detection[1],
    )
    return AnalysisService(store, study, load_session, options)


def video_progress(report: Progress) -> Callable[[float, float | None], None]:
    """The service's video progress (seconds done, duration) as the page's (fraction, message), with the time left."""
    left = TimeLeft()

    def on_progress(done: float, duration: float | None) -> None:
        if duration:
            report(0.05 + 0.9 * min(1.0, done / duration), left.text(done, duration))
        else:
            report(0.5, f"{done:.1f} s analysed")

    return on_progress


def analyze_files(
    uploads: Sequence[Upload],
    *,
    study: str,
    store: LabelStore,
    load_session: SessionLoader,
    media_dir: Path | None,
    uploaded_by: str | None = None,
    fps: float = 5.0,
    progress_for: Callable[[Upload], Progress] | None = None,
    commit_every_s: float = 30.0,
    detection: Detection = (None, None),
    pixels: PixelLedger | None = None,
    client: str = "",
) -> AnalysisRun:
    """The Analyze button: files the study holds complete are looked up, the others analysed (or resumed) and stored.

    The models are loaded only when a file needs them. A bad file never raises (its outcome says why) and the others
    go on.

    Args:
        uploads: The files, in upload order.
        study: The study to store the results in (created when new).
        store: The label store.
        load_session: Loads the models (called once, and only when a file needs analysing).
        media_dir: Where media files are kept, None in the features-only mode.
        uploaded_by: Who uploaded them.
        fps: Video sampling rate.
        progress_for: Gives the progress callback of one file to analyse, called just before it is analysed.
        commit_every_s: Seconds of video stored per transaction (what a stopped analysis keeps).
        detection: The face detection preset (``auto``, ``webcam``, ``gallery``; None: webcam) and minimum face
            size in pixels (None: the preset's), stored with each recording (:mod:`affectlab.detection`).
        pixels: The hourly pixel budgets each file to analyse is charged to before it is decoded (:data:`PIXELS`).
        client: Whose budget.

    Returns:
        The stored and analysed outcomes.
    """
    service = _service(store, study, load_session, media_dir, uploaded_by, fps, commit_every_s, detection)
    stored: list[FileOutcome] = []
    new: list[Upload] = []
    for upload in uploads:
        known = service.stored(upload.source)
        if known is None:
            new.append(upload)
        else:
            stored.append(known)
    if not new:
        return AnalysisRun(stored=tuple(stored), analysed=())
    try:
        service.session  # noqa: B018 - loads the models once, before the first file
    except AffectLabError as exc:
        return AnalysisRun(stored=tuple(stored), analysed=(), load_error=str(exc))
    analysed = [
        _analyze(service, upload, progress_for(upload) if progress_for is not None else None, pixels, client)
        for upload in new
    ]
    return AnalysisRun(stored=tuple(stored), analysed=tuple(analysed))


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
    pixels: PixelLedger | None = None,
    client: str = "",
) -> FileOutcome:
    """Analyses one uploaded image or video with the session's models and stores the results in ``study``.

    A bad file never raises: its outcome carries the reason, and nothing stored is touched. With ``pixels``, what
    its header announces is charged to ``client``'s hourly budget before anything is decoded.
    """
    service = _service(store, study, lambda: session, media_dir, uploaded_by, fps)
    return _analyze(service, upload, progress, pixels, client)


def upload_kind(upload: Upload) -> str:
    """``video`` or ``image``, by the suffix (``models.decode.VIDEO_SUFFIXES``; a GIF is probed: animated = video)."""
    from models.decode import VIDEO_SUFFIXES, is_video

    suffix = Path(upload.name).suffix.lower()
    if suffix == ".gif" and upload.path is not None:
        return "video" if is_video(upload.path) else "image"
    if suffix == ".gif":
        with tempfile.NamedTemporaryFile(suffix=".gif") as tmp:
            tmp.write(upload.data)
            tmp.flush()
            return "video" if is_video(tmp.name) else "image"
    return "video" if suffix in VIDEO_SUFFIXES else "image"


PIXELS = PixelLedger()
"""Pixels decoded per client per hour for the web app's uploads (:class:`models.images.PixelLedger`)."""


def charge_pixels(upload: Upload, kind: str, ledger: PixelLedger, client: str) -> None:
    """Charges what ``upload``'s header announces to ``client``, before anything is decoded (stills and videos).

    Raises:
        BadInputError: Over the per-picture limit, the file's budget, or the client's hourly budget.
    """
    from models.decode import header_pixels
    from models.images import image_header_pixels

    if kind == "video":
        if upload.path is not None:
            pixels = header_pixels(upload.path, upload.name)
        else:
            with tempfile.NamedTemporaryFile(suffix=media_suffix(upload.name) or ".bin") as tmp:
                tmp.write(upload.data)
                tmp.flush()
                pixels = header_pixels(tmp.name, upload.name)
    else:
        pixels = image_header_pixels(upload.content, upload.name)
    ledger.charge(client, pixels, upload.name)


def _analyze(
    service: AnalysisService, upload: Upload, progress: Progress | None, pixels: PixelLedger | None, client: str
) -> FileOutcome:
    report = progress or (lambda _f, _m: None)
    try:
        if not upload.size:
            raise BadInputError(upload.name, "the file is empty")
        if pixels is not None:
            charge_pixels(upload, upload_kind(upload), pixels, client)
    except AffectLabError as exc:
        reason = exc.reason if isinstance(exc, BadInputError) else str(exc)
        return FileOutcome(upload.name, "failed", error=reason)
    report(0.05, "analysing")
    try:
        outcome = service.analyze(upload.source, progress=video_progress(report))
    except Exception as exc:  # a store or model problem of one file must not stop the others
        log.exception("analysis of an uploaded file failed")
        reason = str(exc) if isinstance(exc, AffectLabError) else f"unexpected error ({type(exc).__name__}: {exc})"
        return FileOutcome(upload.name, "failed", error=reason)
    if outcome.status == "stored":
        tracks = f" in {plural(outcome.tracks, 'track')}" if outcome.kind == "video" else ""
        report(1.0, f"{plural(outcome.n_faces, 'face')}{tracks}")
    return outcome
