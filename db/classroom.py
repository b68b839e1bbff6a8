"""Online-class tables: per student per minute, per student per lecture segment, per segment for the class.

Every figure comes from the stored faces of a study's recordings, grouped by the *current* persons (the analysis's
joining with people's renames, merges and splits replayed, :mod:`db.persons`), so corrections show in every table.
Per face the values are those of the exports: ``label``, ``valence``, ``arousal`` and ``engagement`` are the human
ones where annotators gave them and the model's otherwise (:class:`db.rows.FaceLabel`).

Columns (also in the dataset card, :data:`COLUMN_DOCS`):

- ``engagement_p``: mean engagement of the faces (the model's p(engaged) of the window covering the face, or the
  annotators' level), ``engagement_label`` ``Engaged`` when it is above 0.5, else ``Distracted``;
- ``dominant_emotion`` and ``share_<class>``: the most frequent class and each class's share of the faces;
- ``valence``, ``arousal``: means over the faces that have one;
- ``visible_share``: the share of the period in which the student's face was seen: distinct analysed frames with
  the face, times the recording's sampling step (the median step between successive analysed frames with a face),
  over the period's length, at most 1;
- ``n_faces``: how many faces each figure rests on (``n_persons`` in the class table: students seen).

Rows with no face have empty figures and ``visible_share`` 0. A minute is ``[60 k, 60 (k + 1))`` seconds, cut at
the recording's end; a segment is ``[start_s, end_s)``.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
from sqlalchemy import select
from sqlalchemy.orm import Session

from db import labels, repo
from db.persons import PersonRow, current_persons
from db.rows import FaceLabel
from db.schema import Media
from db.segments import SegmentRow, list_segments
from models.engagement import engagement_label

if TYPE_CHECKING:
    import pandas as pd

ClassTable = Literal["class-minutes", "class-segments", "class-overall"]
TABLES: tuple[ClassTable, ...] = ("class-minutes", "class-segments", "class-overall")
WHOLE = "(whole recording)"
"""Segment name of the class table's row over the whole recording."""

COLUMN_DOCS = {
    "media_id": "the recording's media id",
    "filename": "the recording's file name as uploaded",
    "person": "the student: the participant id people gave, else m{media_id}-P{n}",
    "participant": "the participant id, empty when nobody gave one",
    "person_index": "the person number within the recording (P{n} in the app)",
    "minute": "minute number from 0 (class-minutes)",
    "segment": "the lecture segment's name (class-segments, class-overall)",
    "start_s": "period start, seconds from the recording's start",
    "end_s": "period end (excluded), seconds",
    "n_faces": "faces the row's figures rest on",
    "n_persons": "students seen in the period (class-overall)",
    "visible_share": "share of the period in which the face was seen (class-overall: mean over the recording's "
    "students)",
    "engagement_p": "mean engagement: the model's p(engaged), or the annotators' level where given",
    "engagement_label": "Engaged when engagement_p > 0.5, else Distracted",
    "dominant_emotion": "the most frequent emotion class of the faces",
    "share_<class>": "share of the faces in that emotion class",
    "valence": "mean valence (-1 to 1)",
    "arousal": "mean arousal (-1 to 1)",
}


@dataclass(frozen=True)
class ClassTables:
    """The three tables (lists of dict rows with the columns above) and the emotion classes used."""

    minutes: list[dict[str, Any]]
    segments: list[dict[str, Any]]
    overall: list[dict[str, Any]]
    classes: tuple[str, ...]

    def table(self, name: ClassTable) -> list[dict[str, Any]]:
        """The table called ``class-minutes``, ``class-segments`` or ``class-overall``."""
        return {"class-minutes": self.minutes, "class-segments": self.segments, "class-overall": self.overall}[name]


def sampling_step(times: Sequence[float]) -> float:
    """Median step between successive distinct analysed frame times (1.0 with fewer than two frames)."""
    t = np.unique(np.round(np.asarray(times, dtype=np.float64), 4))
    d = np.diff(t)
    d = d[d > 0]
    return float(np.median(d)) if d.size else 1.0


def figures(faces: Sequence[FaceLabel], classes: Sequence[str], period_s: float, step_s: float) -> dict[str, Any]:
    """The figures of one row from its faces (see the module docstring)."""
    out: dict[str, Any] = {"n_faces": len(faces)}
    frames = {(f.media_id, f.frame) for f in faces}
    out["visible_share"] = min(1.0, len(frames) * step_s / period_s) if period_s > 0 else 0.0
    eng = [f.engagement for f in faces if f.engagement is not None]
    p = float(np.mean(eng)) if eng else None
    out["engagement_p"] = p
    out["engagement_label"] = None if p is None else engagement_label(p)
    counts = Counter(f.label for f in faces if f.label)
    n = sum(counts.values())
    out["dominant_emotion"] = max(classes, key=lambda k: (counts[k], -classes.index(k))) if n else None
    for k in classes:
        out[f"share_{k}"] = counts[k] / n if n else None
    for field in ("valence", "arousal"):
        vals = [getattr(f, field) for f in faces if getattr(f, field) is not None]
        out[field] = float(np.mean(vals)) if vals else None
    return out


def _periods(
    duration: float, segments: Sequence[SegmentRow]
) -> tuple[list[tuple[int, float, float]], list[tuple[str, float, float]]]:
    minutes = [(k, 60.0 * k, min(60.0 * (k + 1), duration)) for k in range(max(1, int(np.ceil(duration / 60.0))))]
    return minutes, [(s.name, s.start_s, s.end_s) for s in segments]


