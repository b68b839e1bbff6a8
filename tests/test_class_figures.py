"""Figures a paper can use (affectlab.class_figures): values as in the class tables, honest axes and bands, files."""

from __future__ import annotations

import math
import subprocess
import sys
from pathlib import Path

import pytest
from scipy import stats

from affectlab import class_figures as cf
from db.classroom import ClassTables
from tests.test_db_classes import _ingest

CLASSES = ("Happiness", "Neutral", "Sadness")


def _tables() -> ClassTables:
    """Two students over three minutes and two segments of recording 7 (and a student of recording 8)."""
    minutes = []
    eng = {"S1": [0.9, 0.8, None], "S2": [0.2, 0.4, 0.6], "S3": [0.5, 0.3, 0.1]}
    emo = {"S1": ["Happiness", "Neutral", None], "S2": ["Sadness", "Sadness", "Neutral"], "S3": ["Neutral"] * 3}
    for i, who in enumerate(eng):
        for m in range(3):
            minutes.append(
                {
                    "media_id": 7,
                    "person": who,
                    "person_index": i,
                    "minute": m,
                    "start_s": 60.0 * m,
                    "end_s": 60.0 * (m + 1),
                    "engagement_p": eng[who][m],
                    "visible_share": 0.0 if eng[who][m] is None else 1.0 - 0.1 * m,
                    "dominant_emotion": emo[who][m],
                }
            )
    minutes.append({**minutes[0], "media_id": 8, "person": "other", "engagement_p": 0.01})
    segments = [
        {
            "media_id": 7,
            "person": who,
            "person_index": i,
            "segment": seg,
            "start_s": a,
            "end_s": b,
            "engagement_p": e,
            "visible_share": 1.0,
            "dominant_emotion": d,
        }
        for seg, a, b, rows in (
            ("talk", 0.0, 90.0, (("S1", 0.85, "Happiness"), ("S2", 0.3, "Sadness"), ("S3", 0.4, "Neutral"))),
            ("quiz", 90.0, 180.0, (("S1", 0.8, "Neutral"), ("S2", 0.55, "Sadness"), ("S3", 0.2, "Neutral"))),
        )
        for i, (who, e, d) in enumerate(rows)
    ]
    return ClassTables(minutes=minutes, segments=segments, overall=[], classes=CLASSES)


def test_segment_bars_show_each_students_segment_value() -> None:
    t = _tables()
    fig = cf.segment_bars(t, 7, "engagement_p")
    bars = {tr.name: list(tr.y) for tr in fig.data}
    assert list(fig.data[0].x) == ["talk", "quiz"]
    want: dict[str, list[float]] = {}
    for r in t.segments:
        want.setdefault(r["person"], []).append(r["engagement_p"])
    assert bars == want
    assert list(fig.layout.yaxis.range) == [0.0, 1.0]


def test_dominant_emotion_bars_count_students_per_class_per_segment() -> None:
    fig = cf.segment_bars(_tables(), 7, "dominant_emotion")
    counts = {tr.name: list(tr.y) for tr in fig.data}
    assert counts == {"Happiness": [1, 0], "Neutral": [1, 2], "Sadness": [1, 1]}
    assert fig.layout.barmode == "stack"


def test_bars_need_segments_and_say_so() -> None:
    t = _tables()
    bare = ClassTables(minutes=t.minutes, segments=[], overall=[], classes=CLASSES)
    with pytest.raises(cf.FigureError, match="no lecture segments"):
        cf.segment_bars(bare, 7)
    with pytest.raises(cf.FigureError, match="#99"):
        cf.class_figure(t, 99, "class-mean")
    with pytest.raises(cf.FigureError, match="unknown figure"):
        cf.class_figure(t, 7, "pie")
    with pytest.raises(cf.FigureError, match="unknown figure value"):
        cf.class_figure(t, 7, "class-mean", "joy")
    with pytest.raises(cf.FigureError, match="needs a number"):
        cf.class_mean(t, 7, "dominant_emotion")


def test_participant_lines_follow_the_minutes_table() -> None:
    fig = cf.participant_lines(_tables(), 7, "engagement_p")
    lines = {tr.name: (list(tr.x), list(tr.y)) for tr in fig.data}
    assert set(lines) == {"S1", "S2", "S3"}  # not recording 8's student
    assert lines["S2"] == ([0.5, 1.5, 2.5], [0.2, 0.4, 0.6])
    assert lines["S1"][1][2] is None  # not seen: a gap, not a zero
    assert [s.x0 for s in fig.layout.shapes] == [0.0, 1.5]  # segments shaded, in minutes
    emo = cf.participant_lines(_tables(), 7, "dominant_emotion", persons=["S2"])
    assert [tr.name for tr in emo.data] == ["S2"]
    assert list(emo.data[0].y) == ["Sadness", "Sadness", "Neutral"]
    assert list(emo.layout.yaxis.categoryarray) == list(CLASSES)


def test_class_mean_band_is_students_t_interval() -> None:
    fig = cf.class_mean(_tables(), 7, "engagement_p")
    band, mean = fig.data
    vals = [0.9, 0.2, 0.5]  # minute 0
    m = sum(vals) / 3
    sd = math.sqrt(sum((v - m) ** 2 for v in vals) / 2)
    half = stats.t.ppf(0.975, 2) * sd / math.sqrt(3)
    assert mean.y[0] == pytest.approx(m)
    n = len(mean.x)
    assert band.y[0] == pytest.approx(m + half)
    assert band.y[2 * n - 1] == pytest.approx(m - half)
    assert mean.y[2] == pytest.approx((0.6 + 0.1) / 2)  # S1 unseen in minute 2: two students
    assert list(fig.layout.yaxis.range) == [0.0, 1.0]
    assert cf.mean_band([0.4]) == (0.4, 0.4, 0.4)
    t = _tables()
    with_valence = ClassTables(**{**t.__dict__, "minutes": [{**r, "valence": -0.2} for r in t.minutes]})
    assert list(cf.class_mean(with_valence, 7, "valence").layout.yaxis.range) == [-1.0, 1.0]


