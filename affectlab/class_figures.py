"""Figures of a study's class tables a paper can use, and their PNG / SVG files.

Built from the SQL class tables of :mod:`db.classroom` (:class:`db.classroom.ClassTables`), with no streamlit, so the
Classroom page and ``affectlab figure`` draw the same figures:

- ``segment-bars``: one bar per student per lecture segment (``class-segments``); for ``dominant_emotion`` the number
  of students whose most frequent class is each class, stacked per segment;
- ``participant-lines``: one line per student over the minutes of the recording (``class-minutes``); for
  ``dominant_emotion`` the class is the y axis;
- ``class-mean``: the class mean per minute with its confidence band (Student's t over the students seen in that
  minute: mean +- t(level, n - 1) * sd / sqrt(n); no band where one student was seen).

Axes keep the scale of the value, not of the data: engagement and visible share run from 0 to 1, valence and
arousal from -1 to 1. Static files are drawn by plotly's kaleido, which drives the system's Chromium
(``/usr/bin/chromium``; ``BROWSER_PATH`` names another); without them :class:`FigureExportError` says what to
install.
"""

from __future__ import annotations

import importlib
import math
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from core.settings import browser_path
from core.style import CLASS_COLORS, PALETTE, plot_text
from models.errors import AffectLabError

if TYPE_CHECKING:
    import plotly.graph_objects as go

    from db.classroom import ClassTables

FigureKind = Literal["segment-bars", "participant-lines", "class-mean"]
KINDS: tuple[FigureKind, ...] = ("segment-bars", "participant-lines", "class-mean")
VALUES = ("engagement_p", "visible_share", "dominant_emotion", "valence", "arousal")
"""The columns a figure can show (``dominant_emotion`` is a class, the others numbers)."""
FORMATS = ("png", "svg")
RANGES: dict[str, tuple[float, float]] = {
    "engagement_p": (0.0, 1.0),
    "visible_share": (0.0, 1.0),
    "valence": (-1.0, 1.0),
    "arousal": (-1.0, 1.0),
}
TITLES = {
    "engagement_p": "engagement p(engaged)",
    "visible_share": "visible share",
    "dominant_emotion": "dominant emotion",
    "valence": "valence",
    "arousal": "arousal",
}
WIDTH, HEIGHT, SCALE = 1000, 500, 2
"""Size of an exported figure in CSS pixels, and the PNG's pixels per CSS pixel (2: 2000 x 1000)."""


class FigureError(AffectLabError):
    """A figure that cannot be drawn from these tables (unknown kind or value, no such recording, no segments)."""


class FigureExportError(AffectLabError):
    """A figure that cannot be written as PNG or SVG here (no kaleido, no Chromium, unknown format)."""


def _rows(rows: Iterable[Mapping[str, Any]], media_id: int) -> list[Mapping[str, Any]]:
    return [r for r in rows if r["media_id"] == media_id]


def _num(v: object) -> float | None:
    """A table value as a float; None for an empty one (not seen, no engagement)."""
    if isinstance(v, int | float) and not isinstance(v, bool) and not math.isnan(float(v)):
        return float(v)
    return None


def _check(tables: ClassTables, media_id: int, value: str, *, values: bool = True) -> None:
    """Refuses a figure that would be empty axes, saying why.

    An unknown value, no such recording, or (``values``) a recording without a single ``value`` (analysed without
    the engagement model, or with a model that predicts no valence/arousal).
    """
    if value not in VALUES:
        raise FigureError(f"unknown figure value {value!r}: use one of {', '.join(VALUES)}")
    rows = _rows(tables.minutes, media_id)
    if not rows:
        raise FigureError(f"recording #{media_id} has no students in the class tables: analyze it first")
    if values and all(r.get(value) is None or (value in RANGES and _num(r.get(value)) is None) for r in rows):
        raise FigureError(
            f"recording #{media_id} has no {value} values (engagement needs the engagement model's weights, valence "
            "and arousal a model that predicts them): choose another value"
        )


def _segments(tables: ClassTables, media_id: int) -> list[tuple[str, float, float]]:
    """The recording's lecture segments ``(name, start_s, end_s)`` in time order."""
    seen = {(str(r["segment"]), float(r["start_s"]), float(r["end_s"])) for r in _rows(tables.segments, media_id)}
    return sorted(seen, key=lambda s: (s[1], s[2], s[0]))


