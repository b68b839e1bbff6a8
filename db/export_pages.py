"""The CSV and Parquet exports' pages built column-wise: a list per column, no Python list per face nobody judged.

:mod:`db.export_rows` built a list per face (now the tests' reference); at 10^5 faces building those rows was a
quarter of the CSV export and the csv module's per-cell formatting another quarter. Here each page (the same three
indexed queries, :func:`db.face_pages.page_inputs`) becomes the export's columns (:func:`db.exports.export_columns`
order): the face columns are the SQL result's columns (``zip``), the media, split and prediction columns are mapped
from them at C speed (``map`` over dict lookups and ``attrgetter``), and :class:`db.csvfile.ColumnWriter` formats each
column at once with Arrow. A face with votes (on it or on its track: ~3 % of a study) still goes through
:func:`db.face_table.face_label` and :func:`db.exports.row_values` (the vote rules of :mod:`db.labels`), and its row
is written into the columns. ``tests/test_export_stream.py`` compares the files of both paths on studies with votes,
undos, track votes, hostile text and predictions of several runs.

The card's statistics are counted per page (:func:`_tally`) as :meth:`db.export_rows.Tally.add_unjudged` counts each
row; a page that brings a class or a set of probability keys not seen before is counted face by face, in order.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping, Sequence
from operator import attrgetter
from typing import Any, NamedTuple

from sqlalchemy.engine import Connection
from sqlalchemy.orm import Session

from db import face_pages, face_table
from db.export_rows import _HAS_CROP, RowBuilder, Tally
from db.labels import ModelKey
from db.rows import group_name

PAGE_SIZE = 10_000
"""Faces per page of the CSV export: Arrow's per-call work spread over more cells (the queries are id ranges)."""


class _NoPrediction(NamedTuple):
    """What a face without a prediction reads as (every prediction field None)."""

    model: None = None
    weights_hash: None = None
    model_version: None = None
    label: None = None
    confidence: None = None
    probs: None = None
    valence: None = None
    arousal: None = None
    engagement: None = None
    reused: None = None


class _Prediction(NamedTuple):
    """A prediction row (:data:`db.face_pages._PRED_COLS`) with its ``probs`` decoded, for the vote rules."""

    id: int
    face_id: int
    model: str | None
    weights_hash: str | None
    model_version: str | None
    label: str | None
    confidence: float | None
    probs: Any
    valence: float | None
    arousal: float | None
    engagement: float | None
    reused: bool | None


_NONE = _NoPrediction()
_EMPTY: dict[str, Any] = {}


def _src(values: Sequence[Any]) -> list[str]:
    return ["none" if v is None else "model" for v in values]


def _decoded_probs(preds: Sequence[Any]) -> list[Any]:
    """Each prediction's ``probs`` decoded from its JSON text, the page's in one ``json.loads`` (None: none)."""
    at = [i for i, p in enumerate(preds) if p.probs is not None]
    out: list[Any] = [None] * len(preds)
    if at:
        for i, d in zip(at, json.loads("[" + ",".join([preds[i].probs for i in at]) + "]"), strict=True):
            out[i] = d
    return out


def _floats(values: list[Any]) -> list[Any]:
    """The probabilities as the row path writes them (``float(v)``): a JSON int becomes a float."""
    if set(map(type, values)) <= {float, type(None)}:
        return values
    return [None if v is None else float(v) for v in values]


class _Page(NamedTuple):
    """A page's columns, with what its tally reads (per face: prediction, sources, label, split)."""

    columns: list[list[Any]]
    preds: list[Any]
    probs: list[Any]
    """Each face's probabilities, decoded (None: no prediction)."""
    label_src: list[str]
    splits: list[Any]


def _columns(
    faces: Sequence[Any],
    media: Mapping[int, Any],
    by_face: Mapping[int, Any],
    windows: Mapping[int, Any],
    classes: Sequence[str],
    split_of: Any,
) -> _Page:
    """Every face's columns as if nobody had judged it (as the tests' row-by-row reference builds them)."""
    n = len(faces)
    ids, mids, tids, frames, times, x1, y1, x2, y2, det, _fm, crop, tix = (list(c) for c in zip(*faces, strict=True))
    infos = list(map(media.__getitem__, mids))
    keys = list(zip(mids, tix, strict=True))
    splits = list(map(split_of, keys))
    preds = list(map(by_face.get, ids, [_NONE] * n))
    lab, val, aro = (list(map(attrgetter(a), preds)) for a in ("label", "valence", "arousal"))
    eng = list(map(attrgetter("engagement"), preds))
    for i in [i for i, (e, p, t) in enumerate(zip(eng, preds, tids, strict=True)) if e is None and t is not None]:
        if preds[i] is not _NONE:
            eng[i] = face_pages._window_engagement(windows.get(tids[i]), times[i])
    label_src = ["none" if p is _NONE else "model" for p in preds]
    zeros, nones = [0] * n, [None] * n
    decoded = _decoded_probs(preds)
    probs = [d or _EMPTY for d in decoded]
    cols: list[list[Any]] = [
        ids,
        mids,
        [m.filename for m in infos],
        [m.sha256 for m in infos],
        [m.kind for m in infos],
        [m.analysis_status for m in infos],
        frames,
        times,
        tids,
        tix,
        x1,
        y1,
        x2,
        y2,
        det,
        splits,
        lab,
        label_src,
        zeros,
        nones,
        val,
        _src(val),
        zeros,
        nones,
        aro,
        _src(aro),
        zeros,
        nones,
        eng,
        _src(eng),
        zeros,
        nones,
        nones,
        nones,
        lab,
        val,
        aro,
        eng,
        nones,
        *(list(map(attrgetter(a), preds)) for a in ("model", "weights_hash", "model_version")),
        lab,
        list(map(attrgetter("confidence"), preds)),
        val,
        aro,
        eng,
        [bool(p.reused) for p in preds],
        *(_floats([d.get(c) for d in probs]) for c in classes),
        [bool(c) for c in crop],
    ]
    return _Page([list(c) for c in cols], preds, decoded, label_src, splits)


