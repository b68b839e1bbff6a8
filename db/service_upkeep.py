"""Upkeep of the store: crop layout, compacting, privacy deletions, backup, vacuum and integrity checks.

:class:`db.services.LabelStore` holds one :class:`Upkeep` as ``store.upkeep``; each method runs in one
transaction of the store (:meth:`db.service_base.StoreBase.transaction`), retried on lock errors.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from pathlib import Path

from sqlalchemy.orm import Session

from db import (
    compact,
    feature_store,
    maintenance,
    media_files,
    removal,
    repo,
)
from db.schema import Media, Track
from db.service_base import Service


class Upkeep(Service):
    """Upkeep of the store."""

    def keep_video_crops(self, study: str) -> bool:
        """Whether the study stores every video crop (else a kept recording's crops are re-cut from it)."""
        return self._tx(lambda s: bool(repo.get_study(s, study).keep_video_crops), write=False)

    def set_keep_video_crops(self, study: str, keep: bool) -> bool:
        """Makes the study (created when new) store every video crop of recordings analysed from now on, or not.

        Recordings already stored keep their layout (``python -m db compact --crops`` drops stored crops).
        """

        def work(s: Session) -> bool:
            st = repo.get_or_create_study(s, study)
            st.keep_video_crops = bool(keep)
            return bool(keep)

        return self._tx(work)

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

        st_id, keep = self._tx(setting, write=False)
        notes: list[str] = []
        converted = self._convert_features(st_id, say)
        dropped = kept = no_file = 0
        if crops and keep:
            notes.append(f"study {study!r} keeps video crops: none dropped")
        elif crops:
            dropped, kept, no_file = self._drop_recut_crops(st_id, say)
            if no_file:
                notes.append(f"{no_file} videos have no kept recording: their crops stay stored")
            if kept:
                notes.append(f"{kept} stored crops differ from the re-cut ones (or their frame is unreadable): kept")
        feats_dropped = 0
        if drop_features:
            while n := self._tx(functools.partial(compact.drop_features, study_id=st_id)):
                feats_dropped += n
                say(f"features: {feats_dropped} dropped")
            if feats_dropped:
                notes.append("fine-tuning re-extracts the dropped features from the crops (re-cut from the recordings)")
        if vacuum:
            say("vacuuming the database file")
            maintenance.vacuum(self.base.engine)
        return compact.CompactReport(
            study=study,
            features_converted=converted,
            crops_dropped=dropped,
            crops_kept=kept,
            videos_without_file=no_file,
            features_dropped=feats_dropped,
            notes=tuple(notes),
        )

    def _convert_features(self, st_id: int, say: Callable[[str], None]) -> int:
        """Converts a study's features to the compact form, page by page; returns how many were converted."""
        converted, after = 0, 0
        while True:
            n, last = self._tx(functools.partial(compact.convert_features, study_id=st_id, after_id=after))
            if last is None:
                return converted
            converted, after = converted + n, last
            say(f"features: {converted} converted")

    def _drop_recut_crops(self, st_id: int, say: Callable[[str], None]) -> tuple[int, int, int]:
        """Drops the stored crops of kept recordings that re-cut pixel-equal: ``(dropped, kept, without file)``."""
        dropped = kept = no_file = 0
        videos = self._tx(functools.partial(compact.videos_with_crops, study_id=st_id), write=False)
        for media_id, sid, sha, name, _ in videos:
            path = compact.recording_path(self.base.media_root, sid, sha, name)
            if path is None:
                no_file += 1
                continue
            pos = (-1.0, 0)
            while True:
                batch = self._tx(
                    functools.partial(compact.stored_crop_batch, media_id=media_id, after=pos), write=False
                )
                if not batch:
                    break
                equal = compact.equal_recuts(path, batch)
                self._tx(functools.partial(compact.drop_crops, face_ids=equal))
                dropped, kept = dropped + len(equal), kept + len(batch) - len(equal)
                pos = (batch[-1][1], batch[-1][0])
                say(f"crops: {dropped} dropped, {kept} kept")
            self._tx(functools.partial(compact.set_recut, media_id=media_id))
        return dropped, kept, no_file

    def _delete(self, model: type[Media] | type[Track], ident: int, what: str) -> dict[str, int]:
        kept: list[Path] = []

        def work(s: Session) -> dict[str, int]:
            if model is Media:
                m = repo.get_row(s, Media, ident, what)
                kept[:] = [media_files.media_path(self.base.media_root, m.study_id, m.sha256, m.filename)]
                kept.extend(feature_store.files_of(s, [ident]))  # its features file (db.feature_store)
            return removal.delete_target(s, model, ident, what)

        counts = self._tx(work)
        if model is Media:
            counts["files"] = sum(media_files.remove(p) for p in kept)
        maintenance.checkpoint(self.base.engine)
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
        target = Path(out) if out is not None else maintenance.default_backup_path(self.base.data_dir)
        # and the finished videos' feature files beside it (db.feature_store)
        return feature_store.backup_files(self.base.media_root, maintenance.backup(self.base.url, target))

    def vacuum(self) -> int:
        """Rebuilds the SQLite file without free pages (``VACUUM``); returns the bytes it shrank by."""
        return maintenance.vacuum(self.base.engine)

    def integrity_check(self) -> str:
        """``ok`` when the database is consistent (SQLite ``integrity_check`` and ``foreign_key_check``)."""
        return maintenance.integrity_check(self.base.engine)
