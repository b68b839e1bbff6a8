"""The export's rows built face by face, as the CSV was written before the column-wise pages: the reference that
``tests/test_export_stream.py`` holds :func:`db.export_pages.iter_column_pages` to (byte-equal CSV, the same card).

Kept with the tests, not in ``db/``: the product writes only the column-wise pages.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from sqlalchemy.engine import Connection
from sqlalchemy.orm import Session

from db import face_pages, face_table
from db.export_rows import _HAS_CROP, _LABELS_AT, _NO_LABELS, RowBuilder, Tally
from db.labels import ModelKey
from db.rows import group_name


def _source(v: Any) -> str:
    return "none" if v is None else "model"


def _unjudged_row(f: Any, m: Any, p: Any, split: Any, eng_track: float | None, classes: Sequence[str]) -> list[Any]:
    """The export row (:func:`db.exports.export_columns` order) of a face without votes, from its SQL tuples."""
    head = [f.id, f.media_id, m.filename, m.sha256, m.kind, m.analysis_status, f.frame, f.time_s, f.track_id]
    head += [f.track_index]
    head += [f.x1, f.y1, f.x2, f.y2, f.det_score, split]
    assert len(head) == _LABELS_AT
    has_crop = bool(f[_HAS_CROP])
    if p is None:  # no prediction: every label field "none", the note, copies and model columns empty
        return [*head, *_NO_LABELS, *[None] * 15, False, *[None] * len(classes), has_crop]
    eng = p.engagement if p.engagement is not None else eng_track
    lab, val, aro = p.label, p.valence, p.arousal
    ls = "model"
    vs, as_, es = _source(val), _source(aro), _source(eng)
    probs = p.probs or {}
    return [
        *head,
        lab,
        ls,
        0,
        None,
        val,
        vs,
        0,
        None,
        aro,
        as_,
        0,
        None,
        eng,
        es,
        0,
        None,
        None,
        None,
        lab,
        val,
        aro,
        eng,
        None,
        p.model,
        p.weights_hash,
        p.model_version,
        lab,
        p.confidence,
        val,
        aro,
        eng,
        bool(p.reused),
        *[float(probs[c]) if c in probs else None for c in classes],
        has_crop,
    ]


def _page_rows(
    session: Session,
    conn: Connection,
    faces: Sequence[Any],
    media: Mapping[int, Any],
    primary: ModelKey | None,
    classes: Sequence[str],
    by_group: Mapping[str, Any],
    tally: Tally,
    windows: dict[int, Any],
    row_values: RowBuilder,
) -> list[list[Any]]:
    by_face, resolved, windows, _ = face_pages.page_inputs(session, conn.execute, faces, primary, windows)
    splits: dict[tuple[int, int | None], Any] = {}
    out: list[list[Any]] = []
    count = tally.splits
    for f in faces:
        m = media[f.media_id]
        tid = f.track_id
        eng = face_pages._window_engagement(windows.get(tid), f.time_s) if tid is not None else None
        p = by_face.get(f.id)
        if ("face", f.id) in resolved or (tid is not None and ("track", tid) in resolved):
            row = face_pages._FaceRow(*f)
            r = face_table.face_label(row, m, f.track_index, p, resolved, bool(f[_HAS_CROP]), eng)
            split = by_group[r.group]
            count[split] += 1
            tally.add_judged(r)
            out.append(row_values(r, split, classes))
            continue
        key = (f.media_id, f.track_index)
        split = splits.get(key)
        if split is None:
            split = splits[key] = by_group[group_name(m.sha256, f.track_index)]
        count[split] += 1
        values = _unjudged_row(f, m, p, split, eng, classes)
        if p is None:
            tally.add_unjudged(None, None, ("none", "none", "none", "none"))
        else:
            sources = (values[_LABELS_AT + 4 * k + 1] for k in (1, 2, 3))  # valence, arousal, engagement
            tally.add_unjudged(p.probs, p.label, ("model", *sources))
            if p.model:
                tally.card.models.add((p.model, p.weights_hash or ""))
        out.append(values)
    return out


def iter_row_pages(
    session: Session,
    study_id: int,
    primary: ModelKey | None,
    classes: Sequence[str],
    by_group: Mapping[str, Any],
    tally: Tally,
    row_values: RowBuilder,
    *,
    page_size: int = face_pages.PAGE_SIZE,
    progress: face_pages.Progress | None = None,
    after: int | None = None,
    until: int | None = None,
) -> Iterator[list[list[Any]]]:
    """The study's export rows (:func:`db.exports.export_columns` order, raw values), page by page by face id.

    Args:
        session: An open session (kept open while iterating).
        study_id: The study.
        primary: The model run the rows follow (:func:`db.labels.choose_model`).
        classes: The ``prob_*`` classes, in order.
        by_group: The split of each split group (:func:`db.splits.group_splits`).
        tally: Counts every row yielded (card and statistics).
        row_values: :func:`db.exports.row_values` (for the faces people judged).
        page_size: Faces per page.
        progress: Called with ``(faces done, faces in range)`` after each page.
        after: Only faces with a larger id.
        until: Only faces with an id up to this one.
    """
    conn = session.connection()
    media = face_pages.study_media(session, study_id)
    windows: dict[int, Any] = {}
    done = 0
    for faces, total in face_pages.page_spans(conn.execute, study_id, page_size=page_size, after=after, until=until):
        rows = _page_rows(session, conn, faces, media, primary, classes, by_group, tally, windows, row_values)
        done += len(rows)
        yield rows
        if progress is not None:
            progress(done, max(total, done))