def _persons(rows: Iterable[Mapping[str, Any]]) -> list[str]:
    """The students of some rows, by person number."""
    index = {str(r["person"]): int(r["person_index"] or 0) for r in rows}
    return sorted(index, key=lambda p: (index[p], p))


def _layout(fig: go.Figure, title: str, xtitle: str, value: str, classes: Sequence[str] = ()) -> None:

    y: dict[str, Any] = {"title": TITLES[value]}
    if value in RANGES:
        y["range"] = list(RANGES[value])
    else:
        y.update(type="category", categoryorder="array", categoryarray=list(classes))
    fig.update_layout(
        title=plot_text(title),
        xaxis_title=xtitle,
        yaxis=y,
        template="simple_white",
        font={"family": "DejaVu Sans, Arial, sans-serif", "size": 14},
        legend={"title": ""},
        margin={"l": 60, "r": 20, "t": 60, "b": 60},
    )


def _shade(fig: go.Figure, segments: Sequence[tuple[str, float, float]]) -> None:
    """Each segment as a shaded band with its name at the top left, set in one layout update.

    The same shapes and annotations ``fig.add_vrect(..., annotation_position="top left")`` makes, written as plain
    dicts: plotly's ``add_vrect`` copies and validates the whole figure per band (80 ms each, most of the figure).
    """
    shapes, notes = [], []
    for k, (name, a, b) in enumerate(segments):
        shapes.append(
            {
                "type": "rect",
                "xref": "x",
                "yref": "y domain",
                "x0": a / 60,
                "x1": b / 60,
                "y0": 0,
                "y1": 1,
                "fillcolor": PALETTE[k % len(PALETTE)],
                "opacity": 0.10,
                "line": {"width": 0},
            }
        )
        notes.append(
            {
                "text": plot_text(name),
                "showarrow": False,
                "xref": "x",
                "yref": "y domain",
                "x": a / 60,
                "y": 1,
                "xanchor": "left",
                "yanchor": "top",
            }
        )
    if shapes:
        fig.update_layout(shapes=[*fig.layout.shapes, *shapes], annotations=[*fig.layout.annotations, *notes])


def segment_bars(tables: ClassTables, media_id: int, value: str = "engagement_p") -> go.Figure:
    """Per-segment bars of one recording: one bar per student, or students per dominant class (stacked).

    Raises:
        FigureError: Unknown value, no such recording, or a recording without lecture segments.
    """
    import plotly.graph_objects as go

    _check(tables, media_id, value)
    rows = _rows(tables.segments, media_id)
    segs = _segments(tables, media_id)
    if not segs:
        raise FigureError(
            f"recording #{media_id} has no lecture segments: add them on the Classroom page (or import a CSV), "
            "or draw participant-lines or class-mean"
        )
    names = [plot_text(s[0]) for s in segs]
    fig = go.Figure()
    if value == "dominant_emotion":
        for k in tables.classes:
            counts = [
                sum(1 for r in rows if (r["segment"], r["start_s"], r["end_s"]) == s and r[value] == k) for s in segs
            ]
            if any(counts):
                fig.add_trace(go.Bar(x=names, y=counts, name=plot_text(k), marker_color=CLASS_COLORS.get(k)))
        fig.update_layout(barmode="stack")
        _layout(fig, f"Dominant emotion per segment (recording #{media_id})", "lecture segment", "visible_share")
        fig.update_yaxes(title="students", range=None, autorange=True)
        return fig
    at = {(str(r["person"]), r["segment"], r["start_s"], r["end_s"]): r.get(value) for r in rows}
    for i, who in enumerate(_persons(rows)):
        ys = [_num(at.get((who, *s))) for s in segs]
        fig.add_trace(go.Bar(x=names, y=ys, name=plot_text(who), marker_color=PALETTE[i % len(PALETTE)]))
    fig.update_layout(barmode="group")
    _layout(
        fig, f"{TITLES[value].capitalize()} per student per segment (recording #{media_id})", "lecture segment", value
    )
    return fig


