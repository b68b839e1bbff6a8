"""The label store's services: the one place the web app and the command line call, one method per user action.

A :class:`LabelStore` owns the engine and every transaction: each method runs in one transaction of its own
(:meth:`LabelStore.transaction`), retried when SQLite reports a lock or PostgreSQL a serialisation failure or
deadlock (:func:`db.engine.is_retryable`), so a caller sees either the whole action or nothing, and never a lock
error (after the retries it gets :class:`db.errors.StoreBusyError`). The work itself is done by functions that take
the session and never commit (:mod:`db.repo`, :mod:`db.ingest`, :mod:`db.labels`, :mod:`db.label_import`,
:mod:`db.review`, ...); the upkeep of the database file (backup, integrity check, checkpoint) by
:mod:`db.maintenance`.

Usage::

    store = LabelStore.from_settings()          # DATABASE_URL, or SQLite in AFFECTLAB_DATA_DIR
    store.ingest_results("pilot", path, "clip.mp4", results, tracks)
    store.correct_face(face_id, "alice", label="Happiness", valence=0.6)
    store.undo("alice", face_id=face_id)
    store.review_queue("pilot", by="uncertainty", annotator="alice").items
    store.export("pilot", "hf", Path("out/pilot-hf"))
"""

from __future__ import annotations

import functools
import logging
import random
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
from sqlalchemy import Engine, select
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session

from core.settings import Settings
from db import (
    analysis_file,
    claims,
    classroom,
    codebook,
    codecs,
    compact,
    crops,
    exports,
    face_pages,
    feature_store,
    ingest,
    label_import,
    labels,
    maintenance,
    media_files,
    persons,
    quality,
    ranges,
    recording,
    recording_info,
    removal,
    repo,
    resumable,
    review,
    segments,
    status,
    study_tables,
)
from db.claims import Claimant
from db.classroom import ClassTables
from db.engine import is_retryable, make_engine, read_only, session_factory
from db.errors import StoreBusyError
from db.ingest import MediaInfo
from db.migrate import check_current, upgrade
from db.persons import PersonChangeRow, PersonRow
from db.queues import ReviewOrder
from db.recording_info import RecordingInfo
from db.rows import (
    AnnotationRow,
    ExportFormat,
    ExportReport,
    FaceLabel,
    ImportReport,
    IngestReport,
    MediaRow,
    StudyRow,
    StudyStats,
    TrackRow,
)
from db.schema import Media, Study, Track
from db.segments import SegmentRow
from db.study_tables import Participants, StudyTables

log = logging.getLogger(__name__)
T = TypeVar("T")


