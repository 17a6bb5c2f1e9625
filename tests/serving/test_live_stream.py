"""The websocket live source: perp candles through ccxt.pro from a websocket server on
127.0.0.1 (``tests/ws_replay.py``: the venues' documented frames, parsed by ccxt.pro's
own handlers), everything else by REST over the replay router of ``tests/ccxt_replay.py``.
Nothing in ccxt is patched; the exchanges' websocket urls point at the local server."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import polars as pl
import pytest
from ccxt_replay import sync_collectors
from ccxt_venues import SyntheticVenues, venue_router
from ws_replay import Clock, Conn, WsReplay, factory_for, garbage, loopback_only  # noqa: F401 (loopback_only: an autouse fixture)

from oihedge.pipelines.ingest.collectors import RetryPolicy
from oihedge.pipelines.ingest.normalise import to_ms
from oihedge.pipelines.store import PanelStore
from oihedge.serving.feeds._base import check_row
from oihedge.serving.feeds.rest import LiveSource
from oihedge.serving.feeds.websocket import StreamSource, live_source, streamed_venues

BAR = timedelta(minutes=5)
BAR_MS = 300_000
VENUES = ("binanceusdm", "bybit", "hyperliquid", "okx")
T = datetime(2024, 4, 10, 9, 0, tzinfo=UTC)  # a bar close
US = timedelta(microseconds=1)
_E = datetime(1970, 1, 1, tzinfo=UTC)
#: candles the streams push at first: open T-20m .. T (the last one still open)
OPENS = [to_ms(T) - k * BAR_MS for k in (4, 3, 2, 1, 0)]

pytestmark = pytest.mark.timeout(30)


@pytest.fixture
def synthetic() -> SyntheticVenues:
    return SyntheticVenues(to_ms(T + timedelta(seconds=30)))


@pytest.fixture
def server(synthetic: SyntheticVenues) -> Iterator[WsReplay]:
    srv = WsReplay(synthetic, BAR_MS)
    yield srv
    srv.close()


def _collectors(synthetic: SyntheticVenues, venues=VENUES):  # noqa: ANN001, ANN202
    router = venue_router(venues, ["BTC"], synthetic)
    return router, sync_collectors(router, venues, retry=RetryPolicy(max_attempts=2))


@pytest.fixture
def make_source(tmp_path, server, synthetic):  # noqa: ANN001, ANN201
    """Builds stream sources on ``server``; closes them before the server stops."""
    made = []

    def make(clock, venues=VENUES, **kwargs):  # noqa: ANN001, ANN202
        router, source = _stream_source(tmp_path, server, synthetic, clock, venues, **kwargs)
        made.append(source)
        return router, source

    yield make
    for source in made:
        source.close()


def _stream_source(tmp_path, server, synthetic, clock, venues=VENUES, **kwargs):  # noqa: ANN001, ANN202
    router, collectors = _collectors(synthetic, venues)
    source = StreamSource(
        PanelStore(tmp_path / "ws"),
        collectors,
        ("BTC",),
        BAR,
        streamed=kwargs.pop("streamed", venues),
        exchange_factory=factory_for(server),
        poll_delay=timedelta(seconds=30),
        clock=clock,
        sleep=clock.sleep,
        start=T,
        retry_s=0.05,
        **kwargs,
    )
    return router, source


def _linear_klines(router) -> list:  # noqa: ANN001
    return [r for r in router.requests_to("/v5/market/kline") if r.params["category"] == "linear"]


def _key(row: dict) -> tuple:
    return (row["venue"], row["symbol"], row["ts"])


def _candle_rows(rows: list[dict], venue: str) -> list[dict]:
    return [r for r in rows if r["venue"] == venue and r.get("close") is not None]


def test_streamed_bar_equals_the_rest_bar(tmp_path, server, synthetic, make_source):
    server.scripts = {v: [Conn(opens=OPENS)] for v in VENUES}
    _, rest_collectors = _collectors(synthetic)
    rest = LiveSource(
        PanelStore(tmp_path / "rest"),
        rest_collectors,
        ("BTC",),
        BAR,
        poll_delay=timedelta(0),
        clock=lambda: T + timedelta(seconds=30),
        sleep=lambda _s: None,
        start=T,
        max_bars=1,
    )
    (expected,) = list(rest)
    router, source = make_source(Clock(T + timedelta(seconds=30)), max_bars=1)
    (bar,) = list(source)
    assert bar.errors == []
    assert source.feed == {v: "websocket" for v in VENUES}
    # the candles did not come by REST; OI, funding and spot did
    assert router.requests_to("/fapi/v1/klines") == []
    assert router.requests_to("/api/v5/market/candles") == []
    assert router.requests_to("/futures/data/openInterestHist")
    assert sorted(bar.rows, key=_key) == sorted(expected.rows, key=_key)
    assert {r["venue"] for r in bar.rows} == set(VENUES)
    assert all(_candle_rows(bar.rows, v) for v in VENUES)
    assert all(check_row(r, BAR // US) is None for r in bar.rows)
    # every venue got its own subscription, built by ccxt
    assert {v for v, msg in server.received if isinstance(msg, dict)} >= set(VENUES)


def test_a_dropped_stream_falls_back_to_rest_then_reconnects(
    tmp_path, server, synthetic, make_source
):
    clock = Clock(T + timedelta(seconds=30))
    # okx: the first connection drops after the subscription; the second streams
    server.scripts = {
        "okx": [Conn(close=True), Conn(opens=[*OPENS, to_ms(T) + BAR_MS], wait_s=0.3)]
    }
    router, source = make_source(
        clock,
        venues=("okx",),
        stream_wait=timedelta(0),
        max_silence=timedelta(minutes=10),  # the test clock jumps a bar
    )
    bars = iter(source)
    first = next(bars)
    # no closed candle from the stream yet: REST polled them, and the bar says why
    assert source.feed["okx"] == "rest"
    assert [e.kind for e in first.errors][-1] == "stream_incomplete"
    assert _candle_rows(first.rows, "okx")
    assert router.requests_to("/api/v5/market/candles") or router.requests_to("history-candles")
    stream = source.streams.get("okx")

    def streamed_through_t() -> bool:  # every symbol's candle opening at T + BAR is in
        with stream.lock:
            return all(s.latest_open >= to_ms(T) + BAR_MS for s in stream.series.values())

    deadline = time.monotonic() + 10  # the second connection's frames, whatever the load
    while not streamed_through_t() and time.monotonic() < deadline:
        time.sleep(0.02)
    assert server.connections["okx"] == 2  # reconnected by itself, and streams again
    assert streamed_through_t()
    clock.now = T + BAR + timedelta(seconds=10)  # the source sleeps until T + 5m30s
    synthetic.now_ms = to_ms(T + BAR + timedelta(seconds=30))
    second = next(bars)
    source.close()
    assert source.feed["okx"] == "websocket"
    kinds = {e.kind for e in second.errors}
    assert "stream_unavailable" in kinds or "stream_error" in kinds  # the drop, recorded
    assert [r["ts"] for r in _candle_rows(second.rows, "okx")] == [(T + BAR - _E) // US]


def test_a_silent_stream_is_replaced_by_rest_and_recorded(tmp_path, server, synthetic, make_source):
    clock = Clock(T + timedelta(seconds=30))
    server.scripts = {"bybit": [Conn(opens=OPENS)]}  # then nothing more
    router, source = make_source(
        clock,
        venues=("bybit",),
        max_silence=timedelta(seconds=60),
        stream_wait=timedelta(seconds=0.5),
    )
    bars = iter(source)
    first = next(bars)
    assert source.feed["bybit"] == "websocket" and first.errors == []
    assert _linear_klines(router) == []
    clock.now = T + BAR + timedelta(seconds=10)  # five minutes without a frame
    synthetic.now_ms = to_ms(T + BAR + timedelta(seconds=30))
    second = next(bars)
    source.close()
    assert source.feed["bybit"] == "rest"
    assert {e.kind for e in second.errors} & {"stream_silent", "stream_incomplete"}
    assert "stream_silent" in {e.kind for e in second.errors}
    rows = _candle_rows(second.rows, "bybit")
    assert [r["ts"] for r in rows] == [(T + BAR - _E) // US]  # the REST candle
    assert _linear_klines(router)


def test_garbage_frames_are_recorded_without_a_crash(tmp_path, server, synthetic, make_source):
    clock = Clock(T + timedelta(seconds=30))
    server.scripts = {
        "binanceusdm": [
            # each kills ccxt's receive loop on its connection (ccxt raises in a callback)
            Conn(before=[garbage("truncated_json")]),
            Conn(before=[garbage("kline_without_candle")]),
            Conn(opens=OPENS),
        ]
    }
    _, source = make_source(
        clock,
        venues=("binanceusdm",),
        stream_wait=timedelta(seconds=5),
    )
    bars = iter(source)
    bar = next(bars)
    source.close()
    kinds = [e.kind for e in bar.errors]
    assert "stream_garbage" in kinds
    assert kinds.count("stream_garbage") == 1  # one error per kind, the count in its detail
    assert "(x2)" in bar.errors[kinds.index("stream_garbage")].detail
    assert server.connections["binanceusdm"] >= 3  # reconnected after each garbage frame
    assert source.feed["binanceusdm"] == "websocket"
    assert _candle_rows(bar.rows, "binanceusdm")


def test_invalid_streamed_values_are_quarantined_with_their_reason(
    tmp_path, server, synthetic, make_source
):
    from ws_replay import candle_frame

    bad = candle_frame("hyperliquid", "BTC", OPENS[3], BAR_MS, (10.0, 9.0, 11.0, 10.5, 1.0))
    server.scripts = {"hyperliquid": [Conn(opens=OPENS[:3], extra=[bad])]}
    bad_next = candle_frame("hyperliquid", "BTC", OPENS[4], BAR_MS, (10.5, 10.6, 10.4, 10.5, 1.0))
    server.scripts["hyperliquid"][0].extra.append(bad_next)
    _, source = make_source(Clock(T + timedelta(seconds=30)), venues=("hyperliquid",))
    bars = iter(source)
    bar = next(bars)
    source.close()
    assert source.feed["hyperliquid"] == "websocket"
    assert (T - _E) // US not in {r["ts"] for r in _candle_rows(bar.rows, "hyperliquid")}
    quarantine = pl.read_parquet(tmp_path / "ws" / "_quarantine" / "*.parquet")
    assert quarantine["reason"].to_list() == ["high_below_low"]


def test_feeds_choose_websocket_or_rest_per_venue(tmp_path, synthetic):
    assert streamed_venues(VENUES, {}) == VENUES
    assert streamed_venues(VENUES, {"okx": "rest"}) == ("binanceusdm", "bybit", "hyperliquid")
    with pytest.raises(ValueError, match="feed of 'okx' must be 'websocket' or 'rest'"):
        streamed_venues(VENUES, {"okx": "ws"})
    _, collectors = _collectors(synthetic)
    store = PanelStore(tmp_path / "p")
    rest_only = live_source(
        store,
        collectors,
        ("BTC",),
        BAR,
        feeds={v: "rest" for v in VENUES},
        max_silence=timedelta(seconds=60),
        stream_wait=timedelta(seconds=1),
        poll_delay=timedelta(0),
    )
    assert type(rest_only) is LiveSource
    mixed = live_source(
        store,
        collectors,
        ("BTC",),
        BAR,
        feeds={"okx": "rest"},
        max_silence=timedelta(seconds=60),
        stream_wait=timedelta(seconds=1),
        poll_delay=timedelta(0),
    )
    assert isinstance(mixed, StreamSource) and "okx" not in mixed.streamed
    mixed.close()
