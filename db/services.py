"""The label store: the one place the web app and the command line call, one service per concern.

A :class:`LabelStore` is the engine of one database (:class:`db.service_base.StoreBase`: its sessions and the one
transaction rule, retried on lock errors) and the focused services built on it, each method one transaction:

- ``store.recordings`` (:class:`db.service_recordings.Recordings`): studies, media, tracks, faces, crops, history;
- ``store.ingest`` (:class:`db.service_ingest.Ingest`): analysed files, long videos chunk by chunk, claims;
- ``store.review`` (:class:`db.service_review.Review`): votes, undo, label imports, queues, labelling rules;
- ``store.classroom`` (:class:`db.service_classroom.Classroom`): persons, segments, recording metadata, class tables;
- ``store.exports`` (:class:`db.service_exports.Exports`): dataset statistics and every export;
- ``store.upkeep`` (:class:`db.service_upkeep.Upkeep`): crop layout, compacting, deletions, backup, integrity.

The work itself is done by functions that take the session and never commit (:mod:`db.repo`, :mod:`db.ingest`,
:mod:`db.labels`, :mod:`db.label_import`, :mod:`db.review`, ...); the upkeep of the database file (backup, integrity
check, checkpoint) by :mod:`db.maintenance`.

Usage::

    store = LabelStore.from_settings()          # DATABASE_URL, or SQLite in AFFECTLAB_DATA_DIR
    store.ingest.ingest_results("pilot", path, "clip.mp4", results, tracks)
    store.review.correct_face(face_id, "alice", label="Happiness", valence=0.6)
    store.review.undo("alice", face_id=face_id)
    store.review.review_queue("pilot", by="uncertainty", annotator="alice").items
    store.exports.export("pilot", "hf", Path("out/pilot-hf"))
"""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import Engine

from core.settings import Settings
from db import codecs
from db.service_base import StoreBase
from db.service_classroom import Classroom
from db.service_exports import Exports
from db.service_ingest import Ingest
from db.service_recordings import Recordings
from db.service_review import Review
from db.service_upkeep import Upkeep


class LabelStore(StoreBase):
    """The services of the label store on one database (arguments: :class:`db.service_base.StoreBase`)."""

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
        feature_files: bool | None = None,
    ) -> None:
        super().__init__(
            url,
            store_crops=store_crops,
            data_dir=data_dir,
            retries=retries,
            engine=engine,
            media_dir=media_dir,
            feature_codec=feature_codec,
            feature_files=feature_files,
        )
        self.recordings = Recordings(self)
        self.ingest = Ingest(self)
        self.review = Review(self)
        self.classroom = Classroom(self)
        self.exports = Exports(self)
        self.upkeep = Upkeep(self)

    @classmethod
    def from_settings(cls, settings: Settings | None = None) -> LabelStore:
        """The store of :class:`core.settings.Settings` (``DATABASE_URL``, data folder, crops mode)."""
        s = settings or Settings.from_env()
        return cls(s.database_url, store_crops=s.store_crops, data_dir=s.data_dir, feature_files=s.feature_files)
