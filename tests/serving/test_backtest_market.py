"""The backtest's market frame: reference price, volume, funding, freshness, stress bars."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta

import polars as pl
import pytest

from oihedge.features.schema import UTC_US
from oihedge.serving.backtest.market import MARKET_COLUMNS, build_market
from oihedge.serving.policy.signals import FUNDING_FALLBACK, VOL
from tests_support import make_panel

BAR = timedelta(minutes=5)
T0 = datetime(2025, 1, 1, tzinfo=UTC)
VENUES = ("binanceusdm", "bybit", "hyperliquid")


def panel() -> pl.DataFrame:
    rows = make_panel(n_bars=24, venues=VENUES, symbols=("BTC",))
    # venue i prints close x (1 + i / 100): the median is bybit's
    shift = pl.col("venue").replace_strict({v: 1 + i / 100 for i, v in enumerate(VENUES)})
    rows = rows.with_columns(pl.col("close") * shift, pl.col("volume_usd") * 0 + 1e6)
    # hyperliquid stops publishing after bar 12 (ts T0 + 13 bars)
    return rows.filter(~((pl.col("venue") == "hyperliquid") & (pl.col("ts") > T0 + 13 * BAR)))


def features(p: pl.DataFrame) -> pl.DataFrame:
    ts = sorted(p["ts"].unique())
    return pl.DataFrame(
        {
            "ts": pl.Series(ts, dtype=UTC_US),
            "symbol": ["BTC"] * len(ts),
            FUNDING_FALLBACK: [2.0] * len(ts),
            VOL: [3.0] * len(ts),
        }
    )


def market(cascades: pl.DataFrame | None = None, window: timedelta = timedelta(minutes=30)):
    p = panel()
    return build_market(
        p, features(p), max_staleness=2 * BAR, volume_window=window, cascades=cascades
    )


def test_columns_and_units():
    m = market()
    assert dict(m.schema) == MARKET_COLUMNS
    assert (m["funding_8h"] == 2e-4).all()  # bp -> fraction
    assert m["vol_ann"][0] == pytest.approx(0.03 * math.sqrt(365))


def test_price_is_the_median_close_over_venues():
    p, m = panel(), market()
    first = p.filter(pl.col("ts") == T0 + BAR)
    assert m["price"][0] == pytest.approx(first.filter(pl.col("venue") == "bybit")["close"][0])


def test_volume_is_a_typical_venue_over_the_window():
    m = market(window=timedelta(minutes=30))
    # 1e6 per bar per venue: the 30-minute sum reaches 6e6 from the sixth bar on
    assert m["volume_24h_usd"].to_list()[:7] == pytest.approx([1e6, 2e6, 3e6, 4e6, 5e6, 6e6, 6e6])


def test_fresh_venues_count_rows_known_in_time():
    m = market()
    fresh = dict(zip(m["ts"], m["fresh_venues"], strict=True))
    # the row closing at t is known 30 s after t: at t the newest known bar is t - 5m
    assert fresh[T0 + BAR] == 0  # nothing known yet at the first close
    assert fresh[T0 + 5 * BAR] == 3
    # hyperliquid's last row closes at 13 bars: fresh while <= 2 bars old
    assert fresh[T0 + 15 * BAR] == 3 and fresh[T0 + 16 * BAR] == 2


def test_stress_marks_the_cascade_windows_of_the_symbol():
    cascades = pl.DataFrame(
        {
            "symbol": ["BTC", "ETH"],
            "start": pl.Series([T0 + 5 * BAR, T0], dtype=UTC_US),
            "end": pl.Series([T0 + 7 * BAR, T0 + 24 * BAR], dtype=UTC_US),
        }
    )
    m = market(cascades)
    stressed = m.filter(pl.col("stress"))["ts"].to_list()
    assert stressed == [T0 + 5 * BAR, T0 + 6 * BAR, T0 + 7 * BAR]
    assert not market()["stress"].any()


def test_missing_feature_columns_are_named():
    p = panel()
    with pytest.raises(ValueError, match="lacks 'vol_rv_24h_pct'"):
        build_market(p, features(p).drop(VOL), max_staleness=2 * BAR)
