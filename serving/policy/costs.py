"""The trading-cost model: one model, used by the backtest and by the paper broker.

Three costs, all in USD and all charged exactly as written here:

* **Taker fee** on every fill: ``|notional| x taker_fee_bps / 1e4``. Hedges are sent as
  market (taker) orders: a protective hedge that waits for a maker fill is not one.
* **Slippage** (the fill's distance from the reference price), in basis points::

      slippage_bps = m x (slippage_base_bps
                          + slippage_size_bps x sqrt(|notional| / volume_24h_usd)
                          + slippage_vol_bps  x vol_ann)

  capped at ``MAX_SLIPPAGE_BPS`` (50 %); ``m`` is ``stress_multiplier`` inside a cascade
  (stress) and 1 otherwise. The first term is the half-spread; the second is the
  square-root market-impact law (impact grows with the order's share of the day's
  volume); the third widens spreads with realised volatility (``vol_ann`` is annualised,
  as a fraction: 0.6 = 60 %/year). A buy fills at ``price x (1 + slippage_bps/1e4)``,
  a sell at ``price x (1 - slippage_bps/1e4)``.
* **Funding** on the hedge, a short perpetual. Funding rates are per 8 hours (the panel
  normalises every venue to 8 h) and accrue pro rata over time: the backtest charges it
  bar by bar rather than at the venues' discrete funding timestamps. With a positive
  rate longs pay shorts, so the short hedge *receives* it.

Sign conventions: order notionals are signed as on an exchange (``+`` buy, ``-`` sell);
costs are positive when paid. Missing market inputs (``None`` or NaN volume or volatility,
e.g. during a live warm-up) are charged at the conservative ``fallback_*`` values; bad
arguments raise ``ValueError`` naming the value.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import timedelta

FUNDING_INTERVAL = timedelta(hours=8)
#: slippage ceiling, bps: beyond it the impact law is meaningless (a sell would fill at
#: a price <= 0); an order that large is a sizing bug the caller should see in the costs
MAX_SLIPPAGE_BPS = 5_000.0
_BPS = 1e4


@dataclass(frozen=True)
class CostBreakdown:
    """The cost of one fill.

    ``notional_usd`` is the signed order notional (``+`` buy, ``-`` sell) at the reference
    price; ``fee_usd`` and ``slippage_usd`` are positive USD costs; ``slippage_bps`` is the
    slippage rate applied; ``fill_price`` is the price the order fills at.
    """

    notional_usd: float
    fee_usd: float
    slippage_usd: float
    slippage_bps: float
    fill_price: float

    @property
    def total_usd(self) -> float:
        """Fee plus slippage, USD."""
        return self.fee_usd + self.slippage_usd


@dataclass(frozen=True)
class CostModel:
    """Fees, size- and volatility-dependent slippage, and funding on the hedge.

    Attributes (all non-negative):
        taker_fee_bps: taker fee, basis points of the notional.
        slippage_base_bps: half-spread paid on every fill, bps.
        slippage_size_bps: impact at an order equal to the 24 h volume, bps; scaled by the
            square root of ``|notional| / volume_24h_usd``.
        slippage_vol_bps: extra slippage per unit of annualised volatility, bps
            (10 -> 6 bps at 60 %/year).
        stress_multiplier: factor (>= 1) on the whole slippage inside a cascade.
        fallback_volume_24h_usd: 24 h volume assumed when it is unknown, USD (> 0).
        fallback_vol_ann: annualised volatility assumed when it is unknown (fraction).
    """

    taker_fee_bps: float = 5.0
    slippage_base_bps: float = 1.0
    slippage_size_bps: float = 300.0
    slippage_vol_bps: float = 10.0
    stress_multiplier: float = 3.0
    fallback_volume_24h_usd: float = 50_000_000.0
    fallback_vol_ann: float = 1.0

    def __post_init__(self) -> None:
        for name in (
            "taker_fee_bps",
            "slippage_base_bps",
            "slippage_size_bps",
            "slippage_vol_bps",
            "fallback_vol_ann",
        ):
            value = getattr(self, name)
            if not (math.isfinite(value) and value >= 0):
                raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")
        if not (math.isfinite(self.stress_multiplier) and self.stress_multiplier >= 1):
            raise ValueError(f"stress_multiplier must be >= 1, got {self.stress_multiplier!r}")
        if not (math.isfinite(self.fallback_volume_24h_usd) and self.fallback_volume_24h_usd > 0):
            raise ValueError(
                f"fallback_volume_24h_usd must be > 0, got {self.fallback_volume_24h_usd!r}"
            )

    def small_order_bps(self, vol_ann: float | None) -> float:
        """Fee plus slippage of an order too small to move the book, bps: ``taker_fee_bps +
        slippage_base_bps + slippage_vol_bps x vol_ann`` (``fallback_vol_ann`` when the
        volatility is missing), outside a cascade. The size term is left out: the caller
        does not know the order's share of the day's volume."""
        vol = self.fallback_vol_ann if vol_ann is None or not math.isfinite(vol_ann) else vol_ann
        return self.taker_fee_bps + self.slippage_base_bps + self.slippage_vol_bps * max(0.0, vol)

    def slippage_bps(
        self,
        notional_usd: float,
        *,
        vol_ann: float | None,
        volume_24h_usd: float | None,
        stress: bool = False,
    ) -> float:
        """Slippage rate of an order of ``notional_usd`` (sign ignored), in bps.

        ``vol_ann``: realised volatility, annualised fraction. ``volume_24h_usd``: USD
        volume traded in the hedge instrument over the last 24 h (a duration, so the
        estimate does not depend on the bar length). ``None``, NaN or a non-positive
        volume uses the fallbacks. ``stress``: the fill happens inside a cascade.
        """
        size = _finite(notional_usd, "notional_usd")
        if size == 0:
            return 0.0
        vol = self.fallback_vol_ann if vol_ann is None or math.isnan(vol_ann) else vol_ann
        if not (math.isfinite(vol) and vol >= 0):
            raise ValueError(f"vol_ann must be a finite number >= 0, got {vol_ann!r}")
        volume = volume_24h_usd
        if volume is None or not volume > 0:  # NaN and zero-volume bars included
            volume = self.fallback_volume_24h_usd
        elif math.isinf(volume):
            raise ValueError(f"volume_24h_usd must be finite, got {volume_24h_usd!r}")
        bps = (
            self.slippage_base_bps
            + self.slippage_size_bps * math.sqrt(abs(size) / volume)
            + self.slippage_vol_bps * vol
        )
        return min(MAX_SLIPPAGE_BPS, bps * (self.stress_multiplier if stress else 1.0))

    def trade_cost(
        self,
        notional_usd: float,
        price: float,
        *,
        vol_ann: float | None,
        volume_24h_usd: float | None,
        stress: bool = False,
    ) -> CostBreakdown:
        """Fee, slippage and fill price of one market order.

        ``notional_usd``: signed order notional at ``price`` (``+`` buy, ``-`` sell), USD.
        ``price``: the reference price the order is sent at (the next bar's price in the
        backtest and in the paper broker), USD (> 0). Other arguments as in
        :meth:`slippage_bps`. Returns a :class:`CostBreakdown` with USD costs.
        """
        size = _finite(notional_usd, "notional_usd")
        if not (math.isfinite(price) and price > 0):
            raise ValueError(f"price must be a finite number > 0, got {price!r}")
        bps = self.slippage_bps(size, vol_ann=vol_ann, volume_24h_usd=volume_24h_usd, stress=stress)
        direction = 1.0 if size > 0 else -1.0
        return CostBreakdown(
            notional_usd=size,
            fee_usd=abs(size) * self.taker_fee_bps / _BPS,
            slippage_usd=abs(size) * bps / _BPS,
            slippage_bps=bps,
            fill_price=price * (1.0 + direction * bps / _BPS) if size else price,
        )

    def funding_cost(
        self, short_notional_usd: float, funding_rate_8h: float, dt: timedelta
    ) -> float:
        """Funding paid by a short hedge of ``short_notional_usd`` over ``dt``, USD.

        ``short_notional_usd`` (>= 0): size of the short perp position, USD.
        ``funding_rate_8h``: funding rate per 8 h as a fraction (0.0001 = 0.01 %); positive
        means longs pay shorts. Returns ``-short x rate x dt / 8h``: negative when the
        short receives funding (positive rate), positive when it pays (negative rate).
        """
        short = _finite(short_notional_usd, "short_notional_usd")
        if short < 0:
            raise ValueError(f"short_notional_usd must be >= 0, got {short_notional_usd!r}")
        rate = _finite(funding_rate_8h, "funding_rate_8h")
        if dt < timedelta(0):
            raise ValueError(f"dt must be >= 0, got {dt!r}")
        return -short * rate * (dt / FUNDING_INTERVAL)


def _finite(value: float, name: str) -> float:
    if not math.isfinite(value):
        raise ValueError(f"{name} must be finite, got {value!r}")
    return float(value)
