"""Guards between the rebalancer and the broker: caps, an order-rate limit, a kill switch.

**Caps** (:class:`Caps`, checked by :class:`OrderGuard`): an order larger than
``max_order_usd``, an order that would take the total short hedge above
``max_hedge_usd``, or an order beyond ``max_orders_per_minute`` in a sliding one-minute
window is *refused*: :meth:`OrderGuard.admit` returns a :class:`Verdict` with the reason
and logs it (structured: ``extra={"event": "guard_refusal", ...}``). An order is never
resized: a cap that binds is a sizing problem the operator must see, not hide. Orders
that reduce the hedge are exempt from the hedge cap (they can only bring it down).

**Kill switch**: a file (``live.kill_switch_file``, default ``data/live/KILL``). While it
exists no new order is placed; the hedge already on stays in place (nothing is closed or
cancelled: flattening in a panic is itself a risk). :func:`engage_kill_switch` (what
``oihedge live kill`` calls) writes it with a reason and its time and logs the event;
``touch data/live/KILL`` works as well. :func:`release_kill_switch` (``oihedge live
resume``) first writes the release -- its reason and time, and the engagement it ends --
to ``<file>.released`` (:func:`release_record_path`), then removes the file, so a resume
and its reason outlive the file. :func:`read_kill_switch` reads both for the executor,
which records every engagement and release in the state store when it sees them (every
bar, and before every order; :meth:`oihedge.serving.execution.executor.Executor.check_kill_switch`).
"""

from __future__ import annotations

import json
import logging
import math
import os
from collections import deque
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from oihedge.serving.execution.orders import OrderIntent

__all__ = [
    "Caps",
    "KillSwitchFiles",
    "OrderGuard",
    "Verdict",
    "engage_kill_switch",
    "kill_switch_engaged",
    "kill_switch_reason",
    "read_kill_switch",
    "release_kill_switch",
    "release_record_path",
]

log = logging.getLogger(__name__)

WINDOW = timedelta(minutes=1)


@dataclass(frozen=True)
class Caps:
    """Hard limits on orders.

    Attributes:
        max_order_usd: largest order notional, USD (> 0).
        max_hedge_usd: largest total short hedge after an order, USD (> 0), summed over
            every instrument.
        max_orders_per_minute: most orders admitted in any sliding 60 s window (>= 1).
    """

    max_order_usd: float
    max_hedge_usd: float
    max_orders_per_minute: int

    def __post_init__(self) -> None:
        for name in ("max_order_usd", "max_hedge_usd"):
            value = getattr(self, name)
            if not (isinstance(value, int | float) and value > 0 and not math.isnan(value)):
                raise ValueError(f"{name} must be > 0, got {value!r}")
        if not (isinstance(self.max_orders_per_minute, int) and self.max_orders_per_minute >= 1):
            raise ValueError(
                f"max_orders_per_minute must be an integer >= 1, got {self.max_orders_per_minute!r}"
            )


@dataclass(frozen=True)
class Verdict:
    """Whether an order may be sent; ``reason`` says why not (empty when allowed)."""

    allowed: bool
    reason: str = ""


class OrderGuard:
    """Checks orders against :class:`Caps`; remembers admitted orders for the rate limit."""

    def __init__(self, caps: Caps) -> None:
        self.caps = caps
        self._admitted: deque[datetime] = deque()

    def admit(self, order: OrderIntent, *, hedge_usd: float, now: datetime) -> Verdict:
        """Admit ``order`` or refuse it with a reason (logged; the order is never resized).

        ``hedge_usd``: the total short hedge before this order, USD (include orders
        admitted earlier in the same batch). ``now``: wall-clock time (timezone-aware).
        An admitted order counts towards the rate limit at once, whether or not it is
        then sent successfully (a failing venue must not be hammered).
        """
        if now.tzinfo is None:
            raise ValueError(f"now must be timezone-aware, got {now!r}")
        while self._admitted and self._admitted[0] <= now - WINDOW:
            self._admitted.popleft()
        reason = self._refusal(order, hedge_usd)
        if reason:
            log.warning(
                "order refused: %s: %s",
                order.client_order_id,
                reason,
                extra={
                    "event": "guard_refusal",
                    "client_order_id": order.client_order_id,
                    "venue": order.venue,
                    "symbol": order.symbol,
                    "side": order.side,
                    "notional_usd": order.notional_usd,
                    "reason": reason,
                },
            )
            return Verdict(False, reason)
        self._admitted.append(now)
        return Verdict(True)

    def _refusal(self, order: OrderIntent, hedge_usd: float) -> str:
        caps = self.caps
        if order.notional_usd > caps.max_order_usd:
            return (
                f"order notional ${order.notional_usd:,.2f} exceeds max_order_usd "
                f"${caps.max_order_usd:,.2f}"
            )
        after = hedge_usd + order.hedge_change_usd
        if order.hedge_change_usd > 0 and after > caps.max_hedge_usd:
            return (
                f"hedge after order ${after:,.2f} exceeds max_hedge_usd ${caps.max_hedge_usd:,.2f}"
            )
        if len(self._admitted) >= caps.max_orders_per_minute:
            return (
                f"{len(self._admitted)} orders in the last minute: max_orders_per_minute "
                f"{caps.max_orders_per_minute} reached"
            )
        return ""


