"""Frozen dataclasses returned by the services: plain values, safe to keep after the session is closed."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:
    from db.schema import AnalysisStatus, AnnotationKind, MediaKind

FaceFormat = Literal["csv", "parquet", "imagefolder", "features", "hf"]
"""A format of one row (or one image) per face."""
ClassFormat = Literal["class-minutes", "class-segments", "class-overall"]
"""Online-class tables (:mod:`db.classroom`): CSV, or Parquet when the file name ends in ``.parquet``; no images."""
ExportFormat = Literal[FaceFormat, ClassFormat]
"""Every format ``python -m db export --format`` takes."""
Split = Literal["train", "validation", "test"]

LabelSource = Literal["human", "model", "none"]
"""Where an exported value comes from: the annotators, the model's prediction, or neither."""


def group_name(media_sha256: str, track_index: int | None) -> str:
    """The split group of a face (:attr:`FaceLabel.group`, :mod:`db.splits`)."""
    return media_sha256 if track_index is None else f"{media_sha256}:track{track_index}"


@dataclass(frozen=True)
class StudyRow:
    """A study and its size."""

    id: int
    name: str
    n_media: int
    n_faces: int
    created_at: datetime


@dataclass(frozen=True)
class MediaRow:
    """A media item as listed in a study."""

    id: int
    study: str
    sha256: str
    filename: str
    kind: MediaKind
    size_bytes: int
    width: int | None
    height: int | None
    duration_s: float | None
    fps: float | None
    uploaded_by: str | None
    created_at: datetime
    n_faces: int = 0
    analysis_status: AnalysisStatus = "complete"
    analysed_until_s: float | None = None


@dataclass(frozen=True)
class TrackRow:
    """A person track of a video."""

    id: int
    media_id: int
    track_index: int
    n_faces: int
    start_s: float | None
    end_s: float | None
    engagement_score: float | None
    engagement_label: str | None
    windows: tuple[tuple[float, float, float], ...] = ()
    """``(start_s, end_s, p_engaged)`` per window."""


@dataclass(frozen=True)
class AnnotationRow:
    """One row of the correction history."""

    id: int
    face_id: int | None
    track_id: int | None
    annotator: str
    kind: AnnotationKind
    reverts_id: int | None
    label: str | None
    valence: float | None
    arousal: float | None
    engagement: float | None
    note: str | None
    source: str | None
    created_at: datetime


@dataclass(frozen=True)
class Judgement:
    """One annotator's current values for one face (own corrections first, then the track's).

    Attributes:
        annotator: The annotator's name.
        label: Emotion class, or None when this annotator set none.
        valence: Valence in [-1, 1] or None.
        arousal: Arousal in [-1, 1] or None.
        engagement: One of 0, 0.33, 0.66, 1, or None.
        note: The latest note, or None.
        from_track: Names of the fields that come from a track-level correction.
    """

    annotator: str
    label: str | None = None
    valence: float | None = None
    arousal: float | None = None
    engagement: float | None = None
    note: str | None = None
    from_track: frozenset[str] = frozenset()


@dataclass(frozen=True)
class FaceLabel:
    """A face with its model prediction and the current human labels: one row of the exports.

    For each of label, valence, arousal and engagement the value is the human one when an annotator gave it (majority
    vote for the class, mean for the numbers) and the model's otherwise; ``*_source`` says which (``human``,
    ``model`` or ``none``), ``*_annotators`` how many annotators gave it, ``*_agreement`` how much they agree
    (share voting for the majority class; for numbers ``1 - sd / max_sd``, 1 meaning identical values).
    """

    face_id: int
    media_id: int
    filename: str
    media_sha256: str
    media_kind: MediaKind
    frame: int | None
    time_s: float | None
    track_id: int | None
    track_index: int | None
    box: tuple[float, float, float, float]
    det_score: float
    has_crop: bool
    feature_model: str | None
    model: str | None
    weights_hash: str | None
    model_version: str | None
    model_label: str | None
    model_confidence: float | None
    model_probs: dict[str, float] | None
    model_valence: float | None
    model_arousal: float | None
    model_engagement: float | None
    judgements: tuple[Judgement, ...]
    label: str | None
    label_source: LabelSource
    label_annotators: int
    label_agreement: float | None
    valence: float | None
    valence_source: LabelSource
    valence_annotators: int
    valence_agreement: float | None
    arousal: float | None
    arousal_source: LabelSource
    arousal_annotators: int
    arousal_agreement: float | None
    engagement: float | None
    engagement_source: LabelSource
    engagement_annotators: int
    engagement_agreement: float | None
    note: str | None
    media_status: AnalysisStatus = "complete"
    """``partial`` while its video's analysis is stopped or running: faces without tracks yet, more to come."""
    model_reused: bool = False
    """The model's prediction is the one of an earlier face of its track whose crop this one's barely differs from
    (``VideoConfig.classify_every``), not made of this face's own crop."""

    @property
    def human_label(self) -> str | None:
        """The annotators' majority class, None when no annotator set one."""
        return self.label if self.label_source == "human" else None

    @property
    def group(self) -> str:
        """The split group (:mod:`db.splits`): the media's sha256, plus the track number for a tracked video face.

        Faces of one group never go to different splits or cross-validation folds.
        """
        return group_name(self.media_sha256, self.track_index)


