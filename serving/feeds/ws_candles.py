"""Perp candles streamed from the venues' websockets through ccxt.pro, on a background thread.

:class:`CandleStreams` runs one asyncio event loop in a daemon thread; on it, one
:class:`VenueStream` per venue calls ccxt.pro's ``watch_ohlcv_for_symbols`` (or one
``watch_ohlcv`` per symbol where the venue has no multi-symbol stream) in a loop and keeps
every candle update it receives, with the time it arrived. The synchronous side (the
live source) takes the *closed* candles of a bar from it (:meth:`CandleStreams.take`).

A candle is closed when it can no longer change: a later candle of the same symbol has
arrived, or an update of it arrived at or after its close time (venues push the final
state of a candle when it closes). ccxt parses the frames; this module never reads them.

Failures, each recorded as an incident (``kind``, ``detail``) that the source turns into a
:class:`~oihedge.serving.feeds._base.SourceError`:

- the watch raises (connection dropped, refused, subscription rejected): the venue's
  exchange is dropped and a new one reconnects after ``retry_s`` (doubling up to 30 s);
- a frame ccxt cannot handle (truncated JSON, a payload of the wrong shape): ccxt's
  receive loop dies inside an event-loop callback without failing the watch; the loop's
  exception handler records it as ``garbage`` and the stream reconnects at once;
- no candle update for ``max_silence`` (on the injected clock): the stream reconnects.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import ccxt.pro as ccxt_pro

from oihedge.pipelines.ingest.venues import VENUES, VenueSpec
from oihedge.serving.feeds._base import SourceError
from oihedge.serving.feeds.rest import classify_error

__all__ = [
    "CandleStreams",
    "Incident",
    "ReconnectingStream",
    "incident_errors",
    "VenueStream",
    "offers_candle_stream",
]

log = logging.getLogger(__name__)

#: a ccxt unified OHLCV entry: [open_ms, open, high, low, close, base_volume]
Candle = list[Any]
ExchangeFactory = Callable[[], Any]


def offers_candle_stream(venue_id: str) -> bool:
    """ccxt.pro has a class for ``venue_id`` that streams candles (``has['watchOHLCV']``)."""
    cls = getattr(ccxt_pro, venue_id, None)
    return cls is not None and bool(cls().has.get("watchOHLCV"))


def pro_exchange(spec: VenueSpec, markets: Mapping[str, Any]) -> Any:
    """A ccxt.pro exchange for ``spec`` with ``markets`` already loaded (no REST call)."""
    exchange = getattr(ccxt_pro, spec.id)({"options": dict(spec.ccxt_options)})
    exchange.set_markets(list(markets.values()))
    return exchange


@dataclass(frozen=True)
class Incident:
    """Something that went wrong on a stream: ``kind`` as the REST errors
    (``timeout``, ``garbage``, ``unavailable``, ...) or ``silent``; ``detail`` says what."""

    kind: str
    detail: str


@dataclass
class _Series:
    """One symbol's candles: open ms -> (candle, arrival ms), and the latest open seen."""

    candles: dict[int, tuple[Candle, int]] = field(default_factory=dict)
    latest_open: int = -1


def incident_errors(
    venue: str, incidents: Sequence[Incident], *, kind_prefix: str, label: str
) -> list[SourceError]:
    """One source error per kind of incident, ``<kind_prefix>_<kind>``: the first detail,
    and how many there were."""
    by_kind: dict[str, list[str]] = {}
    for incident in incidents:
        by_kind.setdefault(incident.kind, []).append(incident.detail)
    return [
        SourceError(
            venue,
            f"{kind_prefix}_{kind}",
            f"{label}: {found[0]}" + (f" (x{len(found)})" if len(found) > 1 else ""),
        )
        for kind, found in by_kind.items()
    ]


