"""Storing analysed files: whole files, long videos chunk by chunk and by ranges, claims (each call one transaction).

:class:`db.services.LabelStore` holds one :class:`Ingest` as ``store.ingest``; each method runs in one
transaction of the store (:meth:`db.service_base.StoreBase.transaction`), retried on lock errors.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
from sqlalchemy import select
from sqlalchemy.orm import Session

from db import (
    analysis_file,
    claims,
    codecs,
    ingest,
    ingest_finish,
    media_files,
    ranges,
    repo,
    resumable,
)
from db.claims import Claimant
from db.ingest import MediaInfo
from db.rows import (
    IngestReport,
    MediaRow,
)
from db.schema import Media, Study
from db.service_base import Service

T = TypeVar("T")


class Ingest(Service):
    """Storing analysed files."""

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
            store_crops=self.base.store_crops,
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
                store_crops=self.base.store_crops,
                recut_video_crops=keep_file and self.base.store_crops,
                feature_codec=self.base.feature_codec,
            )
            if keep_file and rep.media_ids:
                self._keep_file(s, rep.media_ids[0], data, written)
            return rep

        return self._transaction_keeping(work, written)

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
                recut_crops=keep_file and self.base.store_crops and recut,
                claimant=claimant,
            )
            if keep_file and state.status == "partial":
                self._keep_file(s, state.media_id, data, written)
            return state

        return self._transaction_keeping(work, written)

    def _keep_file(self, s: Session, media_id: int, data: bytes | Path, written: list[Path]) -> None:
        """Keeps a media item's file inside the transaction (not in the features-only mode); notes a new file."""
        if not self.base.store_crops:
            return
        media = repo.get_row(s, Media, media_id, "media")
        path, created = media_files.keep(self.base.media_root, media.study_id, media.sha256, media.filename, data)
        if created:
            written.append(path)

    def _transaction_keeping(self, work: Callable[[Session], T], written: list[Path]) -> T:
        """Runs ``work`` in a write transaction; when it is rolled back, the files it kept are removed too."""
        try:
            return self._tx(work)
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
        recut = self._tx(lambda s: bool(repo.get_row(s, Media, media_id, "media").recut_crops), write=False)
        keep = self.base.store_crops and not recut  # re-cut crops are not even encoded
        faces = [ingest.face_in(r, store_crops=keep, model_version=model_version) for r in results]
        return self._tx(
            lambda s: resumable.store_chunk(
                s,
                media_id,
                faces,
                until_s=until_s,
                until_frame=until_frame,
                samples=samples,
                store_crops=keep,
                feature_codec=self.base.feature_codec,
                claimant=claimant,
                range_number=range_number,
                range_done=range_done,
            )
        )

    def plan_ranges(self, media_id: int, plan: Sequence[ranges.RangePlan]) -> list[ranges.RangeState]:
        """Stores how a partial video is cut into ranges (unless it is cut already); its ranges as they stand."""
        return self._tx(lambda s: ranges.plan(s, media_id, plan))

    def range_states(self, media_id: int) -> list[ranges.RangeState]:
        """The ranges a partial video is cut into, with their resume points (empty: not cut)."""
        return self._tx(lambda s: ranges.states(s, media_id), write=False)

    def stored_frames(self, media_id: int, after_frame: int = -1, max_frames: int = 500) -> list[Any]:
        """The next frames with stored faces (:class:`db.resumable.StoredFrame`), for replaying the tracker."""
        return self._tx(lambda s: resumable.stored_frames(s, media_id, after_frame, max_frames), write=False)

    def features_of(self, face_ids: Sequence[int]) -> np.ndarray:
        """The stored features of faces, in the order given."""
        return self._tx(lambda s: resumable.features_of(s, face_ids), write=False)

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
        return self.store_finish(
            media_id,
            ingest_finish.FaceTracks.of(face_tracks),
            tracks,
            ingest_finish.TrackWindows.of(tracks),
            duration_s=duration_s,
            fps=fps,
            width=width,
            height=height,
            claimant=claimant,
        )

    def store_finish(
        self,
        media_id: int,
        faces: ingest_finish.FaceTracks,
        tracks: Sequence[Any],
        windows: ingest_finish.TrackWindows,
        *,
        duration_s: float | None,
        fps: float | None,
        width: int | None,
        height: int | None,
        claimant: Claimant | None = None,
    ) -> int:
        """:meth:`finish_video` from compact arrays (:mod:`db.ingest_finish`): one transaction, written by chunks."""
        return self._tx(
            lambda s: ingest_finish.store_finish(
                s,
                media_id,
                faces,
                list(tracks),
                windows,
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

        return self._tx(work)

    def heartbeat(self, study: str, sha256: str, claimant: Claimant) -> None:
        """Tells that ``claimant`` still works on its claim (see :data:`db.claims.HEARTBEAT_S`).

        Raises:
            ClaimLostError: The claim was taken over.
        """
        self._tx(lambda s: claims.check(s, repo.get_study(s, study).id, sha256, claimant))

    def release_claim(self, study: str, sha256: str, claimant: Claimant) -> None:
        """Gives up ``claimant``'s claim on the bytes (a claim another run took over stays)."""

        def work(s: Session) -> None:
            st = s.scalar(select(Study).where(Study.name == study))
            if st is not None:
                claims.release(s, st.id, sha256, claimant)

        self._tx(work)

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
            store_crops=self.base.store_crops,
            cut_crops=cut_crops,
            features=features,
        )
        return self._tx(lambda s: analysis_file.store_analysis(s, study, prepared, uploaded_by=uploaded_by))
