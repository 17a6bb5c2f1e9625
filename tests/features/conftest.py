"""Panels and feature builds shared by the feature tests (built once per session).

* ``sim_panel``: the simulator's panel (gaps and bad rows included), with simulated
  options rows for BTC and ETH on a venue of their own (``oihedge.pipelines.sim.options``), made harder on
  purpose: late bars that arrive after newer ones (out of order), a stretch of bars
  delivered together after an outage (in order but late: the venue is stale meanwhile),
  a dropped stretch, and a bar delivered twice.
* ``real_panel``: four weeks of the real hourly panel around the 2025-10-10 cascade,
  all six venues and five symbols.
* ``clean_panel``: a complete synthetic panel (every field on every bar) for warm-up.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from oihedge.features.online.engine import replay
from oihedge.features.registry import CORE_V2, FeatureBuild, build_features
from oihedge.features.schema import PANEL_SCHEMA

REAL_1H = Path(__file__).resolve().parents[3] / "shared" / "data" / "real-1h"
SIM_DAYS = 12
SIM_SEED = 12
REAL_START = datetime(2025, 9, 26, tzinfo=UTC)
REAL_END = datetime(2025, 10, 24, tzinfo=UTC)


def stress(panel: pl.DataFrame, bar: timedelta, seed: int) -> pl.DataFrame:
    """``panel`` with late, bursty, missing and repeated bars (see the module docstring)."""
    rng = np.random.default_rng(seed)
    frame = panel.with_row_index("_i")
    series = frame.select("venue", "symbol").unique().sort("venue", "symbol").rows()
    span = frame["ts"].max() - frame["ts"].min()  # type: ignore[operator]
    start = frame["ts"].min()

    def pick(i: int) -> tuple[str, str]:
        return series[int(rng.integers(len(series)))] if i < 0 else series[i % len(series)]

    # late bars: known three bars after their close, after two newer bars were known
    late = frame.filter(pl.col("ts") > start + 2 * bar).sample(8, seed=seed)["_i"]
    frame = frame.with_columns(
        pl.when(pl.col("_i").is_in(late.implode()))
        .then(pl.col("ts") + 3 * bar + timedelta(seconds=17))
        .otherwise(pl.col("known_at"))
        .alias("known_at")
    )
    # an outage: one hour of one series arrives at once, after the hour
    venue, symbol = pick(1)
    a = start + span * 0.4  # type: ignore[operator]
    b = a + timedelta(hours=1)
    in_burst = (
        (pl.col("venue") == venue) & (pl.col("symbol") == symbol) & pl.col("ts").is_between(a, b)
    )
    frame = frame.with_columns(
        pl.when(in_burst)
        .then(pl.lit(b) + timedelta(seconds=40))
        .otherwise(pl.col("known_at"))
        .alias("known_at")
    )
    # a gap: two hours of another series never arrive
    venue, symbol = pick(5)
    c = start + span * 0.6  # type: ignore[operator]
    frame = frame.filter(
        ~(
            (pl.col("venue") == venue)
            & (pl.col("symbol") == symbol)
            & pl.col("ts").is_between(c, c + timedelta(hours=2))
        )
    )
    # a revision delivered twice, later, with different values: refused (out of order)
    again = frame.sample(1, seed=seed + 1).with_columns(
        (pl.col("known_at") + 2 * bar).alias("known_at"),
        (pl.col("oi_usd") * 1.5).alias("oi_usd"),
    )
    return pl.concat([frame, again]).drop("_i").select(list(PANEL_SCHEMA))


def random_panel(
    n_bars: int = 300,
    venues: tuple[str, ...] = ("binanceusdm", "hyperliquid"),
    symbols: tuple[str, ...] = ("BTC", "ETH"),
    bar: timedelta = timedelta(hours=1),
    start: datetime = datetime(2025, 3, 1, tzinfo=UTC),
    seed: int = 0,
) -> pl.DataFrame:
    """A complete panel: every field on every bar, random walks, known 10 s after close."""
    rng = np.random.default_rng(seed)
    ts = [start + bar * (i + 1) for i in range(n_bars)]
    frames = []
    for s_i, symbol in enumerate(symbols):
        log_px = np.log(100.0 * (1 + 10 * s_i)) + np.cumsum(rng.normal(0, 0.004, n_bars))
        for v_i, venue in enumerate(venues):
            close = np.exp(log_px + rng.normal(0, 0.0005, n_bars))
            wick = np.abs(rng.normal(0, 0.003, (2, n_bars)))
            oi = 1e8 * (1 + v_i) * np.exp(np.cumsum(rng.normal(0, 0.003, n_bars)))
            liq = rng.exponential(1e5, (2, n_bars)) * (rng.random((2, n_bars)) < 0.3)
            frames.append(
                pl.DataFrame(
                    {
                        "ts": ts,
                        "venue": venue,
                        "symbol": symbol,
                        "close": close,
                        "high": close * (1 + wick[0]),
                        "low": close * (1 - wick[1]),
                        "volume_usd": rng.uniform(1e6, 2e6, n_bars),
                        "oi_usd": oi,
                        "funding_rate": rng.normal(1e-4, 5e-5, n_bars),
                        "spot_close": close * 0.9995,
                        "spot_depth_usd": rng.uniform(4e6, 6e6, n_bars),
                        "liq_long_usd": liq[0],
                        "liq_short_usd": liq[1],
                        "opt_oi_usd": oi * 0.3,
                        "opt_put_call_oi": rng.uniform(0.4, 0.9, n_bars),
                        "opt_iv_atm_pct": rng.uniform(40.0, 70.0, n_bars),
                        "opt_rr25_pct": rng.normal(-2.0, 1.0, n_bars),
                        "known_at": [t + timedelta(seconds=10) for t in ts],
                    },
                    schema=PANEL_SCHEMA,
                )
            )
    return pl.concat(frames)


@pytest.fixture(scope="session")
def sim_panel() -> pl.DataFrame:
    from oihedge.pipelines.sim.options import options_rows
    from oihedge.pipelines.sim.simulate import SimulationConfig, simulate

    result = simulate(SimulationConfig(days=SIM_DAYS, seed=SIM_SEED))
    # with a Deribit-like options venue for BTC and ETH (its rows carry nothing else)
    panel = pl.concat([result.panel, options_rows(result.panel, seed=SIM_SEED)])
    return stress(panel, bar=result.config.bar, seed=SIM_SEED)


@pytest.fixture(scope="session")
def sim_build(sim_panel: pl.DataFrame) -> FeatureBuild:
    return build_features(sim_panel, CORE_V2)


@pytest.fixture(scope="session")
def sim_online(sim_panel: pl.DataFrame) -> pl.DataFrame:
    return replay(sim_panel, CORE_V2)[0]


@pytest.fixture(scope="session")
def real_panel() -> pl.DataFrame:
    if not REAL_1H.exists():
        pytest.fail(f"the real data folder {REAL_1H} is missing (shared/ must sit beside the repo)")
    panel = pl.read_parquet(sorted(REAL_1H.glob("*.parquet")))
    return panel.filter(pl.col("ts") >= REAL_START, pl.col("ts") < REAL_END)


@pytest.fixture(scope="session")
def real_build(real_panel: pl.DataFrame) -> FeatureBuild:
    return build_features(real_panel, CORE_V2)


@pytest.fixture(scope="session")
def real_online(real_panel: pl.DataFrame) -> pl.DataFrame:
    return replay(real_panel, CORE_V2)[0]


@pytest.fixture(scope="session")
def clean_panel() -> pl.DataFrame:
    return random_panel(n_bars=12 * 24, seed=3)


@pytest.fixture
def make_random_panel() -> object:
    """:func:`random_panel`, for tests that need their own."""
    return random_panel