@dataclass(frozen=True)
class IngestReport:
    """What an ingest added and what it found already stored."""

    study: str
    media_ids: tuple[int, ...]
    media_new: int = 0
    media_existing: int = 0
    faces_new: int = 0
    faces_reused: int = 0
    predictions_new: int = 0
    predictions_existing: int = 0
    tracks_new: int = 0
    crops_stored: int = 0
    features_stored: int = 0
    warnings: tuple[str, ...] = ()


@dataclass(frozen=True)
class ImportReport:
    """What ``import-labels`` applied.

    Attributes:
        file: The file's name.
        rows: Data rows in the file.
        annotations_added: Votes recorded (one annotation row per face with at least one new value).
        fields_unchanged: Filled cells that recorded nothing: ``unedited + already_current``.
        unedited: Cells of an edited export still holding their exported value.
        already_current: Cells equal to the annotator's own current value (already recorded).
        write_seconds: Seconds spent in the write transaction (waiting for the lock included).
    """

    file: str
    rows: int
    annotations_added: int
    fields_unchanged: int
    unedited: int = 0
    already_current: int = 0
    write_seconds: float = 0.0


@dataclass(frozen=True)
class ReviewItem:
    """A face proposed for review, with why."""

    face_id: int
    media_id: int
    filename: str
    frame: int | None
    time_s: float | None
    track_id: int | None
    model_label: str | None
    model_confidence: float | None
    label: str | None
    label_source: LabelSource
    valence: float | None
    arousal: float | None
    reason: str
    score: float
    """Higher means more in need of review."""


@dataclass(frozen=True)
class ExportReport:
    """Where an export went and what it holds."""

    path: str
    format: ExportFormat
    n_faces: int
    n_human: int
    n_model_only: int
    predictions_only: bool
    crops_available: bool
    splits: dict[Split, int] = field(default_factory=dict)
    notes: tuple[str, ...] = ()


@dataclass(frozen=True)
class StudyStats:
    """Counts and agreement of a study (``python -m db stats``).

    Attributes:
        study: The study's name.
        counts: Rows per kind: media, faces, predictions, tracks, crops, features, annotations, annotators,
            corrected_faces.
        model: Name of the model run the statistics follow, weights hash and version.
        predictions_only: True when no annotator corrected anything (every label is the model's).
        labels: The class order of the per-class counts and the confusion matrix.
        model_counts: Faces per class as the model predicts them.
        human_counts: Faces per class as the annotators' majority labels them.
        label_counts: Faces per class of the exported label (human where given, else model).
        confusion: Rows: human majority class, columns: model class, over faces with both.
        model_accuracy: Share of human-labelled faces where the model agrees with the majority.
        model_kappa: Cohen's kappa between the model and the human majority.
        annotator_kappa: Cohen's kappa per pair of annotators (``"a | b"``) with at least two common faces.
        fleiss_kappa: Fleiss' kappa over faces labelled by two or more annotators.
        krippendorff_alpha: Krippendorff's alpha (nominal) over the same faces.
        ccc: Per field (valence, arousal, engagement): ``annotators`` (mean pairwise CCC), ``model`` (CCC of the
            human mean against the model) and ``n`` (faces with a human value).
        annotator_pair_faces: Faces each pair of annotators (``"a | b"``) both labelled, for every pair sharing one.
        model_faces: Faces behind the model-vs-annotators figures (a human majority class and a model class).
        multi_faces: Faces behind Fleiss' kappa and Krippendorff's alpha (two or more annotators' classes).
    """

    study: str
    counts: dict[str, int]
    model: dict[str, str | None]
    predictions_only: bool
    labels: tuple[str, ...]
    model_counts: dict[str, int]
    human_counts: dict[str, int]
    label_counts: dict[str, int]
    confusion: tuple[tuple[int, ...], ...]
    model_accuracy: float | None
    model_kappa: float | None
    annotator_kappa: dict[str, float | None]
    fleiss_kappa: float | None
    krippendorff_alpha: float | None
    ccc: dict[str, dict[str, float | None]]
    annotator_pair_faces: dict[str, int] = field(default_factory=dict)
    model_faces: int = 0
    multi_faces: int = 0
