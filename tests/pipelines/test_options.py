"""The options collector: Deribit chains replayed through ccxt's own HTTP layer.

Payloads: ``tests/fixtures/ccxt/deribit/built-book-summary-option-{BTC,ETH}.json``
(built; see the fixtures README: ccxt's recorded data holds no option chain). The
expectations are computed here from the fixture's raw entries and from the smile it was
built with, not copied from the code's output.
"""

from __future__ import annotations

import asyncio
import copy
import math
from datetime import UTC, datetime, timedelta
from typing import Any

import polars as pl
import pytest
from ccxt_replay import (
    AsyncSession,
    Reply,
    Req,
    Router,
    no_sockets,  # noqa: F401 - fixture
    no_wait,
    no_wait_async,
    sync_session,
)
from ccxt_venues import load

from oihedge.features.screening import validate
from oihedge.pipelines.ingest.collectors import CollectorError, MalformedResponseError, RetryPolicy
from oihedge.pipelines.ingest.options import (
    OPTIONS_VENUE,
    options_collector,
    snapshot_job,
    snapshot_rows,
)
from oihedge.pipelines.ingest.options_chain import parse_expiry, summarise

pytestmark = pytest.mark.usefixtures("no_sockets")

URL = "https://www.deribit.com/api/v2/public/get_book_summary_by_currency"
PATH = "/api/v2/public/get_book_summary_by_currency"
#: the chains' creation time is 2024-03-22 09:59:54 UTC; fetched a few seconds later
NOW = datetime(2024, 3, 22, 10, 0, 3, tzinfo=UTC)
BAR = timedelta(minutes=5)
#: the smiles the BTC fixture was built with: expiry -> (forward, a, b, c), IV = a + b m + c m^2
BTC_SMILES = {"05APR24": (65800.0, 52.0, -18.0, 30.0), "26APR24": (66500.0, 55.0, -15.0, 25.0)}


def chains() -> dict[str, Any]:
    return {c: load("deribit", f"built-book-summary-option-{c}.json") for c in ("BTC", "ETH")}


def deribit_router(payloads: dict[str, Any] | None = None) -> Router:
    payloads = payloads or chains()
    router = Router()

    def answer(req: Req) -> Reply:
        assert req.params.get("kind") == "option", req
        currency = req.params.get("currency", "")
        if currency not in payloads:
            body = {"jsonrpc": "2.0", "error": {"message": "Invalid params", "code": -32602}}
            return Reply(status=400, body=body)
        return Reply(body=payloads[currency])

    router.add("GET", URL, answer)
    return router


def sync_run(router: Router, symbols: tuple[str, ...] = ("BTC", "ETH", "NEAR"), **kw: Any):
    collector = options_collector(session=sync_session(router), sleep=no_wait, seed=1, **kw)
    return collector.run(snapshot_job(OPTIONS_VENUE, symbols, lambda: NOW))


def _norm_cdf(x: float) -> float:
    return 0.5 * (1.0 + math.erf(x / math.sqrt(2.0)))


def smile_rr25(expiry: str) -> float:
    """The 25-delta risk reversal of the generating smile, solved by bisection in strike
    (independent of the chain's discrete strikes)."""
    forward, a, b, c = BTC_SMILES[expiry]
    years = (parse_expiry(expiry) - NOW).total_seconds() / (365 * 86400)

    def iv(k: float) -> float:
        m = math.log(k / forward)
        return a + b * m + c * m * m

    def call_delta(k: float) -> float:
        s = iv(k) / 100
        d1 = (math.log(forward / k) + 0.5 * s * s * years) / (s * math.sqrt(years))
        return _norm_cdf(d1)

    def solve(target: float) -> float:  # call delta falls as the strike rises
        lo, hi = forward * 0.3, forward * 3.0
        for _ in range(200):
            mid = 0.5 * (lo + hi)
            lo, hi = (mid, hi) if call_delta(mid) > target else (lo, mid)
        return 0.5 * (lo + hi)

    # the -25-delta put is the 75-delta call (forward deltas)
    return iv(solve(0.25)) - iv(solve(0.75))


