"""Online classes: recordings, their persons (rename, merge, split), lecture segments and the class tables."""

from __future__ import annotations

import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from db.classroom import ClassTables
from db.errors import NotFoundError
from db.persons import PersonChangeRow, PersonRow
from db.recording_info import RecordingInfo
from db.review import StudySettings
from db.rows import MediaRow
from db.segments import SegmentRow
from db.services import LabelStore
from webapp.services.privacy import blurred_crop, blurs
from webapp.services.studies import set_study_settings, study_media, study_settings
from webapp.services.who import require_annotator, require_owner

if TYPE_CHECKING:  # plotly loads with the first figure
    import plotly.graph_objects as go

ClassTable = Literal["class-minutes", "class-segments", "class-overall"]
"""The online-class tables offered as downloads."""

CLASS_TABLES: dict[ClassTable, str] = {
    "class-minutes": "per student per minute",
    "class-segments": "per student per segment",
    "class-overall": "per segment for the class",
}


def class_videos(store: LabelStore, study: str) -> list[MediaRow]:
    """The study's recordings (videos), newest first."""
    return [m for m in study_media(store, study) if m.kind == "video"]


@dataclass(frozen=True)
class RecordingView:
    """What the Classroom page shows of one recording.

    Attributes:
        settings: The study's labelling rules (blurring).
        blur: Whether this viewer sees faces blurred.
        persons: The recording's current persons, corrections applied.
        segments: The recording's lecture segments.
        thumbnails: One face crop per person id, as this viewer may see it.
        history: The renames, merges and splits of the recording's persons, oldest first.
    """

    settings: StudySettings
    blur: bool
    persons: tuple[PersonRow, ...]
    segments: tuple[SegmentRow, ...]
    thumbnails: dict[int, bytes]
    history: tuple[PersonChangeRow, ...]


def recording_view(store: LabelStore, study: str, media_id: int, owner: bool) -> RecordingView:
    """The persons, segments, thumbnails and history of a recording of ``study`` (see :class:`RecordingView`).

    Raises:
        NotFoundError: No such recording in ``study``.
    """
    _check_recording(store, study, media_id)
    settings = study_settings(store, study)
    persons = store.classroom.persons(media_id)
    return RecordingView(
        settings=settings,
        blur=blurs(settings, owner),
        persons=tuple(persons),
        segments=tuple(store.classroom.segments(study, media_id)),
        thumbnails=person_thumbnails(store, media_id, persons, settings, owner),
        history=tuple(store.classroom.person_history(media_id)),
    )


def set_blur_faces(store: LabelStore, study: str, media_id: int, blur: bool, *, owner: bool) -> RecordingView:
    """The blur toggle: stores whether the study blurs faces, and returns the recording as it now looks.

    Raises:
        NotAllowedError: For anyone but a study owner.
    """
    set_study_settings(store, study, replace(study_settings(store, study), blur_faces=blur), owner=owner)
    return recording_view(store, study, media_id, owner)


def _check_recording(store: LabelStore, study: str, media_id: int) -> None:
    """Raises NotFoundError unless ``media_id`` is a recording of ``study`` (ids from a page are never trusted)."""
    if media_id not in {m.id for m in class_videos(store, study)}:
        raise NotFoundError(f"recording of study {study!r}", media_id)


def _recording_persons(store: LabelStore, study: str, media_id: int) -> list[PersonRow]:
    """The persons of a recording of ``study``, to check the person and track ids a page sends against.

    Raises:
        NotFoundError: No such recording in ``study``.
    """
    _check_recording(store, study, media_id)
    return store.classroom.persons(media_id)


def _person_in(persons: Sequence[PersonRow], person_id: int) -> int:
    if person_id not in {p.person_id for p in persons}:
        raise NotFoundError("person of this recording", person_id)
    return person_id


def rename_person(
    store: LabelStore,
    study: str,
    media_id: int,
    annotator: str | None,
    person_id: int,
    participant: str,
    *,
    owner: bool,
) -> None:
    """Gives a person of a recording of ``study`` a participant id (recorded with who and when).

    Raises:
        AnnotatorMissingError: Without an annotator name.
        NotFoundError: The recording is not in ``study`` or the person not in the recording.
        NotAllowedError: Not an owner, and the study keeps person changes for owners.
    """
    who = require_annotator(annotator, "renaming a person")
    persons = _recording_persons(store, study, media_id)
    store.classroom.rename_person(_person_in(persons, person_id), participant, who, owner=owner)


