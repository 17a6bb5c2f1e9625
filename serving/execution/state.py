"""Persistent state of the live loop: decisions, orders, positions, events (SQLite).

**One store per file.** Opening a store takes an exclusive lock on ``<file>.lock`` beside
it (:class:`oihedge.serving.execution.state_schema.StateLock`, ``fcntl.flock``): a second store on
the same file -- a second loop on the same account and strategy id -- raises
:class:`StateInUseError` naming the holder (pid, host, since) instead of sending orders
the first one does not know about. The kernel releases the lock when its process ends,
however it ends (``kill -9`` included), so it can never outlive its holder.

One SQLite file (stdlib ``sqlite3``, WAL journal, ``synchronous=FULL``: a committed row
survives a killed process). Every write is its own committed transaction, so a restart
sees exactly what happened up to the moment the process died. A store opened with
``durable=False`` (a replay: ``synchronous=OFF``, nothing real to lose) queues decision
rows and writes them in blocks, always in the transaction of the next other write; any
store writes a decision that places orders in the transaction of its first order's
intent: a restart sees both or neither (:meth:`StateStore.flush`).

Tables:

* ``decisions``: one row per policy decision (bar, symbol, probability, target, trade,
  tier, reasons as JSON).
* ``orders``: one row per client order id (``UNIQUE``), with its state, filled amount
  (base units), average price, fees (USD), the venue's id, the last error, whether the
  broker ever acknowledged it (``acked``) and how many times it was sent (``attempts``).
* ``order_transitions``: the audit trail of every state change.
* ``positions``: per (venue, symbol): signed base amount, price, notional, average entry
  -- the broker's last reported position (the broker is the truth).
* ``kill_switch_events``: engagements and releases (when the loop saw them, with their
  reasons and the operator's times in ``detail``) and orders the switch blocked.
* ``events``: guard refusals, reconciliation differences and other notable events.
* ``meta``: ``state_id``, a random id given to the file when it is created (the decision
  log's ``start`` lines carry it, so a restart tells this state's lines from another's).

Order state machine (``intent`` is written *before* the order is sent)::

    intent ──> sent ──> partially_filled ──> filled
      │          │              │
      │          ├──────────────┴──────────> cancelled      (terminal; may hold a fill)
      ├──────────┴─> rejected                               (terminal)
      └──> unknown ──> (any state above, decided by asking the broker)

``sent`` = acknowledged by the broker, not (fully) filled. ``unknown`` = the send failed
in a way that leaves its outcome open (timeout, connection lost); reconciliation asks the
broker by client id. Terminal states never change; a state may be re-written with itself
to refresh fill amounts. The schema, the transition table and the row types live in
:mod:`oihedge.serving.execution.state_schema`.
"""

from __future__ import annotations

import json
import os
import sqlite3
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import fields
from datetime import datetime
from typing import Any

from oihedge.serving.execution.orders import OrderIntent, OrderResult, Position
from oihedge.serving.execution.state_events import EventTables
from oihedge.serving.execution.state_schema import (
    ACTIVE_STATES,
    BROKER_TO_STATE,
    NEXT_STATES,
    ORDER_STATES,
    TERMINAL_STATES,
    EventRecord,
    OrderRecord,
    OrderState,
    StateInUseError,
    StateLock,
    connect,
    iso,
    json_default,
    open_schema,
    order_from_row,
    transaction,
)
from oihedge.serving.policy.policy import Decision

__all__ = [
    "ACTIVE_STATES",
    "ORDER_STATES",
    "TERMINAL_STATES",
    "DuplicateOrderError",
    "StateInUseError",
    "EventRecord",
    "OrderRecord",
    "OrderState",
    "StateStore",
]


_ACTIVE = tuple(sorted(ACTIVE_STATES))
#: decision rows a store that is not durable queues before writing them
DECISIONS_PER_WRITE = 256
_INSERT_DECISION = (
    "INSERT INTO decisions (ts, venue, symbol, probability, target_usd, trade_usd,"
    " tier, payload, recorded_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"
)