def engage_kill_switch(
    path: str | os.PathLike[str], reason: str, *, now: datetime | None = None
) -> None:
    """Engage the kill switch: write ``path`` (JSON: time and reason) and log it.

    Takes effect before the next order. Re-engaging keeps the first engagement's file.
    """
    target = Path(path)
    when = (now or datetime.now(UTC)).isoformat()
    if target.exists():
        log.critical("kill switch already engaged (%s); new reason: %s", target, reason)
        return
    _write_atomic(target, {"engaged_at": when, "reason": reason})
    log.critical(
        "kill switch engaged: %s", reason, extra={"event": "kill_switch", "path": str(target)}
    )


def _write_atomic(target: Path, record: dict[str, Any]) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(target.name + ".tmp")
    tmp.write_text(json.dumps(record))
    tmp.replace(target)  # atomic: a reader never sees a half-written file


def _read_json(path: Path) -> dict[str, Any] | None:
    """The JSON object in ``path``; ``{"reason": text}`` for other text; None: no file."""
    try:
        text = path.read_text()
    except FileNotFoundError:
        return None
    try:
        record = json.loads(text)
    except json.JSONDecodeError:
        return {"reason": text.strip()}
    return record if isinstance(record, dict) else {"reason": text.strip()}


def release_record_path(path: str | os.PathLike[str]) -> Path:
    """Where :func:`release_kill_switch` records the last release: ``<path>.released``."""
    target = Path(path)
    return target.with_name(target.name + ".released")


@dataclass(frozen=True)
class KillSwitchFiles:
    """What the kill-switch files say (:func:`read_kill_switch`).

    ``engaged``: the switch file exists; ``reason`` / ``engaged_at``: what it holds (""
    / None for a bare file). ``release``: the last release recorded by
    :func:`release_kill_switch` (``released_at``, ``reason``, and the ``engaged_at`` /
    ``engaged_reason`` of the engagement it ended), or None.
    """

    engaged: bool
    reason: str
    engaged_at: str | None
    release: dict[str, Any] | None


def read_kill_switch(path: str | os.PathLike[str]) -> KillSwitchFiles:
    """The switch file and the last release record, read once each."""
    engaged = _read_json(Path(path))
    release = _read_json(release_record_path(path))
    if engaged is None:
        return KillSwitchFiles(False, "", None, release)
    at = engaged.get("engaged_at")
    return KillSwitchFiles(
        True, str(engaged.get("reason", "")), None if at is None else str(at), release
    )


def kill_switch_engaged(path: str | os.PathLike[str]) -> bool:
    """True while the kill-switch file exists (whatever it contains)."""
    return Path(path).exists()


def kill_switch_reason(path: str | os.PathLike[str]) -> str | None:
    """The reason the kill switch was engaged with; ``""`` for a bare file, None if off."""
    target = Path(path)
    try:
        text = target.read_text()
    except FileNotFoundError:
        return None
    try:
        return str(json.loads(text).get("reason", ""))
    except (json.JSONDecodeError, AttributeError):
        return text.strip()


def release_kill_switch(
    path: str | os.PathLike[str], reason: str, *, now: datetime | None = None
) -> bool:
    """Release the kill switch: record the release (:func:`release_record_path`: its
    reason and time, and the engagement it ends), then remove the file. Returns whether
    it was engaged (nothing is written if it was not). Logged."""
    target = Path(path)
    engaged = _read_json(target)
    if engaged is None:
        return False
    record = {
        "released_at": (now or datetime.now(UTC)).isoformat(),
        "reason": reason,
        "engaged_at": engaged.get("engaged_at"),
        "engaged_reason": str(engaged.get("reason", "")),
    }
    _write_atomic(release_record_path(target), record)  # before the file goes: never lost
    try:
        target.unlink()
    except FileNotFoundError:
        return False
    log.warning("kill switch released: %s", reason, extra={"event": "kill_switch_release"})
    return True
