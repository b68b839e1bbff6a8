"""A study's labelling rules, the review filter, an annotator's skips and what an annotator may see of a face."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from db import repo, status
from db.errors import StoreError
from db.queues import route_value
from db.rows import FaceLabel
from db.schema import Annotator, Face, FaceJudge, Media, ReviewSkip, Study


@dataclass(frozen=True)
class StudySettings:
    """A study's labelling rules.

    Attributes:
        independent: Annotators see neither other annotators' labels nor the consensus.
        hide_model: In an independent study, annotators do not see the model's prediction either.
        double_share: Share of faces (0 to 1) that need a second annotator's vote, for agreement.
        blur_faces: Privacy for minors: the app blurs every face it shows to anyone but the study's owners
            (an annotator still sees the face being labelled).
    """

    independent: bool = False
    hide_model: bool = False
    double_share: float = 0.0
    blur_faces: bool = False


@dataclass(frozen=True)
class ReviewFilter:
    """Which faces a queue or a browse view covers (every field None: all faces of the study).

    Attributes:
        media_id: Faces of this media item.
        track_id: Faces of this track.
        model_label: Faces the model put in this class.
        human_label: Faces whose human (consensus) class is this one.
        labelled_by: Faces this annotator has a judgement on.
        labelled: True: faces with a human class; False: faces without one.
    """

    media_id: int | None = None
    track_id: int | None = None
    model_label: str | None = None
    human_label: str | None = None
    labelled_by: str | None = None
    labelled: bool | None = None

    def matches(self, face: FaceLabel) -> bool:
        """Whether ``face`` passes every set field."""
        human = face.label if face.label_source == "human" else None
        return (
            (self.media_id is None or face.media_id == self.media_id)
            and (self.track_id is None or face.track_id == self.track_id)
            and (self.model_label is None or face.model_label == self.model_label)
            and (self.human_label is None or human == self.human_label)
            and (
                self.labelled_by is None or any(same_annotator(j.annotator, self.labelled_by) for j in face.judgements)
            )
            and (self.labelled is None or (human is not None) == self.labelled)
        )


def votes_needed(settings: StudySettings, study_id: int, face_id: int) -> int:
    """How many annotators' classes a face needs (rule 2)."""
    return 2 if route_value(study_id, face_id) < settings.double_share else 1


def study_settings(session: Session, study: str) -> StudySettings:
    """The labelling rules of a study (defaults for a study that does not exist yet)."""
    st = session.scalar(select(Study).where(Study.name == study))
    if st is None:
        return StudySettings()
    return StudySettings(
        independent=bool(st.independent),
        hide_model=bool(st.hide_model),
        double_share=float(st.double_share or 0.0),
        blur_faces=bool(st.blur_faces),
    )


def set_study_settings(session: Session, study: str, settings: StudySettings) -> StudySettings:
    """Stores a study's labelling rules (creating the study when new).

    Raises:
        StoreError: For a double share outside [0, 1].
    """
    if not 0.0 <= settings.double_share <= 1.0:
        raise StoreError(f"the share of faces for a second annotator must be from 0 to 1, not {settings.double_share}")
    st = repo.get_or_create_study(session, study)
    st.independent = settings.independent
    st.hide_model = settings.hide_model and settings.independent
    if float(st.double_share or 0.0) != float(settings.double_share):
        status.mark(session, counts=[st.id])
    st.double_share = float(settings.double_share)
    st.blur_faces = bool(settings.blur_faces)
    session.flush()
    return study_settings(session, study)


def skipped_faces(session: Session, study_id: int, annotator: str) -> set[int]:
    """Ids of the faces of a study that ``annotator`` skipped."""
    stmt = (
        select(ReviewSkip.face_id)
        .join(Annotator, ReviewSkip.annotator_id == Annotator.id)
        .join(Face, ReviewSkip.face_id == Face.id)
        .join(Media, Face.media_id == Media.id)
        .where(Annotator.key == repo.annotator_key(annotator), Media.study_id == study_id)
    )
    return set(session.scalars(stmt))


