"""Liquidation streams through ccxt.pro from a websocket server on 127.0.0.1
(``tests/ws_replay.py``): the venues' documented liquidation pushes
(``tests/fixtures/ws/liquidations_from_docs.json``) parsed by ccxt.pro's own handlers,
aggregated into bars and written into the live panel. Markets come from the REST replay
router (recorded market payloads). Nothing in ccxt is patched."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import polars as pl
import pytest
from ccxt_replay import sync_collectors
from ccxt_venues import SyntheticVenues, venue_router
from liq_frames import liq_frame
from ws_replay import Clock, Conn, WsReplay, factory_for, garbage, loopback_only  # noqa: F401 (loopback_only: an autouse fixture)

from oihedge.pipelines.ingest.collectors import RetryPolicy
from oihedge.pipelines.ingest.normalise import to_ms
from oihedge.pipelines.store import PanelStore
from oihedge.serving.feeds.liquidations import LiquidationFeeds

BAR = timedelta(minutes=5)
BAR_MS = 300_000
T = datetime(2024, 4, 10, 9, 0, tzinfo=UTC)  # a bar close
STREAMING = ("binanceusdm", "bybit", "okx")
FRAMES = json.loads(
    (
        Path(__file__).resolve().parents[1] / "fixtures" / "ws" / "liquidations_from_docs.json"
    ).read_text()
)
OKX_CT_VAL = 0.01  # BTC-USDT-SWAP ctVal in the recorded OKX instruments

pytestmark = pytest.mark.timeout(40)


@pytest.fixture
def server() -> Iterator[WsReplay]:
    srv = WsReplay(SyntheticVenues(to_ms(T)), BAR_MS)
    yield srv
    srv.close()


@pytest.fixture
def make_feeds(tmp_path: Path, server: WsReplay) -> Iterator[Callable[..., LiquidationFeeds]]:
    made: list[LiquidationFeeds] = []

    def make(clock: Clock, venues: tuple[str, ...] = STREAMING) -> LiquidationFeeds:
        router = venue_router(venues, ["BTC"], SyntheticVenues(to_ms(T)))
        collectors = sync_collectors(router, venues, retry=RetryPolicy(max_attempts=2))
        feeds = LiquidationFeeds(
            PanelStore(tmp_path / "live"),
            collectors,
            ("BTC",),
            BAR,
            clock=clock,
            exchange_factory=factory_for(server),
            retry_s=0.05,
        )
        made.append(feeds)
        return feeds

    yield make
    for feeds in made:
        feeds.close()


def wait_for(check: Callable[[], bool], what: str, seconds: float = 10.0) -> None:
    deadline = time.monotonic() + seconds
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


def stored(feeds: LiquidationFeeds) -> pl.DataFrame:
    return feeds.store.read().select("ts", "venue", "liq_long_usd", "liq_short_usd", "known_at")


def _row(frame: pl.DataFrame, venue: str, ts: datetime) -> dict[str, Any] | None:
    rows = frame.filter((pl.col("venue") == venue) & (pl.col("ts") == ts)).to_dicts()
    return rows[0] if rows else None


def test_each_venue_publishes_what_the_table_says(make_feeds):
    feeds = make_feeds(Clock(T), ("binanceusdm", "bybit", "okx", "hyperliquid"))
    assert feeds.venues == STREAMING  # hyperliquid has no liquidation stream


def test_liquidations_are_summed_per_bar_with_their_side(server, make_feeds):
    # two bars of liquidations, then a bar without any while the stream is up
    frames = []
    for venue in STREAMING:
        frames += [
            liq_frame(venue, "BTC", T - timedelta(minutes=9), "long", 0.5, 60_000.0),
            liq_frame(venue, "BTC", T - timedelta(minutes=8), "long", 0.25, 59_000.0),
            liq_frame(venue, "BTC", T - timedelta(minutes=3), "short", 0.1, 61_000.0),
        ]
    server.scripts = {v: [Conn(extra=[f for f in frames if _is(v, f)])] for v in STREAMING}
    clock = Clock(T - timedelta(minutes=10, seconds=10))
    feeds = make_feeds(clock)
    assert feeds.start() == []
    for venue in STREAMING:
        stream = feeds.stream(venue)
        wait_for(lambda s=stream: s.received >= 3, f"{venue}'s liquidations")
    clock.now = T + timedelta(seconds=20)
    errors = feeds.poll(T, 3 * BAR)
    # the bar closing at T-10m began before the stream connected: null, and said so
    assert {(e.venue, e.kind) for e in errors} == {(v, "liq_down") for v in STREAMING}
    assert all("08:50Z" in e.detail for e in errors)
    clock.now = T + BAR + timedelta(seconds=20)
    assert feeds.poll(T + BAR, 3 * BAR) == []
    frame = stored(feeds)
    for venue in STREAMING:
        assert _row(frame, venue, T - 2 * BAR) is None
        first = _row(frame, venue, T - BAR)
        assert first["liq_long_usd"] == pytest.approx(0.5 * 60_000 + 0.25 * 59_000)
        assert first["liq_short_usd"] == 0.0
        assert first["known_at"] == T + timedelta(seconds=20)
        second = _row(frame, venue, T)
        assert (second["liq_long_usd"], second["liq_short_usd"]) == (0.0, pytest.approx(6_100.0))
        quiet = _row(frame, venue, T + BAR)  # stream up, nothing liquidated: a real 0
        assert (quiet["liq_long_usd"], quiet["liq_short_usd"]) == (0.0, 0.0)
        assert quiet["known_at"] == T + BAR + timedelta(seconds=20)


def _is(venue: str, frame: dict) -> bool:
    if venue == "binanceusdm":
        return frame.get("e") == "forceOrder"
    if venue == "bybit":
        return str(frame.get("topic", "")).startswith("allLiquidation")
    return frame.get("arg", {}).get("channel") == "liquidation-orders"


def test_a_dropped_stream_leaves_its_bar_null_and_reconnects(server, make_feeds):
    venue = "binanceusdm"
    first = liq_frame(venue, "BTC", T - timedelta(minutes=4), "long", 1.0, 60_000.0)
    server.scripts = {venue: [Conn(extra=[first], close=True, wait_s=0.3), Conn()]}
    clock = Clock(T - timedelta(minutes=5, seconds=10))
    feeds = make_feeds(clock, (venue,))
    feeds.start()
    stream = feeds.stream(venue)
    wait_for(lambda: stream.bars.up_since is not None, "the first connection")
    clock.now = T + timedelta(minutes=2, seconds=30)  # the drop happens inside the next bar
    wait_for(lambda: stream.connects >= 2 and stream.bars.up_since is not None, "reconnection")
    assert stream.received == 1
    clock.now = T + BAR + timedelta(seconds=20)
    errors = feeds.poll(T + BAR, 2 * BAR)
    kinds = {e.kind for e in errors}
    assert "liq_down" in kinds and "liq_unavailable" in kinds
    (down,) = [e for e in errors if e.kind == "liq_down"]
    assert "09:05Z" in down.detail and "09:00Z" not in down.detail
    frame = stored(feeds)
    assert _row(frame, venue, T)["liq_long_usd"] == pytest.approx(60_000.0)
    assert _row(frame, venue, T + BAR) is None  # the feed was down: null, never 0
    clock.now = T + 2 * BAR + timedelta(seconds=20)
    assert feeds.poll(T + 2 * BAR, 2 * BAR) == []
    after = _row(stored(feeds), venue, T + 2 * BAR)
    assert (after["liq_long_usd"], after["liq_short_usd"]) == (0.0, 0.0)


def test_garbage_frames_are_recorded_and_refused(server, make_feeds):
    venue = "binanceusdm"
    no_price = liq_frame(venue, "BTC", T - timedelta(minutes=4), "long", 1.0, 60_000.0)
    del no_price["o"]["ap"], no_price["o"]["p"]
    good = liq_frame(venue, "BTC", T - timedelta(minutes=3), "short", 2.0, 50_000.0)
    server.scripts = {
        venue: [Conn(extra=[no_price, good, garbage("truncated_json")]), Conn()],
    }
    clock = Clock(T - timedelta(minutes=5, seconds=10))
    feeds = make_feeds(clock, (venue,))
    feeds.start()
    stream = feeds.stream(venue)
    wait_for(lambda: stream.connects >= 2 and stream.bars.up_since is not None, "the restart")
    clock.now = T + timedelta(seconds=20)
    errors = feeds.poll(T, BAR)
    garbage_errors = [e for e in errors if e.kind == "liq_garbage"]
    assert garbage_errors and "without amount and price" in garbage_errors[0].detail
    assert "x2" in garbage_errors[0].detail  # the refused structure and the broken frame
    assert stream.bars.rejected == 1
    row = _row(stored(feeds), venue, T)
    # the restart happened at the same instant of the clock: the bar stays covered
    assert row["liq_short_usd"] == pytest.approx(100_000.0) and row["liq_long_usd"] == 0.0


def test_a_frame_of_several_liquidations_counts_each_and_late_ones_are_not_added(
    server, make_feeds
):
    venue = "bybit"  # Bybit batches liquidations in one push; ccxt resolves only the first
    frame = liq_frame(venue, "BTC", T - timedelta(minutes=4), "long", 1.0, 60_000.0)
    second = liq_frame(venue, "BTC", T - timedelta(minutes=3), "short", 2.0, 50_000.0)
    frame["data"] += second["data"]
    server.scripts = {venue: [Conn(extra=[frame])]}
    clock = Clock(T - timedelta(minutes=5, seconds=10))
    feeds = make_feeds(clock, (venue,))
    feeds.start()
    stream = feeds.stream(venue)
    wait_for(lambda: stream.received >= 2, "both liquidations of the frame")
    clock.now = T + timedelta(seconds=20)
    assert feeds.poll(T, BAR) == []
    row = _row(stored(feeds), venue, T)
    assert (row["liq_long_usd"], row["liq_short_usd"]) == (60_000.0, 100_000.0)
    # a liquidation of that bar arriving after it was taken changes nothing stored
    with stream.lock:
        stream.bars.add("BTC", to_ms(T) - 1000, "long", 5.0)
    assert stream.bars.late == 1
    clock.now = T + BAR + timedelta(seconds=20)
    feeds.poll(T + BAR, 2 * BAR)
    assert _row(stored(feeds), venue, T)["liq_long_usd"] == 60_000.0
