"""Where the live loop's bars come from: one :class:`Bar` per decision time.

A source is an iterator of :class:`Bar` (the :class:`Source` protocol). Each bar is a
decision time ``t`` (a bar close) with the panel rows that *arrived* since the previous
one (``known_at <= t``), in arrival order, plus what the source already knows is wrong:
rows that failed :func:`oihedge.features.screening.validate` (with the reason) and per-venue errors
(a timeout, a rate limit, a garbage payload). The loop does the rest the same way for
every source: row checks, quarantine, features, staleness, model, policy, orders.

* :class:`oihedge.serving.feeds.replay.ReplaySource` replays a stored panel
  (``PanelStore(dir).read()``), validated once and split by decision time;
* :class:`oihedge.serving.feeds.rest.LiveSource` polls the venues through the ccxt collectors;
  :class:`oihedge.serving.feeds.websocket.StreamSource` streams their perp candles (ccxt.pro).

Rows are mappings with the panel's columns; ``ts`` and ``known_at`` are epoch
microseconds (what a feed handler stamps; :meth:`oihedge.features.online.engine.OnlineFeatures.push`
takes them as they are).
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from operator import itemgetter
from typing import Any, Protocol

from oihedge.features.schema import FLOAT_COLUMNS, NON_NEGATIVE_COLUMNS

__all__ = [
    "Bar",
    "Source",
    "SourceError",
    "check_name",
    "check_row",
    "from_us",
]

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_KEYS = ("ts", "venue", "symbol", "known_at")
_NAME_RE = re.compile(r"^[a-z0-9][a-z0-9_]*$")  # as oihedge.features.schema
_SYMBOL_RE = re.compile(r"^[A-Z0-9][A-Z0-9_]*$")
#: (venue, symbol) pairs whose names passed the checks (the regexes run once per pair)
_GOOD_NAMES: set[tuple[str, str]] = set()
_NON_NEGATIVE = frozenset(NON_NEGATIVE_COLUMNS)
_CLOSE, _HIGH, _LOW = (FLOAT_COLUMNS.index(c) for c in ("close", "high", "low"))
_HEAD = itemgetter(*_KEYS)
_FLOATS = itemgetter(*FLOAT_COLUMNS)
_NON_NEGATIVE_OF = itemgetter(*(i for i, c in enumerate(FLOAT_COLUMNS) if c in _NON_NEGATIVE))
_PLAIN = frozenset({float, type(None)})


def from_us(us: int) -> datetime:
    """Epoch microseconds as a UTC datetime."""
    return EPOCH + timedelta(microseconds=us)


@dataclass(frozen=True)
class SourceError:
    """A venue that could not be read for this bar.

    ``kind``: ``timeout``, ``rate_limited``, ``garbage`` (a payload that does not parse or
    normalise), ``unavailable`` (the venue is down) or ``error`` (anything else). A
    websocket candle stream's trouble is ``stream_<kind>`` (the same kinds, plus
    ``stream_silent`` and ``stream_incomplete``): the venue's candles were polled by REST
    instead, so it is not left out unless a REST error follows.
    """

    venue: str
    kind: str
    detail: str


@dataclass
class Bar:
    """One decision time and what arrived for it.

    Attributes:
        t_us: the decision time (a bar close), epoch microseconds.
        rows: panel rows that arrived since the previous bar (``known_at <= t``), in
            arrival order; not yet checked by the loop.
        quarantined: rows the source already rejected, with the reason.
        errors: venues the source could not read this bar.
    """

    t_us: int
    rows: list[dict[str, Any]] = field(default_factory=list)
    quarantined: list[tuple[dict[str, Any], str]] = field(default_factory=list)
    errors: list[SourceError] = field(default_factory=list)

    @property
    def t(self) -> datetime:
        """The decision time as a UTC datetime."""
        return from_us(self.t_us)


class Source(Protocol):
    """What the loop reads bars from."""

    bar: timedelta

    def __iter__(self) -> Iterator[Bar]: ...


def check_name(key: str, value: str) -> bool:
    """``value`` is a valid ``venue`` (lowercase id) or ``symbol`` (uppercase) name."""
    return bool((_NAME_RE if key == "venue" else _SYMBOL_RE).match(value))


def check_row(row: Mapping[str, Any], bar_us: int) -> str | None:
    """Why ``row`` must not reach the features (the reason), or None when it is fine.

    The row checks of :func:`oihedge.features.screening.validate`, in pure Python (a few
    microseconds a row), plus what a live payload can get wrong before it is a frame:
    missing fields and wrong types. ``bar_us``: the bar length, microseconds (``ts`` must
    be on its grid). The first failing check, in this order: missing keys, key types,
    names, float types and finiteness (column order), negative amounts, zero close, high
    below low, known before the bar close, off-grid ``ts``.
    """
    try:
        if _plainly_good(row, bar_us):
            return None
    except Exception:  # an odd payload (unhashable names, a non-mapping): checked below
        pass
    get = row.get
    ts, venue, symbol, known = get("ts"), get("venue"), get("symbol"), get("known_at")
    if ts is None or venue is None or symbol is None or known is None:
        for key in _KEYS:
            if get(key) is None:
                return f"missing_{key}"
    if not (isinstance(ts, int) and isinstance(known, int)):
        return "wrong_type_ts"
    if not (isinstance(venue, str) and isinstance(symbol, str)):
        return "wrong_type_key"
    if (venue, symbol) not in _GOOD_NAMES:
        if not _NAME_RE.match(venue):
            return "bad_venue_name"
        if not _SYMBOL_RE.match(symbol):
            return "bad_symbol_name"
        if len(_GOOD_NAMES) < 100_000:  # a bound, whatever a feed sends
            _GOOD_NAMES.add((venue, symbol))
    values = [get(name) for name in FLOAT_COLUMNS]
    for name, value in zip(FLOAT_COLUMNS, values, strict=True):
        if value is None:
            continue
        kind = type(value)
        if kind is float:
            if value - value != 0.0:  # inf - inf and nan - nan are nan
                return f"non_finite_{name}"
        elif kind is not int:
            if isinstance(value, bool) or not isinstance(value, int | float):
                return f"wrong_type_{name}"
            if not math.isfinite(value):
                return f"non_finite_{name}"
    for name, value in zip(FLOAT_COLUMNS, values, strict=True):
        if value is not None and value < 0 and name in _NON_NEGATIVE:
            return f"negative_{name}"
    close, high, low = values[_CLOSE], values[_HIGH], values[_LOW]
    if close == 0:
        return "zero_close"
    if high is not None and low is not None and high < low:
        return "high_below_low"
    if known < ts:
        return "known_before_bar_close"
    if ts % bar_us:
        return "ts_off_grid"
    return None


def _plainly_good(row: Mapping[str, Any], bar_us: int) -> bool:
    """True when ``row`` passes every check of :func:`check_row` in the common shape --
    every key present, known names, float-or-None values -- tested in bulk (about a third
    of the per-check cost); False sends it through the checks one by one, which name
    the first that fails (or pass it: False is never a verdict)."""
    ts, venue, symbol, known = _HEAD(row)
    values = _FLOATS(row)
    if not (
        type(ts) is int
        and type(known) is int
        and (venue, symbol) in _GOOD_NAMES
        and _PLAIN.issuperset(map(type, values))
    ):
        return False
    # NaN or an infinity makes the sum non-finite (so does an overflow: a false alarm
    # the checks below clear); zeros and None are left out of the sum and of the minimum
    total = sum(filter(None, values))
    if total - total != 0.0 or min(filter(None, _NON_NEGATIVE_OF(values)), default=1.0) < 0.0:
        return False
    high, low = values[_HIGH], values[_LOW]
    return (
        values[_CLOSE] != 0
        and (high is None or low is None or high >= low)
        and known >= ts
        and not ts % bar_us
    )
