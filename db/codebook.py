"""The codebook of the study tables: the method (model, weights, sampling, detection, engagement) and every column.

Written beside every study-table export (``codebook.md`` for people, ``codebook.csv`` one line per variable), in
every format: the model's name, weights hash and version; per recording the video's frame rate, the analysed
frames' mean step (the sampling rate) and the detection settings; the engagement window in faces and seconds and
the rule for short tracks; the rounding; each column's type, label, coded values and how it is computed.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields
from typing import Any

from sqlalchemy.orm import Session

from db import study_tables
from db.classroom import DECIMALS, GAP_FACTOR, SECONDS_DECIMALS, ClassTables
from db.detection import detection_settings
from db.recording_info import RecordingInfo
from db.study_tables import Participants, StudyTables
from models.engagement import EngagementConfig
from models.faces import DetectorConfig


@dataclass(frozen=True)
class RecordingMethod:
    """How one recording was analysed, as far as the store knows.

    Attributes:
        media_id: The recording's media id.
        recording: Its name in the tables.
        fps: The video's average frame rate, when known.
        step_s: The mean step between its analysed frames (gaps left out), None without two analysed frames.
        detection: The detection settings stored with the recording; empty: not stored (the defaults apply).
    """

    media_id: int
    recording: str
    fps: float | None
    step_s: float | None
    detection: Mapping[str, Any]


@dataclass(frozen=True)
class Method:
    """What the study tables rest on: the model run, the recordings' sampling and the engagement rule."""

    model: str | None
    weights_hash: str | None
    model_version: str | None
    recordings: tuple[RecordingMethod, ...]
    engagement_window: int
    min_track_faces: int


def method(
    session: Session,
    study_id: int,
    tables: ClassTables,
    infos: Mapping[int, RecordingInfo],
    detection: Mapping[int, Mapping[str, Any]] | None = None,
) -> Method:
    """The method of a study's tables (the model run the tables follow, :func:`db.labels.choose_model`).

    Args:
        session: An open session.
        study_id: The study.
        tables: Its class tables (the recordings' steps).
        infos: Its recordings' metadata.
        detection: Per media id, the detection settings stored with the recording (none stored: the defaults).
    """
    from db import labels

    key = labels.choose_model(session, study_id, None)
    eng = EngagementConfig()
    recs = []
    for m, info in infos.items():
        one, longest = tables.steps.get(m, (None, None))
        step = one if longest not in (None, float("inf")) else None
        recs.append(RecordingMethod(m, info.recording, info.fps, step, dict((detection or {}).get(m, {}))))
    return Method(
        model=key[0] if key else None,
        weights_hash=key[1] if key else None,
        model_version=key[2] if key else None,
        recordings=tuple(recs),
        engagement_window=eng.window,
        min_track_faces=eng.min_features,
    )


def _defaults() -> str:
    d = DetectorConfig()
    return ", ".join(f"{f.name} {getattr(d, f.name)}" for f in fields(d))


def method_lines(m: Method) -> list[str]:
    """The method section of the codebook (Markdown lines)."""
    model = f"`{m.model}`" if m.model else "none (no prediction stored)"
    version = f", fine-tuned version `{m.model_version}`" if m.model_version else ""
    lines = [
        "## Method",
        "",
        f"- Emotion model: {model}{version}; weights hash `{m.weights_hash or '-'}`.",
        f"- Engagement: the model's p(engaged) of windows of {m.engagement_window} successive faces of a track; a "
        f"face gets the window covering it. A track with fewer than {m.min_track_faces} faces gets no engagement "
        f"(its faces count in every other figure but not in `engagement_p`); one with {m.min_track_faces} to "
        f"{m.engagement_window - 1} faces is scored as one window over all of them.",
        f"- Visible time: each analysed frame with the participant's face stands for the time to the recording's "
        f"next analysed frame; the last frame, and one followed by a step over {GAP_FACTOR} times the median step "
        "(a gap: sampled frames with no face at all), stand for one step (the mean of the other steps).",
        f"- Rounding: shares and means to {DECIMALS} decimals, seconds to {SECONDS_DECIMALS}, after pooling the "
        "sums; `engagement_label` follows the rounded `engagement_p`.",
        f"- Detection defaults (when a recording stores no settings): MTCNN {_defaults()}.",
        "",
        "| media id | recording | video fps | analysed step (s) | analysed frames per s | engagement window (s) "
        "| detection settings |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in m.recordings:
        fps = f"{r.fps:.3f}" if r.fps else "-"
        step = f"{r.step_s:.4f}" if r.step_s else "-"
        rate = f"{1 / r.step_s:.3f}" if r.step_s else "-"
        window = f"{m.engagement_window * r.step_s:.1f}" if r.step_s else "-"
        det = ", ".join(f"{k} {v}" for k, v in r.detection.items()) or "not stored (defaults)"
        lines.append(f"| {r.media_id} | {_cell(r.recording)} | {fps} | {step} | {rate} | {window} | {_cell(det)} |")
    return lines


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def markdown(study: str, st: StudyTables, m: Method, fmt: str) -> str:
    """The whole codebook in Markdown: method, then each table's rows and columns."""
    lines = [
        f"# Codebook: AffectLab study `{study}`, study tables ({fmt})",
        "",
        "Figures only: no image, no face crop. Participants are the recordings' persons after people's renames, "
        "merges and splits, joined by participant id.",
        "",
        *method_lines(m),
    ]
    for t in st.tables:
        lines += ["", f"## `{t.name}`: {t.what}; {len(t.rows)} rows", ""]
        lines += ["| variable | type | label | values | computation |", "|---|---|---|---|---|"]
        for c in t.columns:
            values = "; ".join(f"{i} = {v}" for i, v in enumerate(c.values, start=1))
            lines.append(f"| `{c.name}` | {c.kind} | {_cell(c.label)} | {_cell(values)} | {_cell(c.how)} |")
    return "\n".join(lines) + "\n"


def rows(st: StudyTables) -> list[dict[str, Any]]:
    """The codebook as one row per variable (``codebook.csv``)."""
    return [
        {
            "table": t.name,
            "variable": c.name,
            "type": c.kind,
            "label": c.label,
            "values": "; ".join(f"{i} = {v}" for i, v in enumerate(c.values, start=1)),
            "computation": c.how,
        }
        for t in st.tables
        for c in t.columns
    ]


def with_method(session: Session, study: str, participants: Participants | None = None) -> tuple[StudyTables, Method]:
    """The study tables and their codebook's method (:func:`db.codebook.method`), in one read."""
    from db import classroom, repo
    from db.recording_info import recording_infos
    from db.segments import list_segments

    st = repo.get_study(session, study)
    tables = classroom.class_tables(session, study)
    infos = recording_infos(session, st.id)
    who = participants or study_tables.roster_participants(session, st.id)
    built = study_tables.build(tables, infos, list_segments(session, list(infos)), who)
    return built, method(session, st.id, tables, infos, detection=stored_detection(session, list(infos)))


def stored_detection(session: Session, media_ids: Sequence[int]) -> dict[int, dict[str, Any]]:
    """The detection settings stored with each recording (:mod:`db.detection`), as the codebook shows them."""
    out: dict[int, dict[str, Any]] = {}
    for m in media_ids:
        got = detection_settings(session, m)
        if got is not None:
            out[m] = {
                "preset": got.preset,
                "asked": got.requested,
                "min face px": got.min_face_size,
                "detection max side px": got.detect_max_side or "full frame",
            }
    return out
