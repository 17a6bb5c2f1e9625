"""The venue table: one entry per venue, checked for the facts the collectors rely on."""

from __future__ import annotations

from datetime import timedelta

import ccxt
import pytest

from oihedge.pipelines.ingest.venues import VENUES, bar_timeframe, timeframe_delta, venue


@pytest.mark.parametrize("spec", VENUES.values(), ids=list(VENUES))
def test_every_entry_is_a_usable_ccxt_venue(spec):
    exchange = getattr(ccxt, spec.id)()
    for method in ("fetchOHLCV", "fetchFundingRateHistory"):
        assert exchange.has[method], (spec.id, method)
    if spec.oi_mode == "history":
        assert exchange.has["fetchOpenInterestHistory"]
        assert spec.oi_timeframes and spec.oi_limit > 0
    else:
        assert exchange.has["fetchOpenInterest"]
    assert spec.ohlcv_limit > 0 and spec.funding_limit > 0 and spec.oi_sides in (1, 2)
    assert min(spec.lag_ohlcv, spec.lag_oi, spec.lag_funding) >= timedelta(0)
    assert spec.notes


def test_the_documented_page_limits():
    assert VENUES["binanceusdm"].oi_limit == 500 and VENUES["binanceusdm"].oi_max_age == timedelta(
        days=30
    )
    assert VENUES["bybit"].oi_limit == 200
    assert VENUES["okx"].oi_limit == 100 and VENUES["okx"].oi_timeframes == ("5m", "1h", "1d")
    assert VENUES["hyperliquid"].oi_mode == "snapshot"


def test_unified_symbols():
    assert VENUES["binanceusdm"].perp_symbol("BTC") == "BTC/USDT:USDT"
    assert VENUES["hyperliquid"].perp_symbol("ETH") == "ETH/USDC:USDC"
    assert VENUES["hyperliquid"].spot_symbol("BTC") is None


@pytest.mark.parametrize(
    ("venue_id", "bar", "expected"),
    [
        ("okx", "1h", "1h"),
        ("okx", "15m", "5m"),
        ("binanceusdm", "15m", "15m"),
        ("bybit", "2h", "1h"),
    ],
)
def test_the_oi_timeframe_is_the_coarsest_that_divides_the_bar(venue_id, bar, expected):
    assert VENUES[venue_id].oi_timeframe(timeframe_delta(bar)) == expected


def test_errors_name_the_bad_value():
    with pytest.raises(ValueError, match="no OI history timeframe divides the bar 0:07:00"):
        VENUES["okx"].oi_timeframe(timedelta(minutes=7))
    with pytest.raises(ValueError, match="unknown venue 'kraken'"):
        venue("kraken")
    with pytest.raises(ValueError, match="got '5x'"):
        timeframe_delta("5x")
    assert (
        bar_timeframe(timedelta(hours=4)) == "4h" and bar_timeframe(timedelta(minutes=90)) == "90m"
    )
