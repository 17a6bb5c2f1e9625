"""The live broker: real orders on a venue through ccxt -- only when asked to, explicitly.

:class:`CcxtBroker` refuses to exist unless it is built with ``live=True`` (the CLI's
``--live``) *and* the venue's credentials are in the environment:
``OIHEDGE_<VENUE>_API_KEY`` and ``OIHEDGE_<VENUE>_SECRET`` (plus
``OIHEDGE_OKX_PASSWORD``, OKX's API passphrase; on Hyperliquid the key variable holds the
wallet address and the secret the agent wallet's private key). The error names the
missing variable, never a value. Credentials go to the ccxt instance only: not to logs
(see :mod:`oihedge.serving.redact`), not to the broker's repr, not to its error messages.

Orders are market orders with the client order id in ``params["clientOrderId"]`` (ccxt
maps it to ``newClientOrderId`` / ``orderLinkId`` / ``clOrdId`` / ``cloid``) and
``reduceOnly`` when the order shrinks the hedge (all four venues support it; on Binance
the account must be in one-way position mode). Amounts are converted between base units
and the venue's contracts with the market's ``contractSize`` (OKX: 0.01 BTC per contract).

:meth:`CcxtBroker.place` is idempotent per client id. It first asks the venue for the id
(Binance and OKX refuse a duplicate client id only among *open* orders: a filled market
order's id would be accepted again), and returns an existing order as it is
(``already_placed=True``). If sending then fails for any reason, it asks again before
reporting anything: a duplicate-id rejection (an order that appeared meanwhile), or a
timeout after the venue accepted the order, comes back as the existing order, never as a
second one. Only when the venue definitely has no such order is the failure raised:
:class:`OrderRejectedError` for a refusal, :class:`OutcomeUnknownError` for a network
failure (the order may still be in flight). The look-up costs one request per order;
hedge orders are few and a cascade hedge is not a latency race at bar resolution.

Market loading skips ccxt's currency list (on Binance it needs spot-wallet permissions
the hedge does not); only the perpetual markets are used.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from typing import Any, TypeVar

import ccxt
from ccxt.base.decimal_to_precision import DECIMAL_PLACES

from oihedge.serving.execution.brokers._base import (
    Broker,
    BrokerError,
    OrderRejectedError,
    OutcomeUnknownError,
)
from oihedge.serving.execution.orders import (
    InstrumentRules,
    OrderIntent,
    OrderResult,
    Position,
    client_id_rule,
    perp_market,
)
from oihedge.serving.redact import redact, register_secrets

__all__ = [
    "CREDENTIALS",
    "REDUCE_ONLY_VENUES",
    "CcxtBroker",
    "LiveTradingDisabledError",
    "MissingCredentialsError",
    "credential_vars",
]

log = logging.getLogger(__name__)
T = TypeVar("T")

#: ccxt credential field -> suffix of the environment variable OIHEDGE_<VENUE>_<suffix>
CREDENTIALS: dict[str, dict[str, str]] = {
    "okx": {"apiKey": "API_KEY", "secret": "SECRET", "password": "PASSWORD"},
    "hyperliquid": {"walletAddress": "API_KEY", "privateKey": "SECRET"},
}
_DEFAULT_CREDENTIALS = {"apiKey": "API_KEY", "secret": "SECRET"}
#: venues whose perpetuals accept reduce-only market orders
REDUCE_ONLY_VENUES = frozenset({"binanceusdm", "bybit", "okx", "hyperliquid"})
_QUOTES = frozenset({"USDT", "USDC", "USD"})
_STATUS = {
    "closed": "filled",
    "canceled": "cancelled",
    "cancelled": "cancelled",
    "expired": "cancelled",
    "rejected": "rejected",
}


class LiveTradingDisabledError(RuntimeError):
    """A live broker was requested without ``live=True``."""


class MissingCredentialsError(RuntimeError):
    """A credential variable is not set (the message names it, never a value)."""


def credential_vars(venue: str) -> dict[str, str]:
    """ccxt credential field -> environment variable name, for ``venue``."""
    fields = CREDENTIALS.get(venue, _DEFAULT_CREDENTIALS)
    return {field: f"OIHEDGE_{venue.upper()}_{suffix}" for field, suffix in fields.items()}


class CcxtBroker(Broker):
    """A venue account through a ccxt exchange instance.

    ``venue``: ccxt exchange id. ``live``: must be True (the ``--live`` flag).
    ``symbols``: base assets traded (open orders are listed per symbol). ``env``: where
    the credentials are read (default ``os.environ``). ``exchange_config``: extra ccxt
    constructor options (timeouts, a ``session``); credentials are not accepted there.
    """

    def __init__(
        self,
        venue: str,
        *,
        live: bool,
        symbols: Sequence[str],
        env: Mapping[str, str] | None = None,
        exchange_config: Mapping[str, Any] | None = None,
    ) -> None:
        if live is not True:
            raise LiveTradingDisabledError(
                f"CcxtBroker places real orders on {venue!r}: it needs live=True (--live); "
                "use the paper broker otherwise"
            )
        exchange_class = getattr(ccxt, venue, None)
        if not isinstance(exchange_class, type):
            raise ValueError(f"venue must be a ccxt exchange id, got {venue!r}")
        source = os.environ if env is None else env
        names = credential_vars(venue)
        missing = [name for name in names.values() if not source.get(name)]
        if missing:
            raise MissingCredentialsError(
                f"live trading on {venue} needs {', '.join(missing)} set in the environment"
            )
        extra = dict(exchange_config or {})
        clash = sorted(set(extra) & {*names, "apiKey", "secret", "password", "privateKey"})
        if clash:
            raise ValueError(
                f"credentials come from the environment only, got {clash} in exchange_config"
            )
        self.venue = venue
        self.symbols = tuple(symbols)
        config = {field: source[name] for field, name in names.items()}
        register_secrets(config.values())  # masked in every log record from now on
        self._exchange = exchange_class({"enableRateLimit": True, **extra, **config})
        self._exchange.has = {**self._exchange.has, "fetchCurrencies": False}

    def __repr__(self) -> str:
        return f"CcxtBroker(venue={self.venue!r}, live=True, symbols={self.symbols!r})"

    @property
    def exchange(self) -> ccxt.Exchange:
        """The ccxt instance (holds the credentials: never log or print its attributes)."""
        return self._exchange

    # -- markets --------------------------------------------------------------------------

    def _call(self, what: str, call: Callable[[], T]) -> T:
        """Run a ccxt call; a ccxt error becomes a :class:`BrokerError` with a redacted
        message and *without* the ccxt error attached (neither as cause nor as context:
        its text may carry a credential a venue echoed back)."""
        failure: BrokerError | None = None
        try:
            return call()
        except ccxt.BaseError as err:
            failure = self._error(err, what)
        raise failure  # outside the except block: no __context__

    def _market(self, symbol: str) -> dict[str, Any]:
        def load() -> dict[str, Any]:
            self._exchange.load_markets()
            return self._exchange.market(perp_market(self.venue, symbol))

        return self._call(f"market {symbol}", load)

    def _contract_size(self, symbol: str) -> float:
        return float(self._market(symbol).get("contractSize") or 1.0)

    def rules(self, symbol: str) -> InstrumentRules:
        """Lot size, minimum amount (base units) and minimum notional (USD) from ccxt."""
        market = self._market(symbol)
        size = float(market.get("contractSize") or 1.0)
        precision = market["precision"]["amount"]
        if self._exchange.precisionMode == DECIMAL_PLACES:
            precision = 10.0 ** -float(precision)
        limits = market.get("limits") or {}
        min_amount = (limits.get("amount") or {}).get("min") or 0.0
        min_cost = (limits.get("cost") or {}).get("min") or 0.0
        return InstrumentRules(
            venue=self.venue,
            symbol=symbol,
            market=market["symbol"],
            amount_step=float(precision) * size,
            min_amount=float(min_amount) * size,
            min_notional_usd=float(min_cost),
            reduce_only=self.venue in REDUCE_ONLY_VENUES,
        )

    # -- orders ---------------------------------------------------------------------------

    def place(self, order: OrderIntent) -> OrderResult:
        """Send a market order (reduce-only when it shrinks the hedge); see the module doc."""
        rule = client_id_rule(self.venue)
        if not re.fullmatch(rule.pattern, order.client_order_id):
            raise ValueError(
                f"client order id {order.client_order_id!r} does not fit {self.venue}'s "
                f"{rule.field} rule {rule.pattern!r}"
            )
        if order.venue != self.venue:
            raise ValueError(f"order for venue {order.venue!r} sent to broker {self.venue!r}")
        existing = self.order_by_client_id(order.client_order_id, order.symbol)
        if existing is not None:
            log.warning(
                "order %s is already at %s: not sent again", order.client_order_id, self.venue
            )
            return replace(existing, already_placed=True, reason="already placed")
        params: dict[str, Any] = {"clientOrderId": order.client_order_id}
        if order.reduce_only and self.venue in REDUCE_ONLY_VENUES:
            params["reduceOnly"] = True
        contracts = order.amount / self._contract_size(order.symbol)
        # Hyperliquid prices market orders as IOC limits around this reference price
        price = order.price_usd if self.venue == "hyperliquid" else None
        failed: ccxt.BaseError | None = None
        try:
            raw = self._exchange.create_order(
                order.market, "market", order.side, contracts, price, params
            )
        except ccxt.BaseError as err:
            failed = err
        if failed is not None:  # handled outside the except block: no __context__ to leak
            return self._after_failed_place(order, failed)
        result = self._result(raw, order.symbol, order.client_order_id)
        log.info(
            "order sent: %s %s %g %s reduce_only=%s -> %s",
            order.client_order_id,
            order.side,
            order.amount,
            order.market,
            params.get("reduceOnly", False),
            result.status,
        )
        return result

    def _after_failed_place(self, order: OrderIntent, err: ccxt.BaseError) -> OrderResult:
        what = f"{type(err).__name__}: {redact(str(err))}"
        lookup: BrokerError | None = None
        try:
            existing = self.order_by_client_id(order.client_order_id, order.symbol)
        except BrokerError as lookup_err:
            lookup = lookup_err
        if lookup is not None:
            raise OutcomeUnknownError(
                f"{self.venue}: sending {order.client_order_id} failed ({what}) and the "
                f"lookup by client id failed too ({lookup})"
            )
        if existing is not None:
            log.warning(
                "order %s is already at %s (send failed: %s): not sent again",
                order.client_order_id,
                self.venue,
                what,
            )
            return replace(existing, already_placed=True, reason="already placed")
        if isinstance(err, ccxt.NetworkError):
            raise OutcomeUnknownError(
                f"{self.venue}: sending {order.client_order_id} failed ({what}); "
                "the venue does not show it yet"
            )
        raise OrderRejectedError(f"{self.venue} refused {order.client_order_id}: {what}")

    def order_by_client_id(self, client_order_id: str, symbol: str) -> OrderResult | None:
        """The order with this client id, or None when the venue has no such order."""
        market = perp_market(self.venue, symbol)
        lookup = _LOOKUPS.get(self.venue, _lookup_by_param)

        def find() -> dict[str, Any] | None:
            try:
                return lookup(self._exchange, client_order_id, market)
            except ccxt.OrderNotFound:
                return None

        raw = self._call(f"lookup of {client_order_id}", find)
        return None if raw is None else self._result(raw, symbol, client_order_id)

    def open_orders(self) -> list[OrderResult]:
        """Open orders on every configured symbol."""
        out = []
        for symbol in self.symbols:
            market = perp_market(self.venue, symbol)
            raws = self._call(
                f"open orders of {symbol}", lambda m=market: self._exchange.fetch_open_orders(m)
            )
            out.extend(self._result(raw, symbol, None) for raw in raws)
        return out

    def positions(self) -> dict[str, Position]:
        """Non-zero positions on the configured symbols (base units, signed)."""
        markets = [perp_market(self.venue, s) for s in self.symbols]
        self._call("markets", self._exchange.load_markets)
        raws = self._call("positions", lambda: self._exchange.fetch_positions(markets))
        out = {}
        for raw in raws:
            market = self._exchange.market(raw["symbol"])
            contracts = abs(float(raw.get("contracts") or 0.0))
            if contracts == 0:
                continue
            size = float(raw.get("contractSize") or market.get("contractSize") or 1.0)
            sign = -1.0 if raw.get("side") == "short" else 1.0
            symbol = market["base"]
            out[symbol] = Position(
                self.venue,
                symbol,
                sign * contracts * size,
                _float(raw.get("markPrice")),
                _float(raw.get("entryPrice")),
            )
        return out

    def cancel(self, client_order_id: str, symbol: str) -> OrderResult:
        """Cancel an open order by client id; returns its state after the cancel."""
        market = perp_market(self.venue, symbol)

        def cancel() -> None:
            with contextlib.suppress(ccxt.OrderNotFound):  # finished meanwhile: see below
                self._exchange.cancel_order(None, market, {"clientOrderId": client_order_id})

        self._call(f"cancel of {client_order_id}", cancel)
        result = self.order_by_client_id(client_order_id, symbol)
        if result is None:
            raise BrokerError(f"{self.venue}: no order {client_order_id!r} to cancel")
        return result

    # -- conversions ----------------------------------------------------------------------

    def _result(self, raw: Mapping[str, Any], symbol: str, cid: str | None) -> OrderResult:
        size = self._contract_size(symbol)
        filled = float(raw.get("filled") or 0.0) * size
        amount = float(raw.get("amount") or 0.0) * size
        status = _STATUS.get(str(raw.get("status")), "open")
        if status == "open" and filled > 0:
            status = "partially_filled"
        fee = raw.get("fee") or {}
        fee_usd = _float(fee.get("cost")) if fee.get("currency") in _QUOTES else None
        return OrderResult(
            client_order_id=raw.get("clientOrderId") or cid or "",
            venue=self.venue,
            symbol=symbol,
            status=status,  # type: ignore[arg-type]
            amount=amount,
            filled=filled,
            avg_price=_float(raw.get("average")),
            fee_usd=fee_usd,
            exchange_order_id=None if raw.get("id") is None else str(raw["id"]),
        )

    def _error(self, err: ccxt.BaseError, what: str) -> BrokerError:
        message = f"{self.venue}: {what} failed: {type(err).__name__}: {redact(str(err))}"
        if isinstance(err, ccxt.NetworkError):
            return OutcomeUnknownError(message)
        return BrokerError(message)


def _float(value: object) -> float | None:
    return None if value is None else float(value)  # type: ignore[arg-type]


def _lookup_by_param(exchange: ccxt.Exchange, cid: str, market: str) -> dict[str, Any] | None:
    """Binance, OKX and most venues: ``fetch_order`` with ``params["clientOrderId"]``."""
    return exchange.fetch_order(None, market, {"clientOrderId": cid})


def _lookup_bybit(exchange: ccxt.Exchange, cid: str, market: str) -> dict[str, Any] | None:
    """Bybit: its fetch_order needs the venue id; list open, then finished, by orderLinkId."""
    for fetch in (exchange.fetch_open_orders, exchange.fetch_canceled_and_closed_orders):
        for raw in fetch(market, None, None, {"orderLinkId": cid}):
            if raw.get("clientOrderId") == cid:
                return raw
    return None


def _lookup_hyperliquid(exchange: ccxt.Exchange, cid: str, market: str) -> dict[str, Any] | None:
    """Hyperliquid: ``fetch_order`` takes a 0x-prefixed 128-bit cloid as the id itself."""
    return exchange.fetch_order(cid, market)


_LOOKUPS: dict[str, Callable[[ccxt.Exchange, str, str], dict[str, Any] | None]] = {
    "bybit": _lookup_bybit,
    "hyperliquid": _lookup_hyperliquid,
}
