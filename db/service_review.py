"""Human labels: votes on faces and tracks, undo, label imports, review queues, skips and a study's labelling rules.

:class:`db.services.LabelStore` holds one :class:`Review` as ``store.review``; each method runs in one
transaction of the store (:meth:`db.service_base.StoreBase.transaction`), retried on lock errors.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from sqlalchemy.orm import Session

from db import (
    label_import,
    labels,
    repo,
    review,
)
from db.queues import ReviewOrder
from db.rows import (
    AnnotationRow,
    FaceLabel,
    ImportReport,
)
from db.service_base import Service


class Review(Service):
    """Human labels."""

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
        values = {"label": label, "valence": valence, "arousal": arousal, "engagement": engagement, "note": note}
        return self._correct(annotator, source, values, face_id=face_id)

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
        values = {"label": label, "valence": valence, "arousal": arousal, "engagement": engagement, "note": note}
        return self._correct(annotator, source, values, track_id=track_id)

    def _correct(
        self,
        annotator: str,
        source: str,
        values: dict[str, Any],
        *,
        face_id: int | None = None,
        track_id: int | None = None,
    ) -> AnnotationRow:
        """One checked correction of a face or a track in one transaction (:func:`db.labels.add_correction`)."""
        return self._tx(
            lambda s: labels.add_correction(s, annotator, face_id=face_id, track_id=track_id, source=source, **values)
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
        return self._tx(
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
        return label_import.import_labels(
            self.base.transaction, study, Path(path), annotator, attempts=self.base.retries
        )

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
        return self._tx(
            lambda s: review.review_queue(
                s, study, by, annotator=annotator, flt=flt or review.ReviewFilter(), model=model, limit=limit
            ),
            write=False,
        )

    def browse(
        self, study: str, flt: review.ReviewFilter, *, model: str | None = None, limit: int | None = None
    ) -> list[FaceLabel]:
        """The faces of a study that pass ``flt`` (e.g. the faces one annotator labelled), the first ``limit``."""
        return self._tx(lambda s: review.browse(s, study, flt, model=model, limit=limit), write=False)

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
        return self._tx(lambda s: review.labels_page(s, study, annotator, flt, after=after, limit=limit), write=False)

    def skip(self, face_id: int, annotator: str) -> None:
        """Keeps a face out of ``annotator``'s queues until :meth:`unskip` (stored, so it holds across reloads)."""
        self._tx(lambda s: review.skip(s, face_id, annotator))

    def unskip(self, study: str, annotator: str, face_ids: Sequence[int] | None = None) -> int:
        """Puts ``annotator``'s skipped faces (the given ones, or all of the study) back into the queue."""

        def work(s: Session) -> int:
            st = repo.get_study(s, study)
            return review.unskip(s, annotator, face_ids, study_id=st.id)

        return self._tx(work)

    def study_settings(self, study: str) -> review.StudySettings:
        """The labelling rules of a study (independent labelling, hidden model, share for a second annotator)."""
        return self._tx(lambda s: review.study_settings(s, study), write=False)

    def set_study_settings(self, study: str, settings: review.StudySettings) -> review.StudySettings:
        """Stores the labelling rules of a study (owners only in the web app)."""
        return self._tx(lambda s: review.set_study_settings(s, study, settings))

    def last_correction(self, study: str, annotator: str) -> AnnotationRow | None:
        """``annotator``'s newest correction in a study that is still active (what Undo reverts), or None."""
        return self._tx(lambda s: labels.last_correction(s, study, annotator), write=False)

    def annotator_name(self, name: str) -> str:
        """The display name of the annotator ``name`` stands for (case and spaces ignored), else ``name`` trimmed."""
        return self._tx(lambda s: repo.annotator_name(s, name), write=False)
