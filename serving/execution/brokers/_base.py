"""The interface every broker implements, and the errors brokers raise."""

from __future__ import annotations

from abc import ABC, abstractmethod

from oihedge.serving.execution.orders import InstrumentRules, OrderIntent, OrderResult, Position

__all__ = ["Broker", "BrokerError", "OrderRejectedError", "OutcomeUnknownError"]


class BrokerError(Exception):
    """A broker call failed; the message never contains credentials."""


class OrderRejectedError(BrokerError):
    """The venue definitely did not accept the order (it may be recorded as rejected)."""


class OutcomeUnknownError(BrokerError):
    """The call failed in a way that leaves open whether the order exists (timeout,
    connection lost): ask :meth:`Broker.order_by_client_id` later."""


class Broker(ABC):
    """One venue's account: places market orders, reports orders and positions.

    Contract (see ``tests/serving/test_brokers.py::BrokerContract``): :meth:`place` is
    idempotent per client order id -- placing an id the broker already has returns that
    order (``already_placed=True``) instead of a second one; amounts are base units;
    :meth:`order_by_client_id` returns None only when the broker definitely has no such
    order.
    """

    venue: str

    @abstractmethod
    def place(self, order: OrderIntent) -> OrderResult:
        """Send a market order; returns what the broker knows right after.

        Raises :class:`OrderRejectedError` when the venue refused it and
        :class:`OutcomeUnknownError` when it cannot tell.
        """

    @abstractmethod
    def order_by_client_id(self, client_order_id: str, symbol: str) -> OrderResult | None:
        """The order with this client id on base ``symbol``, or None if there is none."""

    @abstractmethod
    def open_orders(self) -> list[OrderResult]:
        """Orders accepted and not finished (any client id, ours or not)."""

    @abstractmethod
    def positions(self) -> dict[str, Position]:
        """Non-zero positions per base symbol."""

    @abstractmethod
    def cancel(self, client_order_id: str, symbol: str) -> OrderResult:
        """Cancel an open order; returns its final state."""

    @abstractmethod
    def rules(self, symbol: str) -> InstrumentRules:
        """Order rules of the perpetual on base ``symbol``."""
