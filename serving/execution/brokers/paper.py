"""The paper broker: fills market orders at the next price, with the backtest's cost model.

An order placed now is filled at the *next* price the broker is given
(:meth:`PaperBroker.on_price` with a later timestamp), never at the price the decision
saw: the loop decides at a bar's close and its order reaches the market after it. The
fill price and fee come from :meth:`oihedge.serving.policy.costs.CostModel.trade_cost` (fee +
slippage, worse in stress), the same model as the backtest. Funding on a short accrues
between two prices via :meth:`~oihedge.serving.policy.costs.CostModel.funding_cost`.

Accounting, per venue, in USD: ``cash_usd = initial + realised PnL - fees - funding``
(slippage is inside the fill price, so inside realised and unrealised PnL; it is also
reported alone). Positions are signed base amounts with an average entry price.

A reduce-only order is cut to the position it reduces (as venues do) and rejected when
there is nothing to reduce. Everything lives in SQLite tables ``paper_*`` (the state
store's file by default) and each change is one transaction, so a restarted broker on the
same file resumes with its orders, positions and cash.
"""

from __future__ import annotations

import logging
import math
import os
import sqlite3
from collections.abc import Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from datetime import datetime

from oihedge.serving.execution.brokers._base import Broker, BrokerError, OrderRejectedError
from oihedge.serving.execution.brokers.paper_fills import Book, PaperFills, Quote
from oihedge.serving.execution.orders import (
    InstrumentRules,
    OrderIntent,
    OrderResult,
    Position,
    perp_market,
)
from oihedge.serving.execution.state_schema import connect, transaction
from oihedge.serving.policy.costs import CostModel

__all__ = ["WRITE_BEHIND_BARS", "PaperAccount", "PaperBroker"]

