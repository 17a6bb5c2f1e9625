"""Collectors: recorded payloads through ccxt's own HTTP layer, retries, pacing, errors."""

from __future__ import annotations

import asyncio
import random
import time
from datetime import UTC, datetime, timedelta

import pytest
from ccxt_replay import (
    Reply,
    Router,
    async_collectors,
    no_sockets,  # noqa: F401 - fixture
    sync_collectors,
)
from ccxt_venues import SyntheticVenues, load, market_payloads, venue_router

from oihedge.pipelines.ingest.collectors import (
    Call,
    CollectorError,
    MalformedResponseError,
    RetriesExhaustedError,
    RetryPolicy,
    UnknownSymbolError,
)
from oihedge.pipelines.ingest.normalise import ohlcv_rows, oi_snapshot_rows
from oihedge.pipelines.ingest.venues import VENUES

pytestmark = pytest.mark.usefixtures("no_sockets")

NOW = datetime(2024, 4, 10, 9, 0, tzinfo=UTC)
NOW_MS = int(NOW.timestamp() * 1000)
KLINES = "/fapi/v1/klines"


def binance_router() -> Router:
    router = Router()
    markets = market_payloads("binanceusdm", ["BTC"])
    router.add("GET", "https://fapi.binance.com/fapi/v1/exchangeInfo", markets["fapi"])
    router.add("GET", "https://api.binance.com/api/v3/exchangeInfo", markets["api-v3"])
    router.add(
        "GET",
        "https://fapi.binance.com" + KLINES,
        load("binanceusdm", "recorded-fapi-klines-BTCUSDT-1m.json"),
    )
    router.add(
        "GET",
        "https://api.binance.com/api/v3/klines",
        load("binanceusdm", "recorded-api-v3-klines-BTCUSDT-1h.json"),
    )
    return router


def binance(router: Router, **kwargs):
    collector = sync_collectors(router, ["binanceusdm"], **kwargs)["binanceusdm"]
    collector.call(Call("load_markets"))
    return collector


KLINE_CALL = Call(
    "fetch_ohlcv", ("BTC/USDT:USDT", "1m", 1712738460000, 3), what="binanceusdm BTC close"
)


# -- recorded payloads through ccxt's parser --------------------------------------------


def test_recorded_binance_perp_klines_parse_into_closed_bars():
    collector = binance(binance_router())
    candles = collector.call(KLINE_CALL)
    # ccxt's own recorded parse of the same payload
    assert candles[0] == [1712738460000, 71481.9, 71481.9, 71481.9, 71481.9, 0.002]
    rows = ohlcv_rows(
        candles,
        spec=VENUES["binanceusdm"],
        symbol="BTC",
        bar=timedelta(minutes=1),
        now_ms=1712738640000,
    ).frame
    assert rows["close"].to_list() == [71481.9, 70459.4, 70459.4]
    assert rows["ts"][0] == datetime(2024, 4, 10, 8, 42, tzinfo=UTC)  # open 08:41 + 1m


def test_recorded_binance_spot_klines_fill_spot_close():
    collector = binance(binance_router())
    candles = collector.call(Call("load_markets", market="spot")) and collector.call(
        Call("fetch_ohlcv", ("BTC/USDT", "1h", 1706630400000, 3), market="spot")
    )
    rows = ohlcv_rows(
        candles,
        spec=VENUES["binanceusdm"],
        symbol="BTC",
        bar=timedelta(hours=1),
        now_ms=NOW_MS,
        spot=True,
    ).frame
    assert rows["spot_close"].to_list() == [43488.71, 43374.8, 43361.11]
    assert rows["ts"][0] == datetime(2024, 1, 30, 17, tzinfo=UTC)