def participant_lines(
    tables: ClassTables, media_id: int, value: str = "engagement_p", persons: Sequence[str] = ()
) -> go.Figure:
    """One line per student (all, or ``persons``) over the minutes of one recording, segments shaded.

    Raises:
        FigureError: Unknown value or no such recording.
    """
    import plotly.graph_objects as go

    _check(tables, media_id, value)
    rows = _rows(tables.minutes, media_id)
    chosen = list(persons) or _persons(rows)
    fig = go.Figure()
    _shade(fig, _segments(tables, media_id))
    for k, who in enumerate(chosen):
        mine = sorted((r for r in rows if r["person"] == who), key=lambda r: int(r["minute"]))
        xs = [(float(r["start_s"]) + float(r["end_s"])) / 120 for r in mine]
        if value == "dominant_emotion":
            ys: list[Any] = [r[value] for r in mine]
        else:
            ys = [_num(r.get(value)) for r in mine]
        fig.add_trace(
            go.Scatter(
                x=xs,
                y=ys,
                mode="lines+markers",
                name=plot_text(who),
                line={"color": PALETTE[k % len(PALETTE)], "shape": "hv" if value == "dominant_emotion" else "linear"},
            )
        )
    title = f"{TITLES[value].capitalize()} per student per minute (recording #{media_id})"
    _layout(fig, title, "minute of the recording", value, tables.classes)
    return fig


def mean_band(values: Sequence[float], level: float = 0.95) -> tuple[float, float, float]:
    """The mean of some values and its two-sided ``level`` confidence interval (Student's t; no width when n < 2)."""
    from scipy.special import stdtrit  # Student's t quantile (scipy.stats takes seconds to import)

    n = len(values)
    mean = sum(values) / n
    if n < 2:
        return mean, mean, mean
    sd = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1))
    half = float(stdtrit(n - 1, 0.5 + level / 2)) * sd / math.sqrt(n)
    return mean, mean - half, mean + half


def class_mean(tables: ClassTables, media_id: int, value: str = "engagement_p", level: float = 0.95) -> go.Figure:
    """The class mean of a numeric value per minute of one recording with its confidence band, segments shaded.

    Raises:
        FigureError: Unknown or non-numeric value, or no such recording.
    """
    import plotly.graph_objects as go

    _check(tables, media_id, value)
    if value not in RANGES:
        raise FigureError(f"the class mean needs a number: {value!r} is a class (draw segment-bars instead)")
    by_minute: dict[int, tuple[float, list[float]]] = {}
    for r in _rows(tables.minutes, media_id):
        v = _num(r.get(value))
        if v is not None:
            mid = (float(r["start_s"]) + float(r["end_s"])) / 120
            by_minute.setdefault(int(r["minute"]), (mid, []))[1].append(v)
    xs, means, lows, highs = [], [], [], []
    for m in sorted(by_minute):
        mid, vals = by_minute[m]
        mean, low, high = mean_band(vals, level)
        xs.append(mid)
        means.append(mean)
        lows.append(low)
        highs.append(high)
    fig = go.Figure()
    _shade(fig, _segments(tables, media_id))
    fig.add_trace(
        go.Scatter(
            x=xs + xs[::-1],
            y=highs + lows[::-1],
            fill="toself",
            fillcolor="rgba(67, 99, 216, 0.2)",
            line={"width": 0},
            hoverinfo="skip",
            name=f"{level:.0%} confidence band",
        )
    )
    fig.add_trace(go.Scatter(x=xs, y=means, mode="lines+markers", name="class mean", line={"color": "#1f3a93"}))
    _layout(fig, f"Class {TITLES[value]} per minute (recording #{media_id})", "minute of the recording", value)
    return fig


def class_figure(
    tables: ClassTables, media_id: int, kind: str, value: str = "engagement_p", persons: Sequence[str] = ()
) -> go.Figure:
    """The figure ``kind`` (:data:`KINDS`) of one recording.

    Raises:
        FigureError: Unknown kind or value, no such recording, or what the kind needs is missing.
    """
    if kind == "segment-bars":
        return segment_bars(tables, media_id, value)
    if kind == "participant-lines":
        return participant_lines(tables, media_id, value, persons)
    if kind == "class-mean":
        return class_mean(tables, media_id, value)
    raise FigureError(f"unknown figure {kind!r}: use one of {', '.join(KINDS)}")


def _kaleido() -> None:
    try:
        importlib.import_module("kaleido")
    except ImportError as exc:
        raise FigureExportError(
            "PNG and SVG figures need kaleido: `pip install kaleido==1.5.2` (requirements.txt pins it; "
            "`make install` installs it)"
        ) from exc