log = logging.getLogger(__name__)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS paper_orders (
    venue TEXT NOT NULL,
    client_order_id TEXT NOT NULL,
    seq INTEGER NOT NULL,
    symbol TEXT NOT NULL,
    side TEXT NOT NULL,
    amount REAL NOT NULL,
    reduce_only INTEGER NOT NULL,
    status TEXT NOT NULL,
    after_ts TEXT,
    filled REAL NOT NULL DEFAULT 0,
    avg_price REAL,
    fee_usd REAL,
    slippage_usd REAL,
    reason TEXT NOT NULL DEFAULT '',
    PRIMARY KEY (venue, client_order_id)
);
CREATE TABLE IF NOT EXISTS paper_positions (
    venue TEXT NOT NULL,
    symbol TEXT NOT NULL,
    base_amount REAL NOT NULL DEFAULT 0,
    avg_entry_usd REAL,
    last_price REAL,
    last_ts TEXT,
    PRIMARY KEY (venue, symbol)
);
CREATE TABLE IF NOT EXISTS paper_accounts (
    venue TEXT PRIMARY KEY,
    cash_usd REAL NOT NULL,
    realised_pnl_usd REAL NOT NULL DEFAULT 0,
    fees_usd REAL NOT NULL DEFAULT 0,
    slippage_usd REAL NOT NULL DEFAULT 0,
    funding_usd REAL NOT NULL DEFAULT 0
);
"""


#: price-only bars a broker that is not durable keeps in memory before writing them
WRITE_BEHIND_BARS = 64
#: funding charges added in one statement (SQLite's expression depth is limited)
_CHARGES_PER_STATEMENT = 100


@dataclass(frozen=True)
class PaperAccount:
    """The paper account of one venue, USD: cash and what it is made of."""

    cash_usd: float
    realised_pnl_usd: float
    fees_usd: float
    slippage_usd: float
    funding_usd: float


class PaperBroker(PaperFills, Broker):
    """Simulated account on ``venue``, persisted in the SQLite file ``path``.

    ``costs``: the cost model (``[costs]`` config). ``rules``: order rules per base symbol
    (default: no minimums, lot 1e-8). ``initial_cash_usd``: the account's starting cash,
    used the first time this venue is seen in the file.
    """

    def __init__(
        self,
        venue: str,
        path: str | os.PathLike[str],
        *,
        costs: CostModel,
        rules: Mapping[str, InstrumentRules] | None = None,
        initial_cash_usd: float = 0.0,
        durable: bool = True,
    ) -> None:
        if not math.isfinite(initial_cash_usd):
            raise ValueError(f"initial_cash_usd must be finite, got {initial_cash_usd!r}")
        self.venue = venue
        self.costs = costs
        self._rules = dict(rules or {})
        self.path = str(path)
        self.durable = durable
        self._book: Book | None = None
        #: not durable (a replay): the last prices and funding of price-only bars, not
        #: yet written (see :meth:`on_prices`)
        self._pending_prices: dict[str, tuple[float, str]] = {}
        self._pending_charges: list[float] = []
        self._pending_bars = 0
        self._texts: dict[datetime, str] = {}
        self._times: dict[str, datetime] = {}
        self._db = connect(self.path, durable=durable)
        self._db.executescript(_SCHEMA)
        self._db.execute(
            "INSERT OR IGNORE INTO paper_accounts (venue, cash_usd) VALUES (?, ?)",
            (venue, initial_cash_usd),
        )

    def __repr__(self) -> str:
        return f"PaperBroker(venue={self.venue!r}, path={self.path!r})"

    def close(self) -> None:
        """Write what is pending and close the SQLite connection."""
        self.flush()
        self._db.close()

    def _tx(self) -> AbstractContextManager[sqlite3.Connection]:
        self.flush()  # the file first holds every earlier bar
        self._book = None  # any other write: the mirror is read again at the next bar
        return transaction(self._db)

    def flush(self) -> None:
        """Write the last prices and funding charges of the price-only bars not written
        yet (a broker that is not ``durable`` writes them every
        ``WRITE_BEHIND_BARS`` bars, before any other write or read of its positions or
        account, and on :meth:`close`). The funding is added in the order it accrued, so
        the account is the same, to the bit, as with one commit per bar."""
        if not (self._pending_prices or self._pending_charges):
            return
        charges = self._pending_charges
        with transaction(self._db) as db:
            for start in range(0, len(charges), _CHARGES_PER_STATEMENT):
                self._charge_funding(db, charges[start : start + _CHARGES_PER_STATEMENT])
            db.executemany(
                "UPDATE paper_positions SET last_price = ?, last_ts = ?"
                " WHERE venue = ? AND symbol = ?",
                [(p, key, self.venue, sym) for sym, (p, key) in self._pending_prices.items()],
            )
        charges.clear()
        self._pending_prices.clear()
        self._pending_bars = 0

    # -- the Broker interface -------------------------------------------------------------

    def rules(self, symbol: str) -> InstrumentRules:
        """Order rules of ``symbol`` (the configured ones, or no minimums)."""
        return self._rules.get(symbol) or InstrumentRules(
            self.venue, symbol, perp_market(self.venue, symbol)
        )

    def place(self, order: OrderIntent) -> OrderResult:
        """Queue a market order; it fills at the next :meth:`on_price` of its symbol."""
        if order.venue != self.venue:
            raise OrderRejectedError(
                f"order for venue {order.venue!r} sent to paper broker {self.venue!r}"
            )
        with self._tx() as db:
            existing = self._order_row(order.client_order_id)
            if existing is not None:
                return _result(self.venue, existing, already_placed=True)
            last = db.execute(
                "SELECT last_ts FROM paper_positions WHERE venue = ? AND symbol = ?",
                (self.venue, order.symbol),
            ).fetchone()
            seq = db.execute(
                "SELECT COALESCE(MAX(seq), 0) + 1 FROM paper_orders WHERE venue = ?", (self.venue,)
            ).fetchone()[0]
            db.execute(
                "INSERT INTO paper_orders (venue, client_order_id, seq, symbol, side, amount,"
                " reduce_only, status, after_ts) VALUES (?, ?, ?, ?, ?, ?, ?, 'open', ?)",
                (
                    self.venue,
                    order.client_order_id,
                    seq,
                    order.symbol,
                    order.side,
                    order.amount,
                    int(order.reduce_only),
                    None if last is None else last["last_ts"],
                ),
            )
        log.info(
            "paper order queued: %s %s %g %s",
            order.client_order_id,
            order.side,
            order.amount,
            order.symbol,
        )
        return _result(self.venue, self._order_row(order.client_order_id))

    def order_by_client_id(self, client_order_id: str, symbol: str) -> OrderResult | None:
        """The paper order with this client id, or None."""
        row = self._order_row(client_order_id)
        return None if row is None else _result(self.venue, row)

    def open_orders(self) -> list[OrderResult]:
        """Orders waiting for their next price."""
        rows = self._db.execute(
            "SELECT * FROM paper_orders WHERE venue = ? AND status = 'open' ORDER BY seq",
            (self.venue,),
        ).fetchall()
        return [_result(self.venue, r) for r in rows]

    def all_orders(self) -> list[OrderResult]:
        """Every order this paper account has seen, oldest first."""
        rows = self._db.execute(
            "SELECT * FROM paper_orders WHERE venue = ? ORDER BY seq", (self.venue,)
        ).fetchall()
        return [_result(self.venue, r) for r in rows]

    def positions(self) -> dict[str, Position]:
        """Non-zero positions, valued at the last price given."""
        self.flush()
        rows = self._db.execute(
            "SELECT * FROM paper_positions WHERE venue = ? AND base_amount != 0 ORDER BY symbol",
            (self.venue,),
        ).fetchall()
        return {
            r["symbol"]: Position(
                self.venue, r["symbol"], r["base_amount"], r["last_price"], r["avg_entry_usd"]
            )
            for r in rows
        }

    def cancel(self, client_order_id: str, symbol: str) -> OrderResult:
        """Cancel a queued order (a finished one is returned unchanged)."""
        with self._tx() as db:
            row = self._order_row(client_order_id)
            if row is None:
                raise BrokerError(f"paper broker {self.venue!r}: no order {client_order_id!r}")
            if row["status"] == "open":
                db.execute(
                    "UPDATE paper_orders SET status = 'cancelled', reason = 'cancelled'"
                    " WHERE venue = ? AND client_order_id = ?",
                    (self.venue, client_order_id),
                )
        return _result(self.venue, self._order_row(client_order_id))

    # -- simulation -----------------------------------------------------------------------

    def account(self) -> PaperAccount:
        """Cash and its parts, USD."""
        self.flush()
        row = self._db.execute(
            "SELECT * FROM paper_accounts WHERE venue = ?", (self.venue,)
        ).fetchone()
        return PaperAccount(
            row["cash_usd"],
            row["realised_pnl_usd"],
            row["fees_usd"],
            row["slippage_usd"],
            row["funding_usd"],
        )

    def on_price(
        self,
        ts: datetime,
        symbol: str,
        price: float,
        *,
        vol_ann: float | None = None,
        volume_24h_usd: float | None = None,
        stress: bool = False,
        funding_rate_8h: float | None = None,
    ) -> list[OrderResult]:
        """Advance ``symbol`` to ``price`` (USD) at ``ts``; returns the orders filled now.

        First funding accrues on the position held since the previous price (rate per 8 h,
        fraction; None: none charged), then every order queued before ``ts`` fills at
        ``price`` with fee and slippage from the cost model (``vol_ann``,
        ``volume_24h_usd``, ``stress`` as in :meth:`CostModel.trade_cost`). Raises
        ``ValueError`` for a naive or backwards ``ts`` or a bad price.
        """
        with self._tx() as db:
            filled = self._advance(
                db,
                Quote(ts, symbol, price, vol_ann, volume_24h_usd, stress, funding_rate_8h),
            )
        return [_result(self.venue, self._order_row(cid)) for cid in filled]

    def on_prices(self, quotes: Sequence[Quote]) -> list[OrderResult]:
        """:meth:`on_price` for several quotes in turn, as one transaction (one commit per
        bar instead of one per symbol). Any bad quote raises ``ValueError`` and nothing
        is written.

        A broker that is not ``durable`` (a replay, ``synchronous=OFF``) keeps a bar that
        only moves prices -- no fill, no new symbol -- in memory (:meth:`flush`): a
        crashed replay may lose the marks and funding of up to ``WRITE_BEHIND_BARS``
        bars, which the next price then charges over the whole gap. A durable broker
        (live) commits every bar."""
        if not self.durable and self._in_memory(quotes):
            return []
        self.flush()  # a fill or a new row: through the file, after the bars before
        book, self._book = self._book, None
        with transaction(self._db) as db:
            filled, book = self._advance_all(db, quotes, book)
        self._book = book  # after the commit: a rolled-back bar leaves no mirror
        return [_result(self.venue, self._order_row(cid)) for cid in filled]

    def _advance_all(
        self, db: sqlite3.Connection, quotes: Sequence[Quote], book: Book | None
    ) -> tuple[list[str], Book | None]:
        """Quotes of distinct symbols inside the caller's transaction: the positions and
        the open orders read once (or taken from ``book``, the mirror of the last bar,
        while it is current), the new last prices written in one statement (a bar's
        quotes cost a few statements, not a few per symbol). Returns the client ids
        filled, in quote order, and the mirror of the tables after this bar (None when
        the bar changed more than the last prices: it is read again next time)."""
        if len({q.symbol for q in quotes}) != len(quotes):  # one symbol twice: in turn
            return [cid for quote in quotes for cid in self._advance(db, quote)], None
        version = db.execute("PRAGMA data_version").fetchone()[0]
        if book is None or book.version != version:  # another connection committed
            book = self._read_book(db, version)
        positions, queued = book.positions, book.queued
        filled: list[str] = []
        updates = []
        charges: list[float] = []
        for quote in quotes:
            pos = positions.get(quote.symbol)
            if pos is None:
                pos = self._position_row(db, quote.symbol)
                book.complete = False  # a row was inserted
            key = self._settle(db, quote, pos, queued.get(quote.symbol, ()), filled, charges)
            updates.append((quote.price, key, self.venue, quote.symbol))
        self._charge_funding(db, charges)
        db.executemany(
            "UPDATE paper_positions SET last_price = ?, last_ts = ? WHERE venue = ? AND symbol = ?",
            updates,
        )
        if filled or not book.complete:
            return filled, None
        for price, key, _venue, symbol in updates:
            pos = positions[symbol]
            pos["last_price"], pos["last_ts"] = price, key
        return filled, book

    def _in_memory(self, quotes: Sequence[Quote]) -> bool:
        """Advance the mirror by ``quotes`` without writing, if they only move prices
        (else False, nothing changed); the writes are queued for :meth:`flush`."""
        if len({q.symbol for q in quotes}) != len(quotes):
            return False
        version = self._db.execute("PRAGMA data_version").fetchone()[0]
        book = self._book
        if book is None or book.version != version:  # another connection committed
            book = self._book = self._read_book(self._db, version)
            for symbol, (price, key) in self._pending_prices.items():
                book.positions[symbol].update(last_price=price, last_ts=key)
        charges: list[float] = []
        marks = []
        for quote in quotes:
            pos = book.positions.get(quote.symbol)
            if pos is None:
                return False
            key = self._settle(self._db, quote, pos, (), [], charges)  # checks, funding
            if any(
                row["after_ts"] is None or row["after_ts"] < key
                for row in book.queued.get(quote.symbol, ())
            ):
                return False  # an order fills
            marks.append((pos, quote.symbol, quote.price, key))
        for pos, symbol, price, key in marks:
            pos["last_price"], pos["last_ts"] = price, key
            self._pending_prices[symbol] = (price, key)
        self._pending_charges.extend(charges)
        self._pending_bars += 1
        if self._pending_bars >= WRITE_BEHIND_BARS:
            self.flush()
        return True

    # a bar's quotes share their time, and their positions the previous one: each is
    # converted once (a few us each), through two small caches

    def _order_row(self, client_order_id: str) -> sqlite3.Row | None:
        return self._db.execute(
            "SELECT * FROM paper_orders WHERE venue = ? AND client_order_id = ?",
            (self.venue, client_order_id),
        ).fetchone()


def _result(venue: str, row: sqlite3.Row | None, *, already_placed: bool = False) -> OrderResult:
    if row is None:  # pragma: no cover - callers insert before reading
        raise BrokerError("paper order vanished")
    return OrderResult(
        client_order_id=row["client_order_id"],
        venue=venue,
        symbol=row["symbol"],
        status=row["status"],
        amount=row["amount"],
        filled=row["filled"],
        avg_price=row["avg_price"],
        fee_usd=row["fee_usd"],
        exchange_order_id=f"paper-{row['seq']}",
        reason="already placed" if already_placed else row["reason"],
        already_placed=already_placed,
    )
