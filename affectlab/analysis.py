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
import os
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import numpy as np

from db.claims import HEARTBEAT_S, Claimant, ClaimBusyError
from db.codecs import sha256_bytes, sha256_source
from db.errors import SchemaOutdatedError
from db.ingest import MediaInfo
from db.media_files import media_suffix
from db.resumable import AnalysisState
from db.services import LabelStore
from models.errors import AffectLabError, BadInputError

if TYPE_CHECKING:  # the models load lazily: the first page paints before any of them is imported
    from models.analysis import AnalysisSession
    from models.decode import VideoInfo
    from models.pipeline import ImageAnalysis
    from models.tracking import Track
    from models.video import VideoChunk

log = logging.getLogger(__name__)

Status = Literal["stored", "skipped", "busy", "failed"]
"""``stored``: analysed by this run (new or resumed); ``skipped``: the study held it complete, nothing ran;
``busy``: another live run is analysing it; ``failed``: it could not be analysed (``error`` says why)."""

Progress = Callable[[float, float | None], None]
"""Called as ``progress(seconds_done, duration_or_None)`` as a video's analysis goes (not for stills)."""


@dataclass(frozen=True)
class FileOutcome:
    """What analysing one file into a study did.

    Attributes:
        file: The file's name as given.
        status: See :data:`Status`.
        kind: ``image``, ``video`` or ``unknown`` (failed before its kind was known).
        media_id: The media item (also of a skipped or a failed partial video), None otherwise.
        n_faces: Faces the media item holds (this run's and earlier runs').
        new: Whether this run created the media item.
        faces_new: Faces this run stored.
        faces_reused: Faces found stored already (a still stored again: another model's prediction joins them).
        predictions_new: Predictions this run stored.
        predictions_existing: Predictions found stored already.
        tracks: Tracks stored by this run.
        persons: Persons (tracks joined) of a video this run completed.
        crops_stored: Crops this run stored.
        features_stored: Features this run stored.
        resumed_from_s: For a video whose stopped analysis this run resumed: the time it resumed after.
        frames_analyzed: For a video: the sampled frames this run analysed.
        duration_s: A video's duration.
        error: Why the file failed or is busy, else None.
        warnings: Problems that did not stop the analysis (damaged data, no engagement, a resumed run).
    """

    file: str
    status: Status
    kind: str = "unknown"
    media_id: int | None = None
    n_faces: int = 0
    new: bool = False
    faces_new: int = 0
    faces_reused: int = 0
    predictions_new: int = 0
    predictions_existing: int = 0
    tracks: int = 0
    persons: int = 0
    crops_stored: int = 0
    features_stored: int = 0
    resumed_from_s: float | None = None
    frames_analyzed: int | None = None
    duration_s: float | None = None
    error: str | None = None
    warnings: tuple[str, ...] = ()


@dataclass(frozen=True)
class Source:
    """A file to analyse: on disk (``path``) or in memory (``data``, an upload).

    Attributes:
        name: Its name as the user gave it (kept as data; stored as a base name).
        path: The file, or None.
        data: Its bytes, or None.
        sha256: The hex sha256 of ``data`` when the caller computed it already (an upload's, computed once).
    """

    name: str
    path: Path | None = None
    data: bytes | None = None
    sha256: str | None = None

    @classmethod
    def file(cls, path: Path | str) -> Source:
        """A file on disk, named as given."""
        return cls(str(path), path=Path(path))


@dataclass(frozen=True)
class Options:
    """How files are analysed and stored.

    Attributes:
        fps: Video sampling rate (0: every frame).
        uploaded_by: Who ran the analysis (stored with each media item).
        commit_every_s: Seconds of video stored per transaction (a stopped run resumes from the last one).
        keep_file: Keep the file in the store (thumbnails, boxes and the player need it; never in the features-only
            mode).
        wait: Wait for a file another live run is analysing (then resume it or return its result) instead of
            returning ``busy``.
        poll_s: Seconds between two looks at such a file's claim.
    """

    fps: float = 5.0
    uploaded_by: str | None = None
    commit_every_s: float = 30.0
    keep_file: bool = True
    wait: bool = False
    poll_s: float = 1.0


class FileChangedError(BadInputError):
    """The file changed while it was analysed: what was read is not what was hashed."""

    def __init__(self, name: str, was: tuple[int, int], now: tuple[int, int] | None) -> None:
        how = "was removed" if now is None else f"was {was[0]} bytes, now {now[0]}"
        super().__init__(
            name,
            f"changed while it was analysed ({how}): left partial, not marked complete; analyse it again once it "
            "no longer changes (the same bytes resume where this run stopped)",
        )


