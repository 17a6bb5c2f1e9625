"""Liquidations: what each venue publishes, and their aggregation into the panel's bars.

No venue serves a public liquidation *history* over REST (ccxt's ``fetch_liquidations`` is
not available for the configured venues' public data: ``has['fetchLiquidations']`` is
False or None for binanceusdm, bybit, okx and hyperliquid), so liquidations are
recorded from the venues' websocket streams (ccxt.pro ``watch_liquidations_for_symbols``
/ ``watch_liquidations``) as they happen, and cannot be backfilled.

:class:`LiquidationBars` sums the streamed liquidations per (symbol, bar) into
``liq_long_usd`` / ``liq_short_usd`` (USD notional, quote at par) and knows when the stream
was up. A bar closing at ``c`` covers liquidations timed in ``[c - bar, c)``:

- the stream was connected for the whole of ``[c - bar, c]``: the sums, a real 0 when
  nothing was liquidated;
- it was down (not yet connected, dropped, reconnecting) at any moment of the bar: no
  value (the bar stays null, never 0), and the caller records why on the bar;
- ``known_at`` is the moment the bar's aggregate is taken (``finalise``), at or after
  ``c`` + a grace for frames in flight.

A liquidation that arrives after its bar was taken is not added to it (that would change
a value already known); it is counted in ``late``.

Per venue, :data:`LIQUIDATION_FEEDS` says what the stream publishes and how the side of
a forced order maps to the liquidated position; the data report prints it.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Literal

import polars as pl

from oihedge.pipelines.ingest.normalise import MalformedResponseError, _frame

__all__ = [
    "LIQUIDATION_FEEDS",
    "LiquidationBars",
    "LiquidationFeed",
    "liquidated_side",
    "notional_usd",
]

Side = Literal["long", "short"]


@dataclass(frozen=True)
class LiquidationFeed:
    """What a venue publishes about liquidations.

    ``stream``: the ccxt.pro method used (None: no public liquidation stream).
    ``side_of``: ``"order"`` when ccxt's ``side`` is the forced order's side (a SELL
    closes a long), ``"position"`` when it is the liquidated position's side (Buy = a
    long was liquidated). ``complete``: False when the venue publishes only part of
    the liquidations (the sums are lower bounds). ``notes``: the venue's documentation.
    """

    stream: str | None
    side_of: Literal["order", "position"] | None
    complete: bool
    notes: str


LIQUIDATION_FEEDS: Mapping[str, LiquidationFeed] = MappingProxyType(
    {
        "binanceusdm": LiquidationFeed(
            "watch_liquidations_for_symbols",
            "order",
            False,
            "<symbol>@forceOrder: at most one liquidation order per symbol per 1000 ms "
            "(the latest one in that second), so the sums are a LOWER BOUND; S is the "
            "forced order's side (SELL = a long liquidated). No REST history.",
        ),
        "bybit": LiquidationFeed(
            "watch_liquidations",
            "position",
            True,
            "allLiquidation.<symbol>: every liquidation, pushed every 500 ms; S is the "
            "liquidated position's side (Buy = a long liquidated). No REST history.",
        ),
        "okx": LiquidationFeed(
            "watch_liquidations_for_symbols",
            "order",
            False,
            "liquidation-orders (instType SWAP): OKX documents it as not pushing every "
            "liquidation (at most one order per contract per second is sent), so the "
            "sums are a LOWER BOUND; side is the forced order's side, posSide the "
            "position's when in long/short mode. Size in contracts x ctVal. No REST history.",
        ),
        "hyperliquid": LiquidationFeed(
            None,
            None,
            False,
            "no public liquidation stream in ccxt.pro (has['watchLiquidations'] is None) "
            "and no public REST history: liq_long_usd / liq_short_usd stay null.",
        ),
    }
)


def feed(venue: str) -> LiquidationFeed:
    """The liquidation feed of ``venue`` (a venue not in the table publishes none)."""
    return LIQUIDATION_FEEDS.get(
        venue, LiquidationFeed(None, None, False, "no liquidation feed known for this venue")
    )


def liquidated_side(venue: str, liquidation: Mapping[str, Any]) -> Side:
    """Which position a ccxt liquidation structure liquidated, per the venue's convention.

    Raises :class:`~oihedge.pipelines.ingest.normalise.MalformedResponseError` naming the structure
    when the side is missing or unknown.
    """
    info = liquidation.get("info") or {}
    side = str(liquidation.get("side") or "").lower()
    if venue == "okx" and isinstance(info, Mapping):
        details = info.get("details") or [{}]
        pos = str((details[0] or {}).get("posSide") or "").lower()
        if pos in ("long", "short"):
            return pos  # type: ignore[return-value]
    convention = feed(venue).side_of
    if side not in ("buy", "sell") or convention is None:
        raise MalformedResponseError(
            f"{venue}: a liquidation without a usable side ({side!r}): {liquidation!r:.120}"
        )
    if convention == "order":
        return "long" if side == "sell" else "short"
    return "long" if side == "buy" else "short"


def notional_usd(
    venue: str, liquidation: Mapping[str, Any], contract_size: float | None = None
) -> float:
    """USD notional of a ccxt liquidation: ``quoteValue``, else base amount x price (base
    amount = ``baseValue`` or contracts x ``contract_size``, the market's: ccxt's
    ``safe_liquidation`` drops the contract size when its parser passes no market, as the
    ws parsers do). Raises on a missing or non-finite value."""
    info = liquidation.get("info")
    if venue == "binanceusdm" and isinstance(info, Mapping) and "z" in info:
        # ccxt takes the order's last fill ("l"); the order's liquidated amount is the
        # accumulated fill "z", at the average price "ap"
        try:
            filled, average = float(info["z"]), float(info.get("ap", "nan"))
        except (TypeError, ValueError):
            filled = average = math.nan
        if math.isfinite(filled) and math.isfinite(average) and filled >= 0 and average > 0:
            return filled * average
    quote = liquidation.get("quoteValue")
    if _finite(quote):
        return float(quote)  # type: ignore[arg-type]
    price = liquidation.get("price")
    base = liquidation.get("baseValue")
    if not _finite(base):
        contracts, size = liquidation.get("contracts"), liquidation.get("contractSize")
        size = size if _finite(size) else contract_size
        if not _finite(size):
            raise MalformedResponseError(
                f"{venue}: a liquidation in contracts of unknown size: {liquidation!r:.120}"
            )
        base = contracts * size if _finite(contracts) else None  # type: ignore[operator]
    if not (_finite(price) and _finite(base)) or price <= 0 or base < 0:  # type: ignore[operator]
        raise MalformedResponseError(
            f"{venue}: a liquidation without amount and price: {liquidation!r:.120}"
        )
    return float(base) * float(price)  # type: ignore[arg-type]


def _finite(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


@dataclass
class _Bar:
    long: float = 0.0
    short: float = 0.0
    count: int = 0


@dataclass
class LiquidationBars:
    """Per-bar liquidation sums of one venue's symbols, and the stream's up-time.

    ``bar_ms``: bar length. Times are epoch ms. Not thread-safe: the stream guards it
    with its lock.
    """

    venue: str
    bases: Sequence[str]
    bar_ms: int
    #: (base, bar close ms) -> sums
    sums: dict[tuple[str, int], _Bar] = field(default_factory=dict)
    #: closed up intervals [from, to] and the open one's start (None: down now)
    up_spans: list[tuple[int, int]] = field(default_factory=list)
    up_since: int | None = None
    #: bar closes already taken per base: later liquidations of them are only counted
    taken_until: int = -1
    late: int = 0
    rejected: int = 0

    def up(self, now_ms: int) -> None:
        """The stream is connected (subscribed) from ``now_ms``."""
        if self.up_since is None:
            self.up_since = now_ms

    def down(self, now_ms: int) -> None:
        """The stream is not connected from ``now_ms`` (dropped, failed, closing)."""
        if self.up_since is not None:
            self.up_spans.append((self.up_since, now_ms))
            self.up_since = None

    def add(self, base: str, ts_ms: int, side: Side, usd: float) -> None:
        """Add one liquidation of ``base`` timed ``ts_ms`` to its bar."""
        close = ts_ms - ts_ms % self.bar_ms + self.bar_ms
        if close <= self.taken_until:
            self.late += 1
            return
        bar = self.sums.setdefault((base, close), _Bar())
        if side == "long":
            bar.long += usd
        else:
            bar.short += usd
        bar.count += 1

    def covered(self, close_ms: int) -> bool:
        """The stream was up for the whole bar closing at ``close_ms``."""
        start = close_ms - self.bar_ms
        spans = [*self.up_spans, *([(self.up_since, 1 << 62)] if self.up_since is not None else [])]
        return any(a <= start and b >= close_ms for a, b in spans)

    def finalise(self, since_ms: int, until_ms: int, now_ms: int) -> tuple[pl.DataFrame, list[int]]:
        """Take the bars closing in ``(since_ms, until_ms]`` not taken yet: panel rows of the
        covered ones (``known_at`` = ``now_ms``) and the closes of the bars left null
        because the stream was down during them."""
        start = max(since_ms, self.taken_until)
        first = start - start % self.bar_ms + self.bar_ms
        closes = list(range(first, until_ms + 1, self.bar_ms))
        cols: dict[str, list] = {k: [] for k in ("ts", "known_at", "venue", "symbol")}
        cols["liq_long_usd"], cols["liq_short_usd"] = [], []
        down = []
        for close in closes:
            if not self.covered(close):
                down.append(close)
                continue
            for base in self.bases:
                bar = self.sums.pop((base, close), _Bar())
                cols["ts"].append(close)
                cols["known_at"].append(max(now_ms, close))
                cols["venue"].append(self.venue)
                cols["symbol"].append(base)
                cols["liq_long_usd"].append(bar.long)
                cols["liq_short_usd"].append(bar.short)
        for key in [k for k in self.sums if k[1] <= until_ms]:
            del self.sums[key]  # the bars left null drop what partial sums they had
        self.taken_until = max(self.taken_until, until_ms)
        # a span that ended by ``until_ms`` cannot cover a later bar
        self.up_spans = [(a, b) for a, b in self.up_spans if b > until_ms]
        return _frame(cols, ("liq_long_usd", "liq_short_usd")), down