def skip(session: Session, face_id: int, annotator: str) -> None:
    """Records that ``annotator`` skipped a face (idempotent).

    Raises:
        NotFoundError: If the face does not exist.
    """
    repo.get_row(session, Face, face_id, "face")
    who = repo.get_or_create_annotator(session, annotator)
    exists = session.scalar(
        select(ReviewSkip.id).where(ReviewSkip.face_id == face_id, ReviewSkip.annotator_id == who.id)
    )
    if exists is None:
        session.add(ReviewSkip(face_id=face_id, annotator_id=who.id))
        session.flush()


def unskip(
    session: Session, annotator: str, face_ids: Sequence[int] | None = None, *, study_id: int | None = None
) -> int:
    """Puts skipped faces back into ``annotator``'s queue (the given ones, or every skip of a study); counts them."""
    who = session.scalar(select(Annotator).where(Annotator.key == repo.annotator_key(annotator)))
    if who is None:
        return 0
    stmt = select(ReviewSkip.face_id).where(ReviewSkip.annotator_id == who.id)
    if face_ids is not None:
        stmt = stmt.where(ReviewSkip.face_id.in_(list(face_ids)))
    elif study_id is not None:
        mine = select(FaceJudge.face_id).where(
            FaceJudge.annotator_id == who.id, FaceJudge.study_id == study_id, FaceJudge.skipped
        )
        stmt = stmt.where(ReviewSkip.face_id.in_(mine))
    ids = list(session.scalars(stmt))
    for i in range(0, len(ids), 500):
        part = ids[i : i + 500]
        session.execute(delete(ReviewSkip).where(ReviewSkip.annotator_id == who.id, ReviewSkip.face_id.in_(part)))
    status.mark(session, faces=ids)
    return len(ids)


def same_annotator(name: str, other: str) -> bool:
    """Whether two annotator names are one person (:func:`db.repo.annotator_key`)."""
    return name == other or repo.annotator_key(name) == repo.annotator_key(other)


def annotator_id(session: Session, name: str | None) -> int | None:
    """The id of the annotator with the identity of ``name`` (case- and space-insensitive), None for none."""
    if not name:
        return None
    return session.scalar(select(Annotator.id).where(Annotator.key == repo.annotator_key(name)))


def visible_face(face: FaceLabel, annotator: str | None, settings: StudySettings) -> FaceLabel:
    """What ``annotator`` may see of a face (rule 4): in an independent study only their own judgement.

    The label fields then hold the annotator's own values (``label_source`` ``human``) or, without them, the model's
    (``model``), or nothing when the model is hidden too.
    """
    if not settings.independent:
        return face
    mine = tuple(j for j in face.judgements if annotator is not None and same_annotator(j.annotator, annotator))
    own = mine[0] if mine else None
    show_model = not settings.hide_model
    out: dict[str, object] = {"judgements": mine, "note": own.note if own else None}
    model = {
        "label": face.model_label,
        "valence": face.model_valence,
        "arousal": face.model_arousal,
        "engagement": face.model_engagement,
    }
    for f in ("label", "valence", "arousal", "engagement"):
        mine_v = getattr(own, f) if own else None
        if mine_v is not None:
            out[f], out[f"{f}_source"], out[f"{f}_annotators"] = mine_v, "human", 1
        elif show_model and model[f] is not None:
            out[f], out[f"{f}_source"], out[f"{f}_annotators"] = model[f], "model", 0
        else:
            out[f], out[f"{f}_source"], out[f"{f}_annotators"] = None, "none", 0
        out[f"{f}_agreement"] = None
    if not show_model:
        out.update(
            model_label=None,
            model_confidence=None,
            model_probs=None,
            model_valence=None,
            model_arousal=None,
            model_engagement=None,
        )
    return dataclasses.replace(face, **out)  # type: ignore[arg-type]