def merge_persons(
    store: LabelStore,
    study: str,
    media_id: int,
    annotator: str | None,
    person_id: int,
    other_person_id: int,
    *,
    owner: bool,
) -> None:
    """Merges a person into another; refused with the reason when both were on screen at the same time.

    Raises:
        AnnotatorMissingError: Without an annotator name.
        NotFoundError: The recording is not in ``study`` or a person not in the recording.
    """
    who = require_annotator(annotator, "merging persons")
    persons = _recording_persons(store, study, media_id)
    store.classroom.merge_persons(
        _person_in(persons, person_id), _person_in(persons, other_person_id), who, owner=owner
    )


def split_track(
    store: LabelStore, study: str, media_id: int, annotator: str | None, track_id: int, *, owner: bool
) -> None:
    """Splits a track of a recording of ``study`` off its person into a new person.

    Raises:
        AnnotatorMissingError: Without an annotator name.
        NotFoundError: The recording is not in ``study`` or the track not in the recording.
    """
    who = require_annotator(annotator, "splitting a track")
    persons = _recording_persons(store, study, media_id)
    if track_id not in {t for p in persons for t in p.track_ids}:
        raise NotFoundError("track of this recording", track_id)
    store.classroom.split_track(track_id, who, owner=owner)


def split_track_at(
    store: LabelStore, study: str, media_id: int, annotator: str | None, track_id: int, time_s: float, *, owner: bool
) -> None:
    """Splits a track of a recording of ``study`` at a time: the faces from then on become a new person.

    Raises:
        AnnotatorMissingError: Without an annotator name.
        NotFoundError: The recording is not in ``study`` or the track not in the recording.
        PersonChangeError: No face on one side of the time, or whole-track labels.
        NotAllowedError: Not an owner, and the study keeps person changes for owners.
    """
    who = require_annotator(annotator, "splitting a track")
    persons = _recording_persons(store, study, media_id)
    if track_id not in {t for p in persons for t in p.track_ids}:
        raise NotFoundError("track of this recording", track_id)
    store.classroom.split_track_at(track_id, time_s, who, owner=owner)


def add_segment(
    store: LabelStore, study: str, who: str | None, media_id: int, name: str, start_s: float, end_s: float
) -> None:
    """Adds a lecture segment to a recording of ``study``; refused with the reason when it overlaps or leaves it.

    Raises:
        NotFoundError: The recording is not in ``study``.
    """
    _check_recording(store, study, media_id)
    store.classroom.add_segment(media_id, name, start_s, end_s, created_by=who)


def import_segments(store: LabelStore, study: str, data: bytes, who: str | None) -> int:
    """Adds the segments of an uploaded CSV file, all or nothing; returns how many."""
    with tempfile.TemporaryDirectory(prefix="affectlab-segments-") as tmp:
        path = Path(tmp) / "segments.csv"
        path.write_bytes(data)
        return len(store.classroom.import_segments(study, path, created_by=who))


def class_table_bytes(
    store: LabelStore, study: str, table: ClassTable, fmt: Literal["csv", "parquet"] = "csv"
) -> tuple[bytes, str]:
    """One class table as a download (CSV or Parquet, no image) and its dataset card."""
    if table not in CLASS_TABLES or fmt not in ("csv", "parquet"):
        raise ValueError(f"unknown table {table!r} or format {fmt!r}")
    with tempfile.TemporaryDirectory(prefix="affectlab-class-") as tmp:
        out = Path(tmp) / f"{table}.{fmt}"
        store.exports.export(study, table, out)
        return out.read_bytes(), out.with_name(out.stem + ".README.md").read_text(encoding="utf-8")


def class_table_csv(study: str, tables: ClassTables, table: ClassTable) -> bytes:
    """One class table as the CSV file ``python -m db export`` writes, from tables already computed."""
    from db import classroom
    from db.csvfile import write_frame

    with tempfile.TemporaryDirectory(prefix="affectlab-class-") as tmp:
        out = write_frame(classroom.dataframe(tables, table), Path(tmp) / f"{table}.csv")
        return out.read_bytes()


@dataclass(frozen=True)
class ClassOverTime:
    """The "Class over time" section: the study's class tables and, for owners, each table as a download.

    Attributes:
        tables: The online-class tables of the study, computed once for the page.
        downloads: Table -> (a function giving its CSV bytes, called when someone downloads it; its dataset card
            in Markdown); empty for anyone but an owner.
    """

    tables: ClassTables
    downloads: dict[ClassTable, tuple[Callable[[], bytes], str]]


def class_over_time(store: LabelStore, study: str, owner: bool) -> ClassOverTime:
    """The class tables of ``study`` (computed once) and, for an owner, their CSV downloads with dataset cards."""
    from db import classroom

    tables = store.classroom.class_tables(study)
    downloads: dict[ClassTable, tuple[Callable[[], bytes], str]] = {}
    if owner:
        for t in CLASS_TABLES:
            downloads[t] = (partial(class_table_csv, study, tables, t), classroom.card(study, t, tables))
    return ClassOverTime(tables=tables, downloads=downloads)