def _failed(fmt: str, exc: Exception) -> FigureExportError:
    return FigureExportError(
        f"drawing the {fmt.upper()} failed ({type(exc).__name__}: {str(exc)[:200]}): kaleido needs Chromium "
        "(`apt-get install chromium`, or set BROWSER_PATH to a Chrome or Chromium binary)"
    )


def export_problem() -> str | None:
    """Why PNG / SVG files cannot be drawn here, checked without drawing one (None: kaleido and a browser are there)."""
    import importlib.util
    import shutil

    if importlib.util.find_spec("kaleido") is None:
        return "PNG and SVG need kaleido: `pip install kaleido==1.5.2` (`make install` installs it)"
    browser = browser_path()
    if browser:
        return None if Path(browser).is_file() else f"BROWSER_PATH={browser} is not a file: name a Chromium binary"
    if any(shutil.which(b) for b in ("chromium", "chromium-browser", "google-chrome", "chrome")):
        return None
    return "PNG and SVG need Chromium: `apt-get install chromium` (or set BROWSER_PATH)"


def figure_bytes(fig: go.Figure, fmt: str, width: int = WIDTH, height: int = HEIGHT, scale: int = SCALE) -> bytes:
    """The figure as a PNG or SVG file's bytes (kaleido and the system's Chromium).

    Raises:
        FigureExportError: Unknown format, or kaleido or Chromium missing (the message says what to install).
    """
    if fmt not in FORMATS:
        raise FigureExportError(f"unknown figure format {fmt!r}: use png or svg")
    _kaleido()
    try:
        return bytes(fig.to_image(format=fmt, width=width, height=height, scale=scale))
    except Exception as exc:  # kaleido raises its own and choreographer's errors (no browser, browser crashed)
        raise _failed(fmt, exc) from exc


def write_figures(figs: Sequence[tuple[go.Figure, Path]]) -> list[Path]:
    """Writes each figure to its path as PNG or SVG (by the suffix), one browser for all; each file appears whole.

    Raises:
        FigureExportError: A suffix other than .png or .svg, or the drawing failed (no file of the batch is left).
    """
    import plotly.io as pio

    fmts = [path.suffix.lower().lstrip(".") for _, path in figs]
    for fmt, (_, path) in zip(fmts, figs, strict=True):
        if fmt not in FORMATS:
            raise FigureExportError(f"{path}: unknown figure format {fmt!r}: use a .png or .svg file name")
    if not figs:
        return []
    _kaleido()
    parts = [path.with_name(f".{path.name}.part") for _, path in figs]
    try:
        pio.write_images(
            [f for f, _ in figs],
            parts,
            format=fmts,
            width=WIDTH,
            height=HEIGHT,
            scale=SCALE,
        )
    except Exception as exc:  # as in figure_bytes
        for part in parts:
            part.unlink(missing_ok=True)
        raise _failed("/".join(sorted(set(fmts))), exc) from exc
    for part, (_, path) in zip(parts, figs, strict=True):
        part.replace(path)
    return [path for _, path in figs]


def figure_files(
    tables: ClassTables, media_id: int, out: Path, kinds: Sequence[str] = KINDS, formats: Sequence[str] = FORMATS
) -> list[Path]:
    """Every figure of ``kinds`` for each value that suits it, as files ``m{media_id}-{kind}-{value}.{fmt}`` in ``out``.

    Figures a recording cannot have (segment-bars without segments) are left out; returns the files written.

    Raises:
        FigureError: Unknown kind, or no such recording.
        FigureExportError: Drawing failed (kaleido or Chromium missing).
    """
    for kind in kinds:
        if kind not in KINDS:
            raise FigureError(f"unknown figure {kind!r}: use one of {', '.join(KINDS)}")
    _check(tables, media_id, "engagement_p", values=False)
    todo: list[tuple[go.Figure, Path]] = []
    for kind in kinds:
        for value in ("engagement_p", "visible_share", "dominant_emotion"):
            if kind == "class-mean" and value not in RANGES:
                continue
            try:
                fig = class_figure(tables, media_id, kind, value)
            except FigureError:
                continue
            todo += [(fig, out / f"m{media_id}-{kind}-{value}.{fmt}") for fmt in formats]
    out.mkdir(parents=True, exist_ok=True)
    return write_figures(todo)