def test_chain_gives_oi_put_call_iv_and_skew_for_btc_and_eth_only() -> None:
    router = deribit_router()
    snaps = sync_run(router)
    assert [s.symbol for s in snaps] == ["BTC", "ETH"]
    # NEAR has no listed options: it is not asked for (and gets no row, so nulls)
    assert [r.params["currency"] for r in router.requests_to(PATH)] == ["BTC", "ETH"]
    for snap in snaps:
        raw = chains()[snap.symbol]["result"]
        live = [e for e in raw if parse_expiry(e["instrument_name"].split("-")[1]) > NOW]
        oi_usd = sum(e["open_interest"] * e["estimated_delivery_price"] for e in live)
        puts = sum(e["open_interest"] for e in live if e["instrument_name"].endswith("-P"))
        calls = sum(e["open_interest"] for e in live if e["instrument_name"].endswith("-C"))
        s = snap.summary
        assert s.oi_usd == pytest.approx(oi_usd, rel=1e-12)
        assert s.put_call_oi == pytest.approx(puts / calls, rel=1e-12)
        assert s.reasons == {} and s.rejected == {}
    btc = snaps[0].summary
    # 30 days lies between the 14-day (ATM 52) and the 35-day (ATM 55) expiries
    assert 52.0 < btc.iv_atm_pct < 55.0
    # the skew at 30 days is between the two expiries' own 25-delta risk reversals
    rr = sorted(smile_rr25(e) for e in BTC_SMILES)
    assert rr[0] - 0.6 < btc.rr25_pct < rr[1] + 0.6 and btc.rr25_pct < 0


def test_rows_are_point_in_time_snapshots_on_the_bar_grid() -> None:
    snaps = sync_run(deribit_router())
    rows = snapshot_rows(snaps, venue="deribit", bar=BAR)
    result = validate(rows, bar=BAR)
    assert result.n_quarantined == 0 and result.valid.height == 2
    assert rows["ts"].to_list() == [datetime(2024, 3, 22, 10, 0, tzinfo=UTC)] * 2
    assert rows["known_at"].to_list() == [NOW] * 2
    # the perp columns are not observed by this collector: null, not zero
    assert rows["oi_usd"].null_count() == 2 and rows["close"].null_count() == 2
    assert rows["opt_rr25_pct"].null_count() == 0


def _strip_wing_iv(payload: dict[str, Any], keep_within: float) -> dict[str, Any]:
    out = copy.deepcopy(payload)
    for entry in out["result"]:
        strike = float(entry["instrument_name"].split("-")[2])
        if abs(math.log(strike / entry["underlying_price"])) > keep_within:
            entry.pop("mark_iv", None)
    return out


def test_chain_with_missing_greeks_nulls_the_skew_with_a_reason_and_keeps_the_rest() -> None:
    payloads = chains()
    payloads["BTC"] = _strip_wing_iv(payloads["BTC"], keep_within=0.1)
    snaps = sync_run(deribit_router(payloads), symbols=("BTC",))
    s = snaps[0].summary
    assert s.rr25_pct is None
    assert s.reasons["opt_rr25_pct"].startswith("missing_greeks: ")
    assert s.iv_atm_pct is not None and 52.0 < s.iv_atm_pct < 55.0
    assert s.oi_usd is not None and s.put_call_oi is not None
    row = snapshot_rows(snaps, venue="deribit", bar=BAR)
    assert row["opt_rr25_pct"].to_list() == [None]
    assert row["opt_iv_atm_pct"].null_count() == 0


