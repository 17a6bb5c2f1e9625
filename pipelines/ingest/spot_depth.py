"""Spot book depth: USD notional resting within +-1 % of mid on a venue's spot book.

``spot_depth_usd`` of the bar closing at ``t``:

- live loop, streamed (:mod:`oihedge.serving.feeds.depth`): the **median** of the depth samples of
  the spot book kept by ccxt.pro's ``watch_order_book`` (at most one sample a second per
  symbol) timed in ``(t - bar, t]``, written at the poll (``known_at`` = poll time);
- otherwise (no stream, or no sample in the bar; and ``oihedge ingest``, once per run):
  one REST snapshot (``fetch_order_book``) taken at the poll, ``t`` + ``poll_delay``
  (20 s by default). As for a live OI snapshot, the value goes on the bar closing at
  floor(fetch time, bar) and ``known_at`` is the fetch time.

The venues keep no book history, so depth cannot be backfilled: it accumulates one bar
per poll or run.

Depth = sum of price x amount of the bids priced >= mid x (1 - 1 %) plus the asks priced
<= mid x (1 + 1 %), mid = (best bid + best ask) / 2, in the spot quote currency (USDT,
taken at par with USD as everywhere in the panel). A book whose best bid is at or above
its best ask (crossed or locked: a stale or broken snapshot) is rejected with that
reason; so is a one-sided or malformed book. A book whose deepest returned level on a
side does not reach the band is a lower bound; :func:`book_depth` says how far it reached
and the ingestion report carries that note.

The book sizes per venue (:data:`DEPTH_BOOKS`) are the largest that stay cheap under the
venue's weights; ccxt's limiter charges each request its documented cost.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import timedelta
from types import MappingProxyType

from oihedge.pipelines.ingest.normalise import MalformedResponseError, Normalised, _frame, floor_ms
from oihedge.pipelines.ingest.venues import VenueSpec

__all__ = [
    "BAND",
    "DEPTH_BOOKS",
    "BookDepth",
    "CrossedBookError",
    "book_depth",
    "depth_rows",
    "reach_note",
]

#: the band around mid, as a fraction (the panel's "within +-1 %")
BAND = 0.01


class CrossedBookError(MalformedResponseError):
    """A book whose best bid is at or above its best ask."""


@dataclass(frozen=True)
class DepthBook:
    """How a venue's spot book is fetched: levels per side asked for, and what it costs."""

    limit: int
    notes: str


DEPTH_BOOKS: Mapping[str, DepthBook] = MappingProxyType(
    {
        "binanceusdm": DepthBook(
            1000,
            "binance spot GET /api/v3/depth limit=1000 (weight 50 of 6000/min); "
            "BTC's 1000 levels usually span well under +-1 %, so depth is a lower bound",
        ),
        "bybit": DepthBook(
            200,
            "bybit GET /v5/market/orderbook category=spot, 200 levels at most "
            "(a lower bound wherever 200 levels do not reach +-1 %)",
        ),
        "okx": DepthBook(
            400,
            "okx GET /api/v5/market/books sz=400 (the most it serves; books-full is "
            "heavier), a lower bound wherever 400 levels do not reach +-1 %",
        ),
    }
)


@dataclass(frozen=True)
class BookDepth:
    """One snapshot's depth: USD within the band, mid, and how far each side reached
    (fraction of mid; >= ``BAND`` means the side covers the whole band)."""

    usd: float
    mid: float
    bid_reach: float
    ask_reach: float

    @property
    def complete(self) -> bool:
        """Both sides reach the band edge: the value is the full depth, not a bound."""
        return self.bid_reach >= BAND and self.ask_reach >= BAND


def _levels(side: object, name: str, what: str) -> list[tuple[float, float]]:
    if not isinstance(side, Sequence) or isinstance(side, str):
        raise MalformedResponseError(f"{what}: {name} is not a list of levels: {side!r:.80}")
    out = []
    for level in side:
        if not isinstance(level, Sequence) or isinstance(level, str) or len(level) < 2:
            raise MalformedResponseError(
                f"{what}: a {name} level {level!r:.60} is not [price, amount]"
            )
        price, amount = level[0], level[1]
        ok = all(isinstance(v, int | float) and not isinstance(v, bool) for v in (price, amount))
        if not ok or not (math.isfinite(price) and math.isfinite(amount)):
            raise MalformedResponseError(f"{what}: a {name} level {level!r:.60} is not numeric")
        if price <= 0 or amount < 0:
            raise MalformedResponseError(f"{what}: a {name} level {level!r:.60} is not positive")
        out.append((float(price), float(amount)))
    if not out:
        raise MalformedResponseError(f"{what}: the book has no {name} (one-sided book)")
    return out


def book_depth(book: object, *, what: str = "order book", band: float = BAND) -> BookDepth:
    """The depth within ``band`` of mid of a ccxt order book (``{"bids": [[price, amount],
    ...], "asks": ...}``, best first).

    Raises :class:`CrossedBookError` when best bid >= best ask and
    :class:`~oihedge.pipelines.ingest.normalise.MalformedResponseError` for a one-sided or malformed
    book.
    """
    if not isinstance(book, Mapping):
        raise MalformedResponseError(f"{what}: expected an order book, got {book!r:.80}")
    bids = _levels(book.get("bids"), "bids", what)
    asks = _levels(book.get("asks"), "asks", what)
    best_bid = max(p for p, _ in bids)
    best_ask = min(p for p, _ in asks)
    if best_bid >= best_ask:
        raise CrossedBookError(
            f"{what}: crossed book rejected: best bid {best_bid} >= best ask {best_ask}"
        )
    mid = (best_bid + best_ask) / 2
    lo, hi = mid * (1 - band), mid * (1 + band)
    usd = sum(p * a for p, a in bids if p >= lo) + sum(p * a for p, a in asks if p <= hi)
    bid_reach = (mid - min(p for p, _ in bids)) / mid
    ask_reach = (max(p for p, _ in asks) - mid) / mid
    return BookDepth(usd, mid, bid_reach, ask_reach)


def depth_rows(
    book: object, *, spec: VenueSpec, symbol: str, bar: timedelta, fetched_ms: int
) -> tuple[Normalised, BookDepth]:
    """A spot book fetched at ``fetched_ms`` -> the row of the bar closing at
    floor(fetch, bar) with ``spot_depth_usd``; ``known_at`` is the fetch time.

    Raises as :func:`book_depth` does (the caller records it; nothing is written).
    """
    depth = book_depth(book, what=f"{spec.id} {symbol} spot book")
    cols: dict[str, list] = {
        "ts": [floor_ms(fetched_ms, bar)],
        "known_at": [fetched_ms],
        "spot_depth_usd": [depth.usd],
        "venue": [spec.id],
        "symbol": [symbol],
    }
    return Normalised(_frame(cols, ("spot_depth_usd",))), depth


def reach_note(venue: str, depth: BookDepth) -> str:
    """The report's note on a snapshot whose book does not cover the band."""
    return (
        f"{venue}: the spot book reached only -{depth.bid_reach:.2%} / +{depth.ask_reach:.2%} "
        f"of mid; spot_depth_usd is a lower bound of the +-{BAND:.0%} depth"
    )
