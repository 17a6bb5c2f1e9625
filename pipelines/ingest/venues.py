"""The venue table: everything oihedge knows about a venue's API, in one entry per venue.

Adding a venue is adding one :class:`VenueSpec` to :data:`VENUES` (and, for an unusual OI
unit, a conversion rule here); the collectors, the pagination and the normalisation are
generic over the spec.

Conventions every entry follows (the panel's, see ``shared/data/README.md``):

- ``ts`` is the bar close. A candle opened at T is the bar closing at T + bar; an OI
  snapshot taken at T is the value at the bar closing at T; a funding settlement at T
  goes on the bar closing at floor(T, bar).
- ``known_at`` of a backfilled value is ``ts`` + the venue's publication lag for that
  series (never earlier than ``ts``); a live snapshot's ``known_at`` is the fetch time.
  The lags below are conservative upper bounds of when the value is served by the REST
  endpoint after the bar closes (venues do not document them to the second).
- OI is USD notional of one side (longs = shorts on a perp). USDT and USDC are taken at
  par with USD (no stable-coin conversion).
- Funding is normalised to 8 hours: ``rate * 8h / interval``.

What each venue publishes of liquidations (and whether its sums are complete or a lower bound) is in
:data:`oihedge.pipelines.ingest.liquidations.LIQUIDATION_FEEDS`; how its spot book is taken for
``spot_depth_usd``, in :data:`oihedge.pipelines.ingest.spot_depth.DEPTH_BOOKS`.

Page sizes, history depths and rate limits are the venues' documented ones (links in
each ``notes``); ccxt's own per-endpoint costs drive its rate limiter, and
``min_request_interval`` adds a floor where a venue limits an endpoint more tightly than
ccxt's generic cost (Binance's OI statistics: 1000 requests / 5 min per IP).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from types import MappingProxyType
from typing import Literal

OiUnit = Literal["usd", "base", "contracts"]
OiMode = Literal["history", "snapshot"]

#: The series a collector fetches, by the panel column that marks it as present. ``spot_depth_usd``
#: is a snapshot of the spot book per run / poll (:mod:`oihedge.pipelines.ingest.spot_depth`);
#: liquidations have no REST history on any venue and come from the streams only
#: (:mod:`oihedge.pipelines.ingest.liquidations`).
SERIES: tuple[str, ...] = ("close", "spot_close", "oi_usd", "funding_rate", "spot_depth_usd")


@dataclass(frozen=True)
class VenueSpec:
    """One venue's API facts. Durations are ``timedelta``; page sizes are rows per request."""

    id: str
    kind: Literal["cex", "dex"]
    #: quote and settle currency of the linear perpetual (``BTC/USDT:USDT``)
    quote: str
    #: quote currency of the spot market used for ``spot_close``; None: the venue has no
    #: spot market for the majors and ``spot_close`` stays null on its rows
    spot_quote: str | None
    ohlcv_limit: int
    spot_limit: int
    #: most recent candles the venue serves at all (Hyperliquid: 5000); None: unlimited
    ohlcv_max_bars: int | None
    oi_mode: OiMode
    oi_limit: int
    #: OI history timeframes the endpoint accepts (ccxt names)
    oi_timeframes: tuple[str, ...]
    #: how far back the OI history endpoint reaches; None: no documented limit
    oi_max_age: timedelta | None
    #: what ccxt's open-interest structure carries for this venue's linear perps
    oi_unit: OiUnit
    #: 1 if the venue counts one side, 2 if it reports longs + shorts
    oi_sides: int
    funding_limit: int
    #: the venue's usual settlement interval (used when it cannot be inferred)
    funding_interval: timedelta
    #: shortest settlement interval the venue uses; funding pages span limit x this so
    #: that no page can hold more settlements than the venue returns
    funding_min_interval: timedelta
    #: how far back the funding history endpoint reaches; None: no documented limit
    funding_max_age: timedelta | None
    lag_ohlcv: timedelta
    lag_oi: timedelta
    lag_funding: timedelta
    #: floor on the spacing of requests per series, on top of ccxt's limiter
    min_request_interval: Mapping[str, timedelta] = field(
        default_factory=lambda: MappingProxyType({})
    )
    #: ccxt constructor options (market types to load, ...)
    ccxt_options: Mapping[str, object] = field(default_factory=lambda: MappingProxyType({}))
    #: a separate ccxt class for the spot markets, when the venue's derivatives class
    #: cannot fetch them (binanceusdm maps spot symbols onto perpetuals); None: the same
    spot_ccxt_id: str | None = None
    spot_ccxt_options: Mapping[str, object] = field(default_factory=lambda: MappingProxyType({}))
    notes: str = ""

    def perp_symbol(self, base: str) -> str:
        """The ccxt unified symbol of ``base``'s linear perpetual (``BTC/USDT:USDT``)."""
        return f"{base}/{self.quote}:{self.quote}"

    def spot_symbol(self, base: str) -> str | None:
        """The ccxt unified spot symbol of ``base`` or None when the venue has none."""
        return None if self.spot_quote is None else f"{base}/{self.spot_quote}"

    def oi_timeframe(self, bar: timedelta) -> str:
        """The coarsest OI history timeframe that divides ``bar`` (snapshots are sampled).

        Raises ValueError naming the bar when none does.
        """
        usable = [tf for tf in self.oi_timeframes if bar % timeframe_delta(tf) == timedelta(0)]
        if not usable:
            raise ValueError(
                f"{self.id}: no OI history timeframe divides the bar {bar}; "
                f"the venue serves {', '.join(self.oi_timeframes)}"
            )
        return max(usable, key=timeframe_delta)


