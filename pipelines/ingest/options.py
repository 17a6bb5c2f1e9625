"""The options collector: Deribit's option chains through ccxt -> the panel's options columns.

Deribit lists options on BTC and ETH (:data:`OPTIONS_VENUE`). One public request per
currency, ``public/get_book_summary_by_currency`` with ``kind=option`` (ccxt's implicit
API, ``public_get_get_book_summary_by_currency``; ccxt's own ``fetch_option_chain`` wraps
the same endpoint but needs every market loaded first and drops ``mark_iv``), gives the
whole chain; :mod:`oihedge.pipelines.ingest.options_chain` turns it into ``opt_oi_usd``,
``opt_put_call_oi``, ``opt_iv_atm_pct`` and ``opt_rr25_pct``.

Deribit publishes no history of its option chains, so the series is a snapshot: a fetch
at time T is the row of the bar closing at ``floor(T, bar)`` on venue ``deribit``, with
``known_at`` = T (as the OI snapshots of venues without OI history). ``oihedge ingest``
takes one snapshot per run and skips a bar that already has one (run it every bar to
build the series; missed bars stay null); the live loop takes one per bar. A symbol
Deribit lists no options for gets no row at all: its options columns are null, never
zero. A number the chain does not allow (e.g. the skew when the wings have no mark IV)
is null on the row, with the reason in the run's report.

The requests go through :class:`oihedge.pipelines.ingest.collectors.Collector` (or the async one),
so they share the other venues' retries, backoff and rate limiting, and a malformed or garbage page
is a one-line :class:`~oihedge.pipelines.ingest.normalise.MalformedResponseError`.
"""

from __future__ import annotations

from collections.abc import Callable, Generator, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from types import MappingProxyType
from typing import Any

import polars as pl

from oihedge.features.schema import PANEL_SCHEMA
from oihedge.pipelines.ingest import collectors
from oihedge.pipelines.ingest.collectors import AsyncCollector, Call, Collector, Pacing
from oihedge.pipelines.ingest.normalise import (
    MalformedResponseError,
    floor_ms,
    from_ms,
    to_ms,
    to_panel,
)
from oihedge.pipelines.ingest.options_chain import ChainSummary, summarise

#: the columns this collector fills
OPTIONS_COLUMNS: tuple[str, ...] = (
    "opt_oi_usd",
    "opt_put_call_oi",
    "opt_iv_atm_pct",
    "opt_rr25_pct",
)
SERIES_NAME = "options"
METHOD = "public_get_get_book_summary_by_currency"


@dataclass(frozen=True)
class OptionsVenue:
    """The facts about an options venue that the collectors and the ingest job read.

    It has the attributes of :class:`~oihedge.pipelines.ingest.venues.VenueSpec` that
    :func:`~oihedge.pipelines.ingest.collectors.make_exchange` and the collectors use (``id``, the
    ccxt options, no separate spot class, no request floor): an options venue has no perp series, so
    it is not in the perp venue table.
    """

    id: str = "deribit"
    #: bases with listed options (Deribit's inverse, coin-settled chains)
    currencies: tuple[str, ...] = ("BTC", "ETH")
    ccxt_options: Mapping[str, object] = field(default_factory=lambda: MappingProxyType({}))
    spot_ccxt_id: None = None
    spot_ccxt_options: Mapping[str, object] = field(default_factory=lambda: MappingProxyType({}))
    min_request_interval: Mapping[str, timedelta] = field(
        default_factory=lambda: MappingProxyType({})
    )
    notes: str = (
        "public/get_book_summary_by_currency (kind=option): one request per currency, "
        "cost 1 in ccxt's limiter (Deribit: 20 req/s burst for public methods); no history"
    )


OPTIONS_VENUE = OptionsVenue()


def options_collector(
    venue: OptionsVenue = OPTIONS_VENUE,
    *,
    asynchronous: bool = False,
    session: object | None = None,
    pacing: Pacing | None = None,
    **kwargs: Any,
) -> Collector | AsyncCollector:
    """A collector on the venue's ccxt exchange (``session`` replaces its HTTP session)."""
    # (looked up on the module at call time, so a replay can patch it as for the venues)
    exchange = collectors.make_exchange(
        venue,  # type: ignore[arg-type]
        asynchronous=asynchronous,
        session=session,
        pacing=pacing,
    )
    cls = AsyncCollector if asynchronous else Collector
    return cls(venue, exchange, None, **kwargs)  # type: ignore[arg-type]


@dataclass(frozen=True)
class OptionsSnapshot:
    """One currency's chain summarised at ``fetched`` (the row's ``known_at``)."""

    symbol: str
    fetched: datetime
    summary: ChainSummary


def chain_call(venue: OptionsVenue, symbol: str) -> Call:
    """The request for ``symbol``'s option chain."""
    return Call(
        METHOD,
        ({"currency": symbol, "kind": "option"},),
        series=SERIES_NAME,
        what=f"{venue.id} {symbol} option chain",
    )


def read_chain(response: object, symbol: str, fetched: datetime) -> OptionsSnapshot:
    """A book-summary response (ccxt's parsed JSON) -> the snapshot; garbage raises
    :class:`MalformedResponseError` naming the currency."""
    if not isinstance(response, Mapping) or "result" not in response:
        raise MalformedResponseError(
            f"deribit {symbol} option chain: expected a JSON-RPC object with 'result', "
            f"got {str(response)[:80]!r}"
        )
    return OptionsSnapshot(symbol, fetched, summarise(response["result"], symbol, fetched))


def snapshot_job(
    venue: OptionsVenue, symbols: tuple[str, ...], clock: Callable[[], datetime]
) -> Generator[Call, Any, list[OptionsSnapshot]]:
    """Fetch each of ``symbols`` that the venue lists options for (a Call generator for
    :meth:`Collector.run`); symbols without options are skipped, not fetched."""
    out = []
    for symbol in symbols:
        if symbol not in venue.currencies:
            continue
        response = yield chain_call(venue, symbol)
        out.append(read_chain(response, symbol, clock()))
    return out


def snapshot_rows(snapshots: list[OptionsSnapshot], *, venue: str, bar: timedelta) -> pl.DataFrame:
    """Panel rows: one per snapshot, on the bar closing at floor(fetch, bar); a number the
    chain did not allow is null (never zero). Every other panel column is null."""
    rows = []
    for snap in snapshots:
        fetched = to_ms(snap.fetched)
        rows.append(
            {
                "ts": from_ms(floor_ms(fetched, bar)),
                "venue": venue,
                "symbol": snap.symbol,
                "known_at": from_ms(fetched),
                **snap.summary.values(),
            }
        )
    schema = {n: PANEL_SCHEMA[n] for n in ("ts", "venue", "symbol", "known_at", *OPTIONS_COLUMNS)}
    return to_panel(pl.DataFrame(rows, schema=schema))


def describe(snapshot: OptionsSnapshot) -> str:
    """One line: options read, left out (by reason) and the nulls with their reasons."""
    s = snapshot.summary
    parts = [f"{snapshot.symbol}: {s.options} options"]
    if s.rejected:
        parts.append("left out " + ", ".join(f"{k}={v}" for k, v in sorted(s.rejected.items())))
    for column, reason in sorted(s.reasons.items()):
        parts.append(f"{column} null ({reason})")
    return "; ".join(parts)
