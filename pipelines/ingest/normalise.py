"""ccxt results -> panel rows: bar times, USD notional OI, 8h funding, honest ``known_at``.

Pure functions, no I/O. Each returns a frame with the panel key, ``known_at`` and the one
series it carries (the other panel columns are added as null by the store's update
merge, see :func:`to_panel`). Values are converted, never repaired: a negative or NaN
value from a venue stays negative or NaN so that the store quarantines it with a reason;
a missing value (``None``) is not a row at all and is counted instead.

Raises :class:`MalformedResponseError` when a page does not have the shape ccxt's
structures promise (a candle without a timestamp, an OI entry that is not a mapping).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import polars as pl

from oihedge.features.schema import PANEL_SCHEMA, UTC_US
from oihedge.pipelines.ingest.venues import VenueSpec

HOUR_MS = 3_600_000
#: settlement intervals a venue uses; a gap outside these is a missed settlement
FUNDING_INTERVALS_H: frozenset[int] = frozenset({1, 2, 4, 8})


class MalformedResponseError(ValueError):
    """A venue page that ccxt parsed into something that is not the promised structure."""


@dataclass
class Normalised:
    """Panel rows of one page, and how many entries carried no value (``None``)."""

    frame: pl.DataFrame
    empty_values: int = 0
    without_price: int = 0


def to_ms(moment: datetime) -> int:
    """UTC epoch milliseconds of an aware datetime."""
    return int(moment.timestamp() * 1000)


def from_ms(ms: int) -> datetime:
    """Aware UTC datetime of epoch milliseconds."""
    return datetime.fromtimestamp(ms / 1000, tz=UTC)


def floor_ms(ms: int, bar: timedelta) -> int:
    """``ms`` floored to the bar grid (epoch-aligned)."""
    step = int(bar.total_seconds() * 1000)
    return ms - ms % step


def _float(value: object, what: str) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise MalformedResponseError(f"{what}: expected a number, got {value!r}")
    try:
        return float(value)
    except ValueError:
        raise MalformedResponseError(f"{what}: expected a number, got {value!r}") from None


def _ts(value: object, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise MalformedResponseError(f"{what}: expected a millisecond timestamp, got {value!r}")
    return int(value)


def _frame(columns: dict[str, list], value_columns: Sequence[str]) -> pl.DataFrame:
    schema = {name: PANEL_SCHEMA[name] for name in ("venue", "symbol", *value_columns)}
    data = {name: columns[name] for name in schema}
    frame = pl.DataFrame(data, schema=schema, strict=False)
    times = pl.DataFrame(
        {"ts": columns["ts"], "known_at": columns["known_at"]},
        schema={"ts": pl.Int64, "known_at": pl.Int64},
    )
    return pl.concat([frame, times], how="horizontal").select(
        pl.from_epoch("ts", time_unit="ms").dt.replace_time_zone("UTC").cast(UTC_US).alias("ts"),
        "venue",
        "symbol",
        *value_columns,
        pl.from_epoch("known_at", time_unit="ms")
        .dt.replace_time_zone("UTC")
        .cast(UTC_US)
        .alias("known_at"),
    )


def ohlcv_rows(
    candles: Iterable[object],
    *,
    spec: VenueSpec,
    symbol: str,
    bar: timedelta,
    now_ms: int,
    spot: bool = False,
) -> Normalised:
    """ccxt candles ``[open_ms, o, h, l, c, base_volume]`` -> bars closing at open + bar.

    Only closed candles (close time <= ``now_ms``) become rows. Perp candles fill close,
    high, low and ``volume_usd`` (= base volume x close, quote at par with USD); spot
    candles fill ``spot_close``. ``known_at`` = close + the venue's OHLCV lag.
    """
    step = int(bar.total_seconds() * 1000)
    lag = int(spec.lag_ohlcv.total_seconds() * 1000)
    cols: dict[str, list] = {k: [] for k in ("ts", "known_at", "close", "high", "low")}
    cols.update(volume_usd=[], spot_close=[])
    empty = 0
    for i, candle in enumerate(candles):
        what = f"{spec.id} {symbol} {'spot ' if spot else ''}candle {i}"
        if not isinstance(candle, list | tuple) or len(candle) < 6:
            raise MalformedResponseError(f"{what}: expected [time, o, h, l, c, v], got {candle!r}")
        close_ms = _ts(candle[0], what) + step
        if close_ms > now_ms:
            continue  # still open
        high, low, close, volume = (_float(candle[k], what) for k in (2, 3, 4, 5))
        if close is None:
            empty += 1
            continue
        cols["ts"].append(close_ms)
        cols["known_at"].append(close_ms + lag)
        cols["close"].append(close)
        cols["high"].append(high)
        cols["low"].append(low)
        cols["volume_usd"].append(None if volume is None else volume * close)
        cols["spot_close"].append(close)
    cols["venue"] = [spec.id] * len(cols["ts"])
    cols["symbol"] = [symbol] * len(cols["ts"])
    value_columns = ("spot_close",) if spot else ("close", "high", "low", "volume_usd")
    return Normalised(_frame(cols, value_columns), empty_values=empty)


def _oi_entry(entry: object, what: str) -> tuple[int, float | None, float | None]:
    if not isinstance(entry, Mapping):
        raise MalformedResponseError(f"{what}: expected an open-interest structure, got {entry!r}")
    return (
        _ts(entry.get("timestamp"), what),
        _float(entry.get("openInterestAmount"), what),
        _float(entry.get("openInterestValue"), what),
    )


def oi_usd(
    amount: float | None,
    value: float | None,
    *,
    spec: VenueSpec,
    price: float | None,
    contract_size: float = 1.0,
) -> float | None:
    """One side's USD notional from a venue's OI fields (see ``VenueSpec.oi_unit``).

    ``usd``: the venue's USD value; ``base``: coins x price; ``contracts``: contracts x
    contract size x price. Divided by ``oi_sides``. None when an input is missing.
    """
    if spec.oi_unit == "usd":
        raw = value
    elif amount is None or price is None:
        raw = None
    elif spec.oi_unit == "base":
        raw = amount * price
    else:
        raw = amount * contract_size * price
    return None if raw is None else raw / spec.oi_sides


def oi_history_rows(
    entries: Iterable[object],
    *,
    spec: VenueSpec,
    symbol: str,
    bar: timedelta,
    prices: Mapping[int, float] | None = None,
) -> Normalised:
    """ccxt OI history structures -> ``oi_usd`` on the bars closing at their timestamps.

    Entries off the bar grid are dropped (a finer OI timeframe sampled at the bar).
    ``prices`` maps bar close (ms) -> perp close, needed when ``spec.oi_unit`` is not USD;
    an entry without a price is counted in ``without_price``.
    """
    step = int(bar.total_seconds() * 1000)
    lag = int(spec.lag_oi.total_seconds() * 1000)
    cols: dict[str, list] = {"ts": [], "known_at": [], "oi_usd": []}
    empty = missing_price = 0
    for i, entry in enumerate(entries):
        ts, amount, value = _oi_entry(entry, f"{spec.id} {symbol} OI entry {i}")
        if ts % step:
            continue
        price = None if prices is None else prices.get(ts)
        if spec.oi_unit != "usd" and amount is not None and price is None:
            missing_price += 1
            continue
        usd = oi_usd(amount, value, spec=spec, price=price)
        if usd is None:
            empty += 1
            continue
        cols["ts"].append(ts)
        cols["known_at"].append(ts + lag)
        cols["oi_usd"].append(usd)
    cols["venue"] = [spec.id] * len(cols["ts"])
    cols["symbol"] = [symbol] * len(cols["ts"])
    return Normalised(_frame(cols, ("oi_usd",)), empty_values=empty, without_price=missing_price)


def oi_snapshot_rows(
    snapshot: object, *, spec: VenueSpec, symbol: str, bar: timedelta, fetched_ms: int
) -> Normalised:
    """A live OI snapshot fetched at ``fetched_ms`` -> the bar closing at floor(fetch, bar).

    The price is the snapshot's own mark price (``info.markPx``), so amount and price are
    from the same instant. ``known_at`` is the fetch time.
    """
    what = f"{spec.id} {symbol} OI snapshot"
    if not isinstance(snapshot, Mapping):
        raise MalformedResponseError(
            f"{what}: expected an open-interest structure, got {snapshot!r}"
        )
    info = snapshot.get("info") or {}
    if not isinstance(info, Mapping):
        raise MalformedResponseError(f"{what}: expected the venue's asset context, got {info!r}")
    amount = _float(snapshot.get("openInterestAmount"), what)
    value = _float(snapshot.get("openInterestValue"), what)
    price = _float(info.get("markPx"), what)
    usd = oi_usd(amount, value, spec=spec, price=price)
    cols: dict[str, list] = {"ts": [], "known_at": [], "oi_usd": []}
    if usd is not None:
        cols["ts"].append(floor_ms(fetched_ms, bar))
        cols["known_at"].append(fetched_ms)
        cols["oi_usd"].append(usd)
    cols["venue"] = [spec.id] * len(cols["ts"])
    cols["symbol"] = [symbol] * len(cols["ts"])
    return Normalised(_frame(cols, ("oi_usd",)), empty_values=0 if usd is not None else 1)


def funding_interval_ms(gap_ms: int | None, default: timedelta) -> int:
    """The settlement interval implied by the gap to the previous settlement.

    The gap rounded to whole hours counts when it is one of 1, 2, 4, 8 h; otherwise (the
    first settlement seen, or a missed one) the venue's usual ``default``.
    """
    if gap_ms is not None:
        hours = round(gap_ms / HOUR_MS)
        if hours in FUNDING_INTERVALS_H and abs(gap_ms - hours * HOUR_MS) < 60_000:
            return hours * HOUR_MS
    return int(default.total_seconds() * 1000)


def funding_rows(
    entries: Iterable[object],
    *,
    spec: VenueSpec,
    symbol: str,
    bar: timedelta,
    previous_ms: int | None = None,
) -> tuple[Normalised, int | None]:
    """ccxt funding-rate history -> 8h-normalised ``funding_rate`` on floor(T, bar).

    Each rate is scaled by 8h / its settlement interval (inferred from the gap to the
    previous settlement, ``previous_ms`` carrying it across pages). Several settlements
    in one bar (bar longer than the interval) are averaged. ``known_at`` = settlement
    time + the venue's funding lag. Returns the rows and the last settlement time seen.
    """
    lag = int(spec.lag_funding.total_seconds() * 1000)
    settlements: list[tuple[int, float | None]] = []
    for i, entry in enumerate(entries):
        what = f"{spec.id} {symbol} funding entry {i}"
        if not isinstance(entry, Mapping):
            raise MalformedResponseError(f"{what}: expected a funding structure, got {entry!r}")
        settlements.append(
            (_ts(entry.get("timestamp"), what), _float(entry.get("fundingRate"), what))
        )
    settlements.sort(key=lambda item: item[0])
    cols: dict[str, list] = {"ts": [], "known_at": [], "funding_rate": []}
    empty = 0
    for settled_ms, rate in settlements:
        gap = None if previous_ms is None else settled_ms - previous_ms
        previous_ms = settled_ms
        if rate is None:
            empty += 1
            continue
        interval = funding_interval_ms(gap, spec.funding_interval)
        ts = floor_ms(settled_ms, bar)
        cols["ts"].append(ts)
        cols["known_at"].append(max(ts, settled_ms + lag))
        cols["funding_rate"].append(rate * (8 * HOUR_MS) / interval)
    cols["venue"] = [spec.id] * len(cols["ts"])
    cols["symbol"] = [symbol] * len(cols["ts"])
    frame = _frame(cols, ("funding_rate",))
    if frame.height and frame["ts"].n_unique() < frame.height:
        frame = (
            frame.group_by(["ts", "venue", "symbol"], maintain_order=True)
            .agg(pl.col("funding_rate").mean(), pl.col("known_at").max())
            .select(frame.columns)
        )
    return Normalised(frame, empty_values=empty), previous_ms


def to_panel(frame: pl.DataFrame) -> pl.DataFrame:
    """A partial frame (key, ``known_at``, some value columns) with every panel column."""
    missing = [
        pl.lit(None, dtype=dt).alias(n) for n, dt in PANEL_SCHEMA.items() if n not in frame.columns
    ]
    return frame.with_columns(missing).select(list(PANEL_SCHEMA))
