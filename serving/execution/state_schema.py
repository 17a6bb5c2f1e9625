"""The state store's vocabulary: order states and their machine, the SQL schema, rows,
and how the file is opened (:func:`connect`) and held by one process (:class:`StateLock`).

See :mod:`oihedge.serving.execution.state` for the store itself and the state machine drawing.
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
import sqlite3
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any, Literal

from oihedge.serving.execution.orders import OrderIntent

__all__ = [
    "ACTIVE_STATES",
    "BROKER_TO_STATE",
    "NEXT_STATES",
    "ORDER_STATES",
    "SCHEMA",
    "TERMINAL_STATES",
    "EventRecord",
    "open_schema",
    "OrderRecord",
    "OrderState",
    "StateInUseError",
    "StateLock",
    "iso",
    "json_default",
    "order_from_row",
]

OrderState = Literal[
    "intent", "sent", "partially_filled", "filled", "cancelled", "rejected", "unknown"
]
ORDER_STATES: tuple[str, ...] = (
    "intent",
    "sent",
    "partially_filled",
    "filled",
    "cancelled",
    "rejected",
    "unknown",
)
TERMINAL_STATES = frozenset({"filled", "cancelled", "rejected"})
#: states reconciliation must resolve with the broker
ACTIVE_STATES = frozenset({"intent", "sent", "partially_filled", "unknown"})
NEXT_STATES: dict[str, frozenset[str]] = {
    "intent": frozenset(ORDER_STATES) - {"intent"},
    "sent": frozenset({"sent", "partially_filled", "filled", "cancelled", "rejected", "unknown"}),
    "partially_filled": frozenset({"partially_filled", "filled", "cancelled", "unknown"}),
    "unknown": frozenset(ORDER_STATES) - {"intent"},
    "filled": frozenset({"filled"}),
    "cancelled": frozenset({"cancelled"}),
    "rejected": frozenset({"rejected"}),
}
BROKER_TO_STATE = {"open": "sent"}

SCHEMA = """
CREATE TABLE IF NOT EXISTS decisions (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    ts TEXT NOT NULL,
    venue TEXT,
    symbol TEXT NOT NULL,
    probability REAL,
    target_usd REAL NOT NULL,
    trade_usd REAL NOT NULL,
    tier TEXT NOT NULL,
    payload TEXT NOT NULL,
    recorded_at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS orders (
    client_order_id TEXT NOT NULL UNIQUE,
    venue TEXT NOT NULL,
    symbol TEXT NOT NULL,
    market TEXT NOT NULL,
    side TEXT NOT NULL CHECK (side IN ('buy', 'sell')),
    amount REAL NOT NULL,
    notional_usd REAL NOT NULL,
    price_usd REAL NOT NULL,
    reduce_only INTEGER NOT NULL,
    decision_ts TEXT NOT NULL,
    target_usd REAL NOT NULL,
    state TEXT NOT NULL CHECK (state IN ({states})),
    acked INTEGER NOT NULL DEFAULT 0,
    attempts INTEGER NOT NULL DEFAULT 0,
    filled REAL NOT NULL DEFAULT 0,
    avg_price REAL,
    fee_usd REAL,
    exchange_order_id TEXT,
    error TEXT,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS order_transitions (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    client_order_id TEXT NOT NULL REFERENCES orders (client_order_id),
    from_state TEXT,
    to_state TEXT NOT NULL,
    note TEXT NOT NULL DEFAULT '',
    at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS positions (
    venue TEXT NOT NULL,
    symbol TEXT NOT NULL,
    base_amount REAL NOT NULL,
    price_usd REAL,
    notional_usd REAL NOT NULL,
    avg_entry_usd REAL,
    updated_at TEXT NOT NULL,
    PRIMARY KEY (venue, symbol)
);
CREATE TABLE IF NOT EXISTS kill_switch_events (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    at TEXT NOT NULL,
    action TEXT NOT NULL CHECK (action IN ('engaged', 'released', 'blocked')),
    reason TEXT NOT NULL DEFAULT '',
    client_order_id TEXT,
    detail TEXT NOT NULL DEFAULT '{{}}'
);
CREATE TABLE IF NOT EXISTS events (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    at TEXT NOT NULL,
    kind TEXT NOT NULL,
    venue TEXT,
    symbol TEXT,
    client_order_id TEXT,
    detail TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS meta (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS orders_by_state ON orders (state);
""".format(states=", ".join(f"'{s}'" for s in ORDER_STATES))


@dataclass(frozen=True)
class OrderRecord:
    """One row of ``orders``: the intent and what became of it (amounts in base units)."""

    client_order_id: str
    venue: str
    symbol: str
    market: str
    side: str
    amount: float
    notional_usd: float
    price_usd: float
    reduce_only: bool
    decision_ts: datetime
    target_usd: float
    state: str
    acked: bool
    attempts: int
    filled: float
    avg_price: float | None
    fee_usd: float | None
    exchange_order_id: str | None
    error: str | None
    created_at: datetime
    updated_at: datetime

    def intent(self) -> OrderIntent:
        """The order as it was meant (to re-send it with the same client id)."""
        return OrderIntent(
            venue=self.venue,
            symbol=self.symbol,
            market=self.market,
            side=self.side,  # type: ignore[arg-type]
            amount=self.amount,
            notional_usd=self.notional_usd,
            price_usd=self.price_usd,
            reduce_only=self.reduce_only,
            client_order_id=self.client_order_id,
            decision_ts=self.decision_ts,
            target_usd=self.target_usd,
        )


@dataclass(frozen=True)
class EventRecord:
    """One row of ``events`` or ``kill_switch_events`` (``detail`` decoded from JSON)."""

    at: datetime
    kind: str
    venue: str | None
    symbol: str | None
    client_order_id: str | None
    detail: dict[str, Any]


def iso(ts: datetime) -> str:
    """``ts`` as ISO-8601 text; raises ``ValueError`` for a naive timestamp."""
    if ts.tzinfo is None:
        raise ValueError(f"timestamps must be timezone-aware, got {ts!r}")
    return ts.isoformat()


def json_default(value: object) -> object:
    """JSON encoding of dates (ISO text) and durations (seconds)."""
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, timedelta):
        return value.total_seconds()
    raise TypeError(f"cannot store {type(value).__name__} as JSON: {value!r}")


def order_from_row(row: sqlite3.Row) -> OrderRecord:
    """An ``orders`` row as an :class:`OrderRecord`."""
    return OrderRecord(
        client_order_id=row["client_order_id"],
        venue=row["venue"],
        symbol=row["symbol"],
        market=row["market"],
        side=row["side"],
        amount=row["amount"],
        notional_usd=row["notional_usd"],
        price_usd=row["price_usd"],
        reduce_only=bool(row["reduce_only"]),
        decision_ts=datetime.fromisoformat(row["decision_ts"]),
        target_usd=row["target_usd"],
        state=row["state"],
        acked=bool(row["acked"]),
        attempts=row["attempts"],
        filled=row["filled"],
        avg_price=row["avg_price"],
        fee_usd=row["fee_usd"],
        exchange_order_id=row["exchange_order_id"],
        error=row["error"],
        created_at=datetime.fromisoformat(row["created_at"]),
        updated_at=datetime.fromisoformat(row["updated_at"]),
    )


def open_schema(db: sqlite3.Connection) -> str:
    """Create the tables (or bring an older file's up to date); returns the file's
    ``state_id`` (given once, when the file is created)."""
    db.execute("PRAGMA foreign_keys=ON")
    db.executescript(SCHEMA)
    columns = {r[1] for r in db.execute("PRAGMA table_info(kill_switch_events)")}
    if "detail" not in columns:  # a file from before kill-switch details
        db.execute("ALTER TABLE kill_switch_events ADD COLUMN detail TEXT NOT NULL DEFAULT '{}'")
    db.execute(
        "INSERT OR IGNORE INTO meta (key, value) VALUES ('state_id', ?)", (uuid.uuid4().hex,)
    )
    return str(db.execute("SELECT value FROM meta WHERE key = 'state_id'").fetchone()[0])


@contextmanager
def transaction(db: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
    """``BEGIN IMMEDIATE`` ... ``COMMIT``; ``ROLLBACK`` on any exception, then re-raise.

    Immediate: the write lock is taken at the start, so two processes on one file queue
    up instead of failing halfway through a transaction.
    """
    db.execute("BEGIN IMMEDIATE")
    try:
        yield db
    except BaseException:
        db.execute("ROLLBACK")
        raise
    db.execute("COMMIT")


def connect(path: str, *, durable: bool = True) -> sqlite3.Connection:
    """Open (creating its folder) a WAL-journaled SQLite file in autocommit mode.

    ``durable``: ``synchronous=FULL``, a committed row survives a power cut (live runs);
    ``False``: ``synchronous=OFF``, about a millisecond less per commit, for replays and
    benchmarks where a lost write costs nothing.
    """
    if path != ":memory:":
        Path(path).parent.mkdir(parents=True, exist_ok=True)
    db = sqlite3.connect(path, isolation_level=None, timeout=10.0)
    db.row_factory = sqlite3.Row
    db.execute("PRAGMA journal_mode=WAL")
    db.execute(f"PRAGMA synchronous={'FULL' if durable else 'OFF'}")
    return db


class StateInUseError(RuntimeError):
    """Another live process (or another store in this one) holds this state file."""


class StateLock:
    """An exclusive ``fcntl.flock`` on ``<path>.lock``, taken when built.

    The holder writes ``{"pid", "host", "since"}`` into the lock file, so that a refused
    process can name it. The lock belongs to the open file, not to a row or a file's
    existence: the kernel drops it when the holder closes it or dies (``kill -9``
    included), and a stale lock file left behind locks nothing. Raises
    :class:`StateInUseError` (naming the holder) when another open file holds it -- in
    another process or in this one.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(f"{os.fspath(path)}.lock")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _holder(fd)
            os.close(fd)
            raise StateInUseError(
                f"state {os.fspath(path)} is in use by {holder}: one loop per state"
                f" (account and strategy id); stop it first (lock {self.path})"
            ) from None
        except BaseException:
            os.close(fd)
            raise
        since = datetime.now(UTC).isoformat(timespec="seconds")
        record = {"pid": os.getpid(), "host": socket.gethostname(), "since": since}
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(record).encode(), 0)
        self._fd: int | None = fd

    def release(self) -> None:
        """Unlock and close (idempotent). The file stays: it locks nothing by itself."""
        fd, self._fd = self._fd, None
        if fd is not None:
            os.close(fd)  # closing the last descriptor drops the flock


def _holder(fd: int) -> str:
    """``pid N on HOST since TIME`` from a held lock file (its holder wrote it)."""
    try:
        record = json.loads(os.pread(fd, 4096, 0) or b"{}")
        return f"pid {record['pid']} on {record['host']} since {record['since']}"
    except (ValueError, KeyError, TypeError):  # taken this instant, not written yet
        return "another process (pid not written yet)"
