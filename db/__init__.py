"""AffectLab's label store: media, faces, predictions, tracks and the append-only correction history.

Layers: :mod:`db.schema` (tables), :mod:`db.migrate` (Alembic, ``python -m db upgrade``), :mod:`db.repo`,
:mod:`db.ingest` and :mod:`db.labels` (functions on a caller's Session), :mod:`db.services` (``LabelStore``: one
method per user action, each its own transaction; the only entry point of the web app), :mod:`db.agreement` and
:mod:`db.quality` (statistics), :mod:`db.exports` (training exports, with :mod:`db.splits` and
:mod:`db.dataset_card`), :mod:`db.maintenance` (backup, integrity check) and :mod:`db.cli` (``python -m db``).
Nothing here imports streamlit.
"""
