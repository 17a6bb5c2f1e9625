"""The hand-built cascade the backtest tests share: 48 hourly bars of one symbol where the
right answer is known (a calm day, a build-up, a 20 % drop, normal again)."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta
from pathlib import Path

import polars as pl

from oihedge.features.schema import UTC_US
from oihedge.serving.backtest.market import MARKET_COLUMNS
from oihedge.serving.policy.signals import (
    DIVERGENCE,
    FUNDING,
    FUNDING_FALLBACK,
    FUNDING_Z,
    OI_DEV,
    VOL_WINDOWS,
)

BAR = timedelta(hours=1)
T0 = datetime(2025, 1, 1, tzinfo=UTC)
N = 48
UNITS = 10_000.0  # $1M bought at 100
VOLUME = 1e9  # 24 h volume, USD
VOL_ANN = 0.6  # 4 h tail loss 2.1 % < the 5 % budget: no volatility hedge
RATE_8H = 1e-4  # funding, per 8 h: the short receives it
PATH = {
    # calm day, a build-up (early signal at 24, extreme at 27), the drop (30, 31), normal
    "price": [100.0] * 24 + [100.5, 101, 101.5, 102, 102.5, 103, 95, 82] + [83.0] * 16,
    "p": [0.01] * 24 + [0.40] * 3 + [0.90] * 5 + [0.01] * 16,
    "div_pp": [2.0] * 24 + [9.0] * 6 + [12.0] * 2 + [1.0] * 16,
    "z": [0.2] * 24 + [2.5] * 6 + [3.0] * 2 + [0.3] * 16,
    "stress": [False] * 30 + [True] * 2 + [False] * 16,
    "y": [0] * 27 + [1] * 4 + [0] * 17,
}
TS = [T0 + i * BAR for i in range(N)]


def frames(path: dict[str, list] = PATH, symbol: str = "BTC") -> dict[str, pl.DataFrame]:
    """Market, features, probability and labels of the path, one symbol."""
    keys = {"ts": pl.Series(TS, dtype=UTC_US), "symbol": [symbol] * N}
    market = pl.DataFrame(
        {
            **keys,
            "price": path["price"],
            "volume_24h_usd": [VOLUME] * N,
            "funding_8h": [RATE_8H] * N,
            "vol_ann": [VOL_ANN] * N,
            "fresh_venues": [3] * N,
            "stress": path["stress"],
        },
        schema=MARKET_COLUMNS,
    )
    features = pl.DataFrame(
        {
            **keys,
            DIVERGENCE: path["div_pp"],
            OI_DEV: [1.0] * N,
            FUNDING: [1.0] * N,
            FUNDING_FALLBACK: [1.0] * N,
            FUNDING_Z: path["z"],
            **{v: [100 * VOL_ANN / math.sqrt(365)] * N for v in VOL_WINDOWS},
        }
    )
    probability = pl.DataFrame({**keys, "p": path["p"]})
    labels = pl.DataFrame(
        {**keys, "y_cascade_4h": path["y"]}, schema_overrides={"y_cascade_4h": pl.Int8}
    )
    return {"market": market, "features": features, "probability": probability, "labels": labels}


def write_report(folder: Path) -> Path:
    """A report as `oihedge backtest --out` leaves it in ``folder`` (metrics, ledgers,
    equity, cascade events, plots: :func:`oihedge.serving.backtest.outputs.write_outputs`), from
    the cascade path of BTC and NEAR through every policy; the label events are the drop
    (bars 30-31) of each."""
    from oihedge.serving.backtest.engine import BacktestSettings, run_backtest
    from oihedge.serving.backtest.outputs import write_outputs
    from oihedge.serving.backtest.run import PanelBacktest
    from oihedge.serving.policy.params import PolicyParams

    settings = BacktestSettings(
        portfolio_usd=1_000_000.0,
        weights={"BTC": 0.6, "NEAR": 0.4},
        params={"BTC": PolicyParams(), "NEAR": PolicyParams()},
        static_fractions=(0.25, 0.5, 1.0),
        vol_targets=(0.4, 0.8),
        model_budgets=(0.02,),
    )
    parts = [frames(symbol="BTC"), frames(symbol="NEAR")]
    f = {k: pl.concat([p[k] for p in parts]) for k in parts[0]}
    result = run_backtest(
        f["market"], f["features"], settings, probability=f["probability"], labels=f["labels"]
    )
    events = pl.DataFrame(
        {
            "symbol": ["BTC", "NEAR"],
            "start": pl.Series([TS[30]] * 2, dtype=UTC_US),
            "end": pl.Series([TS[31]] * 2, dtype=UTC_US),
            "trough_ts": pl.Series([TS[31]] * 2, dtype=UTC_US),
        }
    )
    run = PanelBacktest(
        result, f["features"], f["labels"], events, f["market"], f["probability"], None, None
    )
    report = {"window": f"{result.start} .. {result.end}", "portfolio_usd": 1_000_000.0}
    write_outputs(run, result.table(events=events), report, folder, folder / "no-panel")
    return folder
