"""The order vocabulary shared by the rebalancer, the guards, the brokers and the state.

* :class:`InstrumentRules`: what a venue accepts for one perpetual (lot size, minimums).
* :class:`OrderIntent`: one market order the loop means to send, with its client order id.
* :class:`OrderResult`: what a broker says about an order.
* :func:`client_order_id`: the deterministic id every order carries.

Sign conventions: amounts are base units (BTC, ETH, ...) and always positive on an order
(the side says the direction); positions are signed base amounts (``-0.5`` = short 0.5
BTC); notionals are USD. The hedge is a short perpetual, so a ``sell`` grows it and a
``buy`` shrinks it.

Client order ids
----------------
Every order carries an id derived from the decision that caused it: a SHA-256 of
``(strategy id, venue, symbol, decision bar ts, target hedge in USD to the cent)``, cut to
what the venue accepts. The same decision always yields the same id, so a retry or a
restart that re-decides the same bar cannot produce a second order: the state store has
the id already (first safety: it is looked up at the broker before anything is re-sent),
and venues refuse a duplicate id among their open orders (second safety).

========== ==================== ====== ========================= ======================
venue      venue field          max    alphabet                  our id
========== ==================== ====== ========================= ======================
binanceusdm newClientOrderId    36     ``[.A-Z:/a-z0-9_-]``       ``oh`` + 34 hex (36)
bybit      orderLinkId          36     ``[A-Za-z0-9_-]``          ``oh`` + 34 hex (36)
okx        clOrdId              32     ``[A-Za-z0-9]``            ``oh`` + 30 hex (32)
hyperliquid cloid               34     ``0x`` + 32 hex (128 bit)  ``0x`` + 32 hex (34)
(other)    clientOrderId        32     ``[A-Za-z0-9]``            ``oh`` + 30 hex (32)
========== ==================== ====== ========================= ======================

ccxt takes the id as ``params["clientOrderId"]`` for all four and maps it to the venue
field. Caveat (Binance, OKX): the venue only refuses a duplicate id among *open* orders; a
filled market order's id can be reused, which is why the broker is always asked by id
before an order is re-sent, and why nothing older than the resend window is re-sent.
"""

from __future__ import annotations

import hashlib
import math
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Literal

__all__ = [
    "CLIENT_ID_RULES",
    "BrokerStatus",
    "ClientIdRule",
    "InstrumentRules",
    "OrderIntent",
    "OrderResult",
    "Position",
    "Side",
    "client_id_rule",
    "client_order_id",
    "perp_market",
]

Side = Literal["buy", "sell"]
#: a broker's view of an order (``open``: accepted, not (fully) filled yet)
BrokerStatus = Literal["open", "partially_filled", "filled", "cancelled", "rejected"]
BROKER_STATUSES: tuple[str, ...] = ("open", "partially_filled", "filled", "cancelled", "rejected")


@dataclass(frozen=True)
class ClientIdRule:
    """What a venue accepts as a client order id.

    ``field``: the venue's own parameter name (ccxt maps ``clientOrderId`` to it);
    ``max_len``: characters; ``pattern``: full-match regex; ``hex_prefix``: ``"0x"`` for
    venues that want a 128-bit hex id, else our ``"oh"`` marker.
    """

    field: str
    max_len: int
    pattern: str
    hex_prefix: str = "oh"


CLIENT_ID_RULES: dict[str, ClientIdRule] = {
    "binanceusdm": ClientIdRule("newClientOrderId", 36, r"[.A-Z:/a-z0-9_-]{1,36}"),
    "bybit": ClientIdRule("orderLinkId", 36, r"[A-Za-z0-9_-]{1,36}"),
    "okx": ClientIdRule("clOrdId", 32, r"[A-Za-z0-9]{1,32}"),
    "hyperliquid": ClientIdRule("cloid", 34, r"0x[0-9a-f]{32}", hex_prefix="0x"),
}
_DEFAULT_RULE = ClientIdRule("clientOrderId", 32, r"[A-Za-z0-9]{1,32}")


def client_id_rule(venue: str) -> ClientIdRule:
    """The client-id rule of ``venue`` (a conservative 32-alphanumeric one if unknown)."""
    return CLIENT_ID_RULES.get(venue, _DEFAULT_RULE)


def client_order_id(
    strategy_id: str, venue: str, symbol: str, decision_ts: datetime, target_usd: float
) -> str:
    """Deterministic client order id of the order a decision causes on one instrument.

    ``decision_ts``: the bar the decision was taken at (timezone-aware);
    ``target_usd``: the target short hedge on this instrument, USD (rounded to the cent,
    so float noise cannot change the id). Returns an id valid for ``venue`` (see the
    module table). Raises ``ValueError`` for a naive ``decision_ts``, a non-finite
    target or an empty strategy id.
    """
    if not strategy_id:
        raise ValueError(f"strategy_id must be non-empty, got {strategy_id!r}")
    if decision_ts.tzinfo is None:
        raise ValueError(f"decision_ts must be timezone-aware, got {decision_ts!r}")
    if not math.isfinite(target_usd):
        raise ValueError(f"target_usd must be finite, got {target_usd!r}")
    ts = decision_ts.astimezone(UTC).isoformat()
    key = f"{strategy_id}|{venue}|{symbol}|{ts}|{target_usd:.2f}"
    digest = hashlib.sha256(key.encode()).hexdigest()
    rule = client_id_rule(venue)
    cid = (rule.hex_prefix + digest)[: rule.max_len]
    if not re.fullmatch(rule.pattern, cid):  # pragma: no cover - the table is static
        raise AssertionError(f"client id {cid!r} does not fit {venue}'s rule {rule.pattern!r}")
    return cid