def setup_message(exc: BaseException, database_url: str) -> str | None:
    """The one-line message of a setup problem that stops a whole run (models, store), None for any other error.

    Used alike by ``affectlab analyze`` alone and by its workers, so both say the same and exit with the same code.
    """
    from sqlalchemy.exc import SQLAlchemyError

    if isinstance(exc, AffectLabError):
        return str(exc)
    if not isinstance(exc, SQLAlchemyError):
        return None
    from db.engine import safe_url

    try:
        where = safe_url(database_url)
    except Exception:  # not a URL at all
        where = "DATABASE_URL"
    detail = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return f"database {where}: {detail}; check DATABASE_URL, then run `python -m db upgrade`"


def media_info(result: ImageAnalysis | VideoInfo) -> MediaInfo:
    """The stored description of an analysed still or a probed video."""
    from models.pipeline import ImageAnalysis

    if isinstance(result, ImageAnalysis):
        return MediaInfo(kind="image", width=result.width, height=result.height)
    return MediaInfo(kind="video", width=result.width, height=result.height, duration_s=result.duration, fps=result.fps)


class TimeLeft:
    """Progress text with the time left, from the pace of this run so far (resumed runs start their clock anew)."""

    def __init__(self) -> None:
        """Starts the clock."""
        self._start: tuple[float, float] | None = None

    def text(self, done: float, duration: float) -> str:
        """``"12.0 of 3600.0 s analysed, about 41 min left"`` (no estimate before the pace is known)."""
        now = time.monotonic()
        if self._start is None:
            self._start = (now, done)
            return f"{done:.1f} of {duration:.1f} s analysed"
        t0, d0 = self._start
        rate = (done - d0) / (now - t0) if now > t0 else 0.0
        if rate <= 0:
            return f"{done:.1f} of {duration:.1f} s analysed"
        left = max(0.0, duration - done) / rate
        when = f"{left / 60:.0f} min" if left >= 90 else f"{left:.0f} s"
        return f"{done:.1f} of {duration:.1f} s analysed, about {when} left"


def _stamp(path: Path) -> tuple[int, int] | None:
    try:
        st = path.stat()
    except OSError:
        return None
    return st.st_size, st.st_mtime_ns