class ReconnectingStream(ABC):
    """What every ccxt.pro stream of the live loop shares (candles, liquidations, spot
    books): one connection at a time from ``factory()``, watched by ``_watch_all`` until it
    fails; a failure is recorded as an :class:`Incident` and the stream reconnects (at once
    after a deliberate restart; after ``retry_s``, doubling up to 30 s, while connections
    deliver nothing). The caller's thread takes the incidents.

    A subclass sets ``venue``, ``factory``, ``clock_ms`` and ``retry_s``, calls
    :meth:`_init_connection` in ``__init__`` and implements ``_watch_all`` and
    :meth:`delivered`; it may run a coroutine beside each connection's watch
    (:meth:`_beside`) and act when a connection ends (:meth:`_dropped`).
    """

    #: how the stream is named in the log
    label = "stream"
    venue: str
    factory: ExchangeFactory
    clock_ms: Callable[[], int]
    retry_s: float

    def _init_connection(self) -> None:
        self.incidents: list[Incident] = []
        self.connects = 0
        self.exchange: Any = None
        self._watch: asyncio.Future[Any] | None = None
        self._closing = False
        self.lock = threading.Condition()

    @abstractmethod
    def delivered(self) -> int:
        """A count that grows with every message received (a connection that delivered
        restarts the backoff)."""

    @abstractmethod
    async def _watch_all(self, exchange: Any) -> None:
        """Watch the connection's feeds until they fail (never returns otherwise)."""

    def _beside(self, exchange: Any) -> asyncio.Future[Any] | None:
        """A task run beside the watch of a new connection (cancelled when it ends)."""
        return None

    def _dropped(self) -> None:  # noqa: B027 - a hook: most streams need nothing here
        """Called when a connection ends, whatever ended it."""

    # -- the event-loop side ------------------------------------------------------------

    async def run(self) -> None:
        """Connect, watch, and reconnect after every failure, until cancelled."""
        delay = self.retry_s
        while not self._closing:
            self.exchange = self.factory()
            self.connects += 1
            delivered = self.delivered()
            self._watch = asyncio.ensure_future(self._watch_all(self.exchange))
            beside = self._beside(self.exchange)
            wait = 0.0  # restarted on purpose (garbage, silence): reconnect at once
            try:
                await self._watch
            except asyncio.CancelledError:
                if self._closing:
                    raise
            except Exception as err:  # noqa: BLE001 - recorded, then reconnect
                self.record(_incident(err))
                # a connection that delivered starts the backoff again
                delay = self.retry_s if self.delivered() > delivered else min(30.0, delay * 2)
                wait = delay
            finally:
                if beside is not None:
                    beside.cancel()
                self._dropped()
                await _close_quietly(self.exchange)
            if not self._closing and wait:
                await asyncio.sleep(wait)

    async def close(self) -> None:
        self._closing = True
        if self._watch is not None:
            self._watch.cancel()
        await _close_quietly(self.exchange)

    # -- the caller's side (any thread) --------------------------------------------------

    def record(self, incident: Incident) -> None:
        with self.lock:
            self.incidents.append(incident)
        log.warning("%s %s: %s: %s", self.venue, self.label, incident.kind, incident.detail)

    def take_incidents(self) -> list[Incident]:
        with self.lock:
            taken, self.incidents = self.incidents, []
        return taken


