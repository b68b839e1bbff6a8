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

    store = LabelStore.from_settings(settings)  # DATABASE_URL, or SQLite in AFFECTLAB_DATA_DIR
    store.ingest.ingest_results("pilot", path, "clip.mp4", results, tracks)
    store.review.correct_face(face_id, "alice", label="Happiness", valence=0.6)
    store.review.undo("alice", face_id=face_id)
    store.review.review_queue("pilot", by="uncertainty", annotator="alice").items
    store.exports.export("pilot", "hf", Path("out/pilot-hf"))
"""

from __future__ import annotations

from functools import cached_property

from core.settings import Settings
from db.service_base import StoreBase
from db.service_classroom import Classroom
from db.service_exports import Exports
from db.service_ingest import Ingest
from db.service_recordings import Recordings
from db.service_review import Review
from db.service_upkeep import Upkeep


class LabelStore(StoreBase):
    """The services of the label store on one database (arguments: :class:`db.service_base.StoreBase`).

    Each service is made once, on first use, and holds no state but the store's plumbing.
    """

    @cached_property
    def recordings(self) -> Recordings:
        """Reads of a study's recordings."""
        return Recordings(self)

    @cached_property
    def ingest(self) -> Ingest:
        """Storing analysed files."""
        return Ingest(self)

    @cached_property
    def review(self) -> Review:
        """Human labels."""
        return Review(self)

    @cached_property
    def classroom(self) -> Classroom:
        """Persons and class studies."""
        return Classroom(self)

    @cached_property
    def exports(self) -> Exports:
        """Statistics and exports."""
        return Exports(self)

    @cached_property
    def upkeep(self) -> Upkeep:
        """Upkeep of the store."""
        return Upkeep(self)

    @classmethod
    def from_settings(cls, settings: Settings) -> LabelStore:
        """The store of the caller's :class:`core.settings.Settings` (``DATABASE_URL``, data folder, crops mode)."""
        s = settings
        return cls(s.database_url, store_crops=s.store_crops, data_dir=s.data_dir, feature_files=s.feature_files)