_TF_UNITS = {"m": 60, "h": 3600, "d": 86400, "w": 604800}


def timeframe_delta(timeframe: str) -> timedelta:
    """ccxt timeframe string (``"5m"``, ``"1h"``, ``"1d"``) as a ``timedelta``."""
    unit = timeframe[-1]
    if unit not in _TF_UNITS or not timeframe[:-1].isdigit():
        raise ValueError(f"timeframe must look like '5m', '1h' or '1d', got {timeframe!r}")
    return timedelta(seconds=int(timeframe[:-1]) * _TF_UNITS[unit])


def bar_timeframe(bar: timedelta) -> str:
    """The ccxt timeframe string of a bar length (``timedelta(minutes=5)`` -> ``"5m"``)."""
    seconds = int(bar.total_seconds())
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds % size == 0:
            return f"{seconds // size}{unit}"
    raise ValueError(f"bar must be a whole number of minutes, got {bar}")


_S = timedelta(seconds=1)
_H = timedelta(hours=1)

VENUES: Mapping[str, VenueSpec] = MappingProxyType(
    {
        "binanceusdm": VenueSpec(
            id="binanceusdm",
            kind="cex",
            quote="USDT",
            spot_quote="USDT",
            # fapi klines: weight 2 below 500 rows, 5 up to 1000 -> 499 is the cheapest
            ohlcv_limit=499,
            spot_limit=1000,
            ohlcv_max_bars=None,
            oi_mode="history",
            oi_limit=500,
            oi_timeframes=("5m", "15m", "30m", "1h", "2h", "4h", "6h", "12h", "1d"),
            oi_max_age=timedelta(days=30),
            oi_unit="usd",
            oi_sides=1,
            funding_limit=1000,
            funding_interval=8 * _H,
            funding_min_interval=_H,
            funding_max_age=None,
            lag_ohlcv=2 * _S,
            lag_oi=30 * _S,
            lag_funding=2 * _S,
            min_request_interval=MappingProxyType({"oi_usd": timedelta(milliseconds=300)}),
            ccxt_options=MappingProxyType({"fetchMarkets": {"types": ["linear"]}}),
            spot_ccxt_id="binance",
            spot_ccxt_options=MappingProxyType({"fetchMarkets": {"types": ["spot"]}}),
            notes=(
                "OI: /futures/data/openInterestHist sumOpenInterestValue, USDT notional of "
                "one side, 500 rows a page, the last 30 days only (older: import-archive); "
                "1000 requests / 5 min per IP. Klines fapi/v1 (perp) and api/v3 (spot). "
                "Funding fapi/v1/fundingRate, 1000 rows; most symbols 8h, some 4h or 1h."
            ),
        ),
        "bybit": VenueSpec(
            id="bybit",
            kind="cex",
            quote="USDT",
            spot_quote="USDT",
            ohlcv_limit=1000,
            spot_limit=1000,
            ohlcv_max_bars=None,
            oi_mode="history",
            oi_limit=200,
            oi_timeframes=("5m", "15m", "30m", "1h", "4h", "1d"),
            oi_max_age=None,
            oi_unit="base",
            oi_sides=1,
            funding_limit=200,
            funding_interval=8 * _H,
            funding_min_interval=_H,
            funding_max_age=None,
            lag_ohlcv=2 * _S,
            lag_oi=30 * _S,
            lag_funding=2 * _S,
            ccxt_options=MappingProxyType({"fetchMarkets": {"types": ["spot", "linear"]}}),
            notes=(
                "OI: /v5/market/open-interest openInterest in base coin for linear perps "
                "(one side), converted to USD with the perp close of the same bar; 200 rows "
                "a page, newest first within startTime..endTime. Kline 1000, funding 200 "
                "(fundingInterval in the instrument info, usually 480 min)."
            ),
        ),
        "okx": VenueSpec(
            id="okx",
            kind="cex",
            quote="USDT",
            spot_quote="USDT",
            ohlcv_limit=100,
            spot_limit=100,
            ohlcv_max_bars=None,
            oi_mode="history",
            oi_limit=100,
            oi_timeframes=("5m", "1h", "1d"),
            oi_max_age=None,
            oi_unit="usd",
            oi_sides=1,
            funding_limit=100,
            funding_interval=8 * _H,
            funding_min_interval=_H,
            funding_max_age=timedelta(days=90),
            lag_ohlcv=2 * _S,
            lag_oi=60 * _S,
            lag_funding=2 * _S,
            min_request_interval=MappingProxyType({"oi_usd": timedelta(milliseconds=400)}),
            ccxt_options=MappingProxyType({"fetchMarkets": {"types": ["spot", "swap"]}}),
            notes=(
                "OI: /api/v5/rubik/stat/contracts/open-interest-history [ts, oi contracts, "
                "oiCcy base, oiUsd], oiUsd used (one side); 100 rows, periods 5m/1H/1D only, "
                "5 requests / 2 s. Candles and history-candles 100 rows; funding-rate-history "
                "100 rows (realizedRate), the last 3 months only."
            ),
        ),
        "hyperliquid": VenueSpec(
            id="hyperliquid",
            kind="dex",
            quote="USDC",
            spot_quote=None,
            ohlcv_limit=5000,
            spot_limit=5000,
            ohlcv_max_bars=5000,
            oi_mode="snapshot",
            oi_limit=1,
            oi_timeframes=(),
            oi_max_age=None,
            oi_unit="base",
            oi_sides=2,
            funding_limit=500,
            funding_interval=_H,
            funding_min_interval=_H,
            funding_max_age=None,
            lag_ohlcv=2 * _S,
            lag_oi=timedelta(0),
            lag_funding=2 * _S,
            ccxt_options=MappingProxyType({"fetchMarkets": {"types": ["swap"]}}),
            notes=(
                "No OI history endpoint: metaAndAssetCtxs openInterest (coins) x markPx is "
                "snapshotted on every run and accumulates. Hyperliquid's openInterest is "
                "taken as two-sided (longs + shorts; Hydromancer's API docs state the "
                "convention) and halved. candleSnapshot: only the latest 5000 candles; "
                "fundingHistory: 500 rows, hourly settlements. No spot market for the majors "
                "(only wrapped UBTC/UETH), so spot_close stays null on hyperliquid rows."
            ),
        ),
    }
)


def venue(venue_id: str) -> VenueSpec:
    """The spec of ``venue_id``; raises ValueError naming it and the known venues."""
    try:
        return VENUES[venue_id]
    except KeyError:
        raise ValueError(
            f"unknown venue {venue_id!r}; known venues: {', '.join(sorted(VENUES))}"
        ) from None