class VenueStream(ReconnectingStream):
    """One venue's candle stream (runs on the :class:`CandleStreams` event loop).

    ``symbols``: ccxt unified perp symbols by base asset. ``timeframe``: ccxt timeframe of
    the bar. ``factory``: builds a fresh ccxt.pro exchange (markets set) for each
    connection. ``clock_ms``: wall clock, epoch ms. ``keep_ms``: candles older than this
    (by open time, from the newest) are forgotten.
    """

    def __init__(
        self,
        venue: str,
        symbols: Mapping[str, str],
        timeframe: str,
        bar_ms: int,
        factory: ExchangeFactory,
        clock_ms: Callable[[], int],
        *,
        retry_s: float = 1.0,
        keep_ms: int = 86_400_000,
    ) -> None:
        self.venue = venue
        self.symbols = dict(symbols)
        self.timeframe = timeframe
        self.bar_ms = bar_ms
        self.factory = factory
        self.clock_ms = clock_ms
        self.retry_s = retry_s
        self.keep_ms = keep_ms
        self.series = {base: _Series() for base in self.symbols}
        self._base_of = {symbol: base for base, symbol in self.symbols.items()}
        self._init_connection()
        self.updates = 0
        self.last_update_ms: int | None = None
        self.started_ms = clock_ms()

    def delivered(self) -> int:
        return self.updates

    def restart(self, incident: Incident) -> None:
        """Record ``incident`` and drop the connection (``run`` reconnects)."""
        self.record(incident)
        with self.lock:
            self.last_update_ms = None
            self.started_ms = self.clock_ms()
        if self._watch is not None and not self._watch.done():
            self._watch.cancel()

    async def _watch_all(self, exchange: Any) -> None:
        if exchange.has.get("watchOHLCVForSymbols"):
            pairs = [[symbol, self.timeframe] for symbol in self.symbols.values()]
            while True:
                updates = await exchange.watch_ohlcv_for_symbols(pairs)
                for symbol, by_tf in updates.items():
                    self._add(symbol, by_tf.get(self.timeframe) or [])
        else:
            await asyncio.gather(*(self._watch_one(exchange, s) for s in self.symbols.values()))

    async def _watch_one(self, exchange: Any, symbol: str) -> None:
        while True:
            self._add(symbol, await exchange.watch_ohlcv(symbol, self.timeframe))

    def _add(self, symbol: str, candles: Sequence[Candle]) -> None:
        base = self._base_of.get(symbol)
        if base is None:
            return
        now = self.clock_ms()
        with self.lock:
            series = self.series[base]
            for candle in candles:
                if not isinstance(candle, list | tuple) or not isinstance(candle[0], int):
                    self.incidents.append(Incident("garbage", f"a candle {candle!r:.80}"))
                    continue
                series.candles[candle[0]] = (list(candle), now)
                series.latest_open = max(series.latest_open, candle[0])
            for old in [o for o in series.candles if o < series.latest_open - self.keep_ms]:
                del series.candles[old]
            self.last_update_ms = now
            self.updates += 1
            self.lock.notify_all()

    # -- the caller's side (any thread) --------------------------------------------------

    def silence_ms(self) -> int:
        """Milliseconds since the last candle update (or since the stream (re)started)."""
        with self.lock:
            last = self.last_update_ms if self.last_update_ms is not None else self.started_ms
        return self.clock_ms() - last

    def closed(self, since_ms: int, until_ms: int) -> dict[str, list[Candle]] | None:
        """Closed candles closing in ``[since_ms, until_ms]`` per base, or None when a
        symbol lacks the one closing at ``until_ms``."""
        out: dict[str, list[Candle]] = {}
        with self.lock:
            for base, series in self.series.items():
                picked = []
                for open_ms in sorted(series.candles):
                    candle, arrived = series.candles[open_ms]
                    close_ms = open_ms + self.bar_ms
                    final = series.latest_open > open_ms or arrived >= close_ms
                    if since_ms <= close_ms <= until_ms and final:
                        picked.append(candle)
                if not picked or picked[-1][0] + self.bar_ms != until_ms:
                    return None
                out[base] = picked
        return out


