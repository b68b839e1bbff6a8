"""Names people type are shown literally: in Markdown (code spans, also with backticks and newlines) and in every
plotly text (titles, legends, labels, annotations, hover), where plotly would render ``<a href>`` as a link."""

from __future__ import annotations

import json

from core.style import plot_text
from webapp.figures import circumplex
from webapp.ui import code_span

HOSTILE = 'x`<a href="https://evil.example">click</a>\n![img](https://evil.example/p.png)%{x}'


def test_code_span_keeps_backticks_and_newlines_inside() -> None:
    span = code_span(HOSTILE)
    fence = span[: span.index("x")].strip()
    assert fence.count("`") > HOSTILE.count("`") and span.rstrip().endswith(fence)
    assert "\n" not in span


def test_plotly_texts_carry_no_markup() -> None:
    assert "<a" not in plot_text(HOSTILE) and "%{" not in plot_text(HOSTILE) and "\n" not in plot_text(HOSTILE)
    figs = [
        circumplex([(0.1, 0.2, HOSTILE)], HOSTILE),
    ]
    for fig in figs:
        blob = json.dumps(fig.to_plotly_json())
        assert "<a href" not in blob, blob[:500]
        assert "%{x}" not in blob.replace("%{x:", "")
