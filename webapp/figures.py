"""Figures of the web app: numbered boxes drawn with Pillow, plotly charts (each with a title and axis labels).

No streamlit here: every function returns a PIL image or a ``plotly.graph_objects.Figure``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import plotly.graph_objects as go
from PIL import Image, ImageDraw, ImageFont

from core.style import CLASS_COLORS, PALETTE, plot_text


@dataclass(frozen=True)
class BoxLabel:
    """A box to draw: ``(x1, y1, x2, y2)`` upright-image pixels, the face's number and a caption."""

    box: tuple[float, float, float, float]
    number: int
    caption: str = ""


def _font(size: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    for name in ("DejaVuSans-Bold.ttf", "DejaVuSans.ttf"):
        try:
            return ImageFont.truetype(name, size)
        except OSError:
            continue
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # pragma: no cover - old Pillow
        return ImageFont.load_default()


def draw_boxes(image: np.ndarray | Image.Image, boxes: Sequence[BoxLabel]) -> Image.Image:
    """The image with each face's box and its number (and caption) drawn on it.

    Args:
        image: RGB uint8 array or PIL image (upright).
        boxes: The faces to draw.

    Returns:
        A new RGB image.
    """
    src = image if isinstance(image, Image.Image) else Image.fromarray(np.asarray(image, dtype=np.uint8))
    im = src.convert("RGB").copy()
    draw = ImageDraw.Draw(im)
    side = max(im.size)
    width = max(2, side // 300)
    font = _font(max(12, side // 45))
    for b in boxes:
        color = PALETTE[(b.number - 1) % len(PALETTE)]
        x1, y1, x2, y2 = (float(v) for v in b.box)
        draw.rectangle((x1, y1, x2, y2), outline=color, width=width)
        text = f"{b.number}" + (f" {b.caption}" if b.caption else "")
        tb = draw.textbbox((0, 0), text, font=font)
        tw, th = tb[2] - tb[0], tb[3] - tb[1]
        ty = y1 - th - 2 * width if y1 - th - 2 * width >= 0 else y2 + width
        draw.rectangle((x1, ty, x1 + tw + 2 * width, ty + th + 2 * width), fill=color)
        draw.text((x1 + width, ty + width - tb[1]), text, fill="white", font=font)
    return im


def probability_bar(probs: Mapping[str, float], title: str, highlight: str | None = None) -> go.Figure:
    """A horizontal bar chart of class probabilities.

    Args:
        probs: Class name to probability.
        title: The chart title.
        highlight: A class to draw in its colour (the others grey), e.g. the human label.
    """
    names = list(probs)
    values = [float(probs[n]) for n in names]
    top = names[int(np.argmax(values))] if names else None
    colors = [CLASS_COLORS.get(n, "#1f77b4") if n in (top, highlight) else "#c7c7c7" for n in names]
    fig = go.Figure(
        go.Bar(
            x=values,
            y=names,
            orientation="h",
            marker_color=colors,
            text=[f"{v:.2f}" for v in values],
            textposition="outside",
            hovertemplate="%{y}: %{x:.3f}<extra></extra>",
        )
    )
    fig.update_layout(
        title=plot_text(title),
        xaxis_title="probability",
        yaxis_title="emotion class",
        height=300,
        margin={"l": 10, "r": 10, "t": 40, "b": 40},
        xaxis_range=[0, 1.15],
        yaxis={"autorange": "reversed"},
    )
    return fig


def probability_table(probs: Mapping[str, float], highlight: str | None = None, width: int = 24) -> str:
    """Class probabilities as a Markdown table with text bars: the Review page's light stand-in for a chart.

    The most probable class is in bold, ``highlight`` (e.g. the annotator's own label) marked with a check.
    """
    if not probs:
        return ""
    top = max(probs, key=lambda n: float(probs[n]))
    lines = ["| class | probability | |", "|---|---:|---|"]
    for name, p in probs.items():
        v = min(max(float(p), 0.0), 1.0)
        label = f"**{name}**" if name == top else name
        mark = " ✓" if name == highlight else ""
        lines.append(f"| {label}{mark} | {v:.2f} | {'█' * round(v * width) or '▏'} |")
    return "\n".join(lines)


def circumplex(points: Sequence[tuple[float, float, str]], title: str) -> go.Figure:
    """Valence/arousal points on Russell's circumplex, in [-1, 1] x [-1, 1].

    Args:
        points: ``(valence, arousal, name)`` per point (e.g. face numbers).
        title: The chart title.
    """
    theta = np.linspace(0, 2 * np.pi, 181)
    fig = go.Figure()
    fig.add_trace(
        go.Scatter(
            x=np.cos(theta),
            y=np.sin(theta),
            mode="lines",
            line={"color": "#bbbbbb"},
            hoverinfo="skip",
            showlegend=False,
        )
    )
    for i, (v, a, name) in enumerate(points):
        fig.add_trace(
            go.Scatter(
                x=[v],
                y=[a],
                mode="markers+text",
                text=[plot_text(name)],
                textposition="top center",
                marker={"size": 12, "color": PALETTE[i % len(PALETTE)]},
                name=plot_text(name),
                hovertemplate="%{text}: valence %{x:.2f}, arousal %{y:.2f}<extra></extra>",
            )
        )
    for x, y, label in ((0.75, 0.75, "excited"), (-0.75, 0.75, "tense"), (-0.75, -0.75, "sad"), (0.75, -0.75, "calm")):
        fig.add_annotation(x=x, y=y, text=label, showarrow=False, font={"color": "#999999"})
    fig.update_layout(
        title=plot_text(title),
        xaxis_title="valence (negative to positive)",
        yaxis_title="arousal (calm to excited)",
        height=360,
        showlegend=False,
        margin={"l": 10, "r": 10, "t": 40, "b": 40},
    )
    fig.update_xaxes(range=[-1.1, 1.1], zeroline=True, zerolinecolor="#888888")
    fig.update_yaxes(range=[-1.1, 1.1], zeroline=True, zerolinecolor="#888888", scaleanchor="x", scaleratio=1)
    return fig


def probability_timeline(times: Sequence[float], probs: Sequence[Mapping[str, float]], title: str) -> go.Figure:
    """Class probabilities of one track over time, one line per class."""
    fig = go.Figure()
    names = list(probs[0]) if probs else []
    for n in names:
        fig.add_trace(
            go.Scatter(
                x=list(times),
                y=[float(p.get(n, 0.0)) for p in probs],
                mode="lines",
                name=plot_text(n),
                line={"color": CLASS_COLORS.get(n)},
            )
        )
    fig.update_layout(
        title=plot_text(title),
        xaxis_title="time (s)",
        yaxis_title="probability",
        yaxis_range=[0, 1],
        height=300,
        margin={"l": 10, "r": 10, "t": 40, "b": 40},
    )
    return fig


def va_timeline(
    times: Sequence[float], valence: Sequence[float | None], arousal: Sequence[float | None], title: str
) -> go.Figure:
    """Valence and arousal of one track over time."""
    fig = go.Figure()
    fig.add_trace(go.Scatter(x=list(times), y=list(valence), mode="lines", name="valence"))
    fig.add_trace(go.Scatter(x=list(times), y=list(arousal), mode="lines", name="arousal"))
    fig.update_layout(
        title=plot_text(title),
        xaxis_title="time (s)",
        yaxis_title="value in [-1, 1]",
        yaxis_range=[-1, 1],
        height=280,
        margin={"l": 10, "r": 10, "t": 40, "b": 40},
    )
    return fig


def class_counts_timeline(times: Sequence[float], counts: Sequence[Mapping[str, int]], title: str) -> go.Figure:
    """Faces per class over time, stacked bars (e.g. the annotators' classes of one track per time bin)."""
    names = sorted({n for c in counts for n in c})
    fig = go.Figure()
    for n in names:
        fig.add_trace(
            go.Bar(
                x=list(times),
                y=[int(c.get(n, 0)) for c in counts],
                name=plot_text(n),
                marker_color=CLASS_COLORS.get(n),
            )
        )
    fig.update_layout(
        title=plot_text(title),
        xaxis_title="time (s), bin centre",
        yaxis_title="faces",
        barmode="stack",
        height=260,
        margin={"l": 10, "r": 10, "t": 40, "b": 40},
    )
    return fig


def engagement_timeline(windows: Sequence[tuple[float, float, float]], title: str) -> go.Figure:
    """P(engaged) per window of one track: ``(start_s, end_s, p_engaged)``, drawn at each window's middle."""
    mids = [(s + e) / 2 for s, e, _ in windows]
    fig = go.Figure(go.Scatter(x=mids, y=[p for _, _, p in windows], mode="lines+markers", name="P(engaged)"))
    fig.add_hline(y=0.5, line_dash="dot", line_color="#999999")
    fig.update_layout(
        title=plot_text(title),
        xaxis_title="time (s), window centre",
        yaxis_title="P(engaged)",
        yaxis_range=[0, 1],
        height=260,
        margin={"l": 10, "r": 10, "t": 40, "b": 40},
    )
    return fig


def confusion_heatmap(labels: Sequence[str], matrix: Sequence[Sequence[int]], title: str) -> go.Figure:
    """The model-vs-human confusion matrix (rows: human majority class, columns: model class)."""
    z = np.asarray(matrix, dtype=float) if len(matrix) else np.zeros((len(labels), len(labels)))
    fig = go.Figure(
        go.Heatmap(
            z=z,
            x=list(labels),
            y=list(labels),
            colorscale="Blues",
            text=z.astype(int),
            texttemplate="%{text}",
            colorbar={"title": "faces"},
            hovertemplate="human %{y}, model %{x}: %{z:.0f}<extra></extra>",
        )
    )
    fig.update_layout(
        title=plot_text(title),
        xaxis_title="model class",
        yaxis_title="human class (majority)",
        height=420,
        yaxis={"autorange": "reversed"},
        margin={"l": 10, "r": 10, "t": 40, "b": 40},
    )
    return fig
