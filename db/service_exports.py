"""Statistics and exports of a study: dataset statistics, every export format, the study tables' files.

:class:`db.services.LabelStore` holds one :class:`Exports` as ``store.exports``; each method runs in one
transaction of the store (:meth:`db.service_base.StoreBase.transaction`), retried on lock errors.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from sqlalchemy.orm import Session

from db import (
    codebook,
    exports,
    labels,
    quality,
    repo,
    status,
)
from db.rows import (
    ExportFormat,
    ExportReport,
    FaceLabel,
    StudyStats,
)
from db.service_base import Service
from db.study_tables import Participants


class Exports(Service):
    """Statistics and exports of a study."""

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

        return self._tx(work, write=False)

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
                s,
                study,
                rows,
                stats,
                primary,
                fmt,
                Path(out),
                seed=seed,
                media_root=self.base.media_root,
                progress=progress,
            )

        return self._tx(work, write=False)

    def export_study_tables(
        self, study: str, fmt: str, out_dir: Path, participants: Participants | None = None
    ) -> list[Path]:
        """Writes the study tables in ``fmt`` (csv, parquet, sav, dta) with their codebook (:mod:`db.stat_files`).

        Raises:
            StoreError: An unknown format, or ``out_dir`` holds files already; nothing is written.
        """
        from db import stat_files

        fmt = stat_files.check_format(fmt)
        tables, method = self._tx(lambda s: codebook.with_method(s, study, participants), write=False)
        return stat_files.write_study(study, tables, method, fmt, Path(out_dir))