def test_unreadable_entries_are_left_out_and_counted_never_zeroed() -> None:
    payloads = chains()
    good = payloads["ETH"]["result"]
    bad = [
        7,
        {"instrument_name": "ETH-PERPETUAL", "open_interest": 5.0, "underlying_price": 3400.0},
        {**good[0], "instrument_name": "ETH-29FOO24-3000-C"},
        {**good[1], "open_interest": -3.0},
        {**good[2], "open_interest": "NaN"},
        {**good[3], "underlying_price": "abc"},
        {**good[4], "instrument_name": "ETH-01MAR24-3000-C"},  # expired before NOW
    ]
    payloads["ETH"] = {**payloads["ETH"], "result": good + bad}
    s = sync_run(deribit_router(payloads), symbols=("ETH",))[0].summary
    assert s.rejected == {
        "not_an_object": 1,
        "bad_instrument_name": 2,
        "bad_open_interest": 2,
        "non_numeric_field": 1,
        "expired": 1,
    }
    clean = summarise(good, "ETH", NOW)
    assert s.oi_usd == clean.oi_usd and s.rr25_pct == clean.rr25_pct


def test_an_empty_chain_gives_nulls_with_reasons() -> None:
    payloads = chains()
    payloads["ETH"] = {**payloads["ETH"], "result": []}
    snaps = sync_run(deribit_router(payloads), symbols=("ETH",))
    assert set(snaps[0].summary.reasons.values()) == {"empty_chain"}
    row = snapshot_rows(snaps, venue="deribit", bar=BAR)
    assert row.select("opt_oi_usd", "opt_put_call_oi", "opt_iv_atm_pct", "opt_rr25_pct").row(0) == (
        None,
        None,
        None,
        None,
    )


@pytest.mark.parametrize(
    ("body", "match"),
    [
        ("<html>502 Bad Gateway</html>", "expected a JSON-RPC object with 'result'"),
        ('{"jsonrpc": "2.0", "result": [{"instrument_na', "malformed response"),
        ({"jsonrpc": "2.0", "result": {"instrument_name": "x"}}, "expected a list of instr"),
        ({"jsonrpc": "2.0", "usIn": 1}, "expected a JSON-RPC object with 'result'"),
    ],
)
def test_garbage_responses_raise_one_clear_line(body: Any, match: str) -> None:
    router = deribit_router()
    router.fail_next(PATH, Reply(body=body))
    with pytest.raises(MalformedResponseError, match=match) as err:
        sync_run(router, symbols=("BTC",))
    assert "\n" not in str(err.value) and "BTC" in str(err.value)


def test_a_venue_error_is_a_collector_error_naming_the_request() -> None:
    payloads = chains()
    del payloads["ETH"]
    with pytest.raises(CollectorError, match="deribit ETH option chain: "):
        sync_run(deribit_router(payloads), symbols=("ETH",))


def test_rate_limits_are_retried_with_backoff() -> None:
    router = deribit_router()
    # Deribit's documented rate-limit error (code 10028), which ccxt maps to DDoSProtection
    error = {"jsonrpc": "2.0", "error": {"message": "too_many_requests", "code": 10028}}
    router.fail_next(PATH, Reply(status=429, body=error))
    snaps = sync_run(router, symbols=("BTC",), retry=RetryPolicy(max_attempts=3))
    assert snaps[0].summary.oi_usd is not None
    assert len(router.requests_to(PATH)) == 2


def test_async_collector_gives_the_same_snapshots() -> None:
    async def run() -> list[Any]:
        router = deribit_router()
        collector = options_collector(
            asynchronous=True, session=AsyncSession(router), sleep=no_wait_async, seed=1
        )
        try:
            return await collector.run(snapshot_job(OPTIONS_VENUE, ("ETH", "BTC"), lambda: NOW))
        finally:
            await collector.close()

    got = {s.symbol: s.summary for s in asyncio.run(run())}
    want = {s.symbol: s.summary for s in sync_run(deribit_router())}
    assert got == want


def test_rows_for_no_snapshot_are_an_empty_panel() -> None:
    rows = snapshot_rows([], venue="deribit", bar=BAR)
    assert rows.height == 0 and rows.schema == pl.Schema(validate(rows).valid.schema)
