"""Sources of bars: the replay of a stored panel and the live REST polling of the venues
(through ccxt over the recorded/synthetic HTTP transport of ``tests/ccxt_replay.py``: the
HTTP layer is patched, never a ccxt method)."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta

import polars as pl
import pytest
from ccxt_replay import Reply, no_sockets, sync_collectors  # noqa: F401 - fixture
from ccxt_venues import SyntheticVenues, venue_router

from oihedge.pipelines.ingest.collectors import RetryPolicy
from oihedge.pipelines.ingest.normalise import to_ms
from oihedge.pipelines.store import PanelStore
from oihedge.serving.feeds._base import check_row
from oihedge.serving.feeds.replay import ReplaySource
from oihedge.serving.feeds.rest import LiveSource, classify_error
from tests_support import make_bad_rows, make_panel

BAR = timedelta(minutes=5)
VENUES = ("binanceusdm", "bybit", "hyperliquid", "okx")
T = datetime(2024, 4, 10, 9, 0, tzinfo=UTC)  # a bar close
US = timedelta(microseconds=1)


def _us(moment: datetime) -> int:
    return (moment - datetime(1970, 1, 1, tzinfo=UTC)) // US


# -- replay ----------------------------------------------------------------------------


def test_replay_groups_rows_by_arrival_and_keeps_bad_rows_apart():
    panel = make_panel(n_bars=24)
    bad = make_bad_rows(panel)
    source = ReplaySource(pl.concat([panel, bad]), bar=BAR)
    bars = list(source)
    assert [b.t_us for b in bars] == sorted(b.t_us for b in bars)
    assert all(b2.t_us - b1.t_us == BAR // US for b1, b2 in zip(bars, bars[1:], strict=False))
    delivered = [row for b in bars for row in b.rows]
    assert len(delivered) == panel.height
    for b in bars:  # only rows known at the decision time, in arrival order
        assert all(row["known_at"] <= b.t_us for row in b.rows)
        assert [r["known_at"] for r in b.rows] == sorted(r["known_at"] for r in b.rows)
    reasons = sorted(reason for b in bars for _, reason in b.quarantined)
    assert reasons == ["negative_oi_usd", "non_finite_close", "null_key"]
    assert source.quarantined_rows == 3
    assert len(list(ReplaySource(panel, bar=BAR, max_bars=5))) == 5


def test_check_row_names_every_kind_of_bad_payload():
    good = {
        "ts": _us(T),
        "known_at": _us(T) + 1,
        "venue": "okx",
        "symbol": "BTC",
        "close": 1.0,
        "oi_usd": 5.0,
    }
    bar_us = BAR // US
    assert check_row(good, bar_us) is None
    assert check_row({**good, "close": math.nan}, bar_us) == "non_finite_close"
    assert check_row({**good, "oi_usd": -1.0}, bar_us) == "negative_oi_usd"
    assert check_row({**good, "oi_usd": "12"}, bar_us) == "wrong_type_oi_usd"
    assert check_row({**good, "ts": "2024-04-10"}, bar_us) == "wrong_type_ts"
    assert check_row({k: v for k, v in good.items() if k != "venue"}, bar_us) == "missing_venue"
    assert check_row({**good, "ts": _us(T) - 7}, bar_us) == "ts_off_grid"
    assert check_row({**good, "known_at": _us(T) - 1}, bar_us) == "known_before_bar_close"


def test_check_row_on_full_rows_edge_values():
    # full rows take the bulk test first (every column present, float or None): its
    # false alarms and its blind spots must still give check_row's verdict
    from oihedge.features.schema import FLOAT_COLUMNS

    full = {c: 1.0 for c in FLOAT_COLUMNS}
    full.update(ts=_us(T), known_at=_us(T), venue="okx", symbol="BTC")
    bar_us = BAR // US
    assert check_row(full, bar_us) is None
    huge = {**full, "volume_usd": 1e308, "oi_usd": 1e308}  # the sum overflows: still fine
    assert check_row(huge, bar_us) is None
    assert check_row({**full, "liq_long_usd": -0.0, "funding_rate": -0.5}, bar_us) is None
    assert check_row({**full, "close": 0.0}, bar_us) == "zero_close"
    assert check_row({**full, "close": None, "high": 2.0, "low": 3.0}, bar_us) == ("high_below_low")
    assert check_row({**full, "spot_close": -1e-300}, bar_us) == "negative_spot_close"
    assert check_row({**full, "oi_usd": math.inf, "volume_usd": -math.inf}, bar_us) == (
        "non_finite_volume_usd"
    )
    assert check_row({**full, "oi_usd": True}, bar_us) == "wrong_type_oi_usd"
    assert check_row({**full, "oi_usd": 3}, bar_us) is None  # an int amount is fine
    assert check_row({**full, "venue": ["okx"]}, bar_us) == "wrong_type_key"


def _reference_check(row, bar_us):  # noqa: ANN001, ANN202 - the plain form of check_row
    import re

    from oihedge.features.schema import FLOAT_COLUMNS, NON_NEGATIVE_COLUMNS

    for key in ("ts", "venue", "symbol", "known_at"):
        if row.get(key) is None:
            return f"missing_{key}"
    ts, known = row["ts"], row["known_at"]
    if not (isinstance(ts, int) and isinstance(known, int)):
        return "wrong_type_ts"
    venue, symbol = row["venue"], row["symbol"]
    if not (isinstance(venue, str) and isinstance(symbol, str)):
        return "wrong_type_key"
    if not re.match(r"^[a-z0-9][a-z0-9_]*$", venue):
        return "bad_venue_name"
    if not re.match(r"^[A-Z0-9][A-Z0-9_]*$", symbol):
        return "bad_symbol_name"
    for name in FLOAT_COLUMNS:
        value = row.get(name)
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, int | float):
            return f"wrong_type_{name}"
        if not math.isfinite(value):
            return f"non_finite_{name}"
    for name in NON_NEGATIVE_COLUMNS:
        value = row.get(name)
        if value is not None and value < 0:
            return f"negative_{name}"
    if row.get("close") == 0:
        return "zero_close"
    high, low = row.get("high"), row.get("low")
    if high is not None and low is not None and high < low:
        return "high_below_low"
    if known < ts:
        return "known_before_bar_close"
    if ts % bar_us:
        return "ts_off_grid"
    return None


def test_check_row_agrees_with_the_plain_checks_on_random_payloads():
    import numpy as np

    from oihedge.features.schema import FLOAT_COLUMNS

    rng = np.random.default_rng(8)
    bar_us = BAR // US
    odd = [None, math.nan, math.inf, -math.inf, -1.0, 0.0, 0, 3, True, "1", np.float64(2.0)]
    odd += [np.float64("nan"), [1.0], 2.5]
    names = ["okx", "BTC", "Okx", "btc", "", "bybit_x", 7, None]
    reasons = set()
    for _ in range(4000):
        row = {c: float(rng.uniform(0.5, 2.0)) for c in FLOAT_COLUMNS}
        row.update(ts=_us(T), known_at=_us(T) + 1, venue="okx", symbol="BTC")
        for _ in range(int(rng.integers(0, 4))):
            key = rng.choice([*FLOAT_COLUMNS, "ts", "known_at", "venue", "symbol"])
            if key in ("venue", "symbol"):
                row[key] = names[int(rng.integers(len(names)))]
            elif key in ("ts", "known_at"):
                row[key] = [None, "x", _us(T) - 7, _us(T) - 1, 1.5][int(rng.integers(5))]
            else:
                row[key] = odd[int(rng.integers(len(odd)))]
        if rng.random() < 0.1:
            del row[rng.choice([*FLOAT_COLUMNS, "venue"])]
        expected = _reference_check(row, bar_us)
        assert check_row(row, bar_us) == expected, row
        reasons.add(expected)
    assert len(reasons) >= 12  # the payloads reach most checks


# -- live polling ------------------------------------------------------------------------


def live_source(tmp_path, router, venues=VENUES, symbols=("BTC",)) -> LiveSource:
    collectors = sync_collectors(router, venues, retry=RetryPolicy(max_attempts=2))
    return LiveSource(
        PanelStore(tmp_path / "live"),
        collectors,
        symbols,
        BAR,
        poll_delay=timedelta(0),
        clock=lambda: T,
        sleep=lambda _s: None,
        start=T,
        max_bars=1,
    )


@pytest.fixture
def synthetic() -> SyntheticVenues:
    return SyntheticVenues(to_ms(T + timedelta(seconds=30)))


pytestmark = pytest.mark.usefixtures("no_sockets")


def test_live_poll_delivers_the_latest_bars_of_every_venue(tmp_path, synthetic):
    source = live_source(tmp_path, venue_router(VENUES, ["BTC"], synthetic))
    (bar,) = list(source)
    assert bar.t_us == _us(T) and bar.errors == []
    venues = {row["venue"] for row in bar.rows}
    assert venues == set(VENUES)
    assert max(row["ts"] for row in bar.rows) == _us(T)
    assert all(check_row(row, BAR // US) is None for row in bar.rows)
    # the next poll hands over only what is new
    assert source.poll(T).rows == []


@pytest.mark.parametrize(
    ("path", "reply", "kind"),
    [
        ("/api/v5/market/candles", Reply(timeout=True), "timeout"),
        (
            "/api/v5/market/candles",
            Reply(429, {"code": "50011", "msg": "Too Many Requests", "data": []}),
            "rate_limited",
        ),
        ("/api/v5/market/candles", Reply(200, '{"code":"0","data":[["17124'), "garbage"),
    ],
)
def test_a_failing_venue_is_left_out_of_the_bar_not_the_loop(
    tmp_path, synthetic, path, reply, kind
):
    router = venue_router(VENUES, ["BTC"], synthetic)
    for okx_path in (path, path.replace("candles", "history-candles")):
        router.fail_next(okx_path, reply, times=10)
    (bar,) = list(live_source(tmp_path, router))
    assert [(e.venue, e.kind) for e in bar.errors] == [("okx", kind)]
    okx_rows = [r for r in bar.rows if r["venue"] == "okx" and r.get("close") is not None]
    assert okx_rows == []  # no price from the failing venue this bar
    assert {r["venue"] for r in bar.rows} >= {"binanceusdm", "bybit", "hyperliquid"}


def test_all_venues_down_gives_an_empty_bar_with_every_error(tmp_path, synthetic):
    router = venue_router(VENUES, ["BTC"], synthetic)
    for path in (
        "/fapi/v1/klines",
        "/v5/market/kline",
        "/api/v5/market/candles",
        "/api/v5/market/history-candles",
        "/info",
    ):
        router.fail_next(
            path,
            Reply(503, "down", {"Content-Type": "text/plain"}),
            times=50,
            method="POST" if path == "/info" else "GET",
        )
    (bar,) = list(live_source(tmp_path, router))
    assert {e.venue for e in bar.errors} == set(VENUES)
    assert not [r for r in bar.rows if r.get("close") is not None]


def test_error_kinds_are_read_from_collector_messages():
    assert classify_error("okx BTC close: gave up after 2 attempts: RequestTimeout: x") == "timeout"
    assert classify_error("gave up after 2 attempts: RateLimitExceeded: 429") == "rate_limited"
    assert classify_error("bybit BTC close: malformed response: x") == "garbage"
    assert classify_error("ExchangeNotAvailable: 503 down") == "unavailable"
