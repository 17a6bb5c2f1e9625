"""The promotion gate's hedge side: tail loss at equal mean hedge, fees and slippage, a
policy that never leaves its baseline, and `train`'s check of the probability against the
policy's entry level."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta

import numpy as np
import pandas as pd
import polars as pl
import pytest

from oihedge.features.registry import get_spec
from oihedge.features.screening import validate
from oihedge.models.gate import gate
from oihedge.models.label_params import LabelConfig
from oihedge.models.workflow import prepare
from oihedge.pipelines.sim.simulate import SimulationConfig, simulate
from oihedge.serving.backtest.engine import BacktestSettings
from oihedge.serving.backtest.gate import probability_vs_entry
from oihedge.serving.backtest.run import panel_gate_metrics, window_probability
from oihedge.serving.policy.costs import CostModel
from oihedge.serving.policy.params import PolicyParams

MARGINS = {"pr_auc": 0.0, "brier": 0.0, "worst_24h_loss": 0.0, "hedge_cost_annual": 0.0}


@pytest.fixture(scope="module")
def window():
    panel = simulate(SimulationConfig(days=16, seed=7)).panel
    panel = validate(panel, bar=timedelta(minutes=5), arrival_order=True).valid
    labels = LabelConfig(altcoins=frozenset({"NEAR"}))
    prepared = prepare(panel, get_spec("core"), labels, holdout_fraction=0.4)
    start = prepared.holdout.frame["ts"].min()
    symbols = sorted(prepared.features["symbol"].unique().to_list())
    settings = BacktestSettings(
        portfolio_usd=1e6,
        weights={s: 1.0 for s in symbols},
        params={s: PolicyParams() for s in symbols},
        costs=CostModel(),
    )

    def metrics(p: float) -> dict[str, float]:
        probability = (
            prepared.features.filter(pl.col("ts") >= start)
            .select("ts", "symbol")
            .with_columns(pl.lit(p, dtype=pl.Float64).alias("p"))
        )
        return panel_gate_metrics(
            panel,
            prepared.features,
            probability,
            settings,
            max_staleness=prepared.spec.params.max_staleness,
            events=prepared.events,
            start=start,
        )

    return metrics


def test_a_challenger_whose_probability_is_all_zero_is_refused(window):
    zero = window(0.0)
    assert zero["events"] > 0  # label events occur on the held-out window
    # the policy's ordinary (volatility) part may hedge, but the probability never did
    assert zero["cascade_time"] == 0.0
    verdict = gate({"pr_auc": 0.5, "brier": 0.01, **zero}, None, MARGINS, window="w")
    assert all(r.passed for r in verdict.rows) and not verdict.passed
    assert len(verdict.refusals) == 1
    assert "never leaves its baseline" in verdict.refusals[0]
    assert verdict.as_dict()["refusals"] == list(verdict.refusals)

    hedging = window(0.5)
    assert hedging["cascade_time"] > 0.5 and hedging["trades"] > 0
    verdict = gate({"pr_auc": 0.5, "brier": 0.01, **hedging}, None, MARGINS, window="w")
    assert verdict.passed and verdict.refusals == ()


def test_the_hedge_gate_metrics_are_the_frontier_s(window):
    got = window(0.5)
    assert got["tail_excess"] == pytest.approx(
        got["worst_24h_loss"] - got["static_matched_worst_24h_loss"], abs=1e-15
    )
    assert got["hedge_cost_annual"] == pytest.approx(
        got["fees_slippage_annual"] + got["funding_annual"], abs=1e-12
    )
    # the former margin keys set the new metrics
    verdict = gate(got, None, MARGINS, window="w")
    assert [r.metric for r in verdict.rows] == ["tail_excess", "fees_slippage_annual"]


def test_window_probability_carries_the_model_s_severity():
    class Constant:
        def predict(self, frame: pd.DataFrame) -> pd.DataFrame:
            return pd.DataFrame({"p_cascade": np.full(len(frame), 0.02)})

    t0 = datetime(2025, 1, 1, tzinfo=UTC)
    features = pl.DataFrame(
        {"ts": [t0, t0 + timedelta(hours=1)], "symbol": ["BTC", "BTC"], "f": [1.0, 2.0]}
    )
    with_k = window_probability(features, ("f",), Constant(), t0, severity_k=6.0)
    assert with_k["severity_k"].to_list() == [6.0, 6.0] and with_k["p"].to_list() == [0.02] * 2
    without = window_probability(features, ("f",), Constant(), t0)
    assert without["severity_k"].null_count() == 2


def _rows(n: int = 48) -> pl.DataFrame:
    t0 = datetime(2025, 1, 1, tzinfo=UTC)
    return pl.DataFrame(
        {
            "ts": [t0 + timedelta(hours=i) for i in range(n)],
            "symbol": ["BTC"] * n,
            # 3 % per sqrt(day): ~57 % a year
            "vol_rv_24h_pct": [3.0] * n,
            "vol_rv_4h_pct": [3.0] * n,
            "vol_rv_7d_pct": [3.0] * n,
        }
    )


def test_train_warns_when_the_probability_never_reaches_the_entry_level():
    rows = _rows()
    check = probability_vs_entry(
        rows,
        np.full(rows.height, 0.001),
        {"BTC": PolicyParams()},
        severity_k=None,
        window="2025-01-01/2025-01-02",
        calibrator_max=0.002,
    )
    assert check["share_at_entry"] == 0.0 and check["bars"] == rows.height
    assert check["warning"] == check["line"]
    assert check["line"].startswith(
        "warning: the calibrated probability never reaches the policy's entry level on "
        "2025-01-01/2025-01-02 (max p 0.001 < min p_entry "
    )
    assert check["min_p_entry"] > 0.001


def test_train_reports_the_share_of_bars_at_the_entry_level():
    rows = _rows()
    p = np.where(np.arange(rows.height) % 4 == 0, 0.9, 0.0)
    check = probability_vs_entry(
        rows, p, {"BTC": PolicyParams()}, severity_k=6.0, window="w", calibrator_max=0.95
    )
    assert check["warning"] is None
    assert check["share_at_entry"] == pytest.approx(0.25)
    assert check["line"].startswith("entry level: 25.0% of the held-out bars on w have p >=")
    # a larger fitted severity halves the entry level (as long as no floor binds)
    low = probability_vs_entry(rows, p, {"BTC": PolicyParams()}, severity_k=3.0, window="w")
    assert check["median_p_entry"] == pytest.approx(low["median_p_entry"] / 2, rel=1e-9)
    assert not math.isnan(check["max_p"])


def test_an_entry_check_that_cannot_be_made_says_why():
    from types import SimpleNamespace

    from oihedge.pipelines.cli.models import entry_check

    outcome = SimpleNamespace(prepared=None, evaluation=SimpleNamespace(window="w"))
    check = entry_check(outcome, cfg=None)  # type: ignore[arg-type]
    assert check["warning"] is None and check["line"].startswith("entry level: not checked (")
