"""A read-only snapshot of a live loop, running or stopped (``oihedge live status``).

It reads the two files the loop keeps and writes neither:

* the state file (SQLite) opened read-only (``mode=ro``), with no lock taken: the loop's
  own lock (:class:`oihedge.serving.execution.state_schema.StateLock`) is a separate file, and the
  WAL journal lets a reader see the last committed state while the loop writes;
* the end of the decision log, read backwards until the lines of the last ``bars`` bars
  are in (a ``contributions`` line completes its decision, as in
  :func:`oihedge.serving.live.decision_log.read_records`).

From the log: each symbol's last decision (the probability, the policy's pricing of it:
the forecast cascade loss ``p x severity`` against the cost of holding a hedge over the
horizon, the tier, the target and the hedge), the venues it used or left out (and why),
the serving model's version, and the decision errors of the last ``bars`` bars. The state
persists a decision only when the policy's state moves, so its own last decision of a
symbol stands in only where the log's tail has none. From the state: each symbol's last
order, the kill switch's last change, the last model event and the loop events of the
last ``bars`` bars that report a fault.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson

from oihedge.serving.live.decision_log import complete, lines_backwards

#: state events that report a fault (shown with the decision errors)
FAULT_EVENTS = frozenset(
    {
        "quarantine",
        "guard_refusal",
        "position_difference",
        "foreign_open_order",
        "model_refused",
        "model_unavailable",
    }
)


@dataclass(frozen=True)
class SymbolStatus:
    """One symbol at its last decision (USD amounts; fractions of the maximum hedge)."""

    symbol: str
    ts: datetime
    probability: float | None
    tier: str
    forecast_loss: float | None  # p x severity, fraction of the hedged notional
    hold_cost: float | None  # the cost of holding the hedge over the horizon, same unit
    p_entry: float | None
    target_usd: float
    target_fraction: float | None
    hedge_usd: float | None
    max_usd: float | None
    price: float | None
    fresh_venues: Any = None
    left_out: dict[str, str] = field(default_factory=dict)
    last_order: dict[str, Any] | None = None


@dataclass(frozen=True)
class Status:
    """What :func:`read_status` found; :meth:`record` is its JSON form."""

    state_db: str
    decision_log: str
    now: datetime
    last_bar: datetime | None
    symbols: list[SymbolStatus]
    kill_switch: dict[str, Any]
    model: dict[str, Any]
    errors: list[dict[str, Any]]

    @property
    def age_seconds(self) -> float | None:
        """Seconds from the last bar decided to ``now``."""
        return None if self.last_bar is None else (self.now - self.last_bar).total_seconds()

    def record(self) -> dict[str, Any]:
        out = asdict(self)
        out["age_seconds"] = self.age_seconds
        return json.loads(json.dumps(out, default=_iso))


def _iso(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def _when(text: str | None) -> datetime | None:
    if not text:
        return None
    moment = datetime.fromisoformat(text)
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _open_read_only(path: Path) -> sqlite3.Connection:
    if not path.is_file():
        raise FileNotFoundError(f"no state file at {path}: has the loop run with this config?")
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=10.0)
    db.row_factory = sqlite3.Row
    return db


def _log_tail(path: Path, bars: int) -> Iterator[dict[str, Any]]:
    """The decision log's records of its last ``bars`` bars, newest first, each decision
    completed by its ``contributions`` line (read before it, going backwards)."""
    if not path.is_file():
        return
    seen: list[str] = []
    later: dict[tuple[str, str], dict[str, Any]] = {}
    for line in lines_backwards(path):
        try:
            record = orjson.loads(line)
        except orjson.JSONDecodeError:
            continue  # a partial last line (a killed writer): not a record yet
        if not isinstance(record, dict):
            continue
        ts = str(record.get("ts", ""))
        if ts and ts not in seen:
            if len(seen) == bars:
                return
            seen.append(ts)
        kind = record.get("kind")
        if kind == "contributions":
            later[(ts, str(record.get("symbol")))] = record
            continue
        if kind == "decision":
            extra = later.pop((ts, str(record.get("symbol"))), None)
            if extra is not None:
                complete(record, extra)
        yield record


def read_status(
    state_db: Path,
    decision_log: Path,
    *,
    kill_switch_file: Path | None = None,
    bars: int = 12,
    now: datetime | None = None,
) -> Status:
    """The snapshot (module docstring). ``bars``: how many of the last bars the errors
    cover. Raises ``FileNotFoundError`` when the state file does not exist."""
    if bars < 1:
        raise ValueError(f"bars must be >= 1, got {bars}")
    now = now or datetime.now(UTC)
    db = _open_read_only(state_db)
    try:
        log_records = list(_log_tail(decision_log, bars))
        latest = db.execute(
            "SELECT d.* FROM decisions d JOIN (SELECT symbol, MAX(id) AS id FROM decisions"
            " GROUP BY symbol) m ON d.id = m.id ORDER BY d.symbol"
        ).fetchall()
        orders = {
            row["symbol"]: row
            for row in db.execute(
                "SELECT o.* FROM orders o JOIN (SELECT symbol, MAX(created_at) AS at FROM"
                " orders GROUP BY symbol) m ON o.symbol = m.symbol AND o.created_at = m.at"
            )
        }
        switch = db.execute(
            "SELECT * FROM kill_switch_events WHERE action != 'blocked' ORDER BY id DESC LIMIT 1"
        ).fetchone()
        blocked = db.execute(
            "SELECT COUNT(*) FROM kill_switch_events WHERE action = 'blocked'"
        ).fetchone()[0]
        model_rows = db.execute(
            "SELECT * FROM events WHERE kind LIKE 'model_%' ORDER BY id DESC LIMIT 1"
        ).fetchall()
        since = min(
            (t for t in (_when(r.get("ts")) for r in log_records) if t is not None),
            default=None,
        )
        if since is None:  # no log: the state's last persisted bars
            rows = db.execute("SELECT DISTINCT ts FROM decisions ORDER BY ts DESC LIMIT ?", (bars,))
            since = min((t for t in (_when(r[0]) for r in rows) if t), default=None)
        faults = (
            db.execute(
                "SELECT * FROM events WHERE at >= ? ORDER BY id",
                (since.isoformat(),),
            ).fetchall()
            if since is not None
            else []
        )
    finally:
        db.close()
    last_line = {}
    for record in log_records:  # newest first: keep the first seen per symbol
        if record.get("kind") == "decision":
            last_line.setdefault(record.get("symbol"), record)
    symbols = [_from_line(line, orders.get(symbol)) for symbol, line in last_line.items()]
    symbols += [
        _from_state(row, orders.get(row["symbol"]))
        for row in latest
        if row["symbol"] not in last_line
    ]
    symbols.sort(key=lambda s: s.symbol)
    errors = [
        {"ts": r.get("ts"), "symbol": r.get("symbol"), "error": e}
        for r in reversed(log_records)
        if r.get("kind") == "decision"
        for e in r.get("errors", [])
    ]
    errors += [
        {
            "ts": r["at"],
            "symbol": r["symbol"],
            "venue": r["venue"],
            "error": r["kind"],
            "detail": json.loads(r["detail"] or "{}"),
        }
        for r in faults
        if r["kind"] in FAULT_EVENTS
    ]
    versions = [r.get("model_version") for r in log_records if r.get("kind") == "decision"]
    model: dict[str, Any] = {"version": next((v for v in versions if v is not None), None)}
    if model_rows:
        event = model_rows[0]
        model |= {
            "event": event["kind"],
            "at": event["at"],
            **json.loads(event["detail"] or "{}"),
        }
    kill = {
        "state": None if switch is None else switch["action"],
        "reason": None if switch is None else switch["reason"],
        "at": None if switch is None else switch["at"],
        "orders_blocked": int(blocked),
    }
    if kill_switch_file is not None:
        kill["file"] = str(kill_switch_file)
        kill["file_present"] = kill_switch_file.exists()
    last_bar = max((s.ts for s in symbols), default=None)
    return Status(str(state_db), str(decision_log), now, last_bar, symbols, kill, model, errors)


def _from_line(line: dict[str, Any], order: sqlite3.Row | None) -> SymbolStatus:
    p, severity = line.get("probability"), line.get("severity")
    return SymbolStatus(
        symbol=str(line["symbol"]),
        ts=_when(str(line["ts"])) or datetime.min.replace(tzinfo=UTC),
        probability=p,
        tier=str(line.get("tier")),
        forecast_loss=None if p is None or severity is None else p * severity,
        hold_cost=line.get("hold_cost"),
        p_entry=line.get("p_entry"),
        target_usd=float(line.get("target_usd") or 0.0),
        target_fraction=line.get("target_fraction"),
        hedge_usd=line.get("hedge_after_usd"),
        max_usd=line.get("max_usd"),
        price=line.get("price"),
        fresh_venues=line.get("fresh_venues"),
        left_out=dict(line.get("left_out") or {}),
        last_order=_order(order),
    )


def _from_state(row: sqlite3.Row, order: sqlite3.Row | None) -> SymbolStatus:
    """A symbol the log's tail does not hold (no log, or a log cut short): its last
    decision the state persisted."""
    payload = json.loads(row["payload"] or "{}")
    pricing = payload.get("pricing") or {}
    p, severity = row["probability"], pricing.get("severity")
    return SymbolStatus(
        symbol=row["symbol"],
        ts=_when(row["ts"]) or datetime.min.replace(tzinfo=UTC),
        probability=p,
        tier=row["tier"],
        forecast_loss=None if p is None or severity is None else p * severity,
        hold_cost=pricing.get("cost"),
        p_entry=pricing.get("p_entry"),
        target_usd=row["target_usd"],
        target_fraction=payload.get("target_fraction"),
        hedge_usd=payload.get("hedge_usd"),
        max_usd=payload.get("max_usd"),
        price=None,
        last_order=_order(order),
    )


def _order(order: sqlite3.Row | None) -> dict[str, Any] | None:
    if order is None:
        return None
    return {
        "client_order_id": order["client_order_id"],
        "side": order["side"],
        "notional_usd": order["notional_usd"],
        "state": order["state"],
        "decision_ts": order["decision_ts"],
        "error": order["error"],
    }
