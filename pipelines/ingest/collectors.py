"""Collectors: one ccxt exchange per venue, called with retries, paced by ccxt's limiter.

The work itself (which pages to ask for, what to do with them) is written once, as a
generator that yields :class:`Call` objects and receives their results (see
:mod:`oihedge.pipelines.ingest.incremental`). A collector only executes calls: :class:`Collector`
with ccxt's synchronous classes (``requests``), :class:`AsyncCollector` with
``ccxt.async_support`` (``aiohttp``). Both share the retry policy:

- retried, with exponential backoff and full jitter: ``NetworkError`` and its kinds
  (``RateLimitExceeded``, ``DDoSProtection``, ``ExchangeNotAvailable``, ``RequestTimeout``);
- not retried, a clear :class:`CollectorError` instead: ``BadSymbol`` (unknown market),
  ``AuthenticationError`` (and every other ``ExchangeError``), ``BadResponse``;
- anything ccxt's parser raises on a malformed payload (``TypeError``, ``KeyError``, ...)
  becomes :class:`MalformedResponseError`.

ccxt's rate limiter is always on (``enableRateLimit``); :class:`Pacing` wraps it so that
a run can account for how long the limits make it take, and a replay (tests, benchmark)
can run on virtual time instead of sleeping.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Callable, Generator, Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any, TypeVar

import ccxt
import ccxt.async_support as ccxt_async

from oihedge.pipelines.ingest.normalise import MalformedResponseError
from oihedge.pipelines.ingest.venues import VenueSpec

T = TypeVar("T")
Job = Generator["Call", Any, T]

_PARSE_ERRORS = (TypeError, KeyError, IndexError, AttributeError, ValueError)


class CollectorError(Exception):
    """A venue request that failed for a reason retrying cannot fix."""


class UnknownSymbolError(CollectorError):
    """The venue lists no market for the requested symbol."""


class RetriesExhaustedError(CollectorError):
    """A transient error persisted through every retry."""


__all__ = [
    "AsyncCollector",
    "Call",
    "Collector",
    "CollectorError",
    "MalformedResponseError",
    "Pacing",
    "RetriesExhaustedError",
    "RetryPolicy",
    "UnknownSymbolError",
    "make_exchange",
]


@dataclass(frozen=True)
class Call:
    """One ccxt method call: ``getattr(exchange, method)(*args, **kwargs)``.

    ``series`` names the panel series it serves (for per-endpoint pacing), ``what``
    describes it in error messages (venue, symbol, window).
    """

    method: str
    args: tuple[Any, ...] = ()
    kwargs: Mapping[str, Any] = field(default_factory=dict)
    series: str = ""
    what: str = ""
    #: "perp" or "spot": which of the venue's exchanges (``VenueSpec.spot_ccxt_id``)
    market: str = "perp"


@dataclass(frozen=True)
class RetryPolicy:
    """Exponential backoff with full jitter: attempt n waits U(0, min(cap, base * 2**n)).

    ``max_attempts`` counts the first try. Durations in seconds.
    """

    max_attempts: int = 6
    base_s: float = 0.5
    cap_s: float = 30.0

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ValueError(f"max_attempts must be >= 1, got {self.max_attempts!r}")
        if self.base_s < 0 or self.cap_s < self.base_s:
            raise ValueError(f"need 0 <= base_s <= cap_s, got {self.base_s!r}, {self.cap_s!r}")

    def delay(self, attempt: int, rng: random.Random) -> float:
        """Seconds to wait before retry number ``attempt`` (0-based)."""
        return rng.uniform(0.0, min(self.cap_s, self.base_s * 2**attempt))


@dataclass
class Pacing:
    """Accounts ccxt's rate limiter: requests, cost units and the wait they imply.

    ``virtual=False`` (live runs): ccxt's throttle sleeps as usual and the implied wait is
    only recorded. ``virtual=True`` (replays): nothing sleeps; the wait is what a real run
    would have spent, so a replayed backfill reports its real duration under the limits.
    ``wait_s`` is the sum over requests of the spacing the limiter enforces
    (``rateLimit`` ms x cost, or the venue's per-endpoint floor when larger).
    """

    virtual: bool = False
    requests: int = 0
    cost: float = 0.0
    wait_s: float = 0.0
    retry_wait_s: float = 0.0

    def record(self, spacing_s: float, cost: float) -> None:
        self.requests += 1
        self.cost += cost
        self.wait_s += spacing_s


def make_exchange(
    spec: VenueSpec,
    *,
    asynchronous: bool = False,
    session: object | None = None,
    pacing: Pacing | None = None,
    config: Mapping[str, object] | None = None,
    spot: bool = False,
) -> Any:
    """A ccxt exchange for ``spec`` with the rate limiter on and accounted by ``pacing``.

    ``spot=True`` builds the venue's separate spot class (``spec.spot_ccxt_id``).
    ``session`` replaces the HTTP session (a ``requests.Session`` for the sync classes,
    an aiohttp-like session for the async ones); ``config`` is merged into ccxt's.
    """
    module = ccxt_async if asynchronous else ccxt
    ccxt_id = spec.spot_ccxt_id if spot and spec.spot_ccxt_id else spec.id
    base = getattr(module, ccxt_id)
    preset = spec.spot_ccxt_options if spot and spec.spot_ccxt_id else spec.ccxt_options
    options = {**dict(preset), **dict((config or {}).get("options", {}))}
    settings: dict[str, object] = {**dict(config or {}), "enableRateLimit": True}
    settings["options"] = options
    if session is not None:
        settings["session"] = session
    cls = _paced_class(base, asynchronous)
    exchange = cls(settings)
    exchange.oihedge_pacing = pacing or Pacing()
    exchange.oihedge_floor_s = 0.0
    return exchange


_PACED: dict[tuple[type, bool], type] = {}


def _paced_class(base: type, asynchronous: bool) -> type:
    """A subclass of ccxt's exchange whose throttle also feeds :class:`Pacing` and which
    refuses a truncated JSON body instead of parsing it as an empty page."""
    key = (base, asynchronous)
    if key in _PACED:
        return _PACED[key]

    def spacing(self: Any, cost: float | None) -> tuple[float, float]:
        units = 1.0 if cost is None else float(cost)
        return max(self.rateLimit * units / 1000.0, self.oihedge_floor_s), units

    if asynchronous:

        async def throttle(self: Any, cost: float | None = None) -> Any:
            seconds, units = spacing(self, cost)
            self.oihedge_pacing.record(seconds, units)
            if self.oihedge_pacing.virtual:
                return None
            if self.oihedge_floor_s > self.rateLimit * units / 1000.0:
                await asyncio.sleep(self.oihedge_floor_s)
                return None
            return await base.throttle(self, cost)

    else:

        def throttle(self: Any, cost: float | None = None) -> Any:
            seconds, units = spacing(self, cost)
            self.oihedge_pacing.record(seconds, units)
            if self.oihedge_pacing.virtual:
                return None
            if self.oihedge_floor_s > self.rateLimit * units / 1000.0:
                elapsed = (time.time() * 1000 - self.lastRestRequestTimestamp) / 1000
                time.sleep(max(0.0, self.oihedge_floor_s - elapsed))
                return None
            return base.throttle(self, cost)

    def parse_json(self: Any, http_response: Any) -> Any:
        # ccxt returns None for a body that is not JSON and the fetch_* methods then parse
        # the raw text into an empty list: a truncated page would pass for an empty one
        parsed = base.parse_json(self, http_response)
        if parsed is None and isinstance(http_response, str):
            head = http_response.lstrip()[:1]
            if head in ("{", "["):
                raise ccxt.BadResponse(
                    f"{self.id}: body is not valid JSON ({len(http_response)} bytes): "
                    f"{http_response[:60]!r}..."
                )
        return parsed

    # ccxt's history parsers drop an entry without a timestamp (its since filter): a page
    # of such entries would pass for an empty one, so they are refused here instead
    def parse_ohlcv(self: Any, ohlcv: Any, market: Any = None) -> Any:
        parsed = base.parse_ohlcv(self, ohlcv, market)
        if not parsed or not isinstance(parsed[0], int):
            raise ccxt.BadResponse(f"{self.id}: a candle without a timestamp: {ohlcv!r:.80}")
        return parsed

    def parse_open_interests_history(
        self: Any, response: Any, market: Any = None, since: Any = None, limit: Any = None
    ) -> Any:
        for entry in response or []:
            if not isinstance(self.parse_open_interest(entry, market).get("timestamp"), int):
                raise ccxt.BadResponse(
                    f"{self.id}: an open-interest entry without a timestamp: {entry!r:.80}"
                )
        return base.parse_open_interests_history(self, response, market, since, limit)

    methods = {
        "throttle": throttle,
        "parse_json": parse_json,
        "parse_ohlcv": parse_ohlcv,
        "parse_open_interests_history": parse_open_interests_history,
    }
    cls = type(f"Paced{base.__name__}", (base,), methods)
    _PACED[key] = cls
    return cls


class _Base:
    """What both collectors share: the spec, the pacing, the retry bookkeeping."""

    def __init__(
        self,
        spec: VenueSpec,
        exchange: Any,
        spot_exchange: Any | None,
        *,
        retry: RetryPolicy | None = None,
        seed: int | None = None,
    ) -> None:
        self.spec = spec
        self.exchange = exchange
        self.spot_exchange = spot_exchange or exchange
        self.retry = retry or RetryPolicy()
        self.rng = random.Random(seed)
        self.retries = 0

    @property
    def pacing(self) -> Pacing:
        """The exchange's :class:`Pacing` record."""
        return self.exchange.oihedge_pacing

    def _prepare(self, call: Call) -> Callable[..., Any]:
        exchange = self.spot_exchange if call.market == "spot" else self.exchange
        floor = self.spec.min_request_interval.get(call.series, timedelta(0))
        exchange.oihedge_floor_s = floor.total_seconds()
        return getattr(exchange, call.method)

    def _classify(self, call: Call, err: BaseException, attempt: int) -> float:
        """Seconds to wait before retrying ``err``; raises when it must not be retried."""
        what = call.what or f"{self.spec.id} {call.method}"
        if isinstance(err, ccxt.NetworkError):
            if attempt + 1 >= self.retry.max_attempts:
                raise RetriesExhaustedError(
                    f"{what}: gave up after {attempt + 1} attempts: "
                    f"{type(err).__name__}: {_short(err)}"
                ) from err
            self.retries += 1
            return self.retry.delay(attempt, self.rng)
        if isinstance(err, ccxt.BadSymbol):
            raise UnknownSymbolError(
                f"{what}: the venue rejected the symbol: {_short(err)}"
            ) from err
        if isinstance(err, ccxt.AuthenticationError):
            raise CollectorError(
                f"{what}: authentication refused ({type(err).__name__}); public market data "
                f"needs no API key, check OIHEDGE_{self.spec.id.upper()}_API_KEY: {_short(err)}"
            ) from err
        if isinstance(err, ccxt.BadResponse | MalformedResponseError):
            raise MalformedResponseError(f"{what}: malformed response: {_short(err)}") from err
        if isinstance(err, ccxt.BaseError):
            raise CollectorError(f"{what}: {type(err).__name__}: {_short(err)}") from err
        if isinstance(err, _PARSE_ERRORS):
            raise MalformedResponseError(
                f"{what}: malformed response ({type(err).__name__}: {_short(err)})"
            ) from err
        raise err


class Collector(_Base):
    """Executes :class:`Call` objects on a synchronous ccxt exchange."""

    def __init__(
        self,
        spec: VenueSpec,
        exchange: Any | None = None,
        spot_exchange: Any | None = None,
        *,
        retry: RetryPolicy | None = None,
        sleep: Callable[[float], None] = time.sleep,
        seed: int | None = None,
    ) -> None:
        exchange = exchange or make_exchange(spec)
        if spot_exchange is None and spec.spot_ccxt_id:
            spot_exchange = make_exchange(spec, spot=True, pacing=exchange.oihedge_pacing)
        super().__init__(spec, exchange, spot_exchange, retry=retry, seed=seed)
        self._sleep = sleep

    def call(self, call: Call) -> Any:
        """Run one call with retries; returns ccxt's result."""
        method = self._prepare(call)
        for attempt in range(self.retry.max_attempts):
            try:
                return method(*call.args, **dict(call.kwargs))
            except Exception as err:  # noqa: BLE001 - classified below
                wait = self._classify(call, err, attempt)
            self.pacing.retry_wait_s += wait
            self._sleep(wait)
        raise AssertionError("unreachable")  # pragma: no cover

    def run(self, job: Job[T]) -> T:
        """Drive a job generator to completion; returns its value."""
        try:
            call = next(job)
            while True:
                call = job.send(self.call(call))
        except StopIteration as stop:
            return stop.value
        finally:
            job.close()  # on an error here, the job's own cleanup (flushing pages) runs

    def close(self) -> None:
        """Release the HTTP session (the sync classes need nothing else)."""


class AsyncCollector(_Base):
    """Executes :class:`Call` objects on a ``ccxt.async_support`` exchange."""

    def __init__(
        self,
        spec: VenueSpec,
        exchange: Any | None = None,
        spot_exchange: Any | None = None,
        *,
        retry: RetryPolicy | None = None,
        sleep: Callable[[float], Any] = asyncio.sleep,
        seed: int | None = None,
    ) -> None:
        exchange = exchange or make_exchange(spec, asynchronous=True)
        if spot_exchange is None and spec.spot_ccxt_id:
            spot_exchange = make_exchange(
                spec, asynchronous=True, spot=True, pacing=exchange.oihedge_pacing
            )
        super().__init__(spec, exchange, spot_exchange, retry=retry, seed=seed)
        self._sleep = sleep

    async def call(self, call: Call) -> Any:
        """Run one call with retries; returns ccxt's result."""
        method = self._prepare(call)
        for attempt in range(self.retry.max_attempts):
            try:
                return await method(*call.args, **dict(call.kwargs))
            except Exception as err:  # noqa: BLE001 - classified below
                wait = self._classify(call, err, attempt)
            self.pacing.retry_wait_s += wait
            await self._sleep(wait)
        raise AssertionError("unreachable")  # pragma: no cover

    async def run(self, job: Job[T]) -> T:
        """Drive a job generator to completion; returns its value."""
        try:
            call = next(job)
            while True:
                call = job.send(await self.call(call))
        except StopIteration as stop:
            return stop.value
        finally:
            job.close()  # on an error here, the job's own cleanup (flushing pages) runs

    async def close(self) -> None:
        """Close the ccxt exchanges (their aiohttp sessions when they own them)."""
        await self.exchange.close()
        if self.spot_exchange is not self.exchange:
            await self.spot_exchange.close()


def _short(err: BaseException, limit: int = 300) -> str:
    text = " ".join(str(err).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."