def _inside(f: FaceLabel, start: float, end: float, last: bool) -> bool:
    t = f.time_s or 0.0
    return start <= t < end or (last and t == end)


def class_tables(session: Session, study: str, rows: Sequence[FaceLabel] | None = None) -> ClassTables:
    """The tables of a study's recordings (videos with tracks).

    Args:
        session: An open session.
        study: The study's name.
        rows: The study's face rows when the caller has them (:func:`db.labels.face_labels`).
    """
    st = repo.get_study(session, study)
    if rows is None:
        rows = labels.face_labels(session, st.id, None)[0]
    videos = list(
        session.scalars(select(Media).where(Media.study_id == st.id, Media.kind == "video").order_by(Media.id))
    )
    classes: list[str] = []
    for r in rows:
        for k in r.model_probs or {}:
            if k not in classes:
                classes.append(k)
    for r in rows:
        if r.label and r.label not in classes:
            classes.append(r.label)
    segs = list_segments(session, [m.id for m in videos])
    minutes_t: list[dict[str, Any]] = []
    segments_t: list[dict[str, Any]] = []
    overall_t: list[dict[str, Any]] = []
    for m in videos:
        faces = [r for r in rows if r.media_id == m.id]
        persons = current_persons(session, m.id)
        if not persons:
            continue
        of_track = {t: p for p in persons for t in p.track_ids}
        by_person: dict[int, list[FaceLabel]] = {p.person_id: [] for p in persons}
        for f in faces:
            p = of_track.get(f.track_id) if f.track_id is not None else None
            if p is not None:
                by_person[p.person_id].append(f)
        times = [f.time_s for f in faces if f.time_s is not None]
        duration = float(m.duration_s or (max(times) if times else 0.0)) or 1.0
        step = sampling_step(times)
        minutes, seg_periods = _periods(duration, [s for s in segs if s.media_id == m.id])
        base: dict[str, Any] = {"media_id": m.id, "filename": m.filename}

        def person_cols(p: PersonRow) -> dict[str, Any]:
            return {"person": p.key, "participant": p.participant, "person_index": p.person_index}

        for minute, a, b in minutes:
            for p in persons:
                fs = [f for f in by_person[p.person_id] if _inside(f, a, b, b >= duration)]
                minutes_t.append(
                    {
                        **base,
                        **person_cols(p),
                        "minute": minute,
                        "start_s": a,
                        "end_s": b,
                        **figures(fs, classes, b - a, step),
                    }
                )
        for name, a, b in [*seg_periods, (WHOLE, 0.0, duration)]:
            pooled: list[FaceLabel] = []
            shares = []
            for p in persons:
                fs = [f for f in by_person[p.person_id] if _inside(f, a, b, b >= duration)]
                fig = figures(fs, classes, b - a, step)
                shares.append(fig["visible_share"])
                pooled += fs
                if name != WHOLE:
                    segments_t.append({**base, **person_cols(p), "segment": name, "start_s": a, "end_s": b, **fig})
            fig = figures(pooled, classes, b - a, step)
            fig["visible_share"] = float(np.mean(shares)) if shares else 0.0
            n_persons = sum(1 for p in persons if any(_inside(f, a, b, b >= duration) for f in by_person[p.person_id]))
            overall_t.append({**base, "segment": name, "start_s": a, "end_s": b, "n_persons": n_persons, **fig})
    return ClassTables(minutes=minutes_t, segments=segments_t, overall=overall_t, classes=tuple(classes))


def columns(table: ClassTable, classes: Sequence[str]) -> list[str]:
    """The columns of a table, in order."""
    figs = [
        "n_faces",
        "visible_share",
        "engagement_p",
        "engagement_label",
        "dominant_emotion",
        *(f"share_{k}" for k in classes),
        "valence",
        "arousal",
    ]
    if table == "class-minutes":
        return ["media_id", "filename", "person", "participant", "person_index", "minute", "start_s", "end_s", *figs]
    if table == "class-segments":
        return ["media_id", "filename", "person", "participant", "person_index", "segment", "start_s", "end_s", *figs]
    return ["media_id", "filename", "segment", "start_s", "end_s", "n_persons", *figs]


def dataframe(tables: ClassTables, table: ClassTable) -> pd.DataFrame:
    """One table as a pandas DataFrame with its columns in order."""
    import pandas as pd

    cols = columns(table, tables.classes)
    return pd.DataFrame(tables.table(table), columns=cols)


def card(study: str, table: ClassTable, tables: ClassTables) -> str:
    """The dataset card of a table export: what a row is and what each column means; no image is exported."""
    what = {
        "class-minutes": "one row per student per minute of each recording",
        "class-segments": "one row per student per lecture segment",
        "class-overall": "one row per lecture segment of each recording for the whole class, plus a row "
        f"{WHOLE!r} over the whole recording",
    }[table]
    lines = [
        f"# AffectLab study `{study}`: `{table}`",
        "",
        f"{what.capitalize()}; {len(tables.table(table))} rows.",
        "",
        "This table holds no image and no face crop: figures only. Students are the recording's persons "
        "after people's renames, merges and splits.",
        "",
        "| column | meaning |",
        "|---|---|",
    ]
    for c in columns(table, tables.classes):
        key = "share_<class>" if c.startswith("share_") else c
        lines.append(f"| `{c}` | {COLUMN_DOCS[key]} |")
    lines += ["", (__doc__ or "").split("Columns")[0].strip()]
    return "\n".join(lines) + "\n"
