"""Analysing uploaded files: one upload or several, with the loaded models, stored into a study.

The adapter between the Analyze page and the analysis service (:class:`affectlab.analysis.AnalysisService`, the one
way files are analysed into a study, shared with ``affectlab analyze``): it turns uploads into sources and the
service's progress into the page's bars. A bad file never raises, its outcome says why; a video whose analysis
stopped midway (app closed) is resumed when the same file is uploaded again.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from affectlab.analysis import AnalysisService, FileOutcome, Options, Source, TimeLeft
from affectlab.text import plural
from db.services import LabelStore
from models.errors import AffectLabError

if TYPE_CHECKING:  # the models load lazily: the first page paints before any of them is imported
    from models.analysis import AnalysisSession

log = logging.getLogger(__name__)

__all__ = ["AnalysisRun", "FileOutcome", "Progress", "SessionLoader", "Upload", "analyze_files", "analyze_upload"]

Progress = Callable[[float, str], None]
"""``progress(fraction_done, message)`` of one file's analysis."""

SessionLoader = Callable[[], "AnalysisSession"]
"""Loads the models when a file needs them (``webapp.resources.analysis_session`` with the page's choices)."""


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

    @property
    def source(self) -> Source:
        """The upload as a source of the analysis service (its hash computed once)."""
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
) -> AnalysisService:
    options = Options(fps=fps, uploaded_by=uploaded_by, commit_every_s=commit_every_s, keep_file=media_dir is not None)
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

    Returns:
        The stored and analysed outcomes.
    """
    service = _service(store, study, load_session, media_dir, uploaded_by, fps, commit_every_s)
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
    analysed = [_analyze(service, upload, progress_for(upload) if progress_for is not None else None) for upload in new]
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
) -> FileOutcome:
    """Analyses one uploaded image or video with the session's models and stores the results in ``study``.

    A bad file never raises: its outcome carries the reason, and nothing stored is touched.
    """
    service = _service(store, study, lambda: session, media_dir, uploaded_by, fps)
    return _analyze(service, upload, progress)


def _analyze(service: AnalysisService, upload: Upload, progress: Progress | None) -> FileOutcome:
    report = progress or (lambda _f, _m: None)
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
