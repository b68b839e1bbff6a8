"""The look every figure shares, in the app and in the files: box and line colours, class colours, safe text."""

from __future__ import annotations

import html


def plot_text(value: object) -> str:
    """A name people typed, safe in any plotly text (titles, legends, labels, annotations, hover).

    Plotly renders a subset of HTML (``<a href>``, ``<b>``, ``<br>``) in these strings: ``<``, ``>`` and ``&`` are
    escaped, newlines become spaces, and ``%{`` (a template field in hover text) loses its brace.
    """
    return html.escape(str(value), quote=False).replace("\n", " ").replace("\r", " ").replace("%{", "%(")


PALETTE = ("#e6194b", "#3cb44b", "#4363d8", "#f58231", "#911eb4", "#42d4f4", "#f032e6", "#bfef45", "#469990", "#9a6324")
"""Distinct box colours, cycled by face number."""

CLASS_COLORS = {
    "Anger": "#d62728",
    "Contempt": "#8c564b",
    "Disgust": "#7f7f00",
    "Fear": "#9467bd",
    "Happiness": "#2ca02c",
    "Neutral": "#7f7f7f",
    "Sadness": "#1f77b4",
    "Surprise": "#ff7f0e",
}
