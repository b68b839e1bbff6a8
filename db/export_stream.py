"""The streamed exports: CSV, Parquet and features written page by page in memory that does not grow with the study.

Pages by face id (:func:`db.face_pages.page_spans`), built column-wise (:mod:`db.export_pages`); a CSV of
:data:`PARALLEL_MIN_FACES` faces or more is written by :data:`CSV_WORKERS` processes, each a contiguous part of the
face ids, appended in order (the same bytes).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeGuard

from sqlalchemy import select
from sqlalchemy.orm import Session

from db import csvfile
from db.class_order import export_classes
from db.dataset_card import dataset_card
from db.errors import StoreError
from db.export_features import _stream_features
from db.export_table import (
    _BOOL_COLUMNS,
    _FLOAT_COLUMNS,
    _INT_COLUMNS,
    _study_notes,
    dataframe,
    export_columns,
    frame_of_columns,
    row_values,
)
from db.labels import ModelKey
from db.rows import ExportReport, FaceFormat, Split
from db.schema import Face

STREAM_FORMATS: tuple[FaceFormat, ...] = ("csv", "parquet", "features")
"""The formats :func:`export_stream` writes page by page, in memory that does not grow with the study."""


CSV_WORKERS = 2
"""Processes that write a large CSV export, each a contiguous half of the faces (the machine's two cores)."""


PARALLEL_MIN_FACES = 200_000
"""Studies from this many faces get their CSV written by :data:`CSV_WORKERS` processes."""


def is_stream_format(fmt: str) -> TypeGuard[FaceFormat]:
    """Whether :func:`export_stream` writes ``fmt`` (:data:`STREAM_FORMATS`)."""
    return fmt in STREAM_FORMATS


def _row_writer(f: Any, cols: Sequence[str]) -> csvfile.RowWriter:
    """The one CSV writer (:class:`db.csvfile.RowWriter`) set up for the export's columns."""
    return csvfile.RowWriter(
        f,
        text_at=[i for i, c in enumerate(cols) if _column_kind(c) == "text"],
        float_at=[i for i, c in enumerate(cols) if _column_kind(c) == "float"],
    )


def _column_writer(f: Any, cols: Sequence[str]) -> csvfile.ColumnWriter:
    """The one CSV writer, column-wise (:class:`db.csvfile.ColumnWriter`), set up for the export's columns."""
    return csvfile.ColumnWriter(f, [_column_kind(c) for c in cols])


def _column_kind(c: str) -> str:
    """``int``, ``float``, ``bool`` or ``text``: the type :func:`dataframe` gives an export column."""
    if c in _INT_COLUMNS:
        return "int"
    if c in _FLOAT_COLUMNS or c.startswith("prob_"):
        return "float"
    return "bool" if c in _BOOL_COLUMNS else "text"


def export_stream(
    session: Session,
    study: str,
    fmt: FaceFormat,
    out: Path,
    *,
    model: str | None = None,
    seed: int = 0,
    progress: Callable[[int, int], None] | None = None,
    page_size: int | None = None,
    workers: int = CSV_WORKERS,
) -> ExportReport:
    """Writes a CSV, Parquet or features export page by page (see the module docstring), in bounded memory.

    The rows are read in keyset pages (:mod:`db.face_pages`), each page resolved from its own faces' votes, and
    written at once; the split of each face comes from its group (:func:`db.splits.group_splits` over the group
    sizes counted in SQL); the statistics of the card are accumulated on the way and the card written last.

    Args:
        session: An open (read) session.
        study: The study's name.
        fmt: ``csv``, ``parquet`` or ``features``.
        out: The file to write.
        model: The model whose predictions to follow (default: the study's most used run).
        seed: Seed of the split assignment.
        progress: Called with ``(faces done, faces in the study)`` after each page.
        page_size: Faces per page (default :data:`db.export_pages.PAGE_SIZE` for CSV, else
            :data:`db.face_pages.PAGE_SIZE`).
        workers: Processes writing the CSV of a study of :data:`PARALLEL_MIN_FACES` faces or more (each a
            contiguous half of the face ids, appended in order: the same file as one process writes).

    Raises:
        FeaturesUnavailableError: For features when no features are stored.
    """
    from db import export_pages, export_rows, face_pages, labels, quality, repo
    from db.dataset_card import CardCounts
    from db.splits import group_sizes, group_splits

    if fmt not in STREAM_FORMATS:
        raise StoreError(f"format {fmt!r} is not streamed; use one of {', '.join(STREAM_FORMATS)}")
    out = Path(out)
    st = repo.get_study(session, study)
    primary = labels.choose_model(session, st.id, model)
    counts = repo.count_rows(session, st.id)
    by_group = group_splits(group_sizes(session, st.id), seed)
    crops_available = counts["crops"] > 0
    acc = quality.StatsAccumulator()
    card_counts = CardCounts()
    split_counts: Counter[Split] = Counter()
    size = page_size or face_pages.PAGE_SIZE
    out.parent.mkdir(parents=True, exist_ok=True)
    notes: list[str] = []
    if fmt in ("csv", "parquet"):
        classes = export_classes(session, st.id, primary)
        tally = export_rows.Tally(acc, card_counts, split_counts)
        if fmt == "csv":
            size = page_size or export_pages.PAGE_SIZE
            _stream_csv(session, st.id, primary, out, classes, by_group, tally, size, progress, workers)
        else:
            _stream_parquet(session, st.id, primary, out, classes, by_group, tally, size, progress)
    else:
        pages = face_pages.iter_face_pages(session, st.id, primary, page_size=size, progress=progress)
        _stream_features(session, st.id, study, out, pages, primary, by_group, acc, card_counts, split_counts, notes)
    stats = acc.result(st.name, counts, primary)
    notes = [*_study_notes(counts["faces"] > 0, stats.predictions_only, crops_available), *notes]
    splits_out = {k: split_counts[k] for k in split_counts}
    card = dataset_card(stats, card_counts, fmt, splits_out, notes, crops_available=crops_available)
    out.with_name(out.stem + ".README.md").write_text(card, encoding="utf-8")
    return ExportReport(
        path=str(out),
        format=fmt,
        n_faces=card_counts.n,
        n_human=card_counts.human,
        n_model_only=card_counts.model_only,
        predictions_only=stats.predictions_only,
        crops_available=crops_available,
        splits=splits_out,
        notes=tuple(notes),
    )


def _csv_rows(
    w: Any,
    session: Session,
    study_id: int,
    primary: ModelKey | None,
    classes: Sequence[str],
    by_group: Mapping[str, Split],
    tally: Any,
    page_size: int,
    progress: Callable[[int, int], None] | None,
    after: int | None = None,
    until: int | None = None,
) -> None:
    """Writes the rows of the faces in ``(after, until]`` with ``w`` (the one CSV writer), counting them in ``tally``.

    The pages come column-wise from :func:`db.export_pages.iter_column_pages` (no list per face nobody judged).
    """
    from db import export_pages

    pages = export_pages.iter_column_pages(
        session,
        study_id,
        primary,
        classes,
        by_group,
        tally,
        row_values,
        page_size=page_size,
        progress=progress,
        after=after,
        until=until,
    )
    for columns in pages:
        w.write_columns(columns)


def _csv_part(
    url: str,
    study_id: int,
    primary: ModelKey | None,
    classes: Sequence[str],
    by_group: Mapping[str, Split],
    after: int,
    path: str,
    page_size: int,
    done: Any,
    results: Any,
) -> None:
    """A worker process: writes the CSV rows of the faces after id ``after`` to ``path`` (no header)."""
    from db import quality
    from db.dataset_card import CardCounts
    from db.engine import make_engine
    from db.export_rows import Tally

    try:
        engine = make_engine(url)
        tally = Tally(quality.StatsAccumulator(), CardCounts())
        with Session(engine) as session, open(path, "wb") as f:

            def step(n: int, _total: int) -> None:
                done.value = n

            w = _column_writer(f, export_columns(classes))
            _csv_rows(w, session, study_id, primary, classes, by_group, tally, page_size, step, after=after)
        engine.dispose()
        results.put((tally.acc, tally.card, tally.splits, None))
    except BaseException as e:  # the parent raises it
        results.put((None, None, None, f"{type(e).__name__}: {e}"))


def _stream_csv(
    session: Session,
    study_id: int,
    primary: ModelKey | None,
    out: Path,
    classes: Sequence[str],
    by_group: Mapping[str, Split],
    tally: Any,
    page_size: int,
    progress: Callable[[int, int], None] | None,
    workers: int,
) -> None:
    """Writes the CSV: the header, then the rows; a large study's second half by a second process meanwhile."""
    import multiprocessing

    from db import face_pages
    from db.schema import Media

    cols = export_columns(classes)
    total = face_pages.count_faces(session, study_id)
    engine = session.get_bind().engine
    split_at = None
    if workers > 1 and total >= PARALLEL_MIN_FACES and engine.url.database not in (None, "", ":memory:"):
        ids = select(Face.id).join(Media, Face.media_id + 0 == Media.id).where(Media.study_id == study_id)
        split_at = session.scalar(ids.order_by(Face.id).offset(total // 2).limit(1))
    with out.open("wb") as f:
        w = _column_writer(f, cols)
        w.header(cols)
        if split_at is None:
            _csv_rows(w, session, study_id, primary, classes, by_group, tally, page_size, progress)
            return
        ctx = multiprocessing.get_context("spawn")
        done = ctx.Value("q", 0)
        results = ctx.Queue()
        part = out.with_name(out.name + ".part")
        url = engine.url.render_as_string(hide_password=False)
        args = (url, study_id, primary, tuple(classes), dict(by_group), split_at, str(part), page_size, done, results)
        proc = ctx.Process(target=_csv_part, args=args, daemon=True)
        proc.start()
        try:

            def step(n: int, _total: int) -> None:
                if progress is not None:
                    progress(min(total, n + done.value), total)

            _csv_rows(w, session, study_id, primary, classes, by_group, tally, page_size, step, until=split_at)
            got = results.get()
            proc.join()
            if got[3] is not None:
                raise StoreError(f"writing the second half of the CSV export failed: {got[3]}")
            tally.acc.merge(got[0])
            tally.card.merge(got[1])
            tally.splits.update(got[2])
            f.flush()
            with part.open("rb") as src:
                while chunk := src.read(1 << 20):
                    f.write(chunk)
            if progress is not None:
                progress(total, total)
        finally:
            if proc.is_alive():
                proc.kill()
            part.unlink(missing_ok=True)


def _stream_parquet(
    session: Session,
    study_id: int,
    primary: ModelKey | None,
    out: Path,
    classes: Sequence[str],
    by_group: Mapping[str, Split],
    tally: Any,
    page_size: int,
    progress: Callable[[int, int], None] | None,
) -> None:
    """Writes the Parquet file one row group per page (columns from :func:`db.export_pages.iter_column_pages`)."""
    import pyarrow as pa  # type: ignore[import-untyped]
    import pyarrow.parquet as pq  # type: ignore[import-untyped]

    from db import export_pages

    writer = None
    pages = export_pages.iter_column_pages(
        session, study_id, primary, classes, by_group, tally, row_values, page_size=page_size, progress=progress
    )
    try:
        for columns in pages:
            table = pa.Table.from_pandas(frame_of_columns(columns, classes), preserve_index=False)
            if writer is None:
                writer = pq.ParquetWriter(out, table.schema)
            writer.write_table(table)
        if writer is None:
            dataframe([], {}, classes).to_parquet(out, index=False)
    finally:
        if writer is not None:
            writer.close()
