"""The trader's backtest plots, read back from the figures: the portfolio in USD with the
cascades marked and its drawdown, and the per-symbol price / probability / tiers / hedge
panel, on the hand-built cascade (where the policy's entry level and tiers are known)."""

from __future__ import annotations

from datetime import timedelta

import matplotlib.dates as mdates
import matplotlib.pyplot as plt
import numpy as np
import polars as pl
import pytest
from backtest_cascade import PATH, TS, N, frames

from oihedge.features.schema import UTC_US
from oihedge.serving.backtest.engine import BacktestSettings, run_backtest
from oihedge.serving.backtest.trader_plots import (
    TIER_COLOURS,
    equity_usd,
    equity_usd_figure,
    policy_figure,
    policy_panels,
)
from oihedge.serving.policy.costs import CostModel
from oihedge.serving.policy.params import PolicyParams

POLICIES = ("model", "no_hedge", "static_matched", "vol_target_matched", "static_50")


@pytest.fixture(scope="module")
def result():
    settings = BacktestSettings(
        portfolio_usd=1_000_000.0,
        weights={"BTC": 1.0},
        params={"BTC": PolicyParams()},
        costs=CostModel(),
        static_fractions=(0.5,),
        policies=POLICIES,
    )
    f = frames(PATH)
    return run_backtest(f["market"], f["features"], settings, probability=f["probability"])


def _events(rows: list[tuple[str, int, int]]) -> pl.DataFrame:
    """Events ``(symbol, start bar, end bar)`` on the cascade's hourly grid."""
    return pl.DataFrame(
        {
            "symbol": [r[0] for r in rows],
            "start": [TS[0] + r[1] * timedelta(hours=1) for r in rows],
            "end": [TS[0] + r[2] * timedelta(hours=1) for r in rows],
        },
        schema={"symbol": pl.String, "start": UTC_US, "end": UTC_US},
    )


# the drop (bars 30-31), an ETH event (not in the portfolio), one after the window
EVENTS = _events([("BTC", 30, 31), ("ETH", 10, 11), ("BTC", N + 5, N + 6)])


def _line(ax: plt.Axes, label: str):
    (line,) = [x for x in ax.get_lines() if x.get_label() == label]
    return line


def test_equity_usd_draws_the_matched_policies_in_usd_with_the_cascades(result):
    fig = equity_usd_figure(result, EVENTS, events_source="simulated cascades (ground truth)")
    top, bottom = fig.axes
    drawn = [x.get_label() for x in top.get_lines() if not x.get_label().startswith(("_", "cas"))]
    # the default rows, in their order; static_50 is not one of them
    assert drawn == ["no_hedge", "model", "static_matched", "vol_target_matched"]
    model = result.runs["model"].equity
    assert np.allclose(_line(top, "model").get_ydata(), model["equity_usd"].to_numpy())
    assert _line(top, "no_hedge").get_ydata()[0] == pytest.approx(1_000_000.0)
    # unhedged, the portfolio falls from its peak at 103 to 82: in percent on the bottom
    assert min(_line(bottom, "no_hedge").get_ydata()) == pytest.approx(100 * (82 / 103 - 1))
    assert max(_line(bottom, "model").get_ydata()) == 0.0
    assert min(_line(bottom, "model").get_ydata()) > -19.0  # the hedge was on
    # one span per panel for the BTC event in the window; ETH and the later one left out
    assert len(top.patches) == len(bottom.patches) == 1
    marker = _line(top, "cascade BTC (1)")
    assert mdates.date2num(marker.get_xdata()[0]) == pytest.approx(mdates.date2num(TS[30]))
    assert "USD" in top.get_ylabel() and "%" in bottom.get_ylabel()
    assert bottom.get_xlabel() == "time (UTC)"
    assert "simulated cascades (ground truth) (1 in the window)" in top.get_title()
    plt.close(fig)


def test_equity_usd_without_the_usual_rows_or_events_draws_every_run(result, tmp_path):
    from dataclasses import replace

    only = replace(result, runs={"static_50": result.runs["static_50"]})
    fig = equity_usd_figure(only, None)
    assert [x.get_label() for x in fig.axes[0].get_lines()] == ["static_50"]  # no event lines
    assert len(fig.axes[0].patches) == 0
    plt.close(fig)
    path = equity_usd(result, EVENTS, tmp_path / "plots" / "equity_usd.png")
    assert path.read_bytes().startswith(b"\x89PNG")


def test_policy_panel_shows_price_probability_entry_level_tiers_and_hedge(result):
    fig = policy_figure(result, "BTC", EVENTS)
    price, prob, hedge = fig.axes
    bars = result.runs["model"].bars
    assert np.allclose(_line(price, "price").get_ydata(), PATH["price"])
    assert len(price.patches) == 1  # the BTC drop
    assert price.get_ylabel() == "BTC price (USD)"
    # the entry level the policy derived: 0.0660 on this path (see test_backtest)
    p_entry = _line(prob, "p_entry (derived)").get_ydata()
    assert np.allclose(p_entry, bars["p_entry"].to_numpy())
    assert p_entry[0] == pytest.approx(0.0660, abs=1e-4)
    assert np.allclose(_line(prob, "p (model)").get_ydata(), PATH["p"])
    assert prob.get_yscale() == "log" and prob.get_ylim()[1] == 1.0
    assert prob.get_ylim()[0] < 0.01  # the calm probability is on the axis
    # baseline and the four cascade tiers, as bands in probability
    bands = [c.get_label() for c in prob.collections]
    assert bands == [
        "baseline",
        "early (p/p_entry 1-2)",
        "elevated (p/p_entry 2-4)",
        "high (p/p_entry 4-8)",
        "full (>= 8)",
    ]
    assert "probability" in prob.get_ylabel()
    target = _line(hedge, "target").get_ydata()
    assert np.nanmax(target) == 1.0
    held = _line(hedge, "held").get_ydata()
    assert held[28:34] == pytest.approx([1.0] * 6)  # full from 28 to 33 (test_backtest)
    # the tiers held: high (24-26), full (27-32), each a shaded run on the hedge panel
    legend = [t.get_text() for t in hedge.get_legend().get_texts()]
    assert legend == ["target", "held", "held: high", "held: full"]
    assert len(hedge.patches) == 2
    spans = [p.get_facecolor()[:3] for p in hedge.patches]
    assert spans[1] == pytest.approx(plt.matplotlib.colors.to_rgb(TIER_COLOURS["full"]))
    assert "fraction of max" in hedge.get_ylabel() and hedge.get_xlabel() == "time (UTC)"
    plt.close(fig)


def test_policy_panel_needs_the_hedge_policy_s_run(result, tmp_path):
    with pytest.raises(ValueError, match=r"'no_hedge' run's bars lack \['p', 'p_entry', 'tier'\]"):
        policy_figure(result, "BTC", policy="no_hedge")
    paths = policy_panels(result, EVENTS, tmp_path)
    assert paths == {"policy_BTC": tmp_path / "policy_BTC.png"}
    assert paths["policy_BTC"].read_bytes().startswith(b"\x89PNG")
    assert policy_panels(result, EVENTS, tmp_path, policy="scheduled") == {}