class CandleStreams:
    """The venues' candle streams on one background event loop.

    ``max_silence_ms``: a stream without a candle update for this long (``clock_ms``) is
    reconnected. ``check_s``: how often (seconds, real time) the watchdog looks.
    """

    def __init__(
        self,
        *,
        clock_ms: Callable[[], int],
        max_silence_ms: int,
        check_s: float = 0.5,
    ) -> None:
        if max_silence_ms <= 0:
            raise ValueError(f"max_silence_ms must be > 0, got {max_silence_ms!r}")
        self.clock_ms = clock_ms
        self.max_silence_ms = max_silence_ms
        self.check_s = check_s
        self.streams: dict[str, VenueStream] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._tasks: list[asyncio.Future[Any]] = []

    def add(self, stream: VenueStream) -> None:
        """Start ``stream`` (the event loop is started by the first one)."""
        loop = self._ensure_loop()
        self.streams[stream.venue] = stream
        self._tasks.append(asyncio.run_coroutine_threadsafe(stream.run(), loop))

    def get(self, venue: str) -> VenueStream | None:
        return self.streams.get(venue)

    def close(self) -> None:
        """Stop every stream, close their exchanges and the event loop (idempotent)."""
        loop, thread = self._loop, self._thread
        if loop is None or thread is None:
            return
        self._loop = self._thread = None
        if not thread.is_alive():  # interpreter shutdown: nothing runs the loop any more
            return

        async def shutdown() -> None:
            await asyncio.gather(*(s.close() for s in self.streams.values()))
            for task in asyncio.all_tasks():
                if task is not asyncio.current_task():
                    task.cancel()

        try:
            asyncio.run_coroutine_threadsafe(shutdown(), loop).result(timeout=10)
        except Exception as err:  # noqa: BLE001 - shutting down: nothing left to save
            log.warning("closing the candle streams: %s", err)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=10)
        if not thread.is_alive():
            loop.close()

    def _ensure_loop(self) -> asyncio.AbstractEventLoop:
        if self._loop is not None:
            return self._loop
        loop = asyncio.new_event_loop()
        loop.set_exception_handler(self._on_loop_error)
        thread = threading.Thread(target=loop.run_forever, name="candle-streams", daemon=True)
        thread.start()
        self._loop, self._thread = loop, thread
        asyncio.run_coroutine_threadsafe(self._watchdog(), loop)
        return loop

    async def _watchdog(self) -> None:
        while True:
            await asyncio.sleep(self.check_s)
            for stream in list(self.streams.values()):
                silent = stream.silence_ms()
                if silent > self.max_silence_ms:
                    stream.restart(
                        Incident("silent", f"no candle for {silent / 1000:.0f}s, reconnecting")
                    )

    def _on_loop_error(self, loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        """ccxt handles frames in event-loop callbacks: a frame it cannot parse raises
        there, ends that connection's receive loop and lands here."""
        stream = self._stream_of(context)
        err = context.get("exception")
        if stream is None:
            loop.default_exception_handler(context)
            return
        detail = f"{type(err).__name__}: {err}" if err is not None else context.get("message")
        stream.restart(Incident("garbage", f"a frame ccxt could not handle: {detail!s:.200}"))

    def _stream_of(self, context: Mapping[str, Any]) -> VenueStream | None:
        callback = getattr(context.get("handle"), "_callback", None)
        # the ccxt client is the bound method's owner or a cell of the callback's closure
        owners = [getattr(callback, "__self__", None)]
        owners += [_cell(cell) for cell in getattr(callback, "__closure__", None) or ()]
        for stream in self.streams.values():
            clients = list((getattr(stream.exchange, "clients", None) or {}).values())
            if any(owner is client for owner in owners for client in clients):
                return stream
        return None


def _incident(err: BaseException) -> Incident:
    text = f"{type(err).__name__}: {' '.join(str(err).split())}"[:300]
    if isinstance(err, ccxt_pro.NetworkError) and "closed" in text.lower():
        return Incident("unavailable", text)
    return Incident(classify_error(text), text)


def _cell(cell: Any) -> Any:
    try:
        return cell.cell_contents
    except ValueError:  # an empty cell
        return None


async def _close_quietly(exchange: Any) -> None:
    if exchange is None:
        return
    try:
        await exchange.close()
    except Exception as err:  # noqa: BLE001 - a dead connection may fail to close
        log.debug("closing a stream exchange: %s", err)


def venue_stream(
    venue: str,
    bases: Sequence[str],
    bar_ms: int,
    timeframe: str,
    markets: Mapping[str, Any],
    clock_ms: Callable[[], int],
    *,
    factory: ExchangeFactory | None = None,
    retry_s: float = 1.0,
) -> VenueStream:
    """A :class:`VenueStream` of ``bases``' perps on ``venue`` (markets from its REST
    collector); ``factory`` replaces the exchange builder (tests point the ws url)."""
    spec = VENUES[venue]
    symbols = {base: spec.perp_symbol(base) for base in bases}
    build = factory or (lambda: pro_exchange(spec, markets))
    return VenueStream(venue, symbols, timeframe, bar_ms, build, clock_ms, retry_s=retry_s)
