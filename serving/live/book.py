"""The loop's bookkeeping between bars: what each venue last delivered, the prices, and
the policy state persisted in the state store (so a restart resumes where it stopped).

* :class:`VenueBook`: the newest accepted bar per (venue, symbol), hence each venue's
  staleness at a decision time, and the price of each symbol: the median ``close`` over
  the venues at the newest bar that has one (the backtest's reference price, robust to
  one venue's bad print).
* :func:`restore_policy_states` / :func:`resume_point`: the policy state of each symbol
  and the last decided bar, read back from the ``decisions`` table.
* :func:`recovered_records`: the decision-log records of the decisions persisted at the
  resume bar, rebuilt from the state (a restart does not decide them again: when a crash
  lost their lines, they are written from here).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any

from oihedge.serving.execution.state import StateStore
from oihedge.serving.policy.policy import PolicyState

__all__ = [
    "FRESHNESS_COLUMNS",
    "PriceBar",
    "VenueBook",
    "recovered_records",
    "restore_policy_states",
    "resume_point",
    "state_key",
]


@dataclass
class PriceBar:
    """Closes per venue at one bar (``ts_us``) of one symbol."""

    ts_us: int
    closes: dict[str, float] = field(default_factory=dict)
    #: the median, once asked (read several times a bar; reset by :meth:`add`)
    _price: float | None = field(default=None, repr=False, compare=False)

    @property
    def price(self) -> float:
        """Median close over the venues, USD."""
        if self._price is None:
            # statistics.median's arithmetic without its overhead (called per symbol
            # and bar): the middle close, or the mean of the two middle ones
            closes = sorted(self.closes.values())
            mid = len(closes) // 2
            median = closes[mid] if len(closes) % 2 else (closes[mid - 1] + closes[mid]) / 2
            self._price = float(median)
        return self._price

    def add(self, venue: str, close: float) -> None:
        """One more venue's close at this bar."""
        self.closes[venue] = close
        self._price = None


#: the columns whose arrival makes a venue fresh: the perpetual's own market data
FRESHNESS_COLUMNS: tuple[str, ...] = ("close", "oi_usd", "funding_rate")


class VenueBook:
    """Newest bar per (venue, symbol) and the newest price bar per symbol.

    ``venues``: the venues expected for every symbol (a venue never heard of is reported
    as ``no data``).
    """

    def __init__(self, venues: Iterable[str] = ()) -> None:
        self.expected = tuple(venues)
        self.last_ts: dict[tuple[str, str], int] = {}
        self.prices: dict[str, PriceBar] = {}
        self._venues: dict[str, list[str]] = {}  # venues(symbol), kept sorted

    def accept(self, row: Mapping[str, Any]) -> None:
        """Record an accepted row (``ts`` epoch microseconds). Only a row carrying the
        venue's own market data (:data:`FRESHNESS_COLUMNS`) makes the venue fresh: a row of
        a side feed alone (liquidation sums, spot depth, options) says nothing about whether
        its prices and OI are current, so it must not count towards ``min_fresh_venues``
        (the stale-data rule that keeps a hedge from being reduced)."""
        if all(row.get(column) is None for column in FRESHNESS_COLUMNS):
            return
        venue, symbol, ts = row["venue"], row["symbol"], row["ts"]
        key = (venue, symbol)
        last = self.last_ts.get(key)
        if last is None:
            self.last_ts[key] = ts
            self._venues.pop(symbol, None)  # a venue first seen: the list is rebuilt
        elif ts > last:
            self.last_ts[key] = ts
        close = row.get("close")
        if close is None:
            return
        bar = self.prices.get(symbol)
        if bar is None or ts > bar.ts_us:
            self.prices[symbol] = PriceBar(ts, {venue: close})
        elif ts == bar.ts_us:
            bar.add(venue, close)

    def venues(self, symbol: str) -> list[str]:
        """Expected and seen venues of ``symbol``, sorted."""
        venues = self._venues.get(symbol)
        if venues is None:
            seen = {v for (v, s) in self.last_ts if s == symbol}
            venues = self._venues[symbol] = sorted(seen | set(self.expected))
        return list(venues)

    def ages(self, symbol: str, t_us: int) -> dict[str, int | None]:
        """Per venue of ``symbol``: age of its newest bar at ``t_us``, microseconds (None:
        nothing received yet)."""
        venues = self._venues.get(symbol) or self.venues(symbol)
        last = self.last_ts
        out: dict[str, int | None] = {}
        for venue in venues:
            ts = last.get((venue, symbol))
            out[venue] = None if ts is None else t_us - ts
        return out