def test_recorded_hyperliquid_candles_and_oi_snapshot():
    router = Router()
    markets = market_payloads("hyperliquid", ["BTC"])
    candles = load("hyperliquid", "recorded-candleSnapshot-BTC-1m.json")

    def info(req):
        kind = req.body["type"]
        return Reply(
            body={
                "metaAndAssetCtxs": markets["meta"],
                "spotMeta": markets["spotMeta"],
                "candleSnapshot": candles,
            }[kind]
        )

    router.add("POST", "https://api.hyperliquid.xyz/info", info)
    collector = sync_collectors(router, ["hyperliquid"])["hyperliquid"]
    collector.call(Call("load_markets"))
    got = collector.call(
        Call("fetch_ohlcv", ("BTC/USDC:USDC", "1m", 1710552360000, 2, {"until": 1710552480000}))
    )
    assert got == [
        [1710552360000, 69584, 69610, 69474, 69483, 6.83271],
        [1710552420000, 69471, 69497, 69465, 69497, 0.88301],
    ]
    snapshot = collector.call(Call("fetch_open_interest", ("BTC/USDC:USDC",)))
    row = oi_snapshot_rows(
        snapshot,
        spec=VENUES["hyperliquid"],
        symbol="BTC",
        bar=timedelta(hours=1),
        fetched_ms=NOW_MS + 1234,
    ).frame.row(0, named=True)
    assert row["oi_usd"] == pytest.approx(893.32721 * 67681.0 / 2)
    assert row["known_at"] == datetime(2024, 4, 10, 9, 0, 1, 234000, tzinfo=UTC)


@pytest.mark.parametrize("venue", sorted(VENUES))
def test_every_venue_loads_its_recorded_markets(venue):
    router = venue_router([venue], ["BTC", "ETH"], SyntheticVenues(NOW_MS))
    collector = sync_collectors(router, [venue])[venue]
    markets = collector.call(Call("load_markets"))
    spec = VENUES[venue]
    assert spec.perp_symbol("BTC") in markets and spec.perp_symbol("ETH") in markets
    if spec.spot_quote:
        spot_markets = collector.call(Call("load_markets", market="spot"))
        assert spec.spot_symbol("BTC") in spot_markets


# -- retries --------------------------------------------------------------------------


def test_rate_limit_then_success_is_retried_with_backoff():
    router = binance_router()
    collector = binance(router)
    router.fail_next(
        KLINES, Reply(429, {"code": -1003, "msg": "Too many requests; current limit is 2400"})
    )
    assert len(collector.call(KLINE_CALL)) == 3
    assert collector.retries == 1 and collector.pacing.retry_wait_s > 0
    assert len(router.requests_to(KLINES)) == 2


def test_timeout_then_success_is_retried():
    router = binance_router()
    collector = binance(router)
    router.fail_next(KLINES, Reply(timeout=True), times=2)
    assert len(collector.call(KLINE_CALL)) == 3
    assert collector.retries == 2


def test_exchange_down_until_retries_run_out():
    router = binance_router()
    collector = binance(router, retry=RetryPolicy(max_attempts=3, base_s=0.1, cap_s=1))
    router.fail_next(
        KLINES, Reply(503, "Service Unavailable", {"Content-Type": "text/html"}), times=5
    )
    with pytest.raises(
        RetriesExhaustedError,
        match=r"binanceusdm BTC close: gave up after 3 attempts: ExchangeNotAvailable",
    ):
        collector.call(KLINE_CALL)
    assert len(router.requests_to(KLINES)) == 3


def test_bad_symbol_is_not_retried():
    router = binance_router()
    collector = binance(router)
    router.fail_next(KLINES, Reply(400, {"code": -1121, "msg": "Invalid symbol."}))
    with pytest.raises(UnknownSymbolError, match="rejected the symbol.*Invalid symbol"):
        collector.call(KLINE_CALL)
    assert len(router.requests_to(KLINES)) == 1


def test_authentication_error_is_not_retried_and_says_what_to_check():
    router = binance_router()
    collector = binance(router)
    router.fail_next(
        KLINES,
        Reply(401, {"code": -2015, "msg": "Invalid API-key, IP, or permissions for action."}),
    )
    with pytest.raises(CollectorError, match="authentication refused.*OIHEDGE_BINANCEUSDM_API_KEY"):
        collector.call(KLINE_CALL)
    assert len(router.requests_to(KLINES)) == 1


