"""Backtest plots: the frontier from a metrics table (every policy family, a few rows, NaN
metrics), its input check, and write_plots' file list."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta
from pathlib import Path

import polars as pl
import pytest

from oihedge.features.schema import UTC_US
from oihedge.serving.backtest.engine import BacktestResult, BacktestSettings, PolicyRun
from oihedge.serving.backtest.plots import FRONTIER_COLUMNS, frontier, write_plots
from oihedge.serving.policy.params import PolicyParams

PNG = b"\x89PNG\r\n\x1a\n"


def frontier_table(names: list[str]) -> pl.DataFrame:
    """A metrics table whose tail loss falls as the hedge grows."""
    hedge = [i / (len(names) + 1) for i in range(len(names))]
    return pl.DataFrame(
        {
            "policy": names,
            "mean_hedge_ratio": hedge,
            "worst_24h_loss": [0.2 * (1 - h) for h in hedge],
            "cvar_95_daily": [0.05 * (1 - h) ** 2 for h in hedge],
            "total_return": 0.0,
        }
    )


EVERY_ROW = [
    "no_hedge",
    *(f"static_{p}" for p in (0, 25, 50, 75, 100)),
    *(f"vol_target_{p}" for p in (20, 40, 60)),
    "model",
    *(f"model_budget_{p}" for p in (2, 5, 10)),
    "static_matched",
    "vol_target_matched",
    "fixed_rule",
    "scheduled",
    "perfect_foresight",
    "something_new",
]


@pytest.mark.parametrize(
    "names",
    [EVERY_ROW, ["no_hedge", "model", "static_50"], ["fixed_rule"], []],
    ids=["every-row", "a-few", "one", "none"],
)
def test_frontier_writes_a_png(tmp_path: Path, names: list[str]) -> None:
    path = frontier(frontier_table(names), tmp_path / "plots" / "frontier.png")
    assert path == tmp_path / "plots" / "frontier.png"
    assert path.read_bytes().startswith(PNG)


def test_frontier_skips_nan_metrics(tmp_path: Path) -> None:
    table = frontier_table(EVERY_ROW).with_columns(
        pl.when(pl.col("policy").str.starts_with("model"))
        .then(math.nan)
        .otherwise(pl.col("cvar_95_daily"))
        .alias("cvar_95_daily"),
        pl.when(pl.col("policy") == "scheduled")
        .then(math.nan)
        .otherwise(pl.col("mean_hedge_ratio"))
        .alias("mean_hedge_ratio"),
    )
    path = frontier(table, tmp_path / "frontier.png", title="custom")
    assert path.stat().st_size > 0


def test_frontier_names_the_missing_columns(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"lacks the column\(s\) \['cvar_95_daily'\]"):
        frontier(frontier_table(["model"]).drop("cvar_95_daily"), tmp_path / "f.png")
    assert FRONTIER_COLUMNS[0] == "policy"


def test_write_plots_adds_the_frontier(tmp_path: Path) -> None:
    t0, n = datetime(2025, 1, 1, tzinfo=UTC), 30
    ts = pl.Series([t0 + i * timedelta(hours=1) for i in range(n)], dtype=UTC_US)
    price = [100.0 + i for i in range(n)]
    runs = {}
    for name, f in (("no_hedge", 0.0), ("static_50", 0.5)):
        pnl = [0.0] + [1_000.0 * (1 - f)] * (n - 1)
        bars = pl.DataFrame(
            {
                "ts": ts,
                "symbol": "BTC",
                "price": price,
                "long_usd": [1_000.0 * p for p in price],
                "hedge_usd": [f * 1_000.0 * p for p in price],
                "target_fraction": f,
                "long_pnl": [0.0] + [1_000.0] * (n - 1),
                "hedge_pnl": [0.0] + [-1_000.0 * f] * (n - 1),
                "fee_usd": 0.0,
                "slippage_usd": 0.0,
                "funding_usd": 0.0,
                "pnl_usd": pnl,
            }
        )
        equity = bars.select(
            "ts",
            (100_000.0 + pl.col("pnl_usd").cum_sum()).alias("equity_usd"),
            "long_usd",
            "hedge_usd",
        )
        trades = pl.DataFrame(
            schema={"ts": UTC_US, "symbol": pl.String, "notional_usd": pl.Float64}
        )
        runs[name] = PolicyRun(name, bars, trades, equity)
    settings = BacktestSettings(
        portfolio_usd=100_000.0, weights={"BTC": 1.0}, params={"BTC": PolicyParams()}
    )
    result = BacktestResult(runs, settings, ts[0], ts[-1], timedelta(hours=1))
    events = pl.DataFrame(
        {
            "symbol": ["BTC"],
            "start": [t0 + 5 * timedelta(hours=1)],
            "end": [t0 + 8 * timedelta(hours=1)],
        },
        schema={"symbol": pl.String, "start": UTC_US, "end": UTC_US},
    )
    paths = write_plots(result, events, tmp_path)
    # the trader's USD equity too; no per-symbol policy panel without a model run
    assert set(paths) == {"equity", "equity_usd", "drawdown", "hedge", "frontier"}
    assert paths["frontier"] == tmp_path / "frontier.png"
    assert all(p.read_bytes().startswith(PNG) for p in paths.values())
    table = frontier_table(["no_hedge", "model"])
    assert write_plots(result, events, tmp_path / "given", table=table)["frontier"].exists()
