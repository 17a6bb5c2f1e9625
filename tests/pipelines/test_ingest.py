"""Incremental ingestion from replayed venue pages into the store."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import polars as pl
import pytest
from ccxt_replay import (
    Reply,
    async_collectors,
    no_sockets,  # noqa: F401 - fixture
    sync_collectors,
)
from ccxt_venues import SyntheticVenues, venue_router

from oihedge.features.screening import validate
from oihedge.pipelines.ingest.incremental import IngestPlan, ingest, ingest_async
from oihedge.pipelines.ingest.normalise import to_ms
from oihedge.pipelines.ingest.venues import VENUES
from oihedge.pipelines.quality import data_report
from oihedge.pipelines.store import PanelStore

pytestmark = pytest.mark.usefixtures("no_sockets")

NOW = datetime(2024, 4, 10, 9, 2, tzinfo=UTC)
BAR = timedelta(minutes=5)
ALL = tuple(sorted(VENUES))


def run(store, router, plan, venues=ALL, now=NOW, **kwargs):
    collectors = sync_collectors(router, venues, **kwargs)
    return ingest(store, collectors, plan, clock=lambda: now)


def plan(days: float = 2, symbols=("BTC", "ETH"), bar=BAR, **kwargs) -> IngestPlan:
    return IngestPlan(symbols=symbols, since=NOW - timedelta(days=days), bar=bar, **kwargs)


@pytest.fixture
def synthetic() -> SyntheticVenues:
    return SyntheticVenues(to_ms(NOW))


def test_multi_page_backfill_matches_what_the_venues_served(tmp_path, synthetic):
    router = venue_router(ALL, ["BTC", "ETH"], synthetic)
    store = PanelStore(tmp_path)
    report = run(store, router, plan())
    assert report.errors == {}
    panel = store.read()
    assert validate(panel, bar=BAR).n_quarantined == 0
    pages = {(s.venue, s.symbol, s.series): s.pages for s in report.series}
    assert pages[("okx", "BTC", "close")] == 6  # 576 bars at 100 a page
    assert pages[("bybit", "BTC", "oi_usd")] == 3  # 200 a page
    for (venue, symbol), part in panel.group_by(["venue", "symbol"]):
        assert part.height == 576, (venue, symbol)  # two days of 5m bars, none twice
        for row in part.sample(20, seed=1).iter_rows(named=True):
            t = to_ms(row["ts"])
            assert row["close"] == pytest.approx(synthetic.price(venue, symbol, t), rel=1e-6)
            if venue != "hyperliquid":
                expected = synthetic.oi_base(venue, symbol, t) * synthetic.price(venue, symbol, t)
                assert row["oi_usd"] == pytest.approx(expected, rel=1e-6)
            assert row["known_at"] >= row["ts"]
    # funding: 8h settlements on the CEXes, hourly x 8 on hyperliquid
    funding = panel.filter(pl.col("funding_rate").is_not_null())
    assert funding.filter(pl.col("venue") == "binanceusdm", pl.col("symbol") == "BTC").height == 6
    hl = funding.filter(pl.col("venue") == "hyperliquid", pl.col("symbol") == "BTC")
    t = to_ms(hl["ts"][3])
    assert hl["funding_rate"][3] == pytest.approx(8 * synthetic.funding(t + 31) / 8)


def test_async_ingest_writes_the_same_panel(tmp_path, synthetic):
    sync_store = PanelStore(tmp_path / "sync")
    run(sync_store, venue_router(ALL, ["BTC"], synthetic), plan(days=1, symbols=("BTC",)))
    async_store = PanelStore(tmp_path / "async")
    collectors = async_collectors(venue_router(ALL, ["BTC"], synthetic), ALL)

    async def go():
        try:
            return await ingest_async(
                async_store, collectors, plan(days=1, symbols=("BTC",)), clock=lambda: NOW
            )
        finally:
            await asyncio.gather(*(c.close() for c in collectors.values()))

    report = asyncio.run(go())
    assert report.errors == {}
    assert sync_store.read().equals(async_store.read())


def test_a_rerun_fetches_only_the_new_bars(tmp_path, synthetic):
    store = PanelStore(tmp_path)
    run(
        store,
        venue_router(["binanceusdm"], ["BTC"], synthetic),
        plan(days=1, symbols=("BTC",)),
        venues=["binanceusdm"],
    )
    later = NOW + timedelta(hours=1)
    synthetic.now_ms = to_ms(later)
    router = venue_router(["binanceusdm"], ["BTC"], synthetic)
    report = run(store, router, plan(days=1, symbols=("BTC",)), venues=["binanceusdm"], now=later)
    klines = router.requests_to("/fapi/v1/klines")
    assert len(klines) == 1
    assert int(klines[0].params["startTime"]) == to_ms(NOW.replace(minute=0)) - 0  # 09:00 open
    by_series = {s.series: s for s in report.series}
    assert by_series["close"].rows_written == 12 and by_series["oi_usd"].rows_written == 12
    assert by_series["close"].resumed_from == NOW.replace(minute=5)
    assert store.read().height == 288 + 12


def test_an_interrupted_run_loses_nothing(tmp_path, synthetic):
    clean = PanelStore(tmp_path / "clean")
    run(
        clean,
        venue_router(["okx"], ["BTC"], synthetic),
        plan(days=2, symbols=("BTC",)),
        venues=["okx"],
    )

    store = PanelStore(tmp_path / "interrupted")
    router = venue_router(["okx"], ["BTC"], synthetic)
    oi_path = "/api/v5/rubik/stat/contracts/open-interest-history"
    router.fail_after(
        oi_path, after=2, reply=Reply(503, "down", {"Content-Type": "text/plain"}), times=50
    )
    report = run(store, router, plan(days=2, symbols=("BTC",)), venues=["okx"])
    assert "gave up after 6 attempts" in report.errors["okx"]
    stored = store.read()
    assert stored["close"].is_not_null().sum() == 576  # the series before the failure
    assert stored["oi_usd"].is_not_null().sum() == 200  # the two OI pages fetched before it

    report = run(
        store,
        venue_router(["okx"], ["BTC"], synthetic),
        plan(days=2, symbols=("BTC",)),
        venues=["okx"],
    )
    assert report.errors == {}
    assert store.read().drop("known_at").equals(clean.read().drop("known_at"))


def test_an_empty_page_moves_on_to_the_next_window(tmp_path):
    now_ms = to_ms(NOW)
    gap = ("binanceusdm", "kline", now_ms - 3 * 86_400_000, now_ms - 3 * 86_400_000 + 500 * 300_000)
    synthetic = SyntheticVenues(now_ms, gaps=[gap])
    store = PanelStore(tmp_path)
    router = venue_router(["binanceusdm"], ["BTC"], synthetic)
    report = run(
        store, router, plan(days=4, symbols=("BTC",), series=("close",)), venues=["binanceusdm"]
    )
    assert report.errors == {}
    closes = store.read()
    assert closes.height == 4 * 288 - 500
    gaps = data_report(closes, bar=BAR).entries[0]["longest_gaps"]
    assert gaps[0]["missing_bars"] == 500


def test_rate_limits_and_timeouts_are_retried_during_a_backfill(tmp_path, synthetic):
    router = venue_router(["okx", "bybit"], ["BTC"], synthetic)
    router.fail_next(
        "/api/v5/market/history-candles",
        Reply(429, {"code": "50011", "msg": "Too Many Requests", "data": []}),
        times=2,
    )
    router.fail_next("/v5/market/open-interest", Reply(timeout=True))
    collectors = sync_collectors(router, ["okx", "bybit"])
    report = ingest(
        PanelStore(tmp_path), collectors, plan(days=7, symbols=("BTC",)), clock=lambda: NOW
    )
    assert report.errors == {}
    assert collectors["okx"].retries == 2 and collectors["bybit"].retries == 1
    assert {s.series: s.rows_written for s in report.series if s.venue == "okx"}["close"] == 7 * 288


def test_a_malformed_first_page_is_a_clear_error_and_nothing_is_written(tmp_path, synthetic):
    router = venue_router(["binanceusdm"], ["BTC"], synthetic)
    router.fail_next("/fapi/v1/klines", Reply(200, '[[1712475900000, "69000.1", "69010'))
    store = PanelStore(tmp_path)
    report = run(store, router, plan(days=1, symbols=("BTC",)), venues=["binanceusdm"])
    assert (
        "binanceusdm BTC close 2024-04-09T09:00Z: malformed response"
        in report.errors["binanceusdm"]
    )
    assert store.read().is_empty()


def test_a_page_of_the_wrong_shape_is_malformed_too(tmp_path, synthetic):
    router = venue_router(["bybit"], ["BTC"], synthetic)
    router.fail_next(
        "/v5/market/kline", Reply(200, {"retCode": 0, "retMsg": "OK", "result": {"list": [["x"]]}})
    )
    store = PanelStore(tmp_path)
    report = run(store, router, plan(days=1, symbols=("BTC",)), venues=["bybit"])
    assert "malformed" in report.errors["bybit"]
    assert store.read().is_empty()


def test_an_unknown_symbol_is_named_before_any_data_request(tmp_path, synthetic):
    router = venue_router(["bybit", "hyperliquid"], ["BTC"], synthetic)
    store = PanelStore(tmp_path)
    report = run(
        store, router, plan(days=1, symbols=("BTC", "NOPE")), venues=["bybit", "hyperliquid"]
    )
    assert report.errors["bybit"].startswith(
        "bybit: no perpetual 'NOPE/USDT:USDT' for symbol 'NOPE'"
    )
    assert "'NOPE/USDC:USDC'" in report.errors["hyperliquid"]
    assert store.read().is_empty()
    assert {r.path for r in router.log} <= {"/v5/market/instruments-info", "/info"}
    assert not router.requests_to("candleSnapshot")


def test_binance_oi_history_starts_where_the_30_day_api_window_does(tmp_path, synthetic):
    store = PanelStore(tmp_path)
    router = venue_router(["binanceusdm"], ["BTC"], synthetic)
    the_plan = plan(days=40, symbols=("BTC",), bar=timedelta(hours=1), series=("oi_usd",))
    report = run(store, router, the_plan, venues=["binanceusdm"])
    assert report.errors == {}  # the venue's 400 for an older startTime is never provoked
    (oi,) = report.series
    assert "import-archive" in oi.note
    assert oi.first_ts >= NOW - timedelta(days=30)
    assert oi.rows_written == 30 * 24


def test_hyperliquid_oi_snapshots_accumulate_run_after_run(tmp_path, synthetic):
    store = PanelStore(tmp_path)
    the_plan = plan(days=1, symbols=("BTC",), series=("oi_usd",))
    for minutes in (0, 1, 6):  # the second run is in the same bar as the first
        now = NOW + timedelta(minutes=minutes, seconds=7)
        run(
            store,
            venue_router(["hyperliquid"], ["BTC"], synthetic),
            the_plan,
            venues=["hyperliquid"],
            now=now,
        )
    oi = store.read()
    assert oi.height == 2
    assert oi["ts"].to_list() == [
        datetime(2024, 4, 10, 9, 0, tzinfo=UTC),
        datetime(2024, 4, 10, 9, 5, tzinfo=UTC),
    ]
    assert oi["known_at"][0] == NOW + timedelta(seconds=7)  # the fetch time, not the bar
    assert oi["oi_usd"][0] == pytest.approx(893.32721 * 67681.0 / 2)


class NegativeOi(SyntheticVenues):
    def oi_base(self, venue, base, t):
        return (
            -1.0
            if t == self.now_ms - self.now_ms % 300_000 - 3_600_000
            else super().oi_base(venue, base, t)
        )


def test_a_negative_oi_from_the_venue_is_quarantined_with_its_reason(tmp_path):
    store = PanelStore(tmp_path)
    router = venue_router(["binanceusdm"], ["BTC"], NegativeOi(to_ms(NOW)))
    report = run(
        store, router, plan(days=1, symbols=("BTC",), series=("oi_usd",)), venues=["binanceusdm"]
    )
    (oi,) = report.series
    assert oi.quarantined == 1 and oi.quarantine_reasons == {"negative_oi_usd": 1}
    assert store.quarantine()["reason"].to_list() == ["negative_oi_usd"]
    assert oi.rows_written == 287


def test_coin_denominated_oi_without_a_stored_close_is_counted_not_guessed(tmp_path, synthetic):
    store = PanelStore(tmp_path)
    router = venue_router(["bybit"], ["BTC"], synthetic)
    report = run(
        store, router, plan(days=1, symbols=("BTC",), series=("oi_usd",)), venues=["bybit"]
    )
    (oi,) = report.series
    assert oi.rows_written == 0 and oi.without_price == 288


def test_the_plan_checks_its_arguments():
    with pytest.raises(ValueError, match="unknown series 'price'"):
        IngestPlan(symbols=("BTC",), since=NOW, bar=BAR, series=("price",))
    with pytest.raises(ValueError, match="timezone-aware"):
        IngestPlan(symbols=("BTC",), since=NOW.replace(tzinfo=None), bar=BAR)


def test_no_resume_refetches_from_since_and_rewrites_the_same_values(tmp_path, synthetic):
    store = PanelStore(tmp_path)
    the_plan = plan(days=1, symbols=("BTC",), series=("close", "funding_rate"))
    run(store, venue_router(["bybit"], ["BTC"], synthetic), the_plan, venues=["bybit"])
    once = store.read()
    router = venue_router(["bybit"], ["BTC"], synthetic)
    again = IngestPlan(
        symbols=("BTC",), since=NOW - timedelta(days=2), bar=BAR, series=("close",), resume=False
    )
    run(store, router, again, venues=["bybit"])
    assert len(router.requests_to("/v5/market/kline")) == 1  # 576 bars, one page of 1000
    both = store.read()
    assert both.height == 576
    assert (
        both.filter(pl.col("ts") >= once["ts"].min()).drop("known_at").equals(once.drop("known_at"))
    )


def test_okx_funding_history_starts_within_its_3_month_window(tmp_path, synthetic):
    store = PanelStore(tmp_path)
    the_plan = plan(days=120, symbols=("BTC",), bar=timedelta(hours=1), series=("funding_rate",))
    (funding,) = run(
        store, venue_router(["okx"], ["BTC"], synthetic), the_plan, venues=["okx"]
    ).series
    assert "okx serves funding_rate only from" in funding.note
    assert funding.first_ts >= NOW - timedelta(days=90)