FIGURE_KINDS = {
    "class-mean": "class mean with its 95 % confidence band",
    "participant-lines": "one line per student over time",
    "segment-bars": "bars per lecture segment",
}
"""The figures the page offers (:mod:`affectlab.class_figures`), by kind."""


def figure_values(kind: str) -> tuple[str, ...]:
    """The values a figure of ``kind`` can show (the class mean needs a number)."""
    from affectlab.class_figures import RANGES, VALUES

    return tuple(v for v in VALUES if kind != "class-mean" or v in RANGES)


def class_figure(
    tables: ClassTables, media_id: int, kind: str, value: str = "engagement_p", students: Sequence[str] = ()
) -> go.Figure:
    """A figure of one recording (:func:`affectlab.class_figures.class_figure`).

    Raises:
        FigureError: What the figure needs is missing (no segments for bars); the message says what to do.
    """
    from affectlab.class_figures import class_figure as draw

    return draw(tables, media_id, kind, value, students)


def figure_file(fig: go.Figure, fmt: str) -> bytes:
    """A figure as PNG or SVG bytes, drawn when someone downloads it.

    Raises:
        FigureExportError: kaleido or Chromium missing.
    """
    from affectlab.class_figures import figure_bytes

    return figure_bytes(fig, fmt)


def figure_export_problem() -> str | None:
    """Why PNG / SVG files cannot be drawn on this server (None: they can), checked without drawing one."""
    from affectlab.class_figures import export_problem

    return export_problem()


def person_thumbnails(
    store: LabelStore, media_id: int, persons: Sequence[PersonRow], settings: StudySettings, owner: bool
) -> dict[int, bytes]:
    """One face crop per person of a recording (its first track's best detection), as this viewer may see it."""
    best = store.recordings.best_faces(media_id, [p.track_ids[0] for p in persons if p.track_ids])
    chosen = {p.person_id: best[t] for p in persons for t in p.track_ids[:1] if t in best}
    crops = {
        fid: blurred_crop(data, settings, owner, own_face=False)
        for fid, data in store.recordings.face_crops(list(chosen.values())).items()
    }  # faces of this media item only
    return {pid: crops[fid] for pid, fid in chosen.items() if fid in crops}


# ---------------------------------------------------------------------------------------------------- study tables

STUDY_FORMATS: dict[str, str] = {"csv": "CSV", "parquet": "Parquet", "sav": "SPSS (.sav)", "dta": "Stata (.dta)"}
"""The formats of the study tables download (:mod:`db.stat_files`)."""


def study_tables_zip(store: LabelStore, study: str, fmt: str, *, owner: bool) -> bytes:
    """The study tables in ``fmt`` with their codebook, as one zip file (for the study's owners).

    Raises:
        NotAllowedError: For anyone but a study owner.
        StoreError: An unknown format.
    """
    import io
    import zipfile

    require_owner(owner, "downloading the study tables")
    buf = io.BytesIO()
    with tempfile.TemporaryDirectory(prefix="affectlab-study-") as tmp:
        paths = store.exports.export_study_tables(study, fmt, Path(tmp) / "tables")
        with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
            for path in paths:
                zf.write(path, arcname=f"study-tables-{fmt}/{path.name}")
    return buf.getvalue()


def recording_info(store: LabelStore, study: str, media_id: int) -> RecordingInfo:
    """A recording's course, name and date (:mod:`db.recording_info`).

    Raises:
        NotFoundError: No such recording in ``study``.
    """
    _check_recording(store, study, media_id)
    return store.classroom.recording_infos(study)[media_id]


def set_recording_info(
    store: LabelStore, study: str, media_id: int, course: str, recording: str, day: str, *, owner: bool
) -> RecordingInfo:
    """Sets a recording's course, name and date (empty clears one); for the study's owners.

    Raises:
        NotAllowedError: For anyone but a study owner.
        NotFoundError: No such recording in ``study``.
        RecordingInfoError: A value too long or a date that is not YYYY-MM-DD; nothing changed.
    """
    require_owner(owner, "editing a recording's course, name and date")
    _check_recording(store, study, media_id)
    return store.classroom.set_recording_info(media_id, course=course, recording=recording, day=day)


def import_recording_info(store: LabelStore, study: str, data: bytes, *, owner: bool) -> int:
    """Sets the course, name and date of the recordings an uploaded CSV names, all or none; returns how many.

    Raises:
        NotAllowedError: For anyone but a study owner.
        RecordingInfoError: Naming every refused line; nothing changed.
    """
    require_owner(owner, "importing recordings' course, name and date")
    with tempfile.TemporaryDirectory(prefix="affectlab-recordings-") as tmp:
        path = Path(tmp) / "recordings.csv"
        path.write_bytes(data)
        return len(store.classroom.import_recording_info(study, path))