@dataclass(frozen=True)
class _Bytes:
    """A source made ready: its kind, hash and the file the decoder reads (a still's bytes, read once)."""

    kind: str
    sha256: str
    size: int
    path: Path | None
    data: bytes | None
    stamp: tuple[int, int] | None

    def check_unchanged(self, name: str, *, rehash: bool = False) -> None:
        """Raises :class:`FileChangedError` when the file on disk is no longer the one hashed."""
        if self.stamp is None or self.path is None:
            return
        now = _stamp(self.path)
        if now != self.stamp or (rehash and sha256_source(self.path)[0] != self.sha256):
            raise FileChangedError(name, self.stamp, now)


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

    def analyze_all(
        self,
        sources: Sequence[Source],
        *,
        progress_for: Callable[[Source], Progress | None] | None = None,
        on_outcome: Callable[[FileOutcome], None] | None = None,
    ) -> list[FileOutcome]:
        """Analyses files one by one, in order; with ``Options.wait``, busy files are waited for at the end.

        Returns:
            One outcome per source, in order.
        """
        outcomes: list[FileOutcome | None] = [None] * len(sources)
        rounds = [False, True] if self.options.wait else [False]
        for wait in rounds:
            for i, src in enumerate(sources):
                if outcomes[i] is not None and outcomes[i].status != "busy":  # type: ignore[union-attr]
                    continue
                got = self.analyze(src, progress=progress_for(src) if progress_for else None, wait=wait)
                outcomes[i] = got
                if on_outcome is not None and (got.status != "busy" or wait or not self.options.wait):
                    on_outcome(got)
        return [o for o in outcomes if o is not None]

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
            prepared = self._prepare(source)
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

    def _prepare(self, source: Source) -> _Bytes:
        """Its kind and hash; a still's bytes read once (the bytes analysed are the bytes hashed)."""
        from models.decode import VIDEO_SUFFIXES, looks_like_video

        name = source.name
        if source.data is not None:
            if not source.data:
                raise BadInputError(name, "empty file")
            kind = _kind_of_bytes(name, source.data)
            digest = source.sha256 or sha256_bytes(source.data)
            return _Bytes(kind, digest, len(source.data), None, source.data, None)
        path = source.path or Path(name)
        if not path.is_file():
            raise BadInputError(name, "is a directory" if path.is_dir() else "no such file")
        try:
            if path.stat().st_size == 0:
                raise BadInputError(name, "empty file")
            if not (path.suffix.lower() in VIDEO_SUFFIXES or looks_like_video(path)):
                data = path.read_bytes()
                return _Bytes("image", sha256_bytes(data), len(data), None, data, None)
            before = _stamp(path)
            digest, size = sha256_source(path)  # in blocks: a long recording is not read into memory
        except OSError as exc:
            raise BadInputError(name, f"cannot be read ({exc.strerror or exc})") from None
        got = _Bytes("video", digest, size, path, None, before)
        got.check_unchanged(name)  # it changed while it was hashed
        return got

    def stored(self, source: Source) -> FileOutcome | None:
        """The ``skipped`` outcome of a file the study holds complete (no model runs), else None."""
        try:
            prepared = self._prepare(source)
        except BadInputError:
            return None
        return self._stored(source.name, prepared)

    def _stored(self, name: str, prepared: _Bytes) -> FileOutcome | None:
        existing = self.store.media_by_sha256(self.study, prepared.sha256)
        if existing is not None and existing.analysis_status == "complete":
            return _skipped(name, existing.id, existing.kind, existing.n_faces)
        return None

    def _analyze(self, source: Source, prepared: _Bytes, progress: Progress | None) -> FileOutcome:
        name = source.name
        known = self._stored(name, prepared)
        if known is not None:
            return known
        try:
            if prepared.kind == "video":
                with _video_file(source, prepared) as path:
                    return self._video(name, prepared, path, progress)
            return self._image(name, prepared, progress)
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
            media = self.store.media_by_sha256(self.study, prepared.sha256)
            return FileOutcome(name, "failed", kind=prepared.kind, media_id=media.id if media else None, error=reason)
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

    def _release(self, prepared: _Bytes) -> None:
        try:
            self.store.release_claim(self.study, prepared.sha256, self.claimant)
        except Exception:  # the claim then goes stale; the next run takes it over
            log.warning("could not release the claim on %s", prepared.sha256[:12], exc_info=True)

    # ------------------------------------------------------------------------------------------------ stills

    def _models(self) -> AnalysisSession:
        """The models, once the file is claimed (no model loads for a file another run holds)."""
        try:
            return self.session
        except AffectLabError as exc:
            raise _ModelsUnavailable(exc) from exc

    def _image(self, name: str, prepared: _Bytes, progress: Progress | None) -> FileOutcome:
        row = self.store.claim(self.study, prepared.sha256, self.claimant)
        if row is not None:  # completed by another run meanwhile
            return _skipped(name, row.id, row.kind, row.n_faces)
        session = self._models()
        assert prepared.data is not None
        with _heartbeat(self.store, self.study, prepared.sha256, self.claimant):
            image = session.analyze_image(prepared.data, name, keep_crops=True)
        rep = self.store.ingest_results(
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

    def _video(self, name: str, prepared: _Bytes, path: Path, progress: Progress | None) -> FileOutcome:
        """Stretch by stretch into the store, resuming a stopped run of the same bytes; then tracks and persons."""
        from models.decode import probe_video

        probe = probe_video(path, name)
        state = self.store.begin_video(
            self.study,
            prepared.data if prepared.data is not None else path,
            name,
            media_info(probe),
            uploaded_by=self.options.uploaded_by,
            keep_file=self.options.keep_file,
            sha256=prepared.sha256,
            claimant=self.claimant,
        )
        if state.status == "complete":  # completed by another run meanwhile
            return _skipped(name, state.media_id, "video", state.n_faces)
        session = self._models()
        with _heartbeat(self.store, self.study, prepared.sha256, self.claimant):
            streamed = self._stream(name, prepared, path, session, state, progress)
            prepared.check_unchanged(name, rehash=True)
            return self._finish(name, prepared, session, state, probe, streamed)

    def _stream(
        self,
        name: str,
        prepared: _Bytes,
        path: Path,
        session: AnalysisSession,
        state: AnalysisState,
        progress: Progress | None,
    ) -> _Streamed:
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
        got = _Streamed(resumed_from_s=None if resume is None else resume.time_s)
        for chunk in analyze_video_chunks(
            path,
            name,
            session.detector,
            session.recognizer,
            self.options.fps or None,
            config=replace(session.video, keep_crops=True),
            resume=resume,
            commit_every_s=self.options.commit_every_s,
            progress=progress,
        ):
            got.last = chunk
            if chunk.until is None or (resume is not None and chunk.until.index == resume.index):
                continue
            prepared.check_unchanged(name)  # the frames of this stretch were read from the bytes hashed
            n, c, f = self.store.store_chunk(
                state.media_id,
                chunk.faces,
                until_s=chunk.until.time_s,
                until_frame=chunk.until.index,
                samples=chunk.until.sample + 1,
                claimant=self.claimant,
            )
            got.faces, got.crops, got.features = got.faces + n, got.crops + c, got.features + f
        return got

    def _finish(
        self,
        name: str,
        prepared: _Bytes,
        session: AnalysisSession,
        state: AnalysisState,
        probe: VideoInfo,
        streamed: _Streamed,
    ) -> FileOutcome:
        """Tracks, engagement and persons from every stored face; the media item becomes ``complete``."""
        from models.track_results import score_tracks
        from models.video import FaceReplay

        last = streamed.last
        assert last is not None
        config = session.video
        replay = FaceReplay(config.tracker)
        face_tracks: dict[int, int] = {}
        track_faces: dict[int, list[tuple[int, float]]] = {}
        after = -1
        while batch := self.store.stored_frames(state.media_id, after):
            for fr in batch:
                ids = replay.add(fr.frame, fr.time_s, list(fr.boxes), fr.features)
                for fid, tid in zip(fr.face_ids, ids, strict=True):
                    face_tracks[fid] = tid
                    track_faces.setdefault(tid, []).append((fid, fr.time_s))
                after = fr.frame

        def sequence(t: Track) -> tuple[np.ndarray, list[float]]:
            faces = track_faces.get(t.track, [])
            return self.store.features_of([fid for fid, _ in faces]), [ts for _, ts in faces]

        spec = session.recognizer.spec
        scored = score_tracks(
            replay.tracks(),
            sequence,
            session.engagement,
            spec.name,
            spec.feature_dim,
            replay.profiles,
            config.persons,
        )
        warnings = list(last.warnings)
        if streamed.resumed_from_s is not None:
            warnings.insert(0, f"resumed a stopped analysis after {streamed.resumed_from_s:.1f} s")
        if scored.status != "ok":
            warnings.append(f"engagement: {scored.note}")
        tracks = scored.results()
        duration = last.duration if last.duration else probe.duration
        self.store.finish_video(
            state.media_id,
            face_tracks,
            tracks,
            duration_s=duration,
            fps=last.fps or probe.fps,
            width=last.width or probe.width,
            height=last.height or probe.height,
            claimant=self.claimant,
        )
        return FileOutcome(
            name,
            "stored",
            kind="video",
            media_id=state.media_id,
            n_faces=len(face_tracks),
            new=state.created,
            faces_new=streamed.faces,
            predictions_new=streamed.faces,
            tracks=len(tracks),
            persons=len(set(scored.persons.values())),
            crops_stored=streamed.crops,
            features_stored=streamed.features,
            resumed_from_s=streamed.resumed_from_s,
            frames_analyzed=last.frames_analyzed,
            duration_s=duration,
            warnings=tuple(warnings),
        )


class _ModelsUnavailable(Exception):
    """The models could not be loaded (carries the :class:`AffectLabError` that says why)."""

    def __init__(self, cause: AffectLabError) -> None:
        super().__init__(str(cause))
        self.cause = cause


@dataclass
class _Streamed:
    """What streaming a video into the store did so far."""

    resumed_from_s: float | None
    faces: int = 0
    crops: int = 0
    features: int = 0
    last: VideoChunk | None = None


def _skipped(name: str, media_id: int, kind: str, n_faces: int) -> FileOutcome:
    return FileOutcome(name, "skipped", kind=kind, media_id=media_id, n_faces=n_faces)


def _kind_of_bytes(name: str, data: bytes) -> str:
    """``video`` or ``image`` of an upload, by the suffix (a GIF is probed: animated = video)."""
    from models.decode import VIDEO_SUFFIXES, is_video

    suffix = Path(name).suffix.lower()
    if suffix == ".gif":
        with tempfile.NamedTemporaryFile(suffix=".gif") as tmp:
            tmp.write(data)
            tmp.flush()
            return "video" if is_video(tmp.name) else "image"
    return "video" if suffix in VIDEO_SUFFIXES else "image"


@contextmanager
def _video_file(source: Source, prepared: _Bytes) -> Iterator[Path]:
    """The file the decoder reads: the source's own, or an upload's bytes written to a private temporary file."""
    if prepared.path is not None:
        yield prepared.path
        return
    assert prepared.data is not None
    with tempfile.TemporaryDirectory(prefix="affectlab-video-") as tmp:
        path = Path(tmp) / f"upload{media_suffix(source.name) or '.bin'}"
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as fh:
            fh.write(prepared.data)
        yield path


@contextmanager
def _heartbeat(store: LabelStore, study: str, sha256: str, claimant: Claimant) -> Iterator[None]:
    """Beats the claim's heartbeat every :data:`db.claims.HEARTBEAT_S` from a thread while the work runs."""
    stop = threading.Event()

    def beat() -> None:
        while not stop.wait(HEARTBEAT_S):
            try:
                store.heartbeat(study, sha256, claimant)
            except Exception as exc:  # a lost claim is found by the next write, which stops the run
                log.info("heartbeat of %s: %s", sha256[:12], exc)

    thread = threading.Thread(target=beat, name="affectlab-claim-heartbeat", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(timeout=5)
