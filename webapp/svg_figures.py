"""Small charts as SVG text (grouped bars, a heatmap), drawn without plotly: no figure object and no plotly.js.

The Dataset page's two charts were plotly's: the browser then loads and runs plotly.js (a 4.7 MB bundle) on every
visit, most of the page's time in Chromium. These draw the same content (title, axis titles, every class, a legend
or colour scale, each bar's and cell's count as text; a ``<title>`` per bar and cell for viewers that show them) as
one ``<svg>`` document, which the page shows as an image (``st.html`` strips SVG in the browser). No streamlit.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from html import escape

SERIES_COLORS = ("#636efa", "#EF553B", "#00cc96", "#ab63fa", "#FFA15A")
"""Plotly's first colours, one per series, as the plotly charts had them."""
BLUES = ((247, 251, 255), (198, 219, 239), (107, 174, 214), (33, 113, 181), (8, 48, 107))
"""The heatmap's colour scale from 0 to the largest count (plotly's "Blues", coarsened to five stops)."""
FONT = 'font-family="DejaVu Sans, Arial, sans-serif"'


def _t(x: float, y: float, text: str, size: int = 12, anchor: str = "middle", extra: str = "") -> str:
    return f'<text x="{x:.1f}" y="{y:.1f}" font-size="{size}" text-anchor="{anchor}" {extra}>{escape(text)}</text>'


def _ticks(top: int) -> list[int]:
    """About five round tick values from 0 to at least ``top``."""
    if top <= 0:
        return [0, 1]
    raw = top / 5
    mag = 10 ** math.floor(math.log10(raw))
    step = next(m * mag for m in (1, 2, 2.5, 5, 10) if m * mag >= raw)
    step = max(1, int(step))
    return list(range(0, math.ceil(top / step) * step + 1, step))


def _frame(
    width: int, height: int, title: str, xtitle: str, ytitle: str, plot: tuple[int, int, int, int], shown: str = "100%"
) -> list[str]:
    """The opening tag (``shown``: its width on the page), title and axis titles."""
    left, top, right, bottom = plot
    return [
        f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {width} {height}" width="{shown}" role="img" {FONT}>',
        f"<title>{escape(title)}</title>",
        _t(left, 24, title, 16, "start", 'font-weight="bold"'),
        _t((left + right) / 2, height - 8, xtitle, 13),
        _t(16, (top + bottom) / 2, ytitle, 13, "middle", f'transform="rotate(-90 16 {(top + bottom) / 2:.1f})"'),
    ]


def bars(
    labels: Sequence[str],
    series: Mapping[str, Mapping[str, int]],
    title: str,
    xtitle: str = "emotion class",
    ytitle: str = "faces",
) -> str:
    """Grouped bars: for each label one bar per series (``series``: name -> label -> count), a legend."""
    width, height = 1000, 340
    left, top, right, bottom = 80, 56, width - 20, height - 62
    top_value = max([int(c.get(k, 0)) for c in series.values() for k in labels] or [0])
    ticks = _ticks(top_value)
    scale = (bottom - top) / max(ticks[-1], 1)
    out = _frame(width, height, title, xtitle, ytitle, (left, top, right, bottom))
    for v in ticks:
        y = bottom - v * scale
        out.append(f'<line x1="{left}" x2="{right}" y1="{y:.1f}" y2="{y:.1f}" stroke="#e5e5e5"/>')
        out.append(_t(left - 6, y + 4, f"{v:,}", 11, "end"))
    group = (right - left) / max(len(labels), 1)
    bar = group * 0.8 / max(len(series), 1)
    for i, label in enumerate(labels):
        x0 = left + i * group + group * 0.1
        out.append(_t(left + (i + 0.5) * group, bottom + 18, label, 12))
        for j, (name, counts) in enumerate(series.items()):
            n = int(counts.get(label, 0))
            x, h = x0 + j * bar, n * scale
            color = SERIES_COLORS[j % len(SERIES_COLORS)]
            out.append(
                f'<rect x="{x:.1f}" y="{bottom - h:.1f}" width="{bar * 0.95:.1f}" height="{h:.1f}" fill="{color}">'
                f"<title>{escape(f'{name}, {label}: {n:,} faces')}</title></rect>"
            )
            out.append(_t(x + bar * 0.47, bottom - h - 3, f"{n:,}", 9))
    for j, name in enumerate(series):
        x = right - 150 * (len(series) - j)
        out.append(f'<rect x="{x}" y="34" width="12" height="12" fill="{SERIES_COLORS[j % len(SERIES_COLORS)]}"/>')
        out.append(_t(x + 16, 45, name, 12, "start"))
    out.append(f'<line x1="{left}" x2="{right}" y1="{bottom}" y2="{bottom}" stroke="#444"/>')
    return "".join(out) + "</svg>"


def _blue(share: float) -> str:
    """The colour of a cell holding ``share`` (0-1) of the largest count."""
    pos = min(max(share, 0.0), 1.0) * (len(BLUES) - 1)
    i = min(int(pos), len(BLUES) - 2)
    f = pos - i
    r, g, b = (round(a + (c - a) * f) for a, c in zip(BLUES[i], BLUES[i + 1], strict=True))
    return f"rgb({r},{g},{b})"


def heatmap(
    labels: Sequence[str],
    matrix: Sequence[Sequence[int]],
    title: str,
    xtitle: str = "model class",
    ytitle: str = "human class (majority)",
) -> str:
    """A count matrix (rows: ``ytitle``, columns: ``xtitle``, in ``labels``' order) with each count in its cell."""
    n = len(labels)
    cell = 64
    left, top = 150, 56
    right, bottom = left + cell * n, top + cell * n
    width, height = right + 120, bottom + 70
    most = max([int(v) for row in matrix for v in row] or [0])
    out = _frame(width, height, title, xtitle, ytitle, (left, top, right, bottom), str(width))
    for i, human in enumerate(labels):
        out.append(_t(left - 8, top + (i + 0.5) * cell + 4, human, 12, "end"))
        row = matrix[i] if i < len(matrix) else []
        for j, model in enumerate(labels):
            v = int(row[j]) if j < len(row) else 0
            share = v / most if most else 0.0
            x, y = left + j * cell, top + i * cell
            out.append(
                f'<rect x="{x}" y="{y}" width="{cell}" height="{cell}" fill="{_blue(share)}" stroke="white">'
                f"<title>{escape(f'human {human}, model {model}: {v:,}')}</title></rect>"
            )
            ink = "white" if share > 0.5 else "#222"
            out.append(_t(x + cell / 2, y + cell / 2 + 4, f"{v:,}", 11, "middle", f'fill="{ink}"'))
    for j, model in enumerate(labels):
        out.append(_t(left + (j + 0.5) * cell, bottom + 18, model, 12))
    bar_x = right + 30
    for k in range(20):  # the colour scale, largest at the top
        band = top + k * (bottom - top) / 20
        out.append(
            f'<rect x="{bar_x}" y="{band:.1f}" width="16" height="{(bottom - top) / 20 + 0.5:.1f}" '
            f'fill="{_blue(1 - k / 19)}"/>'
        )
    out.append(_t(bar_x + 20, top + 10, f"{most:,}", 11, "start"))
    out.append(_t(bar_x + 20, bottom, "0", 11, "start"))
    out.append(_t(bar_x, top - 8, "faces", 12, "start"))
    return "".join(out) + "</svg>"
