"""The Dataset page's SVG charts: title, axis titles, every class and count, text escaped, sizes that scale."""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET

from webapp import svg_figures

NS = "{http://www.w3.org/2000/svg}"


def _texts(svg: str) -> list[str]:
    return [t.text or "" for t in ET.fromstring(svg).iter(f"{NS}text")]


def test_bars_show_every_class_and_count_with_title_and_axes() -> None:
    labels = ["Anger", "Happiness", "<b>odd</b>"]
    counts = {"model": {"Anger": 1_000_006, "Happiness": 400_000}, "annotators": {"Anger": 3}}
    svg = svg_figures.bars(labels, counts, "t")
    root = ET.fromstring(svg)  # well-formed: the odd class name is escaped
    texts = _texts(svg)
    assert texts[:3] == ["t", "emotion class", "faces"]
    assert set(labels) <= set(texts) and {"1,000,006", "400,000", "3", "model", "annotators"} <= set(texts)
    bars = [r for r in root.iter(f"{NS}rect") if r.find(f"{NS}title") is not None]
    assert len(bars) == 2 * len(labels)
    heights = {r.find(f"{NS}title").text: float(r.get("height")) for r in bars}  # type: ignore[union-attr]
    assert heights["model, Anger: 1,000,006 faces"] > heights["model, Happiness: 400,000 faces"] > 0
    assert heights["annotators, Happiness: 0 faces"] == 0
    assert svg_figures.bars(labels, {}, "empty").startswith("<svg"), "no series: an empty chart, no error"


def test_heatmap_shows_each_cell_and_the_scale() -> None:
    labels = ["Anger", "Fear"]
    svg = svg_figures.heatmap(labels, [[5, 0], [1, 12]], "c")
    texts = _texts(svg)
    assert texts[:3] == ["c", "model class", "human class (majority)"]
    assert {"5", "0", "1", "12", "faces"} <= set(texts)
    titles = re.findall(r"<title>(.*?)</title>", svg)
    assert "human Fear, model Fear: 12" in titles and "human Anger, model Fear: 0" in titles
    cells = {t: c for c, t in re.findall(r'fill="(rgb[^"]+)" stroke="white"><title>(.*?)</title>', svg)}
    assert cells["human Fear, model Fear: 12"] != cells["human Anger, model Fear: 0"], "counts are coloured"
    ET.fromstring(svg_figures.heatmap(labels, [], "no votes"))