def perp_market(venue: str, symbol: str) -> str:
    """ccxt symbol of the linear perpetual on base ``symbol`` (USDC on Hyperliquid)."""
    quote = "USDC" if venue == "hyperliquid" else "USDT"
    return f"{symbol}/{quote}:{quote}"


@dataclass(frozen=True)
class InstrumentRules:
    """Order rules of one perpetual on one venue.

    Attributes:
        venue: ccxt exchange id.
        symbol: base asset (``BTC``).
        market: ccxt unified symbol (``BTC/USDT:USDT``).
        amount_step: lot size, base units (orders are multiples of it).
        min_amount: smallest order, base units.
        min_notional_usd: smallest order notional, USD (closing a position is exempt).
        reduce_only: the venue accepts reduce-only orders.
    """

    venue: str
    symbol: str
    market: str
    amount_step: float = 1e-8
    min_amount: float = 0.0
    min_notional_usd: float = 0.0
    reduce_only: bool = True

    def __post_init__(self) -> None:
        if not (math.isfinite(self.amount_step) and self.amount_step > 0):
            raise ValueError(f"amount_step must be > 0, got {self.amount_step!r}")
        for name in ("min_amount", "min_notional_usd"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value >= 0):
                raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")


@dataclass(frozen=True)
class OrderIntent:
    """One market order the loop means to send.

    Attributes:
        venue, symbol, market: where (ccxt id, base asset, ccxt unified symbol).
        side: ``sell`` grows the short hedge, ``buy`` shrinks it.
        amount: size, base units (> 0, a multiple of the lot size).
        notional_usd: ``amount x price_usd``, USD (> 0).
        price_usd: reference price the order was sized at, USD.
        reduce_only: the order only reduces the position (sent as reduce-only).
        client_order_id: deterministic id (:func:`client_order_id`).
        decision_ts: bar of the decision that caused the order.
        target_usd: the target short hedge on this instrument, USD.
    """

    venue: str
    symbol: str
    market: str
    side: Side
    amount: float
    notional_usd: float
    price_usd: float
    reduce_only: bool
    client_order_id: str
    decision_ts: datetime
    target_usd: float

    def __post_init__(self) -> None:
        if self.side not in ("buy", "sell"):
            raise ValueError(f"side must be 'buy' or 'sell', got {self.side!r}")
        if not (math.isfinite(self.amount) and self.amount > 0):
            raise ValueError(f"amount must be a finite number > 0, got {self.amount!r}")
        if not (math.isfinite(self.notional_usd) and self.notional_usd > 0):
            raise ValueError(f"notional_usd must be > 0, got {self.notional_usd!r}")
        if self.decision_ts.tzinfo is None:
            raise ValueError(f"decision_ts must be timezone-aware, got {self.decision_ts!r}")

    @property
    def hedge_change_usd(self) -> float:
        """Change of the short hedge this order makes, USD (+ sell, - buy)."""
        return self.notional_usd if self.side == "sell" else -self.notional_usd

    @property
    def signed_amount(self) -> float:
        """Change of the signed position, base units (- sell, + buy)."""
        return -self.amount if self.side == "sell" else self.amount


@dataclass(frozen=True)
class OrderResult:
    """A broker's view of one order.

    Attributes:
        client_order_id, venue, symbol: which order.
        status: ``open`` / ``partially_filled`` / ``filled`` / ``cancelled`` / ``rejected``.
        amount: ordered size, base units.
        filled: filled size, base units.
        avg_price: average fill price, USD (None before a fill).
        fee_usd: fees paid, USD (None when the venue does not report them on the order).
        exchange_order_id: the venue's own id (None for a paper order not yet seen).
        reason: why it was rejected or cancelled, or a note ("already placed").
        already_placed: the broker found the order already there (a retry, not a new order).
    """

    client_order_id: str
    venue: str
    symbol: str
    status: BrokerStatus
    amount: float
    filled: float = 0.0
    avg_price: float | None = None
    fee_usd: float | None = None
    exchange_order_id: str | None = None
    reason: str = ""
    already_placed: bool = False

    def __post_init__(self) -> None:
        if self.status not in BROKER_STATUSES:
            raise ValueError(f"status must be one of {BROKER_STATUSES}, got {self.status!r}")


@dataclass(frozen=True)
class Position:
    """A position on one perpetual, as a broker reports it.

    Attributes:
        venue, symbol: where (ccxt id, base asset).
        base_amount: signed size, base units (negative: short).
        price_usd: the mark or last price it was valued at, USD (None if unknown).
        avg_entry_usd: average entry price, USD (None if flat or unknown).
    """

    venue: str
    symbol: str
    base_amount: float
    price_usd: float | None = None
    avg_entry_usd: float | None = None

    @property
    def notional_usd(self) -> float:
        """Signed notional, USD (negative for a short); 0.0 when the price is unknown."""
        return self.base_amount * (self.price_usd or 0.0)

    @property
    def hedge_usd(self) -> float:
        """Short notional, USD (>= 0): the hedge this position provides."""
        return max(0.0, -self.notional_usd)
