"""Brokers: one interface (:class:`Broker`), a paper broker (default) and a ccxt broker.

``CcxtBroker`` is imported lazily (``oihedge.serving.execution.brokers.CcxtBroker`` still works) so
paper trading and replays do not load ccxt.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from oihedge.serving.execution.brokers._base import (
    Broker,
    BrokerError,
    OrderRejectedError,
    OutcomeUnknownError,
)
from oihedge.serving.execution.brokers.paper import PaperAccount, PaperBroker

if TYPE_CHECKING:
    from oihedge.serving.execution.brokers.ccxt_broker import CcxtBroker

__all__ = [
    "Broker",
    "BrokerError",
    "CcxtBroker",
    "OrderRejectedError",
    "OutcomeUnknownError",
    "PaperAccount",
    "PaperBroker",
]


def __getattr__(name: str) -> Any:
    if name == "CcxtBroker":
        from oihedge.serving.execution.brokers.ccxt_broker import CcxtBroker

        return CcxtBroker
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
