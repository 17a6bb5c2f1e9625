"""Normalisation of ccxt results into panel rows: units, bar times, funding, known_at."""

from __future__ import annotations

import math
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from oihedge.features.screening import validate
from oihedge.pipelines.ingest.normalise import (
    HOUR_MS,
    MalformedResponseError,
    funding_interval_ms,
    funding_rows,
    ohlcv_rows,
    oi_history_rows,
    oi_snapshot_rows,
    oi_usd,
    to_ms,
    to_panel,
)
from oihedge.pipelines.ingest.venues import VENUES
from oihedge.pipelines.store import PanelStore

BAR = timedelta(minutes=5)
T0 = to_ms(datetime(2024, 4, 10, tzinfo=UTC))
MIN5 = 300_000


def test_candles_close_at_open_plus_bar_and_open_candle_is_dropped():
    spec = VENUES["binanceusdm"]
    candles = [[T0, 1.0, 2.0, 0.5, 1.5, 10.0], [T0 + MIN5, 1.5, 1.6, 1.4, 1.55, 4.0]]
    page = ohlcv_rows(candles, spec=spec, symbol="BTC", bar=BAR, now_ms=T0 + MIN5 + 1000)
    frame = page.frame
    assert frame.height == 1  # the second candle closes at T0 + 10m, after now
    row = frame.row(0, named=True)
    assert to_ms(row["ts"]) == T0 + MIN5
    assert row["volume_usd"] == pytest.approx(10.0 * 1.5)  # base volume x close
    assert row["known_at"] - row["ts"] == spec.lag_ohlcv


def test_spot_candles_fill_spot_close_only():
    page = ohlcv_rows(
        [[T0, 1, 2, 0.5, 1.5, 10]],
        spec=VENUES["okx"],
        symbol="BTC",
        bar=BAR,
        now_ms=T0 + HOUR_MS,
        spot=True,
    )
    assert page.frame.columns == ["ts", "venue", "symbol", "spot_close", "known_at"]
    assert page.frame["spot_close"].to_list() == [1.5]


@pytest.mark.parametrize(
    ("venue", "amount", "value", "price", "expected"),
    [
        ("binanceusdm", 100.0, 6_000_000.0, None, 6_000_000.0),  # venue's USD value
        ("okx", 10_000.0, 6_000_000.0, None, 6_000_000.0),  # oiUsd, contracts ignored
        ("bybit", 100.0, None, 60_000.0, 6_000_000.0),  # coins x close
        ("hyperliquid", 100.0, None, 60_000.0, 3_000_000.0),  # coins x mark / 2 sides
    ],
)
def test_oi_is_usd_notional_of_one_side(venue, amount, value, price, expected):
    assert oi_usd(amount, value, spec=VENUES[venue], price=price) == pytest.approx(expected)


def test_contracts_unit_uses_contract_size():
    spec = replace(VENUES["okx"], oi_unit="contracts")
    assert oi_usd(10.0, None, spec=spec, price=100.0, contract_size=0.01) == pytest.approx(10.0)


def test_oi_history_needs_a_price_for_coin_units_and_counts_the_misses():
    entries = [
        {"timestamp": T0, "openInterestAmount": 10.0, "openInterestValue": None},
        {"timestamp": T0 + MIN5, "openInterestAmount": 11.0, "openInterestValue": None},
        {"timestamp": T0 + 60_000, "openInterestAmount": 12.0, "openInterestValue": None},
    ]
    page = oi_history_rows(entries, spec=VENUES["bybit"], symbol="BTC", bar=BAR, prices={T0: 2.0})
    assert page.frame["oi_usd"].to_list() == [20.0]
    assert page.without_price == 1  # T0 + 5m has no close; T0 + 1m is off the bar grid


def test_oi_snapshot_goes_on_the_bar_before_the_fetch_with_known_at_the_fetch_time():
    snap = {
        "openInterestAmount": 893.32721,
        "openInterestValue": None,
        "info": {"markPx": "67681.0"},
    }
    fetched = T0 + 2 * MIN5 + 17_000
    page = oi_snapshot_rows(
        snap, spec=VENUES["hyperliquid"], symbol="BTC", bar=BAR, fetched_ms=fetched
    )
    row = page.frame.row(0, named=True)
    assert to_ms(row["ts"]) == T0 + 2 * MIN5
    assert to_ms(row["known_at"]) == fetched
    assert row["oi_usd"] == pytest.approx(893.32721 * 67681.0 / 2)


@pytest.mark.parametrize(
    ("gap_h", "default_h", "expected_h"),
    [(8, 8, 8), (4, 8, 4), (1, 8, 1), (16, 8, 8), (None, 1, 1), (3, 8, 8)],
)
def test_funding_interval_from_the_gap_or_the_venue_default(gap_h, default_h, expected_h):
    gap = None if gap_h is None else gap_h * HOUR_MS + 5
    assert funding_interval_ms(gap, timedelta(hours=default_h)) == expected_h * HOUR_MS


def test_funding_is_normalised_to_8h_and_placed_on_floor_of_settlement():
    spec = VENUES["binanceusdm"]
    entries = [
        {"timestamp": T0 + 3, "fundingRate": 0.0001},  # 8h default for the first one
        {"timestamp": T0 + 4 * HOUR_MS + 2, "fundingRate": 0.0001},  # a 4h interval
    ]
    page, last = funding_rows(entries, spec=spec, symbol="BTC", bar=timedelta(hours=1))
    assert page.frame["funding_rate"].to_list() == pytest.approx([0.0001, 0.0002])
    assert [to_ms(t) for t in page.frame["ts"]] == [T0, T0 + 4 * HOUR_MS]
    assert all(k >= t for k, t in zip(page.frame["known_at"], page.frame["ts"], strict=True))
    assert last == T0 + 4 * HOUR_MS + 2


