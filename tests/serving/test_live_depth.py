"""Streamed spot depth: Bybit's documented spot order-book pushes
(``tests/fixtures/ws/bybit_orderbook_from_docs.json``) served from a websocket on 127.0.0.1
and kept up to date by ccxt.pro's own book handling; the bar's median depth replaces the
REST snapshot the live source polled, which stays where the stream had no sample."""

from __future__ import annotations

import copy
import json
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import polars as pl
import pytest
from ccxt_replay import sync_collectors
from ccxt_venues import SyntheticVenues, venue_router
from ws_replay import Clock, Conn, WsReplay, loopback_only, point_at  # noqa: F401 (loopback_only: an autouse fixture)

from oihedge.pipelines.ingest.collectors import RetryPolicy
from oihedge.pipelines.ingest.normalise import to_ms
from oihedge.pipelines.store import PanelStore
from oihedge.serving.feeds.depth import DepthFeeds, pro_spot_exchange
from oihedge.serving.feeds.rest import LiveSource

BAR = timedelta(minutes=5)
T = datetime(2024, 4, 10, 9, 0, tzinfo=UTC)
FRAMES = json.loads(
    (
        Path(__file__).resolve().parents[1] / "fixtures" / "ws" / "bybit_orderbook_from_docs.json"
    ).read_text()
)

pytestmark = pytest.mark.timeout(40)


def frame(kind: str, bids: list, asks: list) -> dict:
    out = copy.deepcopy(FRAMES[kind])
    out["data"]["b"] = [[str(p), str(a)] for p, a in bids]
    out["data"]["a"] = [[str(p), str(a)] for p, a in asks]
    return out


# mid 60 000, band 59 400 .. 60 600: the 59 000 bid and 61 000 ask are outside
SNAPSHOT = frame(
    "snapshot", [(59900, 1), (59500, 2), (59000, 3)], [(60100, 1), (60500, 2), (61000, 3)]
)
A = 59900 * 1 + 59500 * 2 + 60100 * 1 + 60500 * 2
B = A + 59900 * 4  # the 59 900 bid grows from 1 to 5
C = B - 60500 * 2  # the 60 500 ask is deleted
CROSSED = frame("delta", [(60200, 1)], [])  # a bid above the best ask
UNCROSSED = frame("delta", [(60200, 0)], [])


def wait_for(check: Callable[[], bool], what: str, seconds: float = 10.0) -> None:
    deadline = time.monotonic() + seconds
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


def test_the_bar_takes_the_median_of_the_streamed_samples_else_the_rest_snapshot(tmp_path):
    server = WsReplay(SyntheticVenues(to_ms(T)), 300_000)
    frames = [
        SNAPSHOT,
        frame("delta", [(59900, 5)], []),
        frame("delta", [], [(60500, 0)]),
        CROSSED,
        UNCROSSED,
    ]
    server.scripts = {"bybit": [Conn(extra=frames, gap_s=0.15)]}
    synthetic = SyntheticVenues(to_ms(T + BAR + timedelta(seconds=30)))
    router = venue_router(["bybit"], ["BTC"], synthetic)
    collectors = sync_collectors(router, ["bybit"], retry=RetryPolicy(max_attempts=2))
    clock = Clock(T - timedelta(minutes=4))
    store = PanelStore(tmp_path / "live")
    source = LiveSource(
        store,
        collectors,
        ("BTC",),
        BAR,
        poll_delay=timedelta(seconds=20),
        clock=clock,
        sleep=lambda s: None,
        start=T,
    )
    source.depth = DepthFeeds(
        store,
        collectors,
        ("BTC",),
        BAR,
        clock=clock,
        sample_every=timedelta(0),
        exchange_factory=lambda spec, m: point_at(pro_spot_exchange(spec, m), server.base_url),
        retry_s=0.05,
    )
    try:
        assert source.depth.start() == []
        stream = source.depth.stream("bybit")
        wait_for(lambda: stream.updates >= 5, "the five book updates")
        assert [usd for _, usd in stream.samples["BTC"]] == [A, B, C, C]  # crossed: refused
        clock.now = T + timedelta(seconds=20)
        bar = source.poll(T)
        (crossed,) = [e for e in bar.errors if e.kind == "depth_garbage"]
        assert "crossed book rejected: best bid 60200.0 >= best ask 60100.0" in crossed.detail
        # median of A, B, C, C = C (the REST snapshot of the same bar was replaced)
        row = store.read().filter(pl.col("ts") == T).to_dicts()[0]
        assert row["spot_depth_usd"] == C
        assert row["known_at"] >= T + timedelta(seconds=20)  # the poll (or a later series)
        assert router.requests_to("/v5/market/orderbook")  # the REST snapshot was taken
        # the next bar has no streamed sample: the REST snapshot stays its value
        clock.now = T + BAR + timedelta(seconds=20)
        source.poll(T + BAR)
        rest = synthetic.book_levels("bybit", "BTC", synthetic.now_ms)
        nxt = store.read().filter(pl.col("ts") == T + BAR)["spot_depth_usd"].item()
        mid = (rest[0][0][0] + rest[1][0][0]) / 2
        expected = sum(p * a for p, a in rest[0] if p >= mid * 0.99) + sum(
            p * a for p, a in rest[1] if p <= mid * 1.01
        )
        assert nxt == pytest.approx(expected) and nxt != C
    finally:
        source.close()
        server.close()
