"""`oihedge backtest` end to end on a small simulated panel, and its argument handling."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path

import polars as pl
import pytest

from oihedge.pipelines.cli.backtest import CliError, parse_weights
from oihedge.pipelines.cli.common import resolve_weights
from oihedge.pipelines.cli.config import load_config
from oihedge.pipelines.cli.main import main


@pytest.fixture(scope="module")
def sim_panel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from oihedge.pipelines.sim.simulate import SimulationConfig, simulate
    from oihedge.pipelines.store import PanelStore

    folder = tmp_path_factory.mktemp("sim")
    result = simulate(SimulationConfig(days=21, seed=3, bar=timedelta(minutes=5)))
    PanelStore(folder).append(result.panel, source="test", arrival_order=True)
    truth = folder / "_truth" / "cascades.parquet"
    truth.parent.mkdir()
    result.events.write_parquet(truth)
    return folder


def test_backtest_writes_the_table_ledgers_and_plots(sim_panel, tmp_path, capsys):
    out = tmp_path / "bt"
    code = main(
        [
            "backtest",
            "--panel", str(sim_panel),
            "--out", str(out),
            "--train-window", "10d",
            "--retrain-every", "5d",
            "--weights", "BTC=0.5,ETH=0.3,NEAR=0.2",
            "--no-mlflow",
            "--json", str(tmp_path / "bt.json"),
        ]
    )  # fmt: skip
    printed = capsys.readouterr().out
    assert code == 0
    table = pl.read_csv(out / "metrics.csv")
    assert table["policy"].to_list() == [
        "model", "model_budget_2", "model_budget_10", "scheduled", "no_hedge",
        "static_25", "static_50", "static_75", "static_100", "static_matched",
        "vol_target_40", "vol_target_60", "vol_target_80", "vol_target_120",
        "vol_target_matched", "fixed_rule", "perfect_foresight",
    ]  # fmt: skip
    for policy in table["policy"]:
        assert policy in printed
    rows = {r["policy"]: r for r in table.iter_rows(named=True)}
    assert rows["no_hedge"]["time_hedged"] == 0 and rows["no_hedge"]["hedge_cost_annual"] == 0
    assert rows["static_50"]["time_hedged"] > 0.99
    report = json.loads((tmp_path / "bt.json").read_text())
    assert report["weights"] == {"BTC": 0.5, "ETH": 0.3, "NEAR": 0.2}
    assert report["refits"] and all(r["train_end"] < r["at"] for r in report["refits"])
    assert [c["holds"] in (True, False, None) for c in report["claims"]] == [True] * 5
    claims = (out / "claims.md").read_text()
    assert "continuous rebalancing" in claims and "| holds |" in claims
    assert json.loads((out / "claims.json").read_text()) == report["claims"]
    assert report["cascade_events"]["source"] in (
        "label events",
        "simulated cascades (ground truth)",
    )
    for name in ("equity", "drawdown", "hedge_fraction", "frontier", "equity_usd"):
        assert (out / "plots" / f"{name}.png").stat().st_size > 10_000
    for symbol in ("BTC", "ETH", "NEAR"):
        assert (out / "plots" / f"policy_{symbol}.png").stat().st_size > 10_000
    # the data files the dashboard charts: equity per policy, the cascades, the tiers
    equity = pl.read_parquet(out / "equity.parquet")
    assert equity["policy"].unique(maintain_order=True).to_list() == table["policy"].to_list()
    events = pl.read_parquet(out / "events.parquet")
    assert events.columns == ["symbol", "start", "end", "trough_ts", "source"]
    assert events.height == report["cascade_events"]["in_window"] > 0
    assert set(events["source"]) == {"simulated cascades (ground truth)"}
    bars = pl.read_parquet(out / "bars.parquet")
    model = bars.filter(pl.col("policy") == "model")
    assert model["p_entry"].is_not_null().all() and model["tier"].is_not_null().all()
    assert bars.filter(pl.col("policy") == "no_hedge")["p_entry"].is_null().all()
    trades = pl.read_parquet(out / "trades.parquet")
    assert set(trades["policy"]) <= set(table["policy"])
    assert ((trades["ts"] - trades["decided_at"]) >= timedelta(minutes=5)).all()


def test_parse_weights():
    assert parse_weights("BTC=0.5, ETH=0.5") == {"BTC": 0.5, "ETH": 0.5}
    for bad in ("BTC", "BTC=-1", "BTC=x", "=1", ","):
        with pytest.raises(CliError, match="--weights"):
            parse_weights(bad)


def test_default_weights_are_equal_over_the_universe_in_the_panel():
    cfg = load_config(env={})
    assert resolve_weights(cfg, ["BTC", "ETH", "SOL"]) == {"BTC": 1.0, "ETH": 1.0}
    with pytest.raises(
        CliError,
        match=r"none of universe.symbols \(BTC, ETH, NEAR\) is in the panel, which holds DOGE",
    ):
        resolve_weights(cfg, ["DOGE"])


@pytest.mark.parametrize("command", ["backtest", "live"])
def test_backtest_and_live_refuse_a_weighted_symbol_without_data(command):
    """One rule for both: the symbol is not dropped (its long would go unhedged while the
    others took its share of the portfolio)."""
    key = command.upper()
    cfg = load_config(
        env={f"OIHEDGE_{key}__WEIGHTS__BTC": "2", f"OIHEDGE_{key}__WEIGHTS__NEAR": "1"}
    )
    with pytest.raises(CliError, match=rf"{command}.weights: weighted symbols \['NEAR'\]"):
        resolve_weights(cfg, ["BTC", "ETH"], command=command)
    assert resolve_weights(cfg, ["BTC", "ETH", "NEAR"], command=command) == {
        "BTC": 2.0,
        "NEAR": 1.0,
    }


def test_unknown_weighted_symbol_is_one_line_exit_2(sim_panel, tmp_path, capsys):
    code = main(["backtest", "--panel", str(sim_panel), "--out", str(tmp_path),
                 "--weights", "SOL=1", "--no-mlflow"])  # fmt: skip
    assert code == 2
    assert "weighted symbols ['SOL'] are not in the panel" in capsys.readouterr().err