def state_key(state: PolicyState) -> tuple[Any, ...]:
    """What of a policy state must survive a restart: everything but the day of a zero
    turnover and the hedge (replaced by the position at every bar). A state equal to the
    previous one under this key need not be persisted. The last bar is part of it: the
    smoothed probability decays with the time since that bar, so a restart must know it
    exactly to decide the next bar as an uninterrupted run would (with a probability, the
    state is therefore persisted at every bar)."""
    day = state.day if state.turnover_usd else None
    return (
        state.fraction,
        state.tier,
        state.exit_since,
        day,
        state.turnover_usd,
        state.last_change,
        state.last_ts,
        state.p_smooth,
    )


def _dt(value: object) -> datetime | None:
    return None if value is None else datetime.fromisoformat(str(value))


def _state_from_payload(payload: Mapping[str, Any]) -> PolicyState:
    s = payload["state"]
    return PolicyState(
        fraction=float(s["fraction"]),
        tier=str(s["tier"]),
        hedge_usd=float(s["hedge_usd"]),
        exit_since=_dt(s.get("exit_since")),
        day=None if s.get("day") is None else date.fromisoformat(str(s["day"])),
        turnover_usd=float(s.get("turnover_usd", 0.0)),
        last_change=_dt(s.get("last_change")),
        last_ts=_dt(s.get("last_ts")),
        p_smooth=None if s.get("p_smooth") is None else float(s["p_smooth"]),
    )


def restore_policy_states(
    store: StateStore, symbols: Iterable[str]
) -> tuple[dict[str, PolicyState], dict[str, datetime]]:
    """(last persisted policy state, its bar) per symbol that has one."""
    states: dict[str, PolicyState] = {}
    bars: dict[str, datetime] = {}
    for symbol in symbols:
        rows = store.decisions(symbol)
        if rows:
            states[symbol] = _state_from_payload(rows[-1]["payload"])
            bars[symbol] = datetime.fromisoformat(rows[-1]["ts"])
    return states, bars


def resume_point(bars: Mapping[str, datetime]) -> datetime | None:
    """The last bar any symbol's decision was persisted at (None: a fresh start)."""
    return max(bars.values(), default=None)


#: the note on a decision line written from the state after a restart
RECOVERED = "written from the state after a restart: no contributions, orders as now"


def recovered_records(
    store: StateStore,
    symbols: Iterable[str],
    at: datetime,
    on_file: Callable[[datetime, str], bool],
) -> list[dict[str, Any]]:
    """The decision records of ``symbols`` persisted at bar ``at`` whose line is not on
    file (``on_file(ts, symbol)``), rebuilt from the ``decisions`` row (its ``context``:
    what the line said besides the decision) and the orders decided at ``at`` (their
    state now). ``recovered`` is true in each; no contributions (the vector is gone)."""
    out = []
    for symbol in symbols:
        rows = [r for r in store.decisions(symbol) if datetime.fromisoformat(r["ts"]) == at]
        if not rows or on_file(at, symbol):
            continue
        row = rows[-1]
        payload = row["payload"]
        context = payload.get("context", {})
        pricing = payload.get("pricing", {})
        orders = [o for o in store.orders() if o.symbol == symbol and o.decision_ts == at]
        out.append(
            {
                "kind": "decision",
                "ts": at,
                "symbol": symbol,
                "probability": row["probability"],
                "model_version": context.get("model_version"),
                "contributions": [],
                "contributions_ts": None,
                "fresh_venues": context.get("fresh_venues"),
                "left_out": context.get("left_out", {}),
                "errors": [*context.get("errors", []), RECOVERED],
                "orders": [
                    {
                        "client_order_id": o.client_order_id,
                        "side": o.side,
                        "amount": o.amount,
                        "notional_usd": o.notional_usd,
                        "status": o.state,
                        "reason": o.error or "",
                    }
                    for o in orders
                ],
                "confirmations": payload["confirmations"],
                "tier": row["tier"],
                "target_fraction": payload["target_fraction"],
                "target_usd": row["target_usd"],
                "max_usd": payload["max_usd"],
                "hedge_before_usd": context.get("hedge_before_usd"),
                "hedge_after_usd": payload["hedge_usd"],
                "reasons": payload["reasons"],
                "p_entry": pricing.get("p_entry"),
                "p_exit": pricing.get("p_exit"),
                "severity": pricing.get("severity"),
                "severity_k": context.get("severity_k"),
                "hold_cost": pricing.get("cost"),
                "tail_loss": pricing.get("tail_loss"),
                "recovered": True,
            }
        )
    return out
