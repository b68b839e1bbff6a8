"""Analysing uploaded files: one upload or several, with the loaded models, stored into a study.

The adapter between the Analyze page and the inference core (:class:`models.analysis.AnalysisSession`, the one way to
analyse a file) and the label store (:class:`db.services.LabelStore`); a bad file never raises, its outcome says why.
"""

from __future__ import annotations

import functools
import logging
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from affectlab.text import plural
from db.ingest import MediaInfo
from db.media_files import media_suffix
from db.rows import MediaRow
from db.services import LabelStore
from models.errors import AffectLabError, BadInputError
from models.images import PixelLedger

if TYPE_CHECKING:  # the models load lazily: the first page paints before any of them is imported
    from models.analysis import AnalysisSession

log = logging.getLogger(__name__)


Progress = Callable[[float, str], None]
"""``progress(fraction_done, message)`` of one file's analysis."""

SessionLoader = Callable[[], "AnalysisSession"]
"""Loads the models when a file needs them (``webapp.resources.analysis_session`` with the page's choices)."""


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
    def source(self) -> bytes | Path:
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

        return sha256_source(self.source)[0]


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
    pixels: PixelLedger | None = None,
    client: str = "",
) -> AnalysisRun:
    """The Analyze button: files the study holds already are looked up, the new ones analysed and stored.

    The models are loaded only when a file is new. A bad file never raises (its outcome says why) and the others go
    on.

    Args:
        uploads: The files, in upload order.
        study: The study to store the results in (created when new).
        store: The label store.
        load_session: Loads the models (called once, and only when a file is new).
        media_dir: Where media files are kept, None in the features-only mode.
        uploaded_by: Who uploaded them.
        fps: Video sampling rate.
        progress_for: Gives the progress callback of one new file, called just before that file is analysed.
        pixels: The hourly pixel budgets each new file is charged to before it is decoded (see :func:`analyze_upload`).
        client: Whose budget.

    Returns:
        The stored and analysed outcomes.
    """
    stored: list[FileOutcome] = []
    new: list[Upload] = []
    for upload in uploads:
        row = stored_media(store, study, upload)
        if row is None:
            new.append(upload)
        else:
            stored.append(FileOutcome(file=upload.name, kind=row.kind, media_id=row.id, n_faces=row.n_faces, new=False))
    if not new:
        return AnalysisRun(stored=tuple(stored), analysed=())
    try:
        session = load_session()
    except AffectLabError as exc:
        return AnalysisRun(stored=tuple(stored), analysed=(), load_error=str(exc))
    analysed = [
        analyze_upload(
            upload,
            study=study,
            store=store,
            session=session,
            media_dir=media_dir,
            uploaded_by=uploaded_by,
            fps=fps,
            progress=progress_for(upload) if progress_for is not None else None,
            pixels=pixels,
            client=client,
        )
        for upload in new
    ]
    return AnalysisRun(stored=tuple(stored), analysed=tuple(analysed))


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
        pixels = image_header_pixels(upload.source, upload.name)
    ledger.charge(client, pixels, upload.name)


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
        pixels: The hourly pixel budgets (:data:`PIXELS` for the web app), None for none.
        client: Whose budget the file is charged to (``webapp.guard.client_key``).

    Returns:
        The outcome.
    """
    report = progress or (lambda _f, _m: None)
    kind = "unknown"
    try:
        if not upload.size:
            raise BadInputError(upload.name, "the file is empty")
        kind = upload_kind(upload)
        if pixels is not None:
            charge_pixels(upload, kind, pixels, client)
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
    data = upload.read()
    result = session.analyze_image(data, upload.name, keep_crops=True)
    report(0.8, f"storing {plural(len(result.faces), 'face')}")
    info = MediaInfo(kind="image", width=result.width, height=result.height)
    rep = store.ingest_results(
        study,
        data,
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
        if upload.path is not None:  # spooled: read from where it is, never whole into memory
            path.symlink_to(upload.path.resolve())
        else:
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
            data=upload.data if upload.path is None else None,
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
        upload.source,
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
        warnings += (f"engagement: {analysis.engagement_note}",)
    report(1.0, f"{plural(len(analysis.faces), 'face')} in {plural(len(analysis.tracks), 'track')}")
    return FileOutcome(
        file=upload.name,
        kind="video",
        media_id=rep.media_ids[0] if rep.media_ids else None,
        n_faces=len(analysis.faces),
        warnings=warnings,
        new=rep.media_new > 0,
    )
