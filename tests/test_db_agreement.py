"""The agreement statistics against scikit-learn and published worked examples."""

from __future__ import annotations

import math

import numpy as np
import pytest
from sklearn.metrics import cohen_kappa_score
from sklearn.metrics import confusion_matrix as sk_confusion

from db import agreement

CLASSES = ["Anger", "Fear", "Happiness", "Neutral", "Sadness"]


@pytest.mark.parametrize("seed", range(5))
def test_cohen_kappa_and_confusion_match_sklearn(seed):
    rng = np.random.default_rng(seed)
    a = rng.choice(CLASSES, 200).tolist()
    b = [x if rng.random() < 0.6 else rng.choice(CLASSES) for x in a]
    assert agreement.cohen_kappa(a, b) == pytest.approx(cohen_kappa_score(a, b), abs=1e-12)
    assert agreement.cohen_kappa(a, b, CLASSES) == pytest.approx(cohen_kappa_score(a, b, labels=CLASSES), abs=1e-12)
    np.testing.assert_array_equal(agreement.confusion_matrix(a, b, CLASSES), sk_confusion(a, b, labels=CLASSES))


def test_cohen_kappa_edge_cases():
    assert agreement.cohen_kappa(["A", "B"], ["A", "B"]) == 1.0
    assert math.isnan(agreement.cohen_kappa(["A", "A"], ["A", "A"]))
    assert math.isnan(agreement.cohen_kappa([], []))


def test_fleiss_kappa_wikipedia_example():
    # Fleiss (1971) as worked on Wikipedia: 10 subjects, 14 raters, 5 categories, kappa = 0.210.
    counts = np.array(
        [
            [0, 0, 0, 0, 14],
            [0, 2, 6, 4, 2],
            [0, 0, 3, 5, 6],
            [0, 3, 9, 2, 0],
            [2, 2, 8, 1, 1],
            [7, 7, 0, 0, 0],
            [3, 2, 6, 3, 0],
            [2, 5, 3, 2, 2],
            [6, 5, 2, 1, 0],
            [0, 2, 2, 3, 7],
        ]
    )
    assert agreement.fleiss_kappa(counts) == pytest.approx(0.20993, abs=1e-4)


def test_fleiss_kappa_with_two_raters_is_scotts_pi():
    a = ["A", "A", "B", "B", "C", "A", "B", "C"]
    b = ["A", "B", "B", "B", "C", "A", "C", "C"]
    counts = agreement.category_counts(list(zip(a, b, strict=True)), ["A", "B", "C"])
    p_o = np.mean([x == y for x, y in zip(a, b, strict=True)])
    shares = counts.sum(0) / counts.sum()
    pi = (p_o - (shares**2).sum()) / (1 - (shares**2).sum())
    assert agreement.fleiss_kappa(counts) == pytest.approx(pi)


# Krippendorff's reliability data (Krippendorff 2011, "Computing Krippendorff's alpha-reliability"): 4 coders,
# 12 units, missing values; alpha nominal = 0.743, interval = 0.849.
_K = [
    [1, 2, 3, 3, 2, 1, 4, 1, 2, None, None, None],
    [1, 2, 3, 3, 2, 2, 4, 1, 2, 5, None, 3],
    [None, 3, 3, 3, 2, 3, 4, 2, 2, 5, 1, None],
    [1, 2, 3, 3, 2, 4, 4, 1, 2, 5, 1, None],
]
UNITS = [list(col) for col in zip(*_K, strict=True)]


def test_krippendorff_alpha_published_values():
    assert agreement.krippendorff_alpha(UNITS, "nominal") == pytest.approx(0.743, abs=5e-4)
    assert agreement.krippendorff_alpha(UNITS, "interval") == pytest.approx(0.849, abs=5e-4)


def test_krippendorff_alpha_perfect_and_undefined():
    assert agreement.krippendorff_alpha([["A", "A"], ["B", "B", None]]) == 1.0
    assert math.isnan(agreement.krippendorff_alpha([["A", None]]))


def test_ccc():
    rng = np.random.default_rng(0)
    x = rng.uniform(-1, 1, 100)
    assert agreement.ccc(x, x) == pytest.approx(1.0)
    assert agreement.ccc(x - x.mean(), x.mean() - x) == pytest.approx(-1.0)
    y = 0.5 * x + 0.2 + rng.normal(0, 0.1, 100)
    expected = 2 * np.cov(x, y, bias=True)[0, 1] / (x.var() + y.var() + (x.mean() - y.mean()) ** 2)
    assert agreement.ccc(x, y) == pytest.approx(expected)
    # A constant offset lowers CCC but not Pearson's r.
    assert agreement.ccc(x, x + 0.5) < 0.9 < np.corrcoef(x, x + 0.5)[0, 1]
    assert agreement.ccc([0.1, np.nan, 0.3], [0.1, 0.2, 0.3]) == pytest.approx(1.0)
