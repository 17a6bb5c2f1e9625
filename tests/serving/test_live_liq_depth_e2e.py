"""End to end, no exchange: the paper live loop on a live source whose REST pages are
replayed under ccxt (``tests/ccxt_replay.py``; spot books built from the venues' docs)
and whose liquidations are the venues' documented pushes served from a websocket on
127.0.0.1 through ccxt.pro. The decision log shows the liquidation and depth features
the bars filled, for the venues that publish them.

The model is :class:`Echo`: its "contributions" are the feature vector itself, so the
decision log's contributions (finite, non-zero values only) show what the loop computed.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

import numpy as np
import polars as pl
import pytest
from ccxt_replay import sync_collectors
from ccxt_venues import SyntheticVenues, venue_router
from liq_frames import liq_frame
from live_support import make_rig
from ws_replay import Clock, Conn, WsReplay, factory_for, loopback_only  # noqa: F401 (loopback_only: an autouse fixture)

from oihedge.features.registry import CORE_V1
from oihedge.pipelines.ingest.collectors import RetryPolicy
from oihedge.pipelines.ingest.normalise import to_ms
from oihedge.pipelines.store import PanelStore
from oihedge.serving.feeds.liquidations import LiquidationFeeds
from oihedge.serving.feeds.rest import LiveSource
from oihedge.serving.live.decision_log import read_records

VENUES = ("binanceusdm", "bybit", "okx", "hyperliquid")
STREAMING = ("binanceusdm", "bybit", "okx")
BAR = timedelta(minutes=5)
BAR_MS = 300_000
T = datetime(2024, 4, 10, 9, 0, tzinfo=UTC)  # a bar close


BARS = 8
LIQ_FEATURES = ("liq_long_usd_1h", "liq_long_1h_bp_oi", "liq_short_1h_bp_oi")
DEPTH_FEATURES = ("depth_oi_spot_x",)

pytestmark = pytest.mark.timeout(120)


class Echo:
    """A model whose contributions are its input vector (bias 0) and whose probability is
    fixed: the decision log then carries the feature values the loop built."""

    def predict_vector(self, x: np.ndarray) -> tuple[float, float]:
        return 0.01, 0.01

    def contributions(self, x: np.ndarray) -> np.ndarray:
        return np.append(np.asarray(x, dtype=np.float64), 0.0)


def _frames(venue: str) -> list[dict]:
    """Per bar of the run: a long liquidation each bar, a short one every other bar."""
    out = []
    for k in range(BARS + 1):
        close = T + k * BAR
        out.append(liq_frame(venue, "BTC", close - timedelta(minutes=4), "long", 0.5, 60_000.0))
        if k % 2:
            out.append(
                liq_frame(venue, "BTC", close - timedelta(minutes=2), "short", 0.2, 61_000.0)
            )
    return out


def _run(tmp_path, server, *, with_liquidations: bool) -> tuple[pl.DataFrame, list[dict]]:  # noqa: ANN001
    end = T + BARS * BAR
    synthetic = SyntheticVenues(to_ms(end + timedelta(seconds=30)))
    router = venue_router(VENUES, ["BTC"], synthetic)
    collectors = sync_collectors(router, VENUES, retry=RetryPolicy(max_attempts=2))
    clock = Clock(T - BAR - timedelta(seconds=10))
    store = PanelStore(tmp_path / "live")
    source = LiveSource(
        store,
        collectors,
        ("BTC",),
        BAR,
        poll_delay=timedelta(seconds=20),
        lookback=3 * BAR,
        clock=clock,
        sleep=lambda s: setattr(clock, "now", clock.now + timedelta(seconds=s)),
        start=T,
        max_bars=BARS + 1,
    )
    if with_liquidations:
        feeds = LiquidationFeeds(
            store,
            collectors,
            ("BTC",),
            BAR,
            clock=clock,
            exchange_factory=factory_for(server),
            retry_s=0.05,
        )
        source.liquidations = feeds
        assert feeds.start() == []
        deadline = time.monotonic() + 15
        for venue in STREAMING:
            stream = feeds.stream(venue)
            expected = len(_frames(venue))
            while stream.received < expected or stream.bars.up_since is None:
                assert time.monotonic() < deadline, f"{venue}: frames not received"
                time.sleep(0.02)
    rig = make_rig(
        tmp_path / ("with" if with_liquidations else "without"),
        symbols=("BTC",),
        venues=VENUES,
        predictor=Echo(),
        top_k=len(CORE_V1.features),
        explain={"explain_max_age": timedelta(seconds=1)},
    )
    try:
        rig.loop.run(source)
    finally:
        rig.close()
        source.close()
    stored = store.read()
    return stored, [r for r in read_records(rig.log_path) if r.get("kind") == "decision"]


def test_the_decision_log_shows_liquidation_and_depth_features(tmp_path):
    server = WsReplay(SyntheticVenues(to_ms(T)), BAR_MS)
    try:
        server.scripts = {v: [Conn(extra=_frames(v))] for v in STREAMING}
        stored, decisions = _run(tmp_path, server, with_liquidations=True)
    finally:
        server.close()
    # the panel rows the loop read: liquidations for the three streaming venues on every
    # bar of the run, null on hyperliquid (no feed); depth on the venues with a spot book
    run = stored.filter(pl.col("ts") >= T)
    for venue in STREAMING:
        rows = run.filter(pl.col("venue") == venue).sort("ts")
        assert rows["liq_long_usd"].to_list() == [30_000.0] * (BARS + 1)
        assert rows["liq_short_usd"].to_list()[:2] == [0.0, pytest.approx(12_200.0)]
        assert rows["spot_depth_usd"].is_not_null().all()
    hyper = run.filter(pl.col("venue") == "hyperliquid")
    assert hyper["liq_long_usd"].is_null().all() and hyper["spot_depth_usd"].is_null().all()
    last = decisions[-1]
    shown = dict(map(tuple, last["contributions"]))
    # 3 venues x 30 000 USD x 8 bars of the hour (the 12 bars of 1h need 6 to be given)
    assert shown["liq_long_usd_1h"] == pytest.approx(3 * 30_000.0 * (BARS + 1))
    for name in (*LIQ_FEATURES, *DEPTH_FEATURES):
        assert np.isfinite(shown[name]) and shown[name] > 0, name


def test_without_the_feeds_those_features_stay_null(tmp_path):
    server = WsReplay(SyntheticVenues(to_ms(T)), BAR_MS)
    try:
        stored, decisions = _run(tmp_path, server, with_liquidations=False)
    finally:
        server.close()
    assert stored["liq_long_usd"].is_null().all()
    shown = dict(map(tuple, decisions[-1]["contributions"]))
    assert not any(name in shown for name in LIQ_FEATURES)
    assert all(name in shown for name in DEPTH_FEATURES)  # depth comes from REST
