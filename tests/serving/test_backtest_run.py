"""The backtest from a panel with a given probability series, and the gate's metrics."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta

import numpy as np
import polars as pl
import pytest

from oihedge.features.registry import get_spec
from oihedge.features.screening import validate
from oihedge.models.label_params import LabelConfig
from oihedge.pipelines.cli.backtest import backtest_settings
from oihedge.pipelines.cli.config import load_config
from oihedge.serving.backtest.run import backtest_panel, panel_gate_metrics

CFG = load_config(env={})
LABELS = LabelConfig.from_mapping(CFG.labels.model_dump(), CFG.universe.altcoins)
WEIGHTS = {"BTC": 0.5, "ETH": 0.3, "NEAR": 0.2}


@pytest.fixture(scope="module")
def panel() -> pl.DataFrame:
    from oihedge.pipelines.sim.simulate import SimulationConfig, simulate

    result = simulate(SimulationConfig(days=8, seed=5, bar=timedelta(minutes=5)))
    return validate(result.panel, bar=timedelta(minutes=5), arrival_order=True).valid


@pytest.fixture(scope="module")
def run(panel):
    keys = panel.select("ts", "symbol").unique()
    start = keys["ts"].min() + timedelta(days=2)
    # no probability for two days, then a constant, high one
    probability = keys.with_columns(
        pl.when(pl.col("ts") >= start).then(0.9).otherwise(None).alias("p")
    )
    settings = backtest_settings(CFG, WEIGHTS)
    return backtest_panel(
        panel, settings, spec=get_spec("core"), labels=LABELS, probability=probability
    ), start


def test_the_window_starts_at_the_first_probability(run):
    result, start = run
    assert result.result.start == start
    assert result.walk_forward is None
    assert set(result.seconds) == {"features", "labels", "market", "policies"}


def test_a_constant_high_probability_hedges_every_symbol(run):
    result, _ = run
    bars = result.result.runs["model"].bars
    hedged = bars.group_by("symbol").agg((pl.col("hedge_usd") > 0).mean().alias("share"))
    assert (hedged["share"] > 0.5).all()


def test_gate_metrics_from_the_panel_match_the_table(panel, run):
    result, start = run
    got = panel_gate_metrics(
        panel,
        result.features,
        result.probability,
        result.result.settings,
        max_staleness=result.spec.params.max_staleness,
        events=result.events,
        start=start,
    )
    rows = {r["policy"]: r for r in result.result.table().iter_rows(named=True)}
    row = rows["model"]
    for key in ("worst_24h_loss", "fees_slippage_annual", "hedge_cost_annual"):
        assert got[key] == pytest.approx(row[key])
    # the tail at equal mean hedge: against the static hedge of the model's mean size
    assert got["static_matched_worst_24h_loss"] == pytest.approx(
        rows["static_matched"]["worst_24h_loss"]
    )
    assert got["tail_excess"] == pytest.approx(
        got["worst_24h_loss"] - got["static_matched_worst_24h_loss"]
    )


def test_a_registered_scorer_is_priced_with_the_severity_it_carries(panel, run):
    """`oihedge backtest --model`: the model's card severity reaches the policy."""
    result, start = run
    settings = replace(backtest_settings(CFG, WEIGHTS), policies=("model",), model_budgets=())

    def scorer(table: pl.DataFrame) -> np.ndarray:
        return np.where((table["ts"] >= start).to_numpy(), 0.03, np.nan)

    def entry_levels(severity_k: float | None) -> dict[str, float]:
        scored = backtest_panel(
            panel,
            settings,
            spec=get_spec("core"),
            labels=LABELS,
            scorer=scorer,
            severity_k=severity_k,
        )
        got = scored.probability.filter(pl.col("ts") >= start)["severity_k"]
        assert got.is_null().all() if severity_k is None else (got == severity_k).all()
        return {
            "time_hedged": scored.result.table()["time_hedged"][0],
            "trades": scored.result.table()["trades"][0],
        }

    # a severity four times the configured stress_k (3) quarters the entry level: p 0.03
    # hedges more of the time than with the policy's own severity
    own, deep = entry_levels(None), entry_levels(12.0)
    assert deep["time_hedged"] > own["time_hedged"]
