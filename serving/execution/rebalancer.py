"""From target hedges to orders: a pure function.

:func:`plan_orders` reads, per instrument ``(venue, symbol)``, the target short hedge in
USD, the current signed position in base units, a price and the venue's
:class:`~oihedge.serving.execution.orders.InstrumentRules`, and returns the market orders that move
each position to its target. No I/O and no clock: the decision bar's timestamp is an
argument and goes into every order's client order id
(:func:`oihedge.serving.execution.orders.client_order_id`).

Rules, per instrument:

* target position = ``-target_usd / price`` (a short); the order is the difference,
  rounded to the lot size (nearest lot);
* closing the hedge (``target_usd == 0``) buys back the whole short exactly;
* an order that moves the position towards zero without crossing it is ``reduce_only``
  (where the venue supports it) and never larger than the position;
* an order below the venue's minimum amount or minimum notional is not sent (logged);
  an order that closes a position is exempt from the minimum notional, as on the venues;
* instruments with a position but no target are left alone (the loop manages only the
  instruments it is given).

:func:`targets_on_venue` turns a per-symbol target (the policy's output) into
per-instrument targets on the hedge venue.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from datetime import datetime
from decimal import ROUND_HALF_EVEN, Decimal

from oihedge.serving.execution.orders import InstrumentRules, OrderIntent, client_order_id

__all__ = ["HedgeKey", "plan_orders", "round_to_step", "targets_on_venue"]

log = logging.getLogger(__name__)

#: an instrument: (ccxt venue id, base asset)
HedgeKey = tuple[str, str]


def targets_on_venue(targets_by_symbol: Mapping[str, float], venue: str) -> dict[HedgeKey, float]:
    """Per-instrument targets that put each symbol's whole hedge (USD) on ``venue``."""
    return {(venue, symbol): usd for symbol, usd in targets_by_symbol.items()}


def round_to_step(amount: float, step: float) -> float:
    """``amount`` (base units, >= 0) rounded to the nearest multiple of ``step``.

    Decimal arithmetic, so ``0.3`` with step ``0.1`` is exactly ``0.3`` and not
    ``0.30000000000000004`` (venues reject amounts off their lot grid).
    """
    lots = (Decimal(repr(amount)) / Decimal(repr(step))).quantize(
        Decimal(1), rounding=ROUND_HALF_EVEN
    )
    return float(lots * Decimal(repr(step)))


def plan_orders(
    targets: Mapping[HedgeKey, float],
    positions: Mapping[HedgeKey, float],
    prices: Mapping[HedgeKey, float] | Mapping[str, float],
    rules: Mapping[HedgeKey, InstrumentRules],
    *,
    strategy_id: str,
    decision_ts: datetime,
) -> list[OrderIntent]:
    """Orders that move each instrument's position to its target short hedge.

    ``targets``: target short hedge per instrument, USD (>= 0). ``positions``: current
    signed position per instrument, base units (missing: flat). ``prices``: USD price per
    instrument, or per symbol. ``rules``: the venue's rules per instrument.
    ``decision_ts``: bar of the decision (timezone-aware). Returns at most one order per
    instrument, in the order of ``targets``. Raises ``ValueError`` naming the instrument
    for a negative or non-finite target, a missing or non-positive price, or missing
    rules.
    """
    orders = []
    for key, target_usd in targets.items():
        venue, symbol = key
        if not (math.isfinite(target_usd) and target_usd >= 0):
            raise ValueError(
                f"target for {venue}/{symbol} must be finite and >= 0, got {target_usd!r}"
            )
        price = _price(prices, key)
        if key not in rules:
            raise ValueError(f"no instrument rules for {venue}/{symbol}")
        order = _plan_one(
            key, target_usd, positions.get(key, 0.0), price, rules[key], strategy_id, decision_ts
        )
        if order is not None:
            orders.append(order)
    return orders


def _price(prices: Mapping[HedgeKey, float] | Mapping[str, float], key: HedgeKey) -> float:
    value = prices.get(key)  # type: ignore[call-overload]
    if value is None:
        value = prices.get(key[1])  # type: ignore[call-overload]
    if value is None or not (math.isfinite(value) and value > 0):
        raise ValueError(f"price for {key[0]}/{key[1]} must be a finite number > 0, got {value!r}")
    return float(value)


def _plan_one(
    key: HedgeKey,
    target_usd: float,
    position: float,
    price: float,
    rules: InstrumentRules,
    strategy_id: str,
    decision_ts: datetime,
) -> OrderIntent | None:
    venue, symbol = key
    desired = -target_usd / price
    closing = target_usd == 0 and position < 0
    delta = -position if closing else desired - position
    side = "sell" if delta < 0 else "buy"
    amount = abs(position) if closing else round_to_step(abs(delta), rules.amount_step)
    # towards zero without crossing it (a long sold into a short is not reduce-only)
    reducing = delta * position < 0 and amount <= abs(position) + rules.amount_step / 2
    if reducing:
        amount = min(amount, abs(position))
    what = f"{venue}/{symbol} {side} {amount:g} (target ${target_usd:,.0f}, position {position:g})"
    if amount <= 0:
        return None
    if amount < rules.min_amount:
        log.info("order not sent: %s below min amount %g", what, rules.min_amount)
        return None
    closes = reducing and amount == abs(position)
    if amount * price < rules.min_notional_usd and not closes:
        log.info(
            "order not sent: %s notional $%.2f below min $%.2f",
            what,
            amount * price,
            rules.min_notional_usd,
        )
        return None
    return OrderIntent(
        venue=venue,
        symbol=symbol,
        market=rules.market,
        side=side,
        amount=amount,
        notional_usd=amount * price,
        price_usd=price,
        reduce_only=reducing and rules.reduce_only,
        client_order_id=client_order_id(strategy_id, venue, symbol, decision_ts, target_usd),
        decision_ts=decision_ts,
        target_usd=target_usd,
    )
