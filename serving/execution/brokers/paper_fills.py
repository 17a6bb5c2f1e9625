"""How a paper account moves with a new price: funding since the last price, the orders
queued before it filled at it (the cost model's fill price and fee), positions and cash
updated, all on the broker's SQLite connection inside the caller's transaction.

:class:`PaperFills` is the part of :class:`~oihedge.serving.execution.brokers.paper.PaperBroker`
(its base class) that writes ``paper_positions``, ``paper_orders`` and ``paper_accounts``
when prices arrive; the broker's own module has the tables, the orders' API and the
batching of a bar's quotes.
"""

from __future__ import annotations

import logging
import math
import sqlite3
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from oihedge.serving.policy.costs import CostModel

__all__ = ["Book", "PaperFills", "Quote"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Quote:
    """A new price of ``symbol`` at ``ts`` and the cost inputs of fills there (see
    :meth:`PaperBroker.on_price`)."""

    ts: datetime
    symbol: str
    price: float
    vol_ann: float | None = None
    volume_24h_usd: float | None = None
    stress: bool = False
    funding_rate_8h: float | None = None


@dataclass
class Book:
    """This venue's ``paper_positions`` rows (as dicts, by symbol) and open
    ``paper_orders`` rows (by symbol, by ``seq``) as of the last bar, so that a bar that
    only moves prices reads nothing back. ``version``: SQLite's ``data_version`` when it
    was read -- it changes when another connection commits to the file, and the mirror is
    then read again; this broker's own writes other than a bar's new prices drop it."""

    version: int
    positions: dict[str, dict[str, Any]]
    queued: dict[str, list[sqlite3.Row]]
    complete: bool = True


class PaperFills:
    """Fills and funding of a :class:`~oihedge.serving.execution.brokers.paper.PaperBroker`
    (its venue, cost model and its two small time caches)."""

    venue: str
    costs: CostModel
    _texts: dict[datetime, str]
    _times: dict[str, datetime]

    def _read_book(self, db: sqlite3.Connection, version: int) -> Book:
        positions = {
            r["symbol"]: dict(zip(r.keys(), r, strict=True))
            for r in db.execute("SELECT * FROM paper_positions WHERE venue = ?", (self.venue,))
        }
        queued: dict[str, list[sqlite3.Row]] = {}
        for row in db.execute(
            "SELECT * FROM paper_orders WHERE venue = ? AND status = 'open' ORDER BY seq",
            (self.venue,),
        ):
            queued.setdefault(row["symbol"], []).append(row)
        return Book(version, positions, queued)

    def _advance(self, db: sqlite3.Connection, quote: Quote) -> list[str]:
        """One quote inside the caller's transaction: funding, fills, the new last price.
        Returns the client ids filled."""
        queued = db.execute(
            "SELECT * FROM paper_orders WHERE venue = ? AND symbol = ? AND status = 'open'"
            " ORDER BY seq",
            (self.venue, quote.symbol),
        ).fetchall()
        filled: list[str] = []
        key = self._settle(db, quote, self._position_row(db, quote.symbol), queued, filled)
        db.execute(
            "UPDATE paper_positions SET last_price = ?, last_ts = ? WHERE venue = ? AND symbol = ?",
            (quote.price, key, self.venue, quote.symbol),
        )
        return filled

    def _settle(
        self,
        db: sqlite3.Connection,
        quote: Quote,
        pos: Mapping[str, Any],
        open_orders: Sequence[sqlite3.Row],
        filled: list[str],
        charges: list[float] | None = None,
    ) -> str:
        """Check ``quote`` against the position row ``pos`` (read before this quote),
        charge funding since the last price and fill the orders of ``open_orders`` (its
        symbol's, by ``seq``) queued before it; appends their ids to ``filled``. Returns
        the quote's time as stored (``last_ts``). ``charges``: funding costs (USD) are
        queued there (written by :meth:`_charge_funding`, before any fill) instead of
        one statement each."""
        ts, symbol, price = quote.ts, quote.symbol, quote.price
        if ts.tzinfo is None:
            raise ValueError(f"ts must be timezone-aware, got {ts!r}")
        if not (math.isfinite(price) and price > 0):
            raise ValueError(f"price for {symbol} must be a finite number > 0, got {price!r}")
        key = self._stored(ts)  # one offset, so stored times compare as text
        last_ts = None if pos["last_ts"] is None else self._parsed(pos["last_ts"])
        if last_ts is not None and ts < last_ts:
            raise ValueError(f"ts {ts.isoformat()} for {symbol} is before {last_ts.isoformat()}")
        funding = quote.funding_rate_8h
        if last_ts is not None and funding is not None and pos["base_amount"] < 0:
            cost = self.costs.funding_cost(-pos["base_amount"] * price, funding, ts - last_ts)
            if charges is None:
                self._add_account(db, cash_usd=-cost, funding_usd=cost)
            else:
                charges.append(cost)
        for row in open_orders:
            # queued before this price (SQLite compares the stored text the same way)
            if row["after_ts"] is not None and not row["after_ts"] < key:
                continue
            if charges:  # the account changes in the order of events
                self._charge_funding(db, charges)
            self._fill(
                db,
                row,
                price,
                vol_ann=quote.vol_ann,
                volume=quote.volume_24h_usd,
                stress=quote.stress,
            )
            filled.append(row["client_order_id"])
        return key

    def _stored(self, ts: datetime) -> str:
        """``ts`` as stored: UTC, ISO 8601."""
        key = self._texts.get(ts)
        if key is None:
            if len(self._texts) >= 16:
                self._texts.clear()
            key = self._texts[ts] = ts.astimezone(UTC).isoformat()
        return key

    def _parsed(self, stored: str) -> datetime:
        value = self._times.get(stored)
        if value is None:
            if len(self._times) >= 16:
                self._times.clear()
            value = self._times[stored] = datetime.fromisoformat(stored)
        return value

    def _fill(
        self,
        db: sqlite3.Connection,
        row: sqlite3.Row,
        price: float,
        *,
        vol_ann: float | None,
        volume: float | None,
        stress: bool,
    ) -> None:
        pos = self._position_row(db, row["symbol"])
        q = pos["base_amount"]
        amount = row["amount"]
        direction = 1.0 if row["side"] == "buy" else -1.0
        if row["reduce_only"]:
            reducible = -q if direction > 0 else q  # the part of the position this side reduces
            if reducible <= 0:
                self._finish(db, row, "rejected", reason="reduce-only order but nothing to reduce")
                return
            if amount > reducible:
                log.warning(
                    "paper reduce-only order %s cut from %g to the position %g",
                    row["client_order_id"],
                    amount,
                    reducible,
                )
                amount = reducible
        cost = self.costs.trade_cost(
            direction * amount * price, price, vol_ann=vol_ann, volume_24h_usd=volume, stress=stress
        )
        realised, new_q, new_entry = _book_fill(
            q, pos["avg_entry_usd"], direction * amount, cost.fill_price
        )
        db.execute(
            "UPDATE paper_positions SET base_amount = ?, avg_entry_usd = ?"
            " WHERE venue = ? AND symbol = ?",
            (new_q, new_entry, self.venue, row["symbol"]),
        )
        self._add_account(
            db,
            cash_usd=realised - cost.fee_usd,
            realised_pnl_usd=realised,
            fees_usd=cost.fee_usd,
            slippage_usd=cost.slippage_usd,
        )
        self._finish(
            db,
            row,
            "filled",
            filled=amount,
            avg_price=cost.fill_price,
            fee=cost.fee_usd,
            slippage=cost.slippage_usd,
        )

    def _finish(
        self,
        db: sqlite3.Connection,
        row: sqlite3.Row,
        status: str,
        *,
        reason: str = "",
        filled: float = 0.0,
        avg_price: float | None = None,
        fee: float | None = None,
        slippage: float | None = None,
    ) -> None:
        db.execute(
            "UPDATE paper_orders SET status = ?, reason = ?, filled = ?, avg_price = ?,"
            " fee_usd = ?, slippage_usd = ? WHERE venue = ? AND client_order_id = ?",
            (status, reason, filled, avg_price, fee, slippage, self.venue, row["client_order_id"]),
        )

    def _charge_funding(self, db: sqlite3.Connection, charges: list[float]) -> None:
        """Queued funding costs in one statement, added one after the other as separate
        statements would (``cash + c1 + c2`` is ``(cash + c1) + c2``: the same sums, to
        the bit); empties ``charges``."""
        if not charges:
            return
        terms = " + ?" * len(charges)
        db.execute(
            f"UPDATE paper_accounts SET cash_usd = cash_usd{terms},"
            f" funding_usd = funding_usd{terms} WHERE venue = ?",
            (*[-c for c in charges], *charges, self.venue),
        )
        charges.clear()

    def _add_account(self, db: sqlite3.Connection, **deltas: float) -> None:
        sets = ", ".join(f"{k} = {k} + ?" for k in deltas)
        db.execute(
            f"UPDATE paper_accounts SET {sets} WHERE venue = ?", (*deltas.values(), self.venue)
        )

    def _position_row(self, db: sqlite3.Connection, symbol: str) -> sqlite3.Row:
        row = db.execute(
            "SELECT * FROM paper_positions WHERE venue = ? AND symbol = ?", (self.venue, symbol)
        ).fetchone()
        if row is not None:
            return row
        db.execute(
            "INSERT OR IGNORE INTO paper_positions (venue, symbol) VALUES (?, ?)",
            (self.venue, symbol),
        )
        return db.execute(
            "SELECT * FROM paper_positions WHERE venue = ? AND symbol = ?", (self.venue, symbol)
        ).fetchone()


def _book_fill(
    q: float, entry: float | None, d: float, price: float
) -> tuple[float, float, float | None]:
    """Apply a signed fill ``d`` (base units) at ``price`` to position ``q`` at ``entry``.

    Returns ``(realised PnL in USD, new position, new average entry)``.
    """
    new_q = q + d
    if abs(new_q) < 1e-12:
        new_q = 0.0
    if q == 0 or (q > 0) == (d > 0):
        held = abs(q)
        return 0.0, new_q, (held * (entry or 0.0) + abs(d) * price) / (held + abs(d))
    closed = min(abs(d), abs(q))
    realised = closed * (price - (entry or price)) * (1.0 if q > 0 else -1.0)
    if new_q == 0:
        return realised, 0.0, None
    if (new_q > 0) != (q > 0):  # crossed zero: the rest opens at the fill price
        return realised, new_q, price
    return realised, new_q, entry