def test_hourly_funding_times_8_and_averaged_when_the_bar_is_longer():
    spec = VENUES["hyperliquid"]
    entries = [
        {"timestamp": T0 + h * HOUR_MS + 31, "fundingRate": 0.00001 * (h + 1)} for h in range(4)
    ]
    page, _ = funding_rows(
        entries, spec=spec, symbol="BTC", bar=timedelta(hours=4), previous_ms=T0 - HOUR_MS + 31
    )
    assert page.frame.height == 1
    assert page.frame["funding_rate"][0] == pytest.approx(8 * 0.000025)


@pytest.mark.parametrize(
    "candles",
    [[[None, 1, 2, 0.5, 1.5, 1]], [[T0, 1, 2]], ["garbage"], [[T0, 1, 2, 1, "x", 1]]],
)
def test_malformed_candles_raise_a_clear_error(candles):
    with pytest.raises(MalformedResponseError, match="binanceusdm BTC candle 0"):
        ohlcv_rows(candles, spec=VENUES["binanceusdm"], symbol="BTC", bar=BAR, now_ms=T0 + HOUR_MS)


def test_values_are_converted_not_repaired_so_the_store_quarantines_them(tmp_path):
    entries = [
        {"timestamp": T0, "openInterestAmount": None, "openInterestValue": -5.0},
        {"timestamp": T0 + MIN5, "openInterestAmount": None, "openInterestValue": math.nan},
        {"timestamp": T0 + 2 * MIN5, "openInterestAmount": None, "openInterestValue": None},
    ]
    page = oi_history_rows(entries, spec=VENUES["binanceusdm"], symbol="BTC", bar=BAR)
    assert page.frame.height == 2 and page.empty_values == 1
    report = PanelStore(tmp_path).append(to_panel(page.frame), bar=BAR, mode="update")
    assert report.quarantine_reasons == {"negative_oi_usd": 1, "non_finite_oi_usd": 1}


# -- properties ------------------------------------------------------------------------

amounts = st.floats(min_value=0, max_value=1e12, allow_nan=False)
prices = st.floats(min_value=1e-8, max_value=1e7, allow_nan=False)
raw_values = st.one_of(
    st.none(),
    st.floats(allow_nan=True, allow_infinity=True),
    st.floats(min_value=0, max_value=1e15),
)


@given(venue=st.sampled_from(sorted(VENUES)), amount=amounts, value=amounts, price=prices)
def test_valid_venue_values_always_give_finite_non_negative_oi(venue, amount, value, price):
    usd = oi_usd(amount, value, spec=VENUES[venue], price=price)
    assert usd is not None and math.isfinite(usd) and usd >= 0


@settings(max_examples=60, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(values=st.lists(raw_values, min_size=1, max_size=30), venue=st.sampled_from(sorted(VENUES)))
def test_no_oi_row_is_dropped_silently_and_none_invalid_is_accepted(values, venue):
    spec = VENUES[venue]
    entries = [
        {"timestamp": T0 + i * MIN5, "openInterestAmount": v, "openInterestValue": v}
        for i, v in enumerate(values)
    ]
    prices_by_ts = {T0 + i * MIN5: 100.0 for i in range(len(values))}
    page = oi_history_rows(entries, spec=spec, symbol="BTC", bar=BAR, prices=prices_by_ts)
    result = validate(to_panel(page.frame), bar=BAR)
    # every entry is a stored row, a quarantined row, or counted as carrying no value
    assert result.valid.height + result.n_quarantined + page.empty_values == len(values)
    oi = result.valid["oi_usd"]
    assert oi.is_finite().all() and (oi >= 0).all()


pages_strategy = st.lists(
    st.lists(st.integers(0, 40), min_size=0, max_size=12, unique=True),
    min_size=1,
    max_size=5,
)


def _close(i: int) -> float:
    return 100.0 + 3.0 * math.sin(i)


def _oi(i: int) -> float:
    return 1e9 * (1.5 + math.cos(i))


@settings(
    max_examples=20, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(pages=pages_strategy, data=st.data())
def test_reingesting_the_same_pages_is_idempotent(tmp_path_factory, pages, data):
    """Pages overlap as a venue's do (the same bar, the same value); writing them again,
    in any order, leaves the panel unchanged."""
    spec = VENUES["binanceusdm"]
    frames = []
    for bars in pages:
        candles = [[T0 + i * MIN5, _close(i), _close(i), _close(i), _close(i), 1.0] for i in bars]
        ois = [{"timestamp": T0 + (i + 1) * MIN5, "openInterestValue": _oi(i)} for i in bars]
        frames.append(
            ohlcv_rows(candles, spec=spec, symbol="BTC", bar=BAR, now_ms=T0 + 10**9).frame
        )
        frames.append(oi_history_rows(ois, spec=spec, symbol="BTC", bar=BAR).frame)
    store = PanelStore(tmp_path_factory.mktemp("idem"))
    for frame in frames:
        store.append(to_panel(frame), bar=BAR, mode="update")
    once = store.read()
    for frame in data.draw(st.permutations(frames)):
        store.append(to_panel(frame), bar=BAR, mode="update")
    twice = store.read()
    assert once.equals(twice)
    assert (once["oi_usd"].drop_nulls() >= 0).all()
