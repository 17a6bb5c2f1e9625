"""The state store's audit tables: notable events and the kill switch's history.

:class:`EventTables` is the part of :class:`~oihedge.serving.execution.state.StateStore`
(its base class) that writes and reads ``events`` (guard refusals, reconciliation
differences, quarantined rows, ...) and ``kill_switch_events`` (engagements, releases and
the orders the switch blocked); the tables are in :mod:`oihedge.serving.execution.state_schema`.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable, Mapping
from contextlib import AbstractContextManager
from datetime import datetime
from typing import Any, Literal

from oihedge.serving.execution.state_schema import EventRecord, iso, json_default

__all__ = ["EventTables"]


class EventTables:
    """The events of a :class:`~oihedge.serving.execution.state.StateStore`, written on
    its connection, with its queued decision rows and in its write transaction."""

    _db: sqlite3.Connection
    _pending: list[tuple[Any, ...]]
    _tx: Callable[[], AbstractContextManager[sqlite3.Connection]]

    def record_event(
        self,
        kind: str,
        detail: Mapping[str, Any],
        *,
        now: datetime,
        venue: str | None = None,
        symbol: str | None = None,
        client_order_id: str | None = None,
    ) -> None:
        """Persist a notable event (guard refusal, reconciliation difference, ...)."""
        sql = (
            "INSERT INTO events (at, kind, venue, symbol, client_order_id, detail)"
            " VALUES (?, ?, ?, ?, ?, ?)"
        )
        args = (
            iso(now),
            kind,
            venue,
            symbol,
            client_order_id,
            json.dumps(dict(detail), default=json_default),
        )
        if self._pending:  # with the queued decisions, in one transaction
            with self._tx() as db:
                db.execute(sql, args)
            return
        # one statement: committed on its own in autocommit mode (no BEGIN / COMMIT)
        self._db.execute(sql, args)

    def events(self, kind: str | None = None) -> list[EventRecord]:
        """Recorded events (of ``kind`` if given), oldest first."""
        sql = "SELECT * FROM events" + (" WHERE kind = ?" if kind else "") + " ORDER BY id"
        rows = self._db.execute(sql, (kind,) if kind else ()).fetchall()
        return [
            EventRecord(
                datetime.fromisoformat(r["at"]),
                r["kind"],
                r["venue"],
                r["symbol"],
                r["client_order_id"],
                json.loads(r["detail"]),
            )
            for r in rows
        ]

    def record_kill_switch(
        self,
        action: Literal["engaged", "released", "blocked"],
        reason: str,
        *,
        now: datetime,
        client_order_id: str | None = None,
        detail: Mapping[str, Any] | None = None,
    ) -> None:
        """Persist a kill-switch event: ``engaged``, ``released`` or an order ``blocked``,
        at ``now`` (when the loop saw it), with its ``reason`` and ``detail`` (the
        operator's own times: ``engaged_at``, ``released_at``)."""
        with self._tx() as db:
            db.execute(
                "INSERT INTO kill_switch_events (at, action, reason, client_order_id, detail)"
                " VALUES (?, ?, ?, ?, ?)",
                (
                    iso(now),
                    action,
                    reason,
                    client_order_id,
                    json.dumps(dict(detail or {}), default=json_default),
                ),
            )

    def kill_switch_state(self) -> str | None:
        """The last recorded engagement change: ``"engaged"``, ``"released"`` or None."""
        row = self._db.execute(
            "SELECT action FROM kill_switch_events WHERE action != 'blocked'"
            " ORDER BY id DESC LIMIT 1"
        ).fetchone()
        return None if row is None else str(row[0])

    def kill_switch_events(self) -> list[EventRecord]:
        """Kill-switch events, oldest first (``kind`` is the action; ``detail``: the
        ``reason`` and the recorded details)."""
        rows = self._db.execute("SELECT * FROM kill_switch_events ORDER BY id").fetchall()
        return [
            EventRecord(
                datetime.fromisoformat(r["at"]),
                r["action"],
                None,
                None,
                r["client_order_id"],
                {**json.loads(r["detail"] or "{}"), "reason": r["reason"]},
            )
            for r in rows
        ]
