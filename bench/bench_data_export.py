"""Data export bench: the CSV, Parquet and features exports of a scale study, before and after issue 19's rework.

A study of ``--faces`` faces in issue 19's shape (:mod:`bench.scale_fill`, bulk path, no crops: the exports here
read no crop) is exported by each format's two designs, alternately, each run in a fresh process, ``--repeat``
times; printed: the median wall time and CPU seconds (the machine is shared: CPU seconds are the steadier figure),
ms of CPU per face, the projection to 10^6 faces, and the outputs compared (CSV bytes, Parquet frames, NPZ arrays).

- before: the rows as :class:`db.rows.FaceLabel` objects (:func:`db.face_pages.iter_face_pages`, ORM result
  rows) flattened by :func:`db.exports.row_values` (CSV) or :func:`db.exports.dataframe` (Parquet); features
  decoded one vector at a time and deflated at zlib's default level;
- after: :func:`db.exports.export_stream` as it is (rows from SQL tuples, :mod:`db.export_rows`; compact features
  decoded per page, deflate level 1), one process (a CSV of 200,000 faces or more is written by two).

    PYTHONPATH=. python bench/bench_data_export.py [--faces 20000] [--db FILE] [--formats csv,parquet,features]
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import resource
import shutil
import statistics
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any, cast

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def _before_csv(session: Any, study: str, out: Path) -> None:
    """The CSV as written before (FaceLabel pages, ``row_values``), one process."""
    from db import exports, face_pages, labels, quality, repo
    from db.dataset_card import CardCounts
    from db.splits import group_sizes, group_splits

    st = repo.get_study(session, study)
    primary = labels.choose_model(session, st.id, None)
    by_group = group_splits(group_sizes(session, st.id), 0)
    classes = exports.export_classes(session, st.id, primary)
    cols = exports.export_columns(classes)
    acc, card, splits = quality.StatsAccumulator(), CardCounts(), Counter[Any]()
    with out.open("w", encoding="utf-8", newline="") as f:
        w = exports._row_writer(f, cols)
        w.header(cols)
        for page in face_pages.iter_face_pages(session, st.id, primary):
            vals = []
            for r in page:
                split = by_group[r.group]
                splits[split] += 1
                acc.add(r)
                card.add(r)
                vals.append(exports.row_values(r, split, classes))
            w.write_rows(vals)


def _before_parquet(session: Any, study: str, out: Path) -> None:
    """The Parquet file as written before (FaceLabel pages, ``dataframe``)."""
    import pyarrow as pa  # type: ignore[import-untyped]
    import pyarrow.parquet as pq  # type: ignore[import-untyped]

    from db import exports, face_pages, labels, repo
    from db.splits import group_sizes, group_splits

    st = repo.get_study(session, study)
    primary = labels.choose_model(session, st.id, None)
    by_group = group_splits(group_sizes(session, st.id), 0)
    classes = exports.export_classes(session, st.id, primary)
    writer = None
    for page in face_pages.iter_face_pages(session, st.id, primary):
        splits = {r.face_id: by_group[r.group] for r in page}
        table = pa.Table.from_pandas(exports.dataframe(page, splits, classes), preserve_index=False)
        writer = writer or pq.ParquetWriter(out, table.schema)
        writer.write_table(table)
    if writer is not None:
        writer.close()


def _run(db: str, fmt: str, design: str, out: str, results: Any) -> None:
    """One export in a fresh process; puts (wall s, CPU s, peak RSS MB)."""
    import numpy as np

    from db import export_features, exports
    from db.codecs import features_from_bytes
    from db.services import LabelStore

    store = LabelStore(f"sqlite:///{db}", data_dir=Path(out).parent / "data")
    study = store.recordings.studies()[0].name
    t0, c0 = time.perf_counter(), time.process_time()
    if design == "before" and fmt == "csv":
        store.transaction(lambda s: _before_csv(s, study, Path(out)), write=False)
    elif design == "before" and fmt == "parquet":
        store.transaction(lambda s: _before_parquet(s, study, Path(out)), write=False)
    else:
        if design == "before":  # features: one vector at a time, deflate at zlib's default level
            export_features.FEATURES_ZIP_LEVEL = 6

            def one_by_one(data: bytes, dim: int) -> Any:
                n = dim + 8
                return np.stack([features_from_bytes(data[i : i + n], dim) for i in range(0, len(data), n)])

            export_features.decode_compact = one_by_one
        store.transaction(lambda s: exports.export_stream(s, study, cast(Any, fmt), Path(out), workers=1), write=False)
    results.put(
        (time.perf_counter() - t0, time.process_time() - c0, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
    )


def _same(fmt: str, a: Path, b: Path) -> bool:
    if fmt == "csv":
        return a.read_bytes() == b.read_bytes()
    if fmt == "parquet":
        import pandas as pd

        return bool(pd.read_parquet(a).equals(pd.read_parquet(b)))
    import numpy as np

    x, y = np.load(a), np.load(b)
    return sorted(x.files) == sorted(y.files) and all(
        np.array_equal(x[k], y[k], equal_nan=x[k].dtype.kind == "f") for k in x.files
    )


def main() -> int:
    """Runs the bench."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--faces", type=int, default=20000)
    ap.add_argument("--db", type=Path, help="an already filled scale study (bench/scale_fill.py --keep)")
    ap.add_argument("--formats", default="csv,parquet,features")
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="bench-data-export-"))
    db = args.db
    if db is None:
        from bench import scale_fill
        from db.services import LabelStore

        db = tmp / "study.sqlite3"
        store = LabelStore(f"sqlite:///{db}", data_dir=tmp / "data")
        store.upgrade()
        rep = scale_fill.fill(store, scale_fill.Shape(faces=args.faces, crop=0), path="bulk")
        store.close()
        print(f"filled {rep.faces} faces (bulk path, no crops)")
    from db.services import LabelStore

    store = LabelStore(f"sqlite:///{db}", data_dir=tmp / "data")
    faces = store.recordings.studies()[0].n_faces
    store.close()
    ctx = mp.get_context("spawn")
    suffix = {"csv": ".csv", "parquet": ".parquet", "features": ".npz"}
    print(f"{faces} faces, SQLite, median of {args.repeat}, each run a fresh process, one process per export")
    print(
        f"{'export':<10}{'design':<8}{'wall s':>9}{'CPU s':>9}{'CPU ms/face':>13}{'10^6 faces CPU s':>18}{'RSS MB':>8}"
    )
    for fmt in args.formats.split(","):
        got: dict[str, list[tuple[float, float, float]]] = {"before": [], "after": []}
        for _ in range(args.repeat):
            for design in ("before", "after"):
                results = ctx.Queue()
                out = tmp / f"{design}{suffix[fmt]}"
                proc = ctx.Process(target=_run, args=(str(db), fmt, design, str(out), results))
                proc.start()
                got[design].append(results.get())
                proc.join()
        for design, runs in got.items():
            wall, cpu, rss = (statistics.median(x) for x in zip(*runs, strict=True))
            print(
                f"{fmt:<10}{design:<8}{wall:>9.2f}{cpu:>9.2f}{1000 * cpu / faces:>13.3f}"
                f"{cpu / faces * 1e6:>18.0f}{rss:>8.0f}"
            )
        ratio = statistics.median(c for _, c, _ in got["before"]) / statistics.median(c for _, c, _ in got["after"])
        same = _same(fmt, tmp / f"before{suffix[fmt]}", tmp / f"after{suffix[fmt]}")
        print(f"{fmt:<10}CPU before/after x{ratio:.2f}; outputs equal: {same}")
    shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