def test_malformed_payload_is_a_clear_error_not_a_retry():
    router = binance_router()
    collector = binance(router)
    router.fail_next(KLINES, Reply(200, '[[1712738460000, "71481.90", "71481.90"'))
    with pytest.raises(MalformedResponseError, match="binanceusdm BTC close: malformed response"):
        raw = collector.call(KLINE_CALL)
        ohlcv_rows(
            raw, spec=VENUES["binanceusdm"], symbol="BTC", bar=timedelta(minutes=1), now_ms=NOW_MS
        )
    assert len(router.requests_to(KLINES)) == 1


def test_backoff_is_exponential_with_full_jitter():
    policy = RetryPolicy(max_attempts=8, base_s=0.5, cap_s=4.0)
    rng = random.Random(3)
    for attempt in range(8):
        waits = [policy.delay(attempt, rng) for _ in range(200)]
        ceiling = min(4.0, 0.5 * 2**attempt)
        assert min(waits) >= 0 and max(waits) <= ceiling
        assert max(waits) > 0.8 * ceiling  # jitter spans the whole range
    with pytest.raises(ValueError, match="max_attempts must be >= 1, got 0"):
        RetryPolicy(max_attempts=0)


# -- async ----------------------------------------------------------------------------


def test_async_collector_retries_rate_limits_and_timeouts():
    router = binance_router()
    collector = async_collectors(router, ["binanceusdm"])["binanceusdm"]
    router.fail_next(KLINES, Reply(429, {"code": -1003, "msg": "Too many requests"}))
    router.fail_next(KLINES, Reply(timeout=True))

    async def run():
        try:
            await collector.call(Call("load_markets"))
            return await collector.call(KLINE_CALL)
        finally:
            await collector.close()

    candles = asyncio.run(run())
    assert candles[1] == [1712738520000, 71471.0, 71471.0, 70459.4, 70459.4, 0.12]
    assert collector.retries == 2


def test_async_bad_symbol_is_not_retried():
    router = binance_router()
    collector = async_collectors(router, ["binanceusdm"])["binanceusdm"]
    router.fail_next(KLINES, Reply(400, {"code": -1121, "msg": "Invalid symbol."}))

    async def run():
        try:
            await collector.call(Call("load_markets"))
            await collector.call(KLINE_CALL)
        finally:
            await collector.close()

    with pytest.raises(UnknownSymbolError):
        asyncio.run(run())
    assert len(router.requests_to(KLINES)) == 1


# -- pacing ---------------------------------------------------------------------------


def test_the_rate_limiter_really_spaces_requests():
    router = venue_router(["okx"], ["BTC"], SyntheticVenues(NOW_MS))
    collector = sync_collectors(router, ["okx"], virtual=False)["okx"]
    collector.call(Call("load_markets"))
    start = time.perf_counter()
    for k in range(3):
        since = NOW_MS - (k + 2) * 100 * 300_000
        collector.call(
            Call(
                "fetch_ohlcv",
                ("BTC/USDT:USDT", "5m", since, 100, {"until": since + 100 * 300_000 - 1}),
            )
        )
    # okx: rateLimit 110 ms x cost 1 (history-candles) between requests
    assert time.perf_counter() - start >= 2 * 0.110 * 0.9
    assert collector.pacing.requests == 5  # two market loads + three candle pages


def test_virtual_pacing_accounts_the_venue_floor_without_sleeping():
    router = venue_router(["binanceusdm"], ["BTC"], SyntheticVenues(NOW_MS))
    collector = sync_collectors(router, ["binanceusdm"], virtual=True)["binanceusdm"]
    collector.call(Call("load_markets"))
    before = collector.pacing.wait_s
    start = time.perf_counter()
    for _ in range(5):
        collector.call(
            Call(
                "fetch_open_interest_history",
                ("BTC/USDT:USDT", "5m", NOW_MS - 3_600_000, 12),
                series="oi_usd",
            )
        )
    assert time.perf_counter() - start < 1.0
    # Binance OI statistics: 1000 requests / 5 min -> at least 0.3 s apart
    assert collector.pacing.wait_s - before == pytest.approx(5 * 0.3)
