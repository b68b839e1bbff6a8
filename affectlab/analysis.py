"""The analysis service: the one way files are analysed into a study.

The Analyze page and "Try a sample" (:mod:`webapp.services.analysis`, :mod:`webapp.services.demo`), ``affectlab
analyze`` (:mod:`affectlab.cli`), its worker processes and its Ray actors (:mod:`affectlab.distribute`) all call
:class:`AnalysisService`. For each file it decides from the store what to do:

- the study holds the bytes ``complete``: nothing runs, the stored item is returned (``skipped``);
- it holds them ``partial`` (a stopped run of a video): the analysis resumes after its last stored frame;
- they are new: the file is analysed (the models are loaded only now, once per service);
- another live run is analysing the same bytes (its claim, :mod:`db.claims`): ``busy``, or with
  ``Options.wait`` the service waits for that run to end and then resumes or returns its result; a claim whose
  owner died is taken over.

The claim is taken in the transaction that creates or resumes the media item, checked in every later write of this
run and released in the one that completes it, so the same bytes are never analysed twice at once. A video is
streamed stretch by stretch (``commit_every_s`` seconds of video per transaction, :mod:`db.resumable`); tracks,
engagement and persons are computed at the end from every stored face (:func:`models.track_results.score_tracks`
over :class:`models.video.FaceReplay`), so a resumed run ends with the tracks of a straight one.

The bytes analysed are the bytes hashed: a still is read once and hashed from what was read; a video file's size and
modification time are checked before each stretch is stored, and its hash again before it is marked ``complete``.
A file that changed meanwhile is left ``partial`` with a message (:class:`FileChangedError`): the same bytes
analysed again resume it.

Every file gets one :class:`FileOutcome`. A bad file never raises: its outcome says why, and the others go on. Setup
problems (the store not migrated or unreachable, the models missing) do raise.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from affectlab import detection
from affectlab.analysis_types import (
    FileChangedError,
    FileOutcome,
    Options,
    Prepared,
    Progress,
    Source,
    Status,
    TimeLeft,
    media_info,
    os_error_message,
    prepare,
    setup_message,
    video_file,
)
from affectlab.finish import Streamed, finish_video
from db.claims import HEARTBEAT_S, Claimant, ClaimBusyError
from db.detection import DetectionSettings
from db.errors import SchemaOutdatedError
from db.resumable import AnalysisState
from db.services import LabelStore
from models.errors import AffectLabError, BadInputError

if TYPE_CHECKING:  # the models load lazily: the first page paints before any of them is imported
    from models.analysis import AnalysisSession

log = logging.getLogger(__name__)

__all__ = [
    "AnalysisService",
    "FileChangedError",
    "FileOutcome",
    "Options",
    "Progress",
    "Source",
    "Status",
    "TimeLeft",
    "media_info",
    "setup_message",
]


class AnalysisService:
    """Analyses files into one study of one store, with models loaded on first need.

    Args:
        store: The label store.
        study: The study (created when new).
        load_session: Loads the models; called once, and only when a file needs analysing.
        options: How files are analysed and stored.
        claimant: Who claims the files (default: a new claimant for this process).
    """

    def __init__(
        self,
        store: LabelStore,
        study: str,
        load_session: Callable[[], AnalysisSession],
        options: Options | None = None,
        claimant: Claimant | None = None,
    ) -> None:
        self.store = store
        self.study = study
        self.options = options or Options()
        self.claimant = claimant or Claimant.here()
        self._load = load_session
        self._session: AnalysisSession | None = None

    @property
    def session(self) -> AnalysisSession:
        """The models (loaded on first use)."""
        if self._session is None:
            self._session = self._load()
        return self._session

    # ------------------------------------------------------------------------------------------------ files

    def analyze(self, source: Source, *, progress: Progress | None = None, wait: bool | None = None) -> FileOutcome:
        """Analyses one file into the study: skipped, resumed or analysed as the store says (see the module).

        Args:
            source: The file.
            progress: Called as the analysis goes (videos: seconds done and duration).
            wait: Wait for another run analysing the same bytes (default: ``Options.wait``).

        Raises:
            AffectLabError: The models could not be loaded, or the store is not migrated; nothing was stored.
        """
        name = source.name
        try:
            prepared = prepare(source)
        except BadInputError as exc:
            return FileOutcome(name, "failed", error=exc.reason)
        wait = self.options.wait if wait is None else wait
        while True:
            try:
                return self._analyze(source, prepared, progress)
            except ClaimBusyError as exc:
                if not wait:
                    return FileOutcome(name, "busy", kind=prepared.kind, error=str(exc))
                log.info("%s: %s; waiting", name, exc)
                time.sleep(self.options.poll_s)

    def stored(self, source: Source) -> FileOutcome | None:
        """The ``skipped`` outcome of a file the study holds complete (no model runs), else None."""
        try:
            prepared = prepare(source)
        except BadInputError:
            return None
        return self._stored(source.name, prepared)

    def _stored(self, name: str, prepared: Prepared) -> FileOutcome | None:
        existing = self.store.recordings.media_by_sha256(self.study, prepared.sha256)
        if existing is not None and existing.analysis_status == "complete":
            return _skipped(name, existing.id, existing.kind, existing.n_faces)
        return None

    def _analyze(self, source: Source, prepared: Prepared, progress: Progress | None) -> FileOutcome:
        name = source.name
        known = self._stored(name, prepared)
        if known is not None:
            return known
        try:
            if prepared.kind == "video":
                with video_file(source, prepared) as path:
                    return self._video(name, prepared, path, progress)
            return self._image(name, prepared)
        except ClaimBusyError:
            raise
        except _ModelsUnavailable as exc:  # a setup problem: the claim goes back, the run stops
            self._release(prepared)
            raise exc.cause from None
        except SchemaOutdatedError:
            raise
        except AffectLabError as exc:
            self._release(prepared)
            reason = exc.reason if isinstance(exc, BadInputError) else str(exc)
            return FileOutcome(name, "failed", kind=prepared.kind, media_id=self._media_id(prepared), error=reason)
        except OSError as exc:  # the disk full while the file is kept, a read-only media folder
            self._release(prepared)
            return FileOutcome(name, "failed", kind=prepared.kind, error=os_error_message(exc))
        except Exception as exc:
            self._release(prepared)
            from sqlalchemy.exc import SQLAlchemyError

            if isinstance(exc, SQLAlchemyError):
                raise
            log.exception("analysis of %s failed", name)
            return FileOutcome(
                name, "failed", kind=prepared.kind, error=f"unexpected error ({type(exc).__name__}: {exc})"
            )
        except BaseException:  # stopped (Ctrl-C, a page's rerun): the claim goes, the stored stretches stay
            self._release(prepared)
            raise

    def _media_id(self, prepared: Prepared) -> int | None:
        """The media item of a failed file (a partial video's), None when there is none or the store cannot say."""
        try:
            media = self.store.recordings.media_by_sha256(self.study, prepared.sha256)
        except Exception:  # the store is what failed: the outcome goes without the id
            return None
        return media.id if media is not None else None

    def _release(self, prepared: Prepared) -> None:
        try:
            self.store.ingest.release_claim(self.study, prepared.sha256, self.claimant)
        except Exception:  # the claim then goes stale; the next run takes it over
            log.warning("could not release the claim on %s", prepared.sha256[:12], exc_info=True)

    # ------------------------------------------------------------------------------------------------ stills

    def _models(self) -> AnalysisSession:
        """The models, once the file is claimed (no model loads for a file another run holds)."""
        try:
            return self.session
        except AffectLabError as exc:
            raise _ModelsUnavailable(exc) from exc

    def _image(self, name: str, prepared: Prepared) -> FileOutcome:
        row = self.store.ingest.claim(self.study, prepared.sha256, self.claimant)
        if row is not None:  # completed by another run meanwhile
            return _skipped(name, row.id, row.kind, row.n_faces)
        session = self._models()
        assert prepared.data is not None
        with _heartbeat(self.store, self.study, prepared.sha256, self.claimant):
            data = prepared.data
            wanted = self._wanted_detection(None, None, lambda: detection.still(data))
            session = session.with_detection(wanted.min_face_size, wanted.detect_max_side)
            image = session.analyze_image(prepared.data, name, keep_crops=True)
        rep = self.store.ingest.ingest_results(
            self.study,
            prepared.data,
            name,
            image.faces,
            media_info=media_info(image),
            uploaded_by=self.options.uploaded_by,
            keep_file=self.options.keep_file,
            sha256=prepared.sha256,
            claimant=self.claimant,
        )
        if rep.media_ids:
            self._record_detection(rep.media_ids[0], wanted)
        return FileOutcome(
            name,
            "stored",
            kind="image",
            media_id=rep.media_ids[0] if rep.media_ids else None,
            n_faces=len(image.faces),
            new=rep.media_new > 0,
            faces_new=rep.faces_new,
            faces_reused=rep.faces_reused,
            predictions_new=rep.predictions_new,
            predictions_existing=rep.predictions_existing,
            tracks=rep.tracks_new,
            crops_stored=rep.crops_stored,
            features_stored=rep.features_stored,
            warnings=rep.warnings,
        )

    # ------------------------------------------------------------------------------------------------ videos

    def _video(self, name: str, prepared: Prepared, path: Path, progress: Progress | None) -> FileOutcome:
        """Stretch by stretch into the store, resuming a stopped run of the same bytes; then tracks and persons."""
        from models.decode import probe_video

        probe = probe_video(path, name, self.options.stream)
        state = self.store.ingest.begin_video(
            self.study,
            prepared.data if prepared.data is not None else path,
            name,
            media_info(probe),
            uploaded_by=self.options.uploaded_by,
            keep_file=self.options.keep_file,
            sha256=prepared.sha256,
            claimant=self.claimant,
            recut=self.options.stream == 0 and not probe.times_may_jump,  # else crops re-cut by time miss frames
        )
        if state.status == "complete":  # completed by another run meanwhile
            return _skipped(name, state.media_id, "video", state.n_faces)
        session = self._models()
        with _heartbeat(self.store, self.study, prepared.sha256, self.claimant):
            settings = self._detection(state.media_id, probe.width, probe.height, path, name, probe.duration)
            session = session.with_detection(settings.min_face_size, settings.detect_max_side)
            plain = self.options.stream == 0 and not probe.times_may_jump  # ranges seek by time in the first stream
            streamed = self._stream(name, prepared, path, session, state, progress, probe.duration, plain)
            prepared.check_unchanged(name, rehash=True)
            return finish_video(self.store, self.claimant, name, prepared, session, state, probe, streamed)

    # ------------------------------------------------------------------------------------------------ detection

    def _wanted_detection(
        self, width: int | None, height: int | None, frames: Callable[[], list[Any]]
    ) -> DetectionSettings:
        """The settings the options ask for this file (``auto``: the detector looks at ``frames()`` first).

        ``width`` None (a still): the size is that of the first of ``frames()``.
        """
        o = self.options
        sized = o.gallery_preset == "gallery" and o.min_face_size is None  # the size comes from the frame
        shown = frames() if o.gallery_preset == "auto" or (sized and width is None) else []
        if width is None and shown:
            height, width = int(shown[0].shape[0]), int(shown[0].shape[1])
        faces = detection.probe_faces(self.session.detector, shown) if o.gallery_preset == "auto" else None
        return detection.choose(o.gallery_preset, o.min_face_size, width, height, faces)

    def _record_detection(self, media_id: int, settings: DetectionSettings) -> DetectionSettings:
        """Stores the settings with the media item unless it has some; returns the stored ones (first wins)."""
        from db import detection as stored

        return self.store.transaction(lambda s: stored.record(s, media_id, settings))

    def _detection(
        self, media_id: int, width: int | None, height: int | None, path: Path, name: str, duration: float | None
    ) -> DetectionSettings:
        """A video's settings: those stored with it (a resumed run), else the options' (probed), stored now."""
        from db import detection as stored

        got = self.store.transaction(lambda s: stored.detection_settings(s, media_id), write=False)
        if got is not None:
            return got
        wanted = self._wanted_detection(width, height, lambda: detection.first_minute(path, name, duration))
        return self._record_detection(media_id, wanted)

    def _stream(
        self,
        name: str,
        prepared: Prepared,
        path: Path,
        session: AnalysisSession,
        state: AnalysisState,
        progress: Progress | None,
        probe_duration: float | None = None,
        may_cut: bool = True,
    ) -> Streamed:
        """The video's faces into the store, stretch by stretch (over several processes when it is cut into ranges).

        ``may_cut`` False (another stream than the first, or timestamps that may jump): one process reads it all.
        """
        from affectlab import ranged
        from models.decode import ResumePoint
        from models.types import Face
        from models.video import analyze_video_chunks

        resume = None
        if state.until_s is not None and state.until_frame is not None and state.samples:
            resume = ResumePoint(
                time_s=state.until_s,
                index=state.until_frame,
                sample=state.samples - 1,
                faces=tuple(Face(box=box, det_score=score) for box, score in state.faces),
            )
            log.info("%s: resuming after %.2f s (frame %d)", name, state.until_s, state.until_frame)
        got = Streamed(resumed_from_s=None if resume is None else resume.time_s)
        fps = self.options.fps or None
        fresh = resume is None and state.n_faces == 0
        cut = None
        if may_cut:
            cut = ranged.plan_for(self.store, state.media_id, fresh, path, session, fps, probe_duration)
        if cut is not None:  # one recording over several processes, a resume point per range
            check = lambda: prepared.check_unchanged(name)  # noqa: E731
            ranged.stream_ranges(
                self.store,
                state.media_id,
                self.claimant,
                check,
                path,
                name,
                session,
                fps,
                self.options.commit_every_s,
                cut,
                got,
                progress,
            )
            return got
        for chunk in analyze_video_chunks(
            path,
            name,
            session.detector,
            session.recognizer,
            fps,
            config=replace(session.video, keep_crops=True),
            resume=resume,
            commit_every_s=self.options.commit_every_s,
            progress=progress,
            stream=self.options.stream,
        ):
            got.last = chunk
            if chunk.until is None or (resume is not None and chunk.until.index == resume.index):
                continue
            prepared.check_unchanged(name)  # the frames of this stretch were read from the bytes hashed
            n, c, f = self.store.ingest.store_chunk(
                state.media_id,
                chunk.faces,
                until_s=chunk.until.time_s,
                until_frame=chunk.until.index,
                samples=chunk.until.sample + 1,
                claimant=self.claimant,
            )
            got.faces, got.crops, got.features = got.faces + n, got.crops + c, got.features + f
        return got


class _ModelsUnavailable(Exception):
    """The models could not be loaded (carries the :class:`AffectLabError` that says why)."""

    def __init__(self, cause: AffectLabError) -> None:
        super().__init__(str(cause))
        self.cause = cause


def _skipped(name: str, media_id: int, kind: str, n_faces: int) -> FileOutcome:
    return FileOutcome(name, "skipped", kind=kind, media_id=media_id, n_faces=n_faces)


@contextmanager
def _heartbeat(store: LabelStore, study: str, sha256: str, claimant: Claimant) -> Iterator[None]:
    """Beats the claim's heartbeat every :data:`db.claims.HEARTBEAT_S` from a thread while the work runs."""
    stop = threading.Event()

    def beat() -> None:
        while not stop.wait(HEARTBEAT_S):
            try:
                store.ingest.heartbeat(study, sha256, claimant)
            except Exception as exc:  # a lost claim is found by the next write, which stops the run
                log.info("heartbeat of %s: %s", sha256[:12], exc)

    thread = threading.Thread(target=beat, name="affectlab-claim-heartbeat", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(timeout=5)
