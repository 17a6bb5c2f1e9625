"""The evaluation plots read at a glance for a rare event: the reliability diagram zoomed
to where the probabilities are, with their histogram; AP and the base rate in the legend."""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pytest

from oihedge.models.plots import (
    RELIABILITY_BINS,
    pr_curves,
    pr_figure,
    reliability,
    reliability_figure,
)


@pytest.fixture
def rare():
    rng = np.random.default_rng(3)
    p = rng.beta(0.6, 40, 20_000)  # a 1-2 % event: every probability far below 0.5
    y = (rng.random(p.size) < p).astype(int)
    return y, {"model": p, "flat": np.full(p.size, p.mean())}


def test_reliability_is_zoomed_to_the_probabilities_and_has_their_histogram(rare):
    y, scores = rare
    fig = reliability_figure(y, scores)
    diagram, hist = fig.axes
    lo, hi = diagram.get_xlim()
    assert lo == 0 and hi < 0.2  # not the empty 0..1 square
    (model_line,) = [line for line in diagram.get_lines() if line.get_label() == "model"]
    assert len(model_line.get_xdata()) == RELIABILITY_BINS  # every bin holds rows
    assert np.all(np.asarray(model_line.get_xdata()) <= hi)
    assert hist.get_yscale() == "log" and hist.patches
    assert "probability" in hist.get_xlabel() and "frequency" in diagram.get_ylabel()
    plt.close(fig)


def test_pr_legend_names_each_scorer_s_ap_and_the_base_rate(rare):
    y, scores = rare
    fig = pr_figure(y, scores)
    labels = [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
    assert any(label.startswith("model (AP 0.") for label in labels)
    assert f"base rate {y.mean():.3f}" in labels
    plt.close(fig)


def test_both_are_written_as_png(rare, tmp_path):
    y, scores = rare
    for path in (
        pr_curves(y, scores, tmp_path / "pr.png"),
        reliability(y, scores, tmp_path / "r.png"),
    ):
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