def test_png_and_svg_files(tmp_path: Path) -> None:
    pytest.importorskip("kaleido")
    fig = cf.class_mean(_tables(), 7)
    png = cf.figure_bytes(fig, "png")
    assert png.startswith(b"\x89PNG\r\n\x1a\n")
    assert int.from_bytes(png[16:20], "big") == cf.WIDTH * cf.SCALE  # IHDR width
    written = cf.figure_files(_tables(), 7, tmp_path / "figs", kinds=("segment-bars",))
    names = sorted(p.name for p in written)
    assert names == sorted(
        f"m7-segment-bars-{v}.{f}"
        for v in ("engagement_p", "visible_share", "dominant_emotion")
        for f in ("png", "svg")
    )
    svg = (tmp_path / "figs" / "m7-segment-bars-engagement_p.svg").read_text(encoding="utf-8")
    assert svg.lstrip().startswith("<svg") and "quiz" in svg
    assert not list((tmp_path / "figs").glob(".*part"))


def test_export_says_what_is_missing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fig = cf.class_mean(_tables(), 7)
    with pytest.raises(cf.FigureExportError, match="png or svg"):
        cf.figure_bytes(fig, "gif")
    with pytest.raises(cf.FigureExportError, match=r"\.png or \.svg"):
        cf.write_figures([(fig, tmp_path / "x.jpg")])
    monkeypatch.setitem(sys.modules, "kaleido", None)  # import kaleido raises ImportError
    with pytest.raises(cf.FigureExportError, match="pip install kaleido"):
        cf.figure_bytes(fig, "png")
    assert not list(tmp_path.iterdir())


def test_figures_of_the_stored_class_tables(store) -> None:
    mid = _ingest(store)
    store.classroom.add_segment(mid, "intro", 0, 30)
    store.classroom.add_segment(mid, "talk", 30, 120)
    tables = store.classroom.class_tables("class")
    fig = cf.segment_bars(tables, mid, "visible_share")
    got = {tr.name: list(tr.y) for tr in fig.data}
    want: dict[str, list[float]] = {}
    for r in sorted(tables.segments, key=lambda r: r["start_s"]):
        want.setdefault(r["person"], []).append(r["visible_share"])
    assert got == want and len(got) == 3
    lines = cf.participant_lines(tables, mid, "engagement_p")
    assert len(lines.data) == 3


def test_cli_writes_the_figures(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("kaleido")
    from db.services import LabelStore

    url = f"sqlite:///{tmp_path / 'x.sqlite3'}"
    store = LabelStore(url, data_dir=tmp_path)
    store.upgrade()
    mid = _ingest(store, study="class")
    store.close()
    env = {"DATABASE_URL": url, "AFFECTLAB_DATA_DIR": str(tmp_path)}
    args = ["figure", "--study", "class", "--recording", str(mid), "--kind", "class-mean", "--out", str(tmp_path / "f")]
    done = subprocess.run(
        [sys.executable, "-m", "affectlab", *args], env={**_env(), **env}, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    assert sorted(p.name for p in (tmp_path / "f").iterdir()) == sorted(
        f"m{mid}-class-mean-{v}.{f}" for v in ("engagement_p", "visible_share") for f in ("png", "svg")
    )
    bad = subprocess.run(
        [
            sys.executable,
            "-m",
            "affectlab",
            "figure",
            "--study",
            "class",
            "--recording",
            "999",
            "--out",
            str(tmp_path / "g"),
        ],
        env={**_env(), **env},
        capture_output=True,
        text=True,
    )
    assert bad.returncode == 2 and "#999" in bad.stderr


def _env() -> dict[str, str]:
    import os

    return dict(os.environ)


def test_names_people_typed_carry_no_markup() -> None:
    import json

    hostile = 'x<a href="https://evil.example">click</a>%{x}'
    t = _tables()
    minutes = [{**r, "person": hostile if r["person"] == "S1" else r["person"]} for r in t.minutes]
    segments = [{**r, "segment": hostile if r["segment"] == "talk" else r["segment"]} for r in t.segments]
    bad = ClassTables(minutes=minutes, segments=segments, overall=[], classes=CLASSES)
    for kind in cf.KINDS:
        blob = json.dumps(cf.class_figure(bad, 7, kind).to_plotly_json())
        assert "<a href" not in blob and "%{x}" not in blob.replace("%{x:", ""), kind


def test_a_value_the_recording_never_has_is_said_not_drawn_empty() -> None:
    """A recording analysed without the engagement model: every figure of engagement says so (no empty axes), its
    other values still draw."""
    import dataclasses

    t = _tables()
    blank = dataclasses.replace(
        t,
        minutes=[{**r, "engagement_p": None} if r["media_id"] == 7 else r for r in t.minutes],
        segments=[{**r, "engagement_p": None} if r["media_id"] == 7 else r for r in t.segments],
    )
    for kind in cf.KINDS:
        with pytest.raises(cf.FigureError, match="no engagement_p values"):
            cf.class_figure(blank, 7, kind, "engagement_p")
        cf.class_figure(blank, 8, kind, "engagement_p") if kind != "segment-bars" else None
    assert cf.class_figure(blank, 7, "class-mean", "visible_share").data
    assert cf.class_figure(t, 7, "class-mean", "engagement_p").data
