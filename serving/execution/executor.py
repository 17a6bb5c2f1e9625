"""Sending orders safely: kill switch, caps, state written before and after, reconciliation.

:class:`Executor` is the piece of the live loop between the rebalancer and the brokers.

**Kill switch** (:meth:`Executor.check_kill_switch`, every bar and before every order):
each engagement and release is recorded in the state store when it is seen -- at the
loop's ``now``: the bar's time in a replay, the wall clock live -- with its reason and the
operator's own time of it (:mod:`oihedge.serving.execution.guards`).

**Submitting** (:meth:`Executor.submit`), per order: kill switch engaged -> blocked
(logged, persisted, nothing sent, the hedge stays); client id already recorded -> skipped
(a restart re-deciding the same bar); guard refusal -> refused (logged, persisted, never
resized); otherwise the order is written as ``intent``, sent, and its outcome written
(``sent`` / ``filled`` / ... / ``rejected``, or ``unknown`` when the venue cannot tell).

**Reconciling** (:meth:`Executor.reconcile`, on start before any decision, then once per
bar): every order in ``intent``, ``sent``, ``partially_filled`` or ``unknown`` is looked up
at its broker by client id:

* the broker has it -> its real state is recorded (nothing is sent);
* the broker definitely has no such order and it was never acknowledged -> it is re-sent
  with the *same* client id if it is younger than ``resend_window`` (and the kill switch
  is off), else recorded as ``cancelled`` ("never reached the venue; too old"): the next
  decision re-plans from the true position anyway;
* acknowledged earlier but unknown to the broker now -> ``cancelled`` with an error log
  (never re-sent: it existed once);
* the broker cannot be asked -> the order stays as it is and the reconciliation is
  incomplete: :meth:`submit` refuses to run until one completes.

Then open orders the store does not know are reported (logged and persisted as
``foreign_open_order``), and each broker's positions replace the stored ones (the broker
is the truth; differences above ``position_tolerance_usd`` are logged and persisted as
``position_difference``).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path

from oihedge.serving.execution.brokers._base import Broker, BrokerError, OrderRejectedError
from oihedge.serving.execution.guards import (
    OrderGuard,
)
from oihedge.serving.execution.kill_switch import KillSwitchChange, KillSwitchWatch
from oihedge.serving.execution.orders import OrderIntent
from oihedge.serving.execution.state import ACTIVE_STATES, OrderRecord, StateStore

__all__ = ["Executor", "ReconcileReport", "Submission"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Submission:
    """What happened to one order given to :meth:`Executor.submit`.

    ``outcome``: the order's state after sending (``sent``, ``filled``,
    ``partially_filled``, ``cancelled``, ``rejected``, ``unknown``), or ``blocked`` (kill
    switch), ``refused`` (a guard cap), ``duplicate`` (client id already recorded).
    """

    client_order_id: str
    outcome: str
    reason: str = ""


@dataclass
class ReconcileReport:
    """What a reconciliation did (client ids, and human-readable difference lines)."""

    resolved: list[str] = field(default_factory=list)
    resent: list[str] = field(default_factory=list)
    abandoned: list[str] = field(default_factory=list)
    unresolved: list[str] = field(default_factory=list)
    foreign_open_orders: list[str] = field(default_factory=list)
    position_differences: list[str] = field(default_factory=list)

    @property
    def complete(self) -> bool:
        """Every active order was resolved with its broker."""
        return not self.unresolved


class Executor:
    """Submits orders through guards and brokers, with the state store kept in step.

    ``brokers``: one per venue id. ``kill_switch_file``: ``live.kill_switch_file``.
    ``resend_window``: how old an order that never reached its venue may be and still be
    re-sent on reconciliation. ``position_tolerance_usd``: position differences below
    this (USD) are not reported.
    """

    def __init__(
        self,
        store: StateStore,
        brokers: Mapping[str, Broker],
        guard: OrderGuard,
        *,
        kill_switch_file: str | os.PathLike[str],
        resend_window: timedelta,
        position_tolerance_usd: float = 1.0,
    ) -> None:
        if resend_window < timedelta(0):
            raise ValueError(f"resend_window must be >= 0, got {resend_window!r}")
        self.store = store
        self.brokers = dict(brokers)
        self.guard = guard
        self.kill_switch_file = Path(kill_switch_file)
        self.resend_window = resend_window
        self.position_tolerance_usd = position_tolerance_usd
        self._reconciled = False
        self._kill = KillSwitchWatch(store, self.kill_switch_file)

    @property
    def reconciled(self) -> bool:
        """The last reconciliation completed (required before :meth:`submit`)."""
        return self._reconciled

    def positions(self) -> dict[tuple[str, str], float]:
        """Expected signed positions per (venue, symbol), base units (for the rebalancer).

        The broker's last reported position plus the unfilled rest of every active order,
        so an order still working is not planned a second time.
        """
        out = {key: p.base_amount for key, p in self.store.positions().items()}
        for order in self.store.orders(ACTIVE_STATES):
            key = (order.venue, order.symbol)
            sign = -1.0 if order.side == "sell" else 1.0
            out[key] = out.get(key, 0.0) + sign * max(0.0, order.amount - order.filled)
        return {key: amount for key, amount in out.items() if amount != 0.0}

    def hedge_usd(self) -> float:
        """Expected total short hedge over every instrument, USD: positions at the brokers'
        last prices, plus the unfilled rest of active orders at their reference prices."""
        total = sum(p.hedge_usd for p in self.store.positions().values())
        for order in self.store.orders(ACTIVE_STATES):
            rest = max(0.0, order.amount - order.filled) / order.amount
            total += rest * (order.notional_usd if order.side == "sell" else -order.notional_usd)
        return total

    # -- submit ---------------------------------------------------------------------------

    def submit(self, orders: Sequence[OrderIntent], *, now: datetime) -> list[Submission]:
        """Send ``orders`` in turn through the kill switch, the guards and the brokers.

        Raises ``RuntimeError`` if the last :meth:`reconcile` did not complete.
        """
        if not self._reconciled:
            raise RuntimeError(
                "reconcile() must complete before submit(): orders may be unresolved"
            )
        out = []
        hedge = self.hedge_usd()
        traded: set[str] = set()
        for order in orders:
            cid = order.client_order_id
            reason = self._kill_switch(now)
            if reason is not None:
                self.store.record_kill_switch("blocked", reason, now=now, client_order_id=cid)
                log.critical("order %s blocked by the kill switch (%s)", cid, reason)
                out.append(Submission(cid, "blocked", reason))
                continue
            existing = self.store.get_order(cid)
            if existing is not None:
                out.append(Submission(cid, "duplicate", f"already recorded as {existing.state}"))
                continue
            verdict = self.guard.admit(order, hedge_usd=hedge, now=now)
            if not verdict.allowed:
                self.store.record_event(
                    "guard_refusal",
                    {
                        "reason": verdict.reason,
                        "side": order.side,
                        "notional_usd": order.notional_usd,
                    },
                    now=now,
                    venue=order.venue,
                    symbol=order.symbol,
                    client_order_id=cid,
                )
                out.append(Submission(cid, "refused", verdict.reason))
                continue
            self.store.record_intent(order, now=now)
            record = self._send(order, now=now)
            if record.state != "rejected":
                hedge += order.hedge_change_usd
            if record.filled > 0:
                traded.add(order.venue)
            out.append(Submission(cid, record.state, record.error or ""))
        for venue in sorted(traded):
            self._sync_positions(venue, now=now, report=None)
        return out

    def _send(self, order: OrderIntent, *, now: datetime, note: str = "") -> OrderRecord:
        broker = self.brokers[order.venue]
        cid = order.client_order_id
        try:
            result = broker.place(order)
        except OrderRejectedError as err:
            log.error("order %s rejected: %s", cid, err)
            return self.store.set_state(cid, "rejected", now=now, error=str(err), attempts_delta=1)
        except BrokerError as err:
            log.error("order %s outcome unknown: %s", cid, err)
            return self.store.set_state(cid, "unknown", now=now, error=str(err), attempts_delta=1)
        return self.store.apply_result(result, now=now, note=note, attempts_delta=1)

    def _kill_switch(self, now: datetime) -> str | None:
        """The kill switch's reason if engaged (recording any change first), else None."""
        return self._kill.reason(now)

    @property
    def kill_switch_engaged(self) -> bool:
        """Whether the kill switch is engaged as the state records it (its last recorded
        change; after a restart with the switch still engaged there is no new change)."""
        return self._kill.engaged

    def check_kill_switch(self, now: datetime) -> list[KillSwitchChange]:
        """Record every engagement and release of the kill switch not recorded yet, at
        ``now``; returns them, oldest first (:meth:`KillSwitchWatch.check`)."""
        return self._kill.check(now)

    # -- reconcile ------------------------------------------------------------------------

    def reconcile(self, *, now: datetime) -> ReconcileReport:
        """Bring the store in line with the brokers (see the module docstring)."""
        report = ReconcileReport()
        fills: dict[tuple[str, str], float] = {}
        for order in self.store.orders(ACTIVE_STATES):
            self._resolve(order, now=now, report=report, fills=fills)
        known = {o.client_order_id for o in self.store.orders()}
        for venue, broker in self.brokers.items():
            try:
                for result in broker.open_orders():
                    if result.client_order_id not in known:
                        report.foreign_open_orders.append(result.client_order_id)
                        log.warning(
                            "open order %r on %s is not ours", result.client_order_id, venue
                        )
                        self.store.record_event(
                            "foreign_open_order",
                            {"status": result.status, "amount": result.amount},
                            now=now,
                            venue=venue,
                            symbol=result.symbol,
                            client_order_id=result.client_order_id,
                        )
                self._sync_positions(venue, now=now, report=report, fills=fills)
            except BrokerError as err:
                report.unresolved.append(f"{venue}: {err}")
                log.error("reconciliation with %s incomplete: %s", venue, err)
        self._reconciled = report.complete
        log.info(
            "reconciled: %d resolved, %d resent, %d abandoned, %d unresolved,"
            " %d position differences",
            len(report.resolved),
            len(report.resent),
            len(report.abandoned),
            len(report.unresolved),
            len(report.position_differences),
        )
        return report

    def _resolve(
        self,
        order: OrderRecord,
        *,
        now: datetime,
        report: ReconcileReport,
        fills: dict[tuple[str, str], float],
    ) -> None:
        """Settle one active order with its broker; adds new fills (signed base) to ``fills``."""
        cid = order.client_order_id
        broker = self.brokers.get(order.venue)
        if broker is None:
            report.unresolved.append(cid)
            log.error("order %s is on %s, which has no broker configured", cid, order.venue)
            return
        try:
            result = broker.order_by_client_id(cid, order.symbol)
        except BrokerError as err:
            report.unresolved.append(cid)
            log.error("order %s could not be looked up: %s", cid, err)
            return
        if result is not None:
            record = self.store.apply_result(result, now=now, note="reconciled")
            sign = -1.0 if order.side == "sell" else 1.0
            key = (order.venue, order.symbol)
            fills[key] = fills.get(key, 0.0) + sign * (record.filled - order.filled)
            report.resolved.append(cid)
            return
        if order.acked:
            self._abandon(order, "acknowledged earlier but unknown to the broker now", now, report)
            return
        age = now - order.created_at
        if age > self.resend_window:
            self._abandon(order, f"never reached the venue; {age} old > resend window", now, report)
            return
        reason = self._kill_switch(now)
        if reason is not None:
            report.unresolved.append(cid)
            log.critical("order %s not re-sent: kill switch engaged (%s)", cid, reason)
            return
        log.warning(
            "order %s never reached %s: re-sending with the same client id", cid, order.venue
        )
        record = self._send(order.intent(), now=now, note="re-sent on reconciliation")
        key = (order.venue, order.symbol)
        fills[key] = fills.get(key, 0.0) + (-1.0 if order.side == "sell" else 1.0) * record.filled
        report.resent.append(cid)
        if record.state == "unknown":
            report.unresolved.append(cid)

    def _abandon(
        self, order: OrderRecord, why: str, now: datetime, report: ReconcileReport
    ) -> None:
        log.error("order %s: %s: recorded as cancelled, not re-sent", order.client_order_id, why)
        self.store.set_state(order.client_order_id, "cancelled", now=now, note=why, error=why)
        report.abandoned.append(order.client_order_id)

    def _sync_positions(
        self,
        venue: str,
        *,
        now: datetime,
        report: ReconcileReport | None,
        fills: Mapping[tuple[str, str], float] | None = None,
    ) -> None:
        """Replace the stored positions of ``venue`` with the broker's.

        With a ``report``, a broker position that differs from the stored one plus the
        fills just reconciled (``fills``, signed base units) is logged and persisted.
        """
        reported = self.brokers[venue].positions()
        stored = {s: p for (v, s), p in self.store.positions().items() if v == venue}
        fills = fills or {}
        symbols = set(reported) | set(stored) | {s for (v, s) in fills if v == venue}
        for symbol in sorted(symbols):
            ours = stored[symbol].base_amount if symbol in stored else 0.0
            ours += fills.get((venue, symbol), 0.0)
            theirs = reported[symbol].base_amount if symbol in reported else 0.0
            price = next(
                (
                    p.price_usd
                    for p in (reported.get(symbol), stored.get(symbol))
                    if p and p.price_usd
                ),
                0.0,
            )
            if abs(theirs - ours) * price > self.position_tolerance_usd and report is not None:
                line = f"{venue}/{symbol}: stored {ours:g}, broker {theirs:g} (broker kept)"
                report.position_differences.append(line)
                log.warning("position difference: %s", line)
                self.store.record_event(
                    "position_difference",
                    {"stored": ours, "broker": theirs, "price_usd": price},
                    now=now,
                    venue=venue,
                    symbol=symbol,
                )
        self.store.set_positions(venue, reported.values(), now=now)