class LabelStore:
    """Services of the label store on one database: a thin facade, each method one transaction.

    Args:
        url: SQLAlchemy URL of the database.
        store_crops: False for the features-only privacy mode: face crops are never stored.
        data_dir: Folder for backups and kept media files (default ``data``).
        retries: Attempts per transaction on lock or serialisation errors.
        engine: An existing engine for ``url`` (tests, the web app's cached one).
        media_dir: Root of the kept media files (default ``<data_dir>/media``, see :mod:`db.media_files`).
        feature_codec: The form new features are stored in (:mod:`db.codecs`; compact by default).

    A video whose file is kept stores no crops: they are re-cut from it (:mod:`db.crops`, with a small LRU cache of
    what is on screen), unless its study sets ``keep_video_crops``.
    """

    def __init__(
        self,
        url: str,
        *,
        store_crops: bool = True,
        data_dir: Path | None = None,
        retries: int = 12,
        engine: Engine | None = None,
        media_dir: Path | None = None,
        feature_codec: str = codecs.FEATURES_U8,
    ) -> None:
        self.url = url
        self.feature_codec = feature_codec
        self.crop_cache = crops.CropCache()
        self.store_crops = store_crops
        self.data_dir = Path(data_dir) if data_dir is not None else Path("data")
        self.media_root = Path(media_dir) if media_dir is not None else self.data_dir / "media"
        self.retries = retries
        self.engine = engine if engine is not None else make_engine(url)
        self._write = session_factory(self.engine)
        self._read = session_factory(read_only(self.engine))
        self._schema_checked = False

    @classmethod
    def from_settings(cls, settings: Settings | None = None) -> LabelStore:
        """The store of :class:`core.settings.Settings` (``DATABASE_URL``, data folder, crops mode)."""
        s = settings or Settings.from_env()
        return cls(s.database_url, store_crops=s.store_crops, data_dir=s.data_dir)

    def close(self) -> None:
        """Closes the connection pool."""
        self.engine.dispose()

    # ------------------------------------------------------------------------------------------------ plumbing

    def upgrade(self) -> str | None:
        """Migrates the database to the newest schema; returns the revision."""
        rev = upgrade(self.engine, media_root=self.media_root)
        self._schema_checked = True
        return rev

    def transaction(self, fn: Callable[[Session], T], *, write: bool = True) -> T:
        """Runs ``fn(session)`` in one transaction, committed when it returns, retried on lock errors.

        Args:
            fn: The work; it may run several times, so it must not have effects outside the session.
            write: False for read-only work (SQLite then does not take the write lock up front).

        Raises:
            StoreBusyError: When the database stayed locked through every attempt.
            SchemaOutdatedError: When the database is not at the newest schema (run ``python -m db upgrade``).
        """
        delay = 0.02
        for attempt in range(1, self.retries + 1):
            session = (self._write if write else self._read)()
            feature_store.bind(session, self.media_root)
            try:
                if not self._schema_checked:
                    check_current(read_only(self.engine))
                    self._schema_checked = True
                with session.begin():
                    return fn(session)
            except DBAPIError as e:
                if not is_retryable(e):
                    raise
                if attempt == self.retries:
                    raise StoreBusyError(attempt, str(e.orig).strip().splitlines()[0]) from e
                log.info("database busy (attempt %d/%d): %s", attempt, self.retries, e.orig)
                time.sleep(delay * (0.5 + random.random()))
                delay = min(delay * 2, 1.0)
            finally:
                session.close()
        raise AssertionError("unreachable")

    # ------------------------------------------------------------------------------------------------ listing

    def studies(self) -> list[StudyRow]:
        """All studies with their sizes."""
        return self.transaction(repo.list_studies, write=False)

    def media(self, study: str) -> list[MediaRow]:
        """The media items of a study."""
        return self.transaction(lambda s: status.list_media(s, repo.get_study(s, study)), write=False)

    def tracks(self, media_id: int, *, with_windows: bool = True) -> list[TrackRow]:
        """The tracks of a video, with engagement windows (unless ``with_windows`` is False)."""
        return self.transaction(lambda s: repo.list_tracks(s, media_id, with_windows=with_windows), write=False)

    def faces(self, study: str, *, media_id: int | None = None, model: str | None = None) -> list[FaceLabel]:
        """Every face of a study (or of one media item) with prediction and current labels."""

        def work(s: Session) -> list[FaceLabel]:
            st = repo.get_study(s, study)
            if media_id is None:
                rows, _ = labels.face_labels(s, st.id, model)
                return rows
            if model is None:  # the kept read model (review.browse) of one media item
                return review.browse(s, study, review.ReviewFilter(media_id=media_id))
            # One media item under another model: its faces only, in keyset pages, then in the whole-study order.
            primary = face_pages.study_model(s, st.id, model)
            out = [r for page in face_pages.iter_face_pages(s, st.id, primary, media_id=media_id) for r in page]
            order = {fid: i for i, fid in enumerate(repo.face_order(s, media_id))}
            return sorted(out, key=lambda r: order[r.face_id])

        return self.transaction(work, write=False)

    def face(self, face_id: int, *, model: str | None = None) -> FaceLabel:
        """One face with its prediction and current labels."""

        def work(s: Session) -> FaceLabel:
            study = repo.study_of_face(s, face_id)
            return face_pages.faces_by_id(s, study.id, [face_id], face_pages.study_model(s, study.id, model))[0]

        return self.transaction(work, write=False)

    def faces_by_id(self, study: str, face_ids: Sequence[int]) -> list[FaceLabel]:
        """The rows of those of ``face_ids`` that are faces of ``study``, in the order asked (only those resolved)."""

        def work(s: Session) -> list[FaceLabel]:
            st = repo.get_study(s, study)
            mine = repo.faces_in_study(s, study, face_ids)
            ids = [i for i in face_ids if i in mine]
            rows = face_pages.faces_by_id(s, st.id, ids, face_pages.study_model(s, st.id, None)) if ids else []
            by_id = {r.face_id: r for r in rows}
            return [by_id[i] for i in ids if i in by_id]

        return self.transaction(work, write=False) if face_ids else []

    def track_face_times(self, study: str, track_id: int) -> list[tuple[int, float | None]]:
        """``(face id, time)`` of each face of a track of ``study`` in time order (none for another study's track)."""
        return self.transaction(lambda s: repo.track_face_times(s, study, track_id), write=False)

    def faces_in_study(self, study: str, face_ids: Sequence[int]) -> set[int]:
        """Those of ``face_ids`` that are faces of ``study`` (one indexed query; none for an unknown study)."""
        return self.transaction(lambda s: repo.faces_in_study(s, study, face_ids), write=False) if face_ids else set()

    def media_in_study(self, study: str, media_ids: Sequence[int]) -> set[int]:
        """Those of ``media_ids`` that are media items of ``study`` (one indexed query)."""
        return self.transaction(lambda s: repo.media_in_study(s, study, media_ids), write=False) if media_ids else set()

    def frame_boxes(self, media_id: int, frame: int | None) -> list[tuple[int, tuple[float, float, float, float]]]:
        """``(face_id, box)`` of every face on one frame of a media item (all faces of an image), in face order."""
        return self.transaction(lambda s: repo.frame_boxes(s, media_id, frame), write=False)

    def recording_tracks(self, study: str, media_id: int) -> list[recording.TrackSummary]:
        """The tracks of a recording of ``study`` with their class counts (none for another study's item).

        One grouped read of the kept read model (:func:`db.recording.track_summaries`): no face row is resolved.
        """

        def work(s: Session) -> list[recording.TrackSummary]:
            if not repo.media_in_study(s, study, [media_id]):
                return []
            return recording.track_summaries(s, media_id)

        return self.transaction(work, write=False)

    def recording_series(
        self,
        study: str,
        media_id: int,
        track_ids: Sequence[int | None],
        width_s: float,
        *,
        model: bool = True,
        human: bool = True,
    ) -> dict[int | None, recording.TrackSeries]:
        """The binned series of some tracks of a recording of ``study`` (:func:`db.recording.track_series`)."""

        def work(s: Session) -> dict[int | None, recording.TrackSeries]:
            if not track_ids or not repo.media_in_study(s, study, [media_id]):
                return {}
            st = repo.get_study(s, study)
            return recording.track_series(s, st.id, media_id, track_ids, width_s, model=model, human=human)

        return self.transaction(work, write=False)

    def key_frame_boxes(
        self, study: str, media_id: int, n: int = 4
    ) -> tuple[tuple[int, ...], tuple[tuple[int, int, tuple[float, float, float, float]], ...]]:
        """Up to ``n`` frames of a recording of ``study`` spread over it, with their boxes (:mod:`db.recording`)."""

        def work(
            s: Session,
        ) -> tuple[tuple[int, ...], tuple[tuple[int, int, tuple[float, float, float, float]], ...]]:
            if not repo.media_in_study(s, study, [media_id]):
                return (), ()
            return recording.key_frame_boxes(s, media_id, n)

        return self.transaction(work, write=False)

    def media_summary(self, study: str) -> dict[int, tuple[int, float]]:
        """Media id to ``(tracks, first face's time)`` of a study's items, for the Library (no face row loaded)."""
        return self.transaction(lambda s: repo.media_summary(s, study), write=False)

    def face_crop(self, face_id: int) -> bytes | None:
        """The PNG crop of a face, stored or re-cut from its kept recording (None when it has neither)."""
        return self.face_crops([face_id]).get(face_id)

    def face_features(self, face_id: int) -> np.ndarray | None:
        """The stored backbone features of a face (None when it has none)."""
        stored = self.transaction(lambda s: repo.stored_features(s, face_id), write=False)
        return codecs.features_from_bytes(*stored) if stored is not None else None

    def history(self, *, face_id: int | None = None, track_id: int | None = None) -> list[AnnotationRow]:
        """The full correction history of a face (its track's rows included) or of a track, oldest first."""
        return self.transaction(lambda s: repo.history(s, face_id=face_id, track_id=track_id), write=False)

    def predictions(self, face_id: int) -> list[dict[str, Any]]:
        """Every model's prediction of a face, oldest first."""
        return self.transaction(lambda s: repo.predictions_of_face(s, face_id), write=False)

    # ------------------------------------------------------------------------------------------------ ingest

    def ingest_results(
        self,
        study: str,
        source: Path | str | bytes,
        filename: str,
        results: Iterable[Any],
        tracks: Iterable[Any] = (),
        *,
        media_info: MediaInfo | None = None,
        uploaded_by: str | None = None,
        model_version: str | None = None,
        keep_file: bool = False,
        sha256: str | None = None,
        claimant: Claimant | None = None,
    ) -> IngestReport:
        """Stores an analysed file with its in-memory results (see :func:`db.ingest.store_files`).

        Args:
            study: The study (created when new).
            source: The file's bytes or path.
            filename: Its name (stored as a base name, never a path).
            results: The faces.
            tracks: The person tracks of a video.
            media_info: Kind, size, duration and rate of the file.
            uploaded_by: Who uploaded it.
            model_version: The fine-tuned version that predicted, if any.
            keep_file: Also keep the file itself under :attr:`media_root` (``<study id>/<sha256><suffix>``, 0600,
                written atomically inside the transaction: a failed insert keeps no new file). Ignored in the
                features-only privacy mode (``store_crops=False``), which keeps no media file.
            sha256: The bytes' hex sha256 when the caller has it already.
            claimant: The run that claimed the file (:meth:`claim`): the claim is checked and released in the
                storing transaction.

        Raises:
            ClaimLostError: ``claimant`` no longer holds the file's claim; nothing was stored.
        """
        data = source if isinstance(source, bytes) else Path(source).read_bytes()
        # Hashing and encoding the crops happen here, before the write transaction: the lock is held for inserts only.
        item = ingest.analysed_file(
            data,
            filename,
            results,
            tracks,
            media_info=media_info,
            store_crops=self.store_crops,
            model_version=model_version,
            sha256=sha256,
        )
        written: list[Path] = []

        def work(s: Session) -> IngestReport:
            st = repo.get_or_create_study(s, study)
            if claimant is not None:
                claims.check(s, st.id, item.sha256, claimant)
                claims.release(s, st.id, item.sha256, claimant)
            rep = ingest.store_files(
                s,
                st,
                [item],
                uploaded_by=uploaded_by,
                store_crops=self.store_crops,
                recut_video_crops=keep_file and self.store_crops,
                feature_codec=self.feature_codec,
            )
            if keep_file and rep.media_ids:
                self._keep_file(s, rep.media_ids[0], data, written)
            return rep

        return self._transaction_keeping(work, written)

    # ------------------------------------------------------------------------------------------------ long videos

    def begin_video(
        self,
        study: str,
        source: Path | str | bytes,
        filename: str,
        media_info: MediaInfo,
        *,
        uploaded_by: str | None = None,
        keep_file: bool = False,
        sha256: str | None = None,
        claimant: Claimant | None = None,
        recut: bool = True,
    ) -> resumable.AnalysisState:
        """The media row of a video analysed chunk by chunk (see :mod:`db.resumable`): new ones start ``partial``.

        Args:
            study: The study (created when new).
            source: The file's bytes or path (hashed and kept in blocks, never read whole; kept when ``keep_file``
                and crops are stored).
            filename: Its name.
            media_info: Kind, size, duration and rate.
            uploaded_by: Who analysed it.
            keep_file: Also keep the file itself (see :meth:`ingest_results`).
            sha256: The bytes' hex sha256 when the caller has it already.
            claimant: The run analysing it: the video is claimed for it in the same transaction (:mod:`db.claims`).
            recut: False stores its crops even when the file is kept (frames that a seek by time cannot find again:
                another video stream than the first, timestamps that jump).

        Returns:
            Its state: ``complete`` (already analysed), or ``partial`` with the resume point of a stopped run.

        Raises:
            ClaimBusyError: Another live run is analysing the same bytes into the study.
        """
        data: bytes | Path = source if isinstance(source, bytes) else Path(source)
        if sha256 is not None:
            sha, size = sha256, (len(data) if isinstance(data, bytes) else data.stat().st_size)
        else:
            sha, size = codecs.sha256_source(data)
        written: list[Path] = []

        def work(s: Session) -> resumable.AnalysisState:
            state = resumable.begin_video(
                s,
                study,
                sha256=sha,
                size=size,
                filename=filename,
                info=media_info,
                uploaded_by=uploaded_by,
                recut_crops=keep_file and self.store_crops and recut,
                claimant=claimant,
            )
            if keep_file and state.status == "partial":
                self._keep_file(s, state.media_id, data, written)
            return state

        return self._transaction_keeping(work, written)

    def _keep_file(self, s: Session, media_id: int, data: bytes | Path, written: list[Path]) -> None:
        """Keeps a media item's file inside the transaction (not in the features-only mode); notes a new file."""
        if not self.store_crops:
            return
        media = repo.get_row(s, Media, media_id, "media")
        path, created = media_files.keep(self.media_root, media.study_id, media.sha256, media.filename, data)
        if created:
            written.append(path)

    def _transaction_keeping(self, work: Callable[[Session], T], written: list[Path]) -> T:
        """Runs ``work`` in a write transaction; when it is rolled back, the files it kept are removed too."""
        try:
            return self.transaction(work)
        except BaseException:
            for path in written:
                media_files.remove(path)
            raise

    def store_chunk(
        self,
        media_id: int,
        results: Iterable[Any],
        *,
        until_s: float,
        until_frame: int,
        samples: int,
        model_version: str | None = None,
        claimant: Claimant | None = None,
        range_number: int | None = None,
        range_done: bool = False,
    ) -> tuple[int, int, int]:
        """Stores one stretch of a partial video's faces with its resume point, in one transaction.

        With a ``claimant``, first checks that it still holds the video's claim (else :class:`ClaimLostError`).
        With a ``range_number``, the resume point is that range's (:mod:`db.ranges`; ``range_done``: its last).

        Returns:
            Faces, crops and features stored.
        """
        recut = self.transaction(lambda s: bool(repo.get_row(s, Media, media_id, "media").recut_crops), write=False)
        keep = self.store_crops and not recut  # re-cut crops are not even encoded
        faces = [ingest.face_in(r, store_crops=keep, model_version=model_version) for r in results]
        return self.transaction(
            lambda s: resumable.store_chunk(
                s,
                media_id,
                faces,
                until_s=until_s,
                until_frame=until_frame,
                samples=samples,
                store_crops=keep,
                feature_codec=self.feature_codec,
                claimant=claimant,
                range_number=range_number,
                range_done=range_done,
            )
        )

    def plan_ranges(self, media_id: int, plan: Sequence[ranges.RangePlan]) -> list[ranges.RangeState]:
        """Stores how a partial video is cut into ranges (unless it is cut already); its ranges as they stand."""
        return self.transaction(lambda s: ranges.plan(s, media_id, plan))

    def range_states(self, media_id: int) -> list[ranges.RangeState]:
        """The ranges a partial video is cut into, with their resume points (empty: not cut)."""
        return self.transaction(lambda s: ranges.states(s, media_id), write=False)

    def stored_frames(self, media_id: int, after_frame: int = -1, max_frames: int = 500) -> list[Any]:
        """The next frames with stored faces (:class:`db.resumable.StoredFrame`), for replaying the tracker."""
        return self.transaction(lambda s: resumable.stored_frames(s, media_id, after_frame, max_frames), write=False)

    def features_of(self, face_ids: Sequence[int]) -> np.ndarray:
        """The stored features of faces, in the order given."""
        return self.transaction(lambda s: resumable.features_of(s, face_ids), write=False)

    def finish_video(
        self,
        media_id: int,
        face_tracks: Mapping[int, int],
        tracks: Sequence[Any],
        *,
        duration_s: float | None,
        fps: float | None,
        width: int | None,
        height: int | None,
        claimant: Claimant | None = None,
    ) -> int:
        """Stores a partial video's tracks, engagement and persons and marks it complete (one transaction).

        With a ``claimant``, checks that it still holds the video's claim and releases it in that transaction.
        """
        return self.transaction(
            lambda s: resumable.finish_video(
                s,
                media_id,
                face_tracks,
                list(tracks),
                duration_s=duration_s,
                fps=fps,
                width=width,
                height=height,
                claimant=claimant,
            )
        )

    def claim(self, study: str, sha256: str, claimant: Claimant) -> MediaRow | None:
        """Claims the bytes ``sha256`` in ``study`` for ``claimant`` unless the study holds them complete.

        Returns:
            The complete media item (no claim is then taken), else None: the bytes are claimed.

        Raises:
            ClaimBusyError: Another live run is analysing the same bytes into the study.
        """

        def work(s: Session) -> MediaRow | None:
            st = repo.get_or_create_study(s, study)
            claims.take(s, st.id, sha256, claimant)
            row = repo.media_by_sha256(s, study, sha256)
            if row is not None and row.analysis_status == "complete":
                claims.release(s, st.id, sha256, claimant)
                return row
            return None

        return self.transaction(work)

    def heartbeat(self, study: str, sha256: str, claimant: Claimant) -> None:
        """Tells that ``claimant`` still works on its claim (see :data:`db.claims.HEARTBEAT_S`).

        Raises:
            ClaimLostError: The claim was taken over.
        """
        self.transaction(lambda s: claims.check(s, repo.get_study(s, study).id, sha256, claimant))

    def release_claim(self, study: str, sha256: str, claimant: Claimant) -> None:
        """Gives up ``claimant``'s claim on the bytes (a claim another run took over stays)."""

        def work(s: Session) -> None:
            st = s.scalar(select(Study).where(Study.name == study))
            if st is not None:
                claims.release(s, st.id, sha256, claimant)

        self.transaction(work)

    def media_path(self, media_id: int) -> Path | None:
        """The kept file of a media item, None when none is kept (features-only mode, deleted, or never kept).

        Raises:
            NotFoundError: No such media item.
        """

        def work(s: Session) -> Path:
            media = repo.get_row(s, Media, media_id, "media")
            return media_files.media_path(self.media_root, media.study_id, media.sha256, media.filename)

        path = self.transaction(work, write=False)
        return path if path.is_file() else None

    def ingest_analysis(
        self,
        study: str,
        analysis: Mapping[str, Any],
        *,
        media_dirs: Sequence[Path] = (),
        source_name: str = "analysis JSON",
        uploaded_by: str | None = None,
        cut_crops: analysis_file.CropCutter | None = analysis_file.cut_crops,
        features: analysis_file.FeatureExtractor | None = None,
    ) -> IngestReport:
        """Stores the results of ``python -m models analyze --json`` (see :mod:`db.analysis_file`).

        The files are decoded again and the features computed (``features``, e.g.
        :class:`db.analysis_file.RecognizerFeatures`) before the transaction starts, so no lock is held meanwhile.
        """
        prepared = analysis_file.prepare_analysis(
            analysis,
            media_dirs=media_dirs,
            source_name=source_name,
            store_crops=self.store_crops,
            cut_crops=cut_crops,
            features=features,
        )
        return self.transaction(lambda s: analysis_file.store_analysis(s, study, prepared, uploaded_by=uploaded_by))

    def playable_media_path(self, media_id: int) -> Path | None:
        """The file a browser's video player can play for a media item, None when no file is kept.

        A kept animated GIF (a media item of kind ``video``) is converted once to H.264 MP4 (VP9 WebM without an
        H.264 encoder) by :func:`models.playable.to_browser_video` and the copy is kept beside it
        (``<sha256>.play.mp4``, owner-only; removed with the media item). Any other file is returned as it is.

        Raises:
            NotFoundError: No such media item.
            BadInputError: The kept file cannot be converted.
        """
        from models.playable import browser_suffix, needs_conversion, to_browser_video

        def work(s: Session) -> tuple[Path, str]:
            media = repo.get_row(s, Media, media_id, "media")
            return media_files.media_path(self.media_root, media.study_id, media.sha256, media.filename), media.kind

        path, kind = self.transaction(work, write=False)
        if not path.is_file():
            return None
        if kind != "video" or not needs_conversion(path):
            return path
        target = media_files.playable_path(path, browser_suffix())
        if not target.is_file():
            to_browser_video(path, target, name=path.name)
        return target

    # ------------------------------------------------------------------------------------------------ corrections

    def correct_face(
        self,
        face_id: int,
        annotator: str,
        *,
        label: str | None = None,
        valence: float | None = None,
        arousal: float | None = None,
        engagement: float | None = None,
        note: str | None = None,
        source: str = "web",
    ) -> AnnotationRow:
        """Appends a correction of one face by ``annotator`` (fields left None keep their current value).

        Raises:
            NotFoundError: If the face does not exist.
            InvalidLabelError: For an unknown class or a value out of range.
        """
        return self.transaction(
            lambda s: labels.add_correction(
                s,
                annotator,
                face_id=face_id,
                source=source,
                label=label,
                valence=valence,
                arousal=arousal,
                engagement=engagement,
                note=note,
            )
        )

    def correct_track(
        self,
        track_id: int,
        annotator: str,
        *,
        label: str | None = None,
        valence: float | None = None,
        arousal: float | None = None,
        engagement: float | None = None,
        note: str | None = None,
        source: str = "web",
    ) -> AnnotationRow:
        """Appends a correction of a whole track: it applies to each of its faces without the annotator's own."""
        return self.transaction(
            lambda s: labels.add_correction(
                s,
                annotator,
                track_id=track_id,
                source=source,
                label=label,
                valence=valence,
                arousal=arousal,
                engagement=engagement,
                note=note,
            )
        )

    def undo(
        self,
        annotator: str,
        *,
        face_id: int | None = None,
        track_id: int | None = None,
        annotation_id: int | None = None,
        source: str = "web",
    ) -> AnnotationRow:
        """Reverts ``annotator``'s latest active correction of a face or track (or the one given) with a new row.

        Give exactly one of ``face_id``, ``track_id`` or ``annotation_id`` (see :func:`db.labels.undo`).

        Raises:
            StoreError: Unless exactly one of them is given.
            NothingToUndoError: If the annotator has no active correction there.
        """
        return self.transaction(
            lambda s: labels.undo(
                s, annotator, face_id=face_id, track_id=track_id, annotation_id=annotation_id, source=source
            )
        )

    def import_labels(self, study: str, path: Path, annotator: str) -> ImportReport:
        """Imports ``annotator``'s votes from a labels CSV or an edited CSV export (rules: :mod:`db.label_import`).

        A labels file (``face_id`` plus any of label, valence, arousal, engagement, note) counts every filled cell as
        a vote; an edited export (with ``exported_*`` columns) counts only the cells that differ from their exported
        value. A value equal to the annotator's own current value is already recorded and adds nothing, so importing
        a file again adds nothing; a vote agreeing with another annotator or the model is recorded. A face on two rows
        refuses the whole file, naming both lines.

        The file is read and every row checked before the write transaction opens; that transaction only inserts the
        votes in bulk (it is planned again if the study or the annotator's labels changed meanwhile).

        Raises:
            ImportLabelsError: For a bad file or row (with its line number); nothing of the file is applied.
            StudyNotFoundError: For an unknown study.
        """
        return label_import.import_labels(self.transaction, study, Path(path), annotator, attempts=self.retries)

    # ------------------------------------------------------------------------------------------------ review

    def review_queue(
        self,
        study: str,
        by: ReviewOrder = "uncertainty",
        *,
        limit: int = 50,
        annotator: str | None = None,
        flt: review.ReviewFilter | None = None,
        model: str | None = None,
    ) -> review.ReviewQueue:
        """``annotator``'s faces to review next, most in need first, with the counts left (see :mod:`db.review`).

        Args:
            study: The study.
            by: ``uncertainty`` (faces still needing a vote, least confident model first), ``disagreement`` (the
                annotators' class differs from the model's; confident model first) or ``valence`` (valence
                contradicts the class: a positive class with negative valence or the reverse; strongest first).
            limit: How many items to return.
            annotator: Leave out faces this annotator labelled or skipped.
            flt: Which faces the queue covers (media, track, classes, labelled or not).
            model: Follow this model's predictions (default: the study's most used).
        """
        return self.transaction(
            lambda s: review.review_queue(
                s, study, by, annotator=annotator, flt=flt or review.ReviewFilter(), model=model, limit=limit
            ),
            write=False,
        )

    def browse(
        self, study: str, flt: review.ReviewFilter, *, model: str | None = None, limit: int | None = None
    ) -> list[FaceLabel]:
        """The faces of a study that pass ``flt`` (e.g. the faces one annotator labelled), the first ``limit``."""
        return self.transaction(lambda s: review.browse(s, study, flt, model=model, limit=limit), write=False)

    def labels_page(
        self,
        study: str,
        annotator: str,
        flt: review.ReviewFilter = review.ReviewFilter(),
        *,
        after: int | None = None,
        limit: int = 50,
    ) -> review.LabelsPage:
        """A page of the faces ``annotator`` labelled ("my labels"), after face id ``after``, with their count."""
        return self.transaction(
            lambda s: review.labels_page(s, study, annotator, flt, after=after, limit=limit), write=False
        )

    def skip(self, face_id: int, annotator: str) -> None:
        """Keeps a face out of ``annotator``'s queues until :meth:`unskip` (stored, so it holds across reloads)."""
        self.transaction(lambda s: review.skip(s, face_id, annotator))

    def unskip(self, study: str, annotator: str, face_ids: Sequence[int] | None = None) -> int:
        """Puts ``annotator``'s skipped faces (the given ones, or all of the study) back into the queue."""

        def work(s: Session) -> int:
            st = repo.get_study(s, study)
            return review.unskip(s, annotator, face_ids, study_id=st.id)

        return self.transaction(work)

    def study_settings(self, study: str) -> review.StudySettings:
        """The labelling rules of a study (independent labelling, hidden model, share for a second annotator)."""
        return self.transaction(lambda s: review.study_settings(s, study), write=False)

    def set_study_settings(self, study: str, settings: review.StudySettings) -> review.StudySettings:
        """Stores the labelling rules of a study (owners only in the web app)."""
        return self.transaction(lambda s: review.set_study_settings(s, study, settings))

    def keep_video_crops(self, study: str) -> bool:
        """Whether the study stores every video crop (else a kept recording's crops are re-cut from it)."""
        return self.transaction(lambda s: bool(repo.get_study(s, study).keep_video_crops), write=False)

    def set_keep_video_crops(self, study: str, keep: bool) -> bool:
        """Makes the study (created when new) store every video crop of recordings analysed from now on, or not.

        Recordings already stored keep their layout (``python -m db compact --crops`` drops stored crops).
        """

        def work(s: Session) -> bool:
            st = repo.get_or_create_study(s, study)
            st.keep_video_crops = bool(keep)
            return bool(keep)

        return self.transaction(work)

    def compact(
        self,
        study: str,
        *,
        crops: bool = True,
        drop_features: bool = False,
        vacuum: bool = False,
        progress: Callable[[str], None] | None = None,
    ) -> compact.CompactReport:
        """Compacts a study's stored faces (see :mod:`db.compact`): features converted, re-cuttable crops dropped.

        Args:
            study: The study.
            crops: Drop the stored crops of kept recordings that re-cut pixel-equal (not for ``keep_video_crops``).
            drop_features: Also drop the features of completely analysed videos.
            vacuum: Give the freed space back to the file system (SQLite ``VACUUM``).
            progress: Called with a line of text as the work goes on.

        Returns:
            What was done.
        """
        say = progress or (lambda _msg: None)

        def setting(s: Session) -> tuple[int, bool]:
            st = repo.get_study(s, study)
            return st.id, bool(st.keep_video_crops)

        st_id, keep = self.transaction(setting, write=False)
        notes: list[str] = []
        converted, after = 0, 0
        while True:
            n, last = self.transaction(functools.partial(compact.convert_features, study_id=st_id, after_id=after))
            if last is None:
                break
            converted, after = converted + n, last
            say(f"features: {converted} converted")
        dropped = kept = no_file = 0
        if crops and keep:
            notes.append(f"study {study!r} keeps video crops: none dropped")
        elif crops:
            videos = self.transaction(functools.partial(compact.videos_with_crops, study_id=st_id), write=False)
            for media_id, sid, sha, name, _ in videos:
                path = compact.recording_path(self.media_root, sid, sha, name)
                if path is None:
                    no_file += 1
                    continue
                pos = (-1.0, 0)
                while True:
                    batch = self.transaction(
                        functools.partial(compact.stored_crop_batch, media_id=media_id, after=pos), write=False
                    )
                    if not batch:
                        break
                    equal = compact.equal_recuts(path, batch)
                    self.transaction(functools.partial(compact.drop_crops, face_ids=equal))
                    dropped, kept = dropped + len(equal), kept + len(batch) - len(equal)
                    pos = (batch[-1][1], batch[-1][0])
                    say(f"crops: {dropped} dropped, {kept} kept")
                self.transaction(functools.partial(compact.set_recut, media_id=media_id))
            if no_file:
                notes.append(f"{no_file} videos have no kept recording: their crops stay stored")
            if kept:
                notes.append(f"{kept} stored crops differ from the re-cut ones (or their frame is unreadable): kept")
        feats_dropped = 0
        if drop_features:
            while n := self.transaction(functools.partial(compact.drop_features, study_id=st_id)):
                feats_dropped += n
                say(f"features: {feats_dropped} dropped")
            if feats_dropped:
                notes.append("fine-tuning re-extracts the dropped features from the crops (re-cut from the recordings)")
        if vacuum:
            say("vacuuming the database file")
            maintenance.vacuum(self.engine)
        return compact.CompactReport(
            study=study,
            features_converted=converted,
            crops_dropped=dropped,
            crops_kept=kept,
            videos_without_file=no_file,
            features_dropped=feats_dropped,
            notes=tuple(notes),
        )

    def last_correction(self, study: str, annotator: str) -> AnnotationRow | None:
        """``annotator``'s newest correction in a study that is still active (what Undo reverts), or None."""
        return self.transaction(lambda s: labels.last_correction(s, study, annotator), write=False)

    def annotator_name(self, name: str) -> str:
        """The display name of the annotator ``name`` stands for (case and spaces ignored), else ``name`` trimmed."""
        return self.transaction(lambda s: repo.annotator_name(s, name), write=False)

    def media_by_sha256(self, study: str, sha256: str) -> MediaRow | None:
        """The media item of a study with these bytes, None when the study does not hold them."""
        return self.transaction(lambda s: repo.media_by_sha256(s, study, sha256), write=False)

    def best_faces(self, media_id: int, track_ids: Sequence[int] | None = None) -> dict[int, int]:
        """Track id to the face id of its most confident detection, for a recording's thumbnails.

        With ``track_ids``, only those tracks of the recording (one indexed query each, whatever the recording's size).
        """
        if track_ids is None:
            return self.transaction(lambda s: repo.best_faces(s, media_id), write=False)

        def work(s: Session) -> dict[int, int]:
            mine = set(s.scalars(select(Track.id).where(Track.media_id == media_id, Track.id.in_(list(track_ids)))))
            return repo.best_faces_of_tracks(s, [t for t in track_ids if t in mine])

        return self.transaction(work, write=False)

    def face_crops(self, face_ids: Sequence[int]) -> dict[int, bytes]:
        """The PNG crops of several faces, stored or re-cut (faces without one are absent; see :mod:`db.crops`).

        The database is read in one transaction; recordings are decoded after it (each once, in time order), and
        re-cut crops go through :attr:`crop_cache`.
        """
        if not face_ids:
            return {}
        sources = self.transaction(lambda s: crops.crop_sources(s, self.media_root, face_ids), write=False)
        return crops.face_crops(sources, face_ids, self.crop_cache)

    def study_crops(self, study: str, limit: int = 64) -> list[bytes]:
        """Up to ``limit`` stored face crops (PNG) of the study, e.g. to calibrate an int8 export (one query)."""
        return self.transaction(lambda s: repo.study_crops(s, repo.get_study(s, study).id, limit), write=False)

    # ------------------------------------------------------------------------------------------------ stats, export

    @staticmethod
    def _stats(s: Session, study: str, model: str | None) -> tuple[StudyStats, list[FaceLabel], labels.ModelKey | None]:
        """The study's statistics, its face rows and the model run they follow (inside a transaction)."""
        st = repo.get_study(s, study)
        rows, primary = labels.face_labels(s, st.id, model)
        counts = repo.count_rows(s, st.id)
        return quality.compute_stats(st.name, rows, counts, primary), rows, primary

    def stats(self, study: str, *, model: str | None = None) -> StudyStats:
        """Counts, per-class counts, confusion and agreement of a study.

        Reads the faces someone judged and the kept counts (:mod:`db.status`), not the whole study; following another
        model run than the study's own (``model``) resolves the whole study instead.
        """

        def work(s: Session) -> StudyStats:
            st = repo.get_study(s, study)
            if model is not None and labels.choose_model(s, st.id, model) != labels.choose_model(s, st.id):
                return self._stats(s, study, model)[0]
            return status.study_stats(s, st)

        return self.transaction(work, write=False)

    def export(
        self,
        study: str,
        fmt: ExportFormat,
        out: Path,
        *,
        model: str | None = None,
        seed: int = 0,
        progress: Callable[[int, int], None] | None = None,
    ) -> ExportReport:
        """Exports a study (see :mod:`db.exports` for the formats).

        CSV, Parquet and features are written page by page in bounded memory (:func:`db.exports.export_stream`),
        calling ``progress(faces done, faces in the study)`` after each page; crops formats call it per crop written.
        """

        def work(s: Session) -> ExportReport:
            if exports.is_class_format(fmt):
                return exports.export_class_table(s, study, fmt, Path(out))
            if exports.is_stream_format(fmt):
                return exports.export_stream(s, study, fmt, Path(out), model=model, seed=seed, progress=progress)
            stats, rows, primary = self._stats(s, study, model)
            return exports.export(
                s, study, rows, stats, primary, fmt, Path(out), seed=seed, media_root=self.media_root, progress=progress
            )

        return self.transaction(work, write=False)

    # ------------------------------------------------------------------------------------------------ privacy

    def _delete(self, model: type[Media] | type[Track], ident: int, what: str) -> dict[str, int]:
        kept: list[Path] = []

        def work(s: Session) -> dict[str, int]:
            if model is Media:
                m = repo.get_row(s, Media, ident, what)
                kept[:] = [media_files.media_path(self.media_root, m.study_id, m.sha256, m.filename)]
                kept.extend(feature_store.files_of(s, [ident]))  # its features file (db.feature_store)
            return removal.delete_target(s, model, ident, what)

        counts = self.transaction(work)
        if model is Media:
            counts["files"] = sum(media_files.remove(p) for p in kept)
        maintenance.checkpoint(self.engine)
        return counts

    def delete_media(self, media_id: int) -> dict[str, int]:
        """Deletes a media item, everything derived from it, and its kept file; returns what was removed.

        Faces, crops, features, predictions, tracks, engagement windows and annotations go through the database's
        ``ON DELETE CASCADE``; then the kept file and its playable copy (:mod:`db.media_files`) are removed
        (``files``: how many).
        """
        return self._delete(Media, media_id, "media")

    def delete_track(self, track_id: int) -> dict[str, int]:
        """Deletes a person track with its faces (crops, features, predictions, annotations) and windows.

        A track has no file of its own (the media item's file holds every track), so no file is removed.
        """
        return self._delete(Track, track_id, "track")

    def backup(self, out: Path | None = None) -> Path:
        """Copies the SQLite database with SQLite's online backup API (safe while the app runs), owner-only (0600).

        Args:
            out: Target file (default ``DATA_DIR/backups/affectlab-YYYYmmdd-HHMMSS.sqlite3``).

        Returns:
            The backup's path, after ``PRAGMA integrity_check`` passed on it.

        Raises:
            BackupUnsupportedError: On PostgreSQL (see :func:`db.maintenance.backup`).
        """
        return feature_store.backup_files(  # and the finished videos' feature files beside it (db.feature_store)
            self.media_root,
            maintenance.backup(
                self.url, Path(out) if out is not None else maintenance.default_backup_path(self.data_dir)
            ),
        )

    def vacuum(self) -> int:
        """Rebuilds the SQLite file without free pages (``VACUUM``); returns the bytes it shrank by."""
        return maintenance.vacuum(self.engine)

    def integrity_check(self) -> str:
        """``ok`` when the database is consistent (SQLite ``integrity_check`` and ``foreign_key_check``)."""
        return maintenance.integrity_check(self.engine)

    # ------------------------------------------------------------------------------------------------ classes

    def persons(self, media_id: int) -> list[PersonRow]:
        """The current persons of a recording, corrections applied."""
        return self.transaction(lambda s: persons.current_persons(s, media_id), write=False)

    def person_history(self, media_id: int) -> list[PersonChangeRow]:
        """Every rename, merge and split of a recording's persons, oldest first."""
        return self.transaction(lambda s: persons.history(s, media_id), write=False)

    def rename_person(
        self, person_id: int, participant: str | None, annotator: str, note: str | None = None, *, owner: bool
    ) -> int:
        """Gives a person a participant id (appended to the history); returns the correction's id.

        Raises:
            PersonChangeError: Another person of the recording has that id already (merge them instead).
            NotAllowedError: Not an owner, and the study keeps person changes for owners.
        """
        return self.transaction(lambda s: persons.rename(s, person_id, participant, annotator, note, owner=owner).id)

    def merge_persons(
        self, person_id: int, other_person_id: int, annotator: str, note: str | None = None, *, owner: bool
    ) -> int:
        """Moves every track of ``other_person_id`` into ``person_id`` (appended to the history).

        Raises:
            PersonChangeError: The two were seen at the same moment (two faces of one frame), or cannot be merged.
            NotAllowedError: Not an owner, and the study keeps person changes for owners.
        """
        return self.transaction(lambda s: persons.merge(s, person_id, other_person_id, annotator, note, owner=owner).id)

    def split_track(self, track_id: int, annotator: str, note: str | None = None, *, owner: bool) -> int:
        """Moves one track out of its person into a new person (appended to the history).

        Raises:
            PersonChangeError: The track is its person's only one.
            NotAllowedError: Not an owner, and the study keeps person changes for owners.
        """
        return self.transaction(lambda s: persons.split(s, track_id, annotator, note, owner=owner).id)

    def split_track_at(
        self, track_id: int, time_s: float, annotator: str, note: str | None = None, *, owner: bool
    ) -> int:
        """Splits a track at a time: its faces from ``time_s`` on go to a new track of a new person (history row).

        Raises:
            PersonChangeError: No face on one side of the time, or the track has whole-track labels.
            NotAllowedError: Not an owner, and the study keeps person changes for owners.
        """
        return self.transaction(lambda s: persons.split_at(s, track_id, time_s, annotator, note, owner=owner).id)

    def segments(self, study: str, media_id: int | None = None) -> list[SegmentRow]:
        """The lecture segments of a study's recordings (or of one), by recording and start."""

        def work(s: Session) -> list[SegmentRow]:
            ids = [m.id for m in status.list_media(s, repo.get_study(s, study))]
            return segments.list_segments(
                s, [media_id] if media_id is not None and media_id in ids else ([] if media_id is not None else ids)
            )

        return self.transaction(work, write=False)

    def import_segments(self, study: str, path: Path, created_by: str | None = None) -> list[SegmentRow]:
        """Adds the lecture segments of a CSV file, all or none (see :mod:`db.segments`).

        Raises:
            SegmentsError: Naming every refused line; nothing was written.
        """
        return self.transaction(lambda s: segments.import_segments(s, study, Path(path), created_by))

    def add_segment(
        self, media_id: int, name: str, start_s: float, end_s: float, created_by: str | None = None
    ) -> SegmentRow:
        """Adds one lecture segment (same checks as the import)."""
        return self.transaction(lambda s: segments.add_segment(s, media_id, name, start_s, end_s, created_by))

    def delete_segment(self, segment_id: int) -> None:
        """Removes a lecture segment."""
        self.transaction(lambda s: segments.delete_segment(s, segment_id))

    def class_tables(self, study: str) -> ClassTables:
        """The online-class tables of a study (:mod:`db.classroom`), persons corrected."""
        return self.transaction(lambda s: classroom.class_tables(s, study), write=False)

    # ------------------------------------------------------------------------------------------------ study tables

    def study_tables(self, study: str, participants: Participants | None = None) -> StudyTables:
        """The study-level tables (:mod:`db.study_tables`); ``participants`` None: each person is a participant."""
        return self.transaction(lambda s: study_tables.study_tables(s, study, participants), write=False)

    def export_study_tables(
        self, study: str, fmt: str, out_dir: Path, participants: Participants | None = None
    ) -> list[Path]:
        """Writes the study tables in ``fmt`` (csv, parquet, sav, dta) with their codebook (:mod:`db.stat_files`).

        Raises:
            StoreError: An unknown format, or ``out_dir`` holds files already; nothing is written.
        """
        from db import stat_files

        fmt = stat_files.check_format(fmt)
        tables, method = self.transaction(lambda s: codebook.with_method(s, study, participants), write=False)
        return stat_files.write_study(study, tables, method, fmt, Path(out_dir))

    def set_recording_info(
        self, media_id: int, *, course: str | None, recording: str | None, day: str | None
    ) -> RecordingInfo:
        """Sets a recording's course, name and date (:mod:`db.recording_info`); empty or None clears one."""
        return self.transaction(
            lambda s: recording_info.set_recording_info(s, media_id, course=course, recording=recording, day=day)
        )

    def import_recording_info(self, study: str, path: Path) -> list[RecordingInfo]:
        """Sets the course, name and date of the recordings a CSV names, all or none (:mod:`db.recording_info`)."""
        return self.transaction(lambda s: recording_info.import_recording_info(s, study, Path(path)))

    def recording_infos(self, study: str) -> dict[int, RecordingInfo]:
        """The metadata of a study's recordings, by media id (:mod:`db.recording_info`)."""
        return self.transaction(lambda s: recording_info.recording_infos(s, repo.get_study(s, study).id), write=False)
