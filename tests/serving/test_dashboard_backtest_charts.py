"""The Backtest page's chart data from a report's files: the frontier's families and
points, the equity and drawdown thinned after the drawdown is measured, the hedge and
the model's tiers per symbol, the cascades with their source."""

from __future__ import annotations

import math

import polars as pl
import pytest
from backtest_cascade import N, write_report

from oihedge.serving.dashboard.backtest_charts import backtest_charts, frontier_series


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    return write_report(tmp_path_factory.mktemp("report"))


def test_the_frontier_groups_families_and_leaves_nan_rows_out():
    table = pl.DataFrame(
        {
            "policy": ["model", "static_50", "static_25", "model_budget_2", "no_hedge", "x"],
            "mean_hedge_ratio": [0.2, 0.5, 0.25, 0.1, 0.0, math.nan],
            "worst_24h_loss": [0.05, 0.1, 0.15, 0.08, 0.2, 0.1],
            "cvar_95_daily": [0.04, 0.08, 0.12, 0.06, 0.17, 0.1],
        }
    )
    traces = {t["name"]: t for t in frontier_series(table)}
    assert list(traces) == ["static", "model (risk budgets)", "no_hedge"]  # x: NaN hedge
    assert traces["static"]["policies"] == ["static_25", "static_50"]  # by mean hedge
    assert traces["model (risk budgets)"]["policies"] == ["model_budget_2", "model"]
    assert traces["model (risk budgets)"]["x"] == pytest.approx([10.0, 20.0])
    assert traces["no_hedge"] == {
        "name": "no_hedge",
        "policies": ["no_hedge"],
        "x": [0.0],
        "worst": [20.0],
        "cvar": [17.0],
        "line": False,
    }
    with pytest.raises(ValueError, match=r"lacks the column\(s\) \['cvar_95_daily'\]"):
        frontier_series(table.drop("cvar_95_daily"))


def test_the_report_s_files_become_every_chart(report):
    charts, problems = backtest_charts(report, 3000)
    assert problems == []
    assert sum(len(t["policies"]) for t in charts["frontier"]) == 13  # every policy
    assert list(charts["equity"]) == ["no_hedge", "model", "static_matched", "vol_target_matched"]
    assert all(len(e["ts"]) == len(e["usd"]) == N for e in charts["equity"].values())
    assert min(charts["equity"]["no_hedge"]["drawdown_pct"]) == pytest.approx(100 * (82 / 103 - 1))
    assert charts["cascades_source"] == "label events"
    assert [(c["symbol"], c["start"]) for c in charts["cascades"]] == [
        ("BTC", "2025-01-02 06:00:00"),
        ("NEAR", "2025-01-02 06:00:00"),
    ]
    assert charts["cascades"][0]["usd"] == pytest.approx(charts["equity"]["no_hedge"]["usd"][30])
    btc = charts["hedge"]["BTC"]
    assert [b["tier"] for b in btc["bands"]] == ["high", "full"]
    assert max(btc["policies"]["model"]) == pytest.approx(1.0)


def test_thinning_keeps_the_last_point_and_the_full_drawdown(report):
    charts, _ = backtest_charts(report, 10)
    no_hedge = charts["equity"]["no_hedge"]
    assert len(no_hedge["ts"]) <= 11 and no_hedge["ts"][-1] == "2025-01-02 23:00:00"
    full, _ = backtest_charts(report, 3000)
    assert no_hedge["drawdown_pct"][-1] == full["equity"]["no_hedge"]["drawdown_pct"][-1]


def test_a_report_without_the_data_files_says_what_is_missing(report, tmp_path):
    (tmp_path / "metrics.csv").write_text((report / "metrics.csv").read_text())
    charts, problems = backtest_charts(tmp_path, 3000)
    assert len(charts["frontier"]) > 0 and charts["equity"] == {}
    assert [p.split(":")[0] for p in problems] == ["equity", "cascades", "hedge"]
    assert "no events.parquet" in problems[1]