def _tally(tally: Tally, page: _Page, keep: Sequence[int] | None) -> None:
    """Counts the unjudged faces of a page (``keep``: their positions; None: all) as ``add_unjudged`` does."""
    cols = page.columns

    def pick(values: Sequence[Any]) -> list[Any]:
        return list(values) if keep is None else [values[i] for i in keep]

    preds = pick(page.preds)
    probs = pick(page.probs)
    labels = pick(cols[16])
    sources = [pick(page.label_src), pick(cols[21]), pick(cols[25]), pick(cols[29])]
    keysets = set(map(tuple, filter(None, probs)))
    fresh = keysets - tally._keys or set(filter(None, labels)) - tally._labels
    if fresh:  # a class first seen here: counted face by face, in order (the statistics keep first-seen order)
        for k, p in enumerate(preds):
            src = tuple(s[k] for s in sources)
            tally.add_unjudged(probs[k], p.label, src)
            if p.model:
                tally.card.models.add((p.model, p.weights_hash or ""))
        tally.splits.update(pick(page.splits))
        return
    acc, card = tally.acc, tally.card
    named = list(filter(None, labels))
    acc.model_counts.update(named)
    acc.label_counts.update(named)
    card.n += len(preds)
    for name, got in zip(("label", "valence", "arousal", "engagement"), sources, strict=True):
        card.sources[name].update(got)
    card.model_only += sum(p is not _NONE for p in preds)
    card.models.update((m, w or "") for m, w in {(p.model, p.weights_hash) for p in preds} if m)
    tally.splits.update(pick(page.splits))


def page_columns(
    session: Session,
    conn: Connection,
    faces: Sequence[Any],
    media: Mapping[int, Any],
    primary: ModelKey | None,
    classes: Sequence[str],
    split_of: Any,
    tally: Tally,
    windows: dict[int, Any],
    row_values: RowBuilder,
) -> list[list[Any]]:
    """A page's export columns; faces with votes resolved by :func:`db.face_table.face_label` and written in."""
    by_face, resolved, windows, _ = face_pages.page_inputs(
        session, conn.execute, faces, primary, windows, probs_text=True
    )
    page = _columns(faces, media, by_face, windows, classes, split_of)
    judged: list[int] = []
    if resolved:
        own = {k[1] for k in resolved if k[0] == "face"}
        tracks = {k[1] for k in resolved if k[0] == "track"}
        judged = [i for i, f in enumerate(faces) if f.id in own or (f.track_id is not None and f.track_id in tracks)]
    if not judged:
        _tally(tally, page, None)
        return page.columns
    skip = set(judged)
    _tally(tally, page, [i for i in range(len(faces)) if i not in skip])
    cols = page.columns
    for i in judged:
        f = faces[i]
        tid = f.track_id
        eng = face_pages._window_engagement(windows.get(tid), f.time_s) if tid is not None else None
        row = face_pages._FaceRow(*f)
        p: Any = page.preds[i]
        p = None if p is _NONE else _Prediction(**{**p._asdict(), "probs": page.probs[i]})
        r = face_table.face_label(row, media[f.media_id], f.track_index, p, resolved, bool(f[_HAS_CROP]), eng)
        split = split_of.by_group[r.group]
        tally.splits[split] += 1
        tally.add_judged(r)
        for c, v in zip(cols, row_values(r, split, classes), strict=True):
            c[i] = v
    return cols


class SplitOf:
    """The split of a face's ``(media id, track index)`` (:func:`db.rows.group_name`), remembered across pages."""

    def __init__(self, media: Mapping[int, Any], by_group: Mapping[str, Any]) -> None:
        self.media = media
        self.by_group = by_group
        self._known: dict[tuple[int, int | None], Any] = {}

    def __call__(self, key: tuple[int, int | None]) -> Any:
        """The split of the faces of ``(media id, track index)``."""
        got = self._known.get(key)
        if got is None:
            got = self._known[key] = self.by_group[group_name(self.media[key[0]].sha256, key[1])]
        return got


def iter_column_pages(
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
    """The study's export columns page by page by face id.

    ``primary``: the model run the rows follow; ``by_group``: each split group's split; ``tally`` counts what is
    yielded; ``row_values`` builds the judged faces' rows; ``after``/``until``: an id range; ``progress(done,
    total)`` after each page.
    """
    conn = session.connection()
    media = face_pages.study_media(session, study_id)
    split_of = SplitOf(media, by_group)
    windows: dict[int, Any] = {}
    done = 0
    for faces, total in face_pages.page_spans(conn.execute, study_id, page_size=page_size, after=after, until=until):
        cols = page_columns(session, conn, faces, media, primary, classes, split_of, tally, windows, row_values)
        done += len(faces)
        yield cols
        if progress is not None:
            progress(done, max(total, done))
