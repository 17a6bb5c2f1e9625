"""The candle bookkeeping of a venue stream (when a streamed candle counts as closed) and
which venues ccxt.pro streams; the streams themselves run in test_live_stream.py."""

from __future__ import annotations

import pytest

from oihedge.serving.feeds.ws_candles import CandleStreams, VenueStream, offers_candle_stream

BAR_MS = 300_000
T = 1_712_739_600_000  # a bar close


class _Clock:
    def __init__(self, now: int) -> None:
        self.now = now

    def __call__(self) -> int:
        return self.now


def _stream(clock: _Clock) -> VenueStream:
    return VenueStream(
        "okx",
        {"BTC": "BTC/USDT:USDT", "ETH": "ETH/USDT:USDT"},
        "5m",
        BAR_MS,
        factory=lambda: None,
        clock_ms=clock,
    )


def _candle(open_ms: int, close: float = 1.0) -> list:
    return [open_ms, close, close, close, close, 1.0]


def test_a_candle_is_closed_after_its_close_time_or_a_later_candle():
    clock = _Clock(T - 10_000)  # ten seconds before the bar closes
    stream = _stream(clock)
    stream._add("BTC/USDT:USDT", [_candle(T - BAR_MS, 1.0)])
    stream._add("ETH/USDT:USDT", [_candle(T - BAR_MS, 2.0)])
    assert stream.closed(T - 3 * BAR_MS, T) is None  # could still change
    clock.now = T + 1_000  # the closing update of BTC
    stream._add("BTC/USDT:USDT", [_candle(T - BAR_MS, 1.5)])
    assert stream.closed(T - 3 * BAR_MS, T) is None  # ETH's last update was before its close
    stream._add("ETH/USDT:USDT", [_candle(T, 2.1)])  # the next ETH candle opened
    closed = stream.closed(T - 3 * BAR_MS, T)
    assert closed == {"BTC": [_candle(T - BAR_MS, 1.5)], "ETH": [_candle(T - BAR_MS, 2.0)]}
    assert stream.silence_ms() == 0 and stream.updates == 4
    # a stream that skipped the bar closing at T: not complete for T + bar
    clock.now = T + BAR_MS + 1_000
    assert stream.closed(T - 3 * BAR_MS, T + BAR_MS) is None


def test_a_candle_without_a_timestamp_is_an_incident_not_a_crash():
    stream = _stream(_Clock(T))
    stream._add("BTC/USDT:USDT", [[None, 1.0, 1.0, 1.0, 1.0, 1.0]])
    stream._add("SOL/USDT:USDT", [_candle(T)])  # not subscribed: ignored
    (incident,) = stream.take_incidents()
    assert incident.kind == "garbage" and stream.take_incidents() == []
    assert stream.series["BTC"].candles == {}


def test_the_project_venues_all_stream_candles():
    for venue in ("binanceusdm", "bybit", "okx", "hyperliquid"):
        assert offers_candle_stream(venue), venue
    assert not offers_candle_stream("no_such_venue")


def test_streams_refuse_a_silence_limit_of_zero():
    with pytest.raises(ValueError, match="max_silence_ms must be > 0, got 0"):
        CandleStreams(clock_ms=lambda: 0, max_silence_ms=0)