class DuplicateOrderError(ValueError):
    """An order with this client order id is already recorded."""


class StateStore(EventTables):
    """The loop's SQLite state file; see the module docstring for the tables.

    ``path``: the file (parent folders are created); ``":memory:"`` for a throwaway
    store. Not thread-safe: one store per loop.
    """

    def __init__(self, path: str | os.PathLike[str], *, durable: bool = True) -> None:
        self.path = str(path)
        self.durable = durable
        #: not durable (a replay): decision rows not written yet (:meth:`flush`)
        self._pending: list[tuple[Any, ...]] = []
        # one loop per state (so per account and strategy id): refuse before touching it
        self._lock = None if self.path == ":memory:" else StateLock(self.path)
        try:
            self._db = connect(self.path, durable=durable)
            #: the file's id, given once when it was created
            self.state_id = open_schema(self._db)
        except BaseException:
            if self._lock is not None:
                self._lock.release()
            raise

    def close(self) -> None:
        """Write what is pending, close the connection and release the file's lock."""
        try:
            self.flush()
            self._db.close()
        finally:
            if self._lock is not None:
                self._lock.release()

    def flush(self) -> None:
        """Write the queued decision rows in one transaction. A store that is not
        ``durable`` (a replay) queues :meth:`record_decision` rows, up to
        ``DECISIONS_PER_WRITE``, and writes them in the transaction of the next other
        write (an order's intent above all: a decision and its orders reach the file
        together, or neither does), before reading decisions back, and on :meth:`close`.
        A durable store (live) writes each at once, but for a decision ``with_orders``
        (queued for its first order's transaction)."""
        if not self._pending:
            return
        with transaction(self._db) as db:
            db.executemany(_INSERT_DECISION, self._pending)
        self._pending.clear()

    def __enter__(self) -> StateStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"StateStore({self.path!r})"

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        """A write transaction that first writes the queued decision rows: committed
        with the caller's writes, or rolled back with them (and still queued)."""
        with transaction(self._db) as db:
            if self._pending:
                db.executemany(_INSERT_DECISION, self._pending)
            yield db
        self._pending.clear()

    # -- decisions ------------------------------------------------------------------------

    def record_decision(
        self,
        ts: datetime,
        symbol: str,
        decision: Decision,
        *,
        probability: float | None,
        now: datetime,
        venue: str | None = None,
        context: Mapping[str, Any] | None = None,
        with_orders: bool = False,
    ) -> int:
        """Persist one policy decision (USD amounts, reasons, next state); returns its id
        (0 when queued: see :meth:`flush`). ``context``: what else the decision's log
        line says (JSON-able; kept in ``payload``), so that the line can be written again
        from the state after a crash. ``with_orders``: its orders are about to be
        written: queued even by a durable store, so that it reaches the file in the same
        transaction as the first of them (the caller flushes after them)."""
        payload = {
            "target_fraction": decision.target_fraction,
            "max_usd": decision.max_usd,
            "hedge_usd": decision.hedge_usd,
            "confirmations": list(decision.confirmations),
            "reasons": list(decision.reasons),
            "pricing": decision.pricing.record(),
            # shallow: the state's fields are scalars (asdict would deep-copy each one)
            "state": {f.name: getattr(decision.state, f.name) for f in fields(decision.state)},
            "context": dict(context or {}),
        }
        row = (
            iso(ts),
            venue,
            symbol,
            probability,
            decision.target_usd,
            decision.trade_usd,
            decision.tier,
            json.dumps(payload, default=json_default),
            iso(now),
        )
        if not self.durable or with_orders:
            self._pending.append(row)
            if len(self._pending) >= DECISIONS_PER_WRITE:
                self.flush()
            return 0
        # one statement: committed on its own in autocommit mode (no BEGIN / COMMIT)
        cur = self._db.execute(_INSERT_DECISION, row)
        return int(cur.lastrowid or 0)

    def decisions(self, symbol: str | None = None) -> list[dict[str, Any]]:
        """Recorded decisions, oldest first (``payload`` decoded)."""
        self.flush()
        sql = "SELECT * FROM decisions" + (" WHERE symbol = ?" if symbol else "") + " ORDER BY id"
        rows = self._db.execute(sql, (symbol,) if symbol else ()).fetchall()
        return [{**dict(r), "payload": json.loads(r["payload"])} for r in rows]

    # -- orders ---------------------------------------------------------------------------

    def record_intent(self, order: OrderIntent, *, now: datetime) -> OrderRecord:
        """Write ``order`` in state ``intent`` (call this *before* sending it).

        Raises :class:`DuplicateOrderError` if its client order id is already recorded.
        """
        with self._tx() as db:
            try:
                db.execute(
                    "INSERT INTO orders (client_order_id, venue, symbol, market, side, amount,"
                    " notional_usd, price_usd, reduce_only, decision_ts, target_usd, state,"
                    " created_at, updated_at)"
                    " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 'intent', ?, ?)",
                    (
                        order.client_order_id,
                        order.venue,
                        order.symbol,
                        order.market,
                        order.side,
                        order.amount,
                        order.notional_usd,
                        order.price_usd,
                        int(order.reduce_only),
                        iso(order.decision_ts),
                        order.target_usd,
                        iso(now),
                        iso(now),
                    ),
                )
            except sqlite3.IntegrityError:
                raise DuplicateOrderError(
                    f"client order id {order.client_order_id!r} is already recorded"
                ) from None
            self._transition(db, order.client_order_id, None, "intent", "", now)
        return self._get(order.client_order_id)

    def get_order(self, client_order_id: str) -> OrderRecord | None:
        """The order with this client id, or None."""
        row = self._db.execute(
            "SELECT * FROM orders WHERE client_order_id = ?", (client_order_id,)
        ).fetchone()
        return None if row is None else order_from_row(row)

    def orders(self, states: Iterable[str] | None = None) -> list[OrderRecord]:
        """Orders (in ``states`` if given), oldest first."""
        if states is None:
            rows = self._db.execute("SELECT * FROM orders ORDER BY rowid").fetchall()
        else:
            wanted = sorted(set(states))
            marks = ", ".join("?" * len(wanted))
            rows = self._db.execute(
                f"SELECT * FROM orders WHERE state IN ({marks}) ORDER BY rowid", wanted
            ).fetchall()
        return [order_from_row(r) for r in rows]

    def has_active_orders(self) -> bool:
        """Some order is in an active state (``intent``, ``sent``, ``partially_filled``,
        ``unknown``): a reconciliation has something to ask the broker."""
        marks = ", ".join("?" * len(_ACTIVE))
        row = self._db.execute(
            f"SELECT 1 FROM orders WHERE state IN ({marks}) LIMIT 1", _ACTIVE
        ).fetchone()
        return row is not None

    def transitions(self, client_order_id: str) -> list[tuple[str | None, str, str]]:
        """``(from, to, note)`` of every state change of one order, oldest first."""
        rows = self._db.execute(
            "SELECT from_state, to_state, note FROM order_transitions"
            " WHERE client_order_id = ? ORDER BY id",
            (client_order_id,),
        ).fetchall()
        return [(r[0], r[1], r[2]) for r in rows]

    def apply_result(
        self, result: OrderResult, *, now: datetime, note: str = "", attempts_delta: int = 0
    ) -> OrderRecord:
        """Record what the broker said about an order (state, fills, fees, venue id)."""
        state = BROKER_TO_STATE.get(result.status, result.status)
        return self.set_state(
            result.client_order_id,
            state,
            now=now,
            note="; ".join(n for n in (note, result.reason) if n),
            attempts_delta=attempts_delta,
            acked=True,
            filled=result.filled,
            avg_price=result.avg_price,
            fee_usd=result.fee_usd,
            exchange_order_id=result.exchange_order_id,
            error=result.reason if state in ("rejected", "cancelled") else None,
        )

    def set_state(
        self,
        client_order_id: str,
        state: str,
        *,
        now: datetime,
        note: str = "",
        acked: bool | None = None,
        filled: float | None = None,
        avg_price: float | None = None,
        fee_usd: float | None = None,
        exchange_order_id: str | None = None,
        error: str | None = None,
        attempts_delta: int = 0,
    ) -> OrderRecord:
        """Move an order to ``state`` (checked against the state machine) and update it.

        ``None`` leaves a column as it is. Raises ``ValueError`` naming the order and both
        states for a transition the machine does not allow, ``KeyError`` for an unknown id.
        """
        if state not in ORDER_STATES:
            raise ValueError(f"state must be one of {ORDER_STATES}, got {state!r}")
        with self._tx() as db:
            old = self._get(client_order_id)
            if state not in NEXT_STATES[old.state]:
                raise ValueError(
                    f"order {client_order_id!r}: transition {old.state!r} -> {state!r} not allowed"
                )
            db.execute(
                "UPDATE orders SET state = ?, acked = MAX(acked, ?), attempts = attempts + ?,"
                " filled = COALESCE(?, filled), avg_price = COALESCE(?, avg_price),"
                " fee_usd = COALESCE(?, fee_usd),"
                " exchange_order_id = COALESCE(?, exchange_order_id),"
                " error = COALESCE(?, error), updated_at = ? WHERE client_order_id = ?",
                (
                    state,
                    int(bool(acked)),
                    attempts_delta,
                    filled,
                    avg_price,
                    fee_usd,
                    exchange_order_id,
                    error,
                    iso(now),
                    client_order_id,
                ),
            )
            if state != old.state or note:
                self._transition(db, client_order_id, old.state, state, note, now)
        return self._get(client_order_id)

    def _get(self, client_order_id: str) -> OrderRecord:
        record = self.get_order(client_order_id)
        if record is None:
            raise KeyError(f"no order with client order id {client_order_id!r}")
        return record

    @staticmethod
    def _transition(
        db: sqlite3.Connection, cid: str, old: str | None, new: str, note: str, now: datetime
    ) -> None:
        db.execute(
            "INSERT INTO order_transitions (client_order_id, from_state, to_state, note, at)"
            " VALUES (?, ?, ?, ?, ?)",
            (cid, old, new, note, iso(now)),
        )

    # -- positions ------------------------------------------------------------------------

    def set_positions(self, venue: str, positions: Iterable[Position], *, now: datetime) -> None:
        """Replace ``venue``'s positions with ``positions`` (the broker's report)."""
        with self._tx() as db:
            db.execute("DELETE FROM positions WHERE venue = ?", (venue,))
            for p in positions:
                if p.venue != venue:
                    raise ValueError(f"position of venue {p.venue!r} given for venue {venue!r}")
                db.execute(
                    "INSERT INTO positions (venue, symbol, base_amount, price_usd, notional_usd,"
                    " avg_entry_usd, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
                    (
                        venue,
                        p.symbol,
                        p.base_amount,
                        p.price_usd,
                        p.notional_usd,
                        p.avg_entry_usd,
                        iso(now),
                    ),
                )

    def positions(self) -> dict[tuple[str, str], Position]:
        """Last recorded positions per (venue, symbol)."""
        rows = self._db.execute("SELECT * FROM positions ORDER BY venue, symbol").fetchall()
        return {
            (r["venue"], r["symbol"]): Position(
                r["venue"], r["symbol"], r["base_amount"], r["price_usd"], r["avg_entry_usd"]
            )
            for r in rows
        }

    def dump(self) -> str:
        """Every row of every table as SQL text (for audits and the secrets test)."""
        self.flush()
        return "\n".join(self._db.iterdump())
