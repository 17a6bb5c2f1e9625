"""What the hedge policy reads at one bar, :class:`Signals`, and how it is made from one
feature row (:func:`signals_from_row`).

The feature table (:func:`oihedge.features.registry.build_features`, or the online features of the
live loop) gives one row per (decision time, symbol) in the units its column names say;
the policy reads fractions and annualised volatility. This module is the one place the
units are converted, shared by the backtest and the live loop:

=======================  ===========================  ======================================
``Signals`` field        feature column               conversion
=======================  ===========================  ======================================
``oi_div_xvenue``        ``oi_div_xvenue_4h`` (pp)    / 100 -> fraction (8 pp -> 0.08)
``oi_dev_24h_pct``       ``oi_dev_24h_pct`` (%)       unchanged (the policy reads percent)
``funding_8h``           ``funding_oiw_bp8h`` (bp/8h) / 1e4 -> fraction per 8 h; where it is
                                                      missing (no venue has both funding and
                                                      OI), ``funding_mean_bp8h`` / 1e4
``funding_z``            ``funding_z_7d`` (z)         unchanged
``vol_ann``              ``vol_rv_24h_pct``           / 100 x sqrt(365) -> annualised
                         (% per sqrt(day))            fraction (crypto trades 365 days)
``vol_forecast_ann``     ``vol_rv_4h_pct``,           HAR-style forecast: the root of the
                         ``vol_rv_24h_pct``,          mean of the available windows'
                         ``vol_rv_7d_pct``            variances, annualised as above
``beta``                 none in the ``core`` spec    ``None`` -> the policy's
                                                      ``beta_default``
=======================  ===========================  ======================================

The beta is ``None`` because each symbol is hedged with its own perpetual: the exposure and
the hedge instrument are the same asset, so the minimum-variance hedge ratio is 1 up to
the spot-perp basis (``beta_default = 1``). A caller that hedges with another instrument
passes its rolling beta. A missing reading (``None`` or NaN) stays ``None``: the policy
never treats it as a confirmation, and counts it as normalised for the exit.

The volatility forecast weighs the short, daily and weekly realised volatility equally
(the heterogeneous-horizon idea of Corsi's HAR model, with fixed weights so that nothing
is fitted here): the 4 h window reacts within hours, the 7 d window keeps one calm day from
reading as a calm market. Each input is point in time, so the forecast is too.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime

from oihedge.serving.policy.sizing import YEAR, finite_or_none

__all__ = [
    "DIVERGENCE",
    "FUNDING",
    "FUNDING_FALLBACK",
    "FUNDING_Z",
    "OI_DEV",
    "SIGNAL_FEATURES",
    "Signals",
    "VOL",
    "VOL_WINDOWS",
    "annualised_vol",
    "bp_to_fraction",
    "pp_to_fraction",
    "signals_from_row",
    "vol_forecast",
]

DIVERGENCE = "oi_div_xvenue_4h"
OI_DEV = "oi_dev_24h_pct"
FUNDING = "funding_oiw_bp8h"
FUNDING_FALLBACK = "funding_mean_bp8h"
FUNDING_Z = "funding_z_7d"
VOL = "vol_rv_24h_pct"
#: the realised volatilities the forecast blends (short, daily, weekly)
VOL_WINDOWS: tuple[str, ...] = ("vol_rv_4h_pct", VOL, "vol_rv_7d_pct")
#: the feature columns the policy's signals are built from
SIGNAL_FEATURES: tuple[str, ...] = (
    DIVERGENCE,
    OI_DEV,
    FUNDING,
    FUNDING_FALLBACK,
    FUNDING_Z,
    *VOL_WINDOWS,
)

_DAYS_PER_YEAR = YEAR.days  # 365: the same year the policy's sizing annualises over
_SQRT_YEAR_DAYS = math.sqrt(_DAYS_PER_YEAR)


@dataclass(frozen=True)
class Signals:
    """What the policy reads at one bar, besides the probability.

    Attributes:
        ts: bar close time, timezone-aware (the policy's only clock).
        portfolio_usd: the long exposure this hedge protects, USD (>= 0).
        fresh_venues: number of venues whose data is fresh at this bar.
        oi_div_xvenue: cross-venue OI divergence (spread of venue OI changes), fraction.
        oi_dev_24h_pct: aggregate OI deviation from its 24 h mean, percent.
        funding_8h: (OI-weighted) funding rate per 8 h, fraction.
        funding_z: funding z-score against 7 days.
        vol_ann: realised volatility of the hedge instrument (24 h), annualised fraction.
        vol_forecast_ann: volatility forecast over the risk horizon, annualised fraction.
        beta: slope of the exposure's returns on the hedge instrument's (rolling).
        severity_k: cascade drop in multiples of the horizon's volatility, fitted on the
            model's training window (``None``: the policy's ``stress_k``).

    Optional readings may be ``None`` or NaN (missing).
    """

    ts: datetime
    portfolio_usd: float
    fresh_venues: int
    oi_div_xvenue: float | None = None
    oi_dev_24h_pct: float | None = None
    funding_8h: float | None = None
    funding_z: float | None = None
    vol_ann: float | None = None
    vol_forecast_ann: float | None = None
    beta: float | None = None
    severity_k: float | None = None


def pp_to_fraction(value: float | None) -> float | None:
    """Percentage points (8.0) as a fraction (0.08); ``None`` when missing."""
    x = finite_or_none(value)
    return None if x is None else x / 100.0


def bp_to_fraction(value: float | None) -> float | None:
    """Basis points (1.0) as a fraction (0.0001); ``None`` when missing."""
    x = finite_or_none(value)
    return None if x is None else x / 10_000.0


def annualised_vol(daily_pct: float | None) -> float | None:
    """Volatility in % per sqrt(day) (3.14) as an annualised fraction (0.60).

    ``daily_pct / 100 x sqrt(365)``; ``None`` when missing or negative.
    """
    x = finite_or_none(daily_pct)
    if x is None or x < 0:
        return None
    return x / 100.0 * _SQRT_YEAR_DAYS


def signals_from_row(
    row: Mapping[str, float | None],
    *,
    ts: datetime,
    portfolio_usd: float,
    fresh_venues: int,
    beta: float | None = None,
    severity_k: float | None = None,
) -> Signals:
    """The policy's signals at one bar from the symbol's feature row.

    ``row`` maps feature names (:data:`SIGNAL_FEATURES`; absent keys count as missing) to
    values in the feature table's units. ``ts``: the decision time (the row's ``ts``),
    timezone-aware. ``portfolio_usd``: the long exposure in this symbol, USD.
    ``fresh_venues``: venues with fresh data at ``ts``. ``beta``: rolling beta of the
    exposure on the hedge instrument, or ``None`` (see the module docstring).
    ``severity_k``: the served model's fitted cascade severity (``None``: the policy's).
    """
    funding = bp_to_fraction(row.get(FUNDING))
    if funding is None:
        funding = bp_to_fraction(row.get(FUNDING_FALLBACK))
    return Signals(
        ts=ts,
        portfolio_usd=portfolio_usd,
        fresh_venues=fresh_venues,
        oi_div_xvenue=pp_to_fraction(row.get(DIVERGENCE)),
        oi_dev_24h_pct=finite_or_none(row.get(OI_DEV)),
        funding_8h=funding,
        funding_z=finite_or_none(row.get(FUNDING_Z)),
        vol_ann=annualised_vol(row.get(VOL)),
        vol_forecast_ann=vol_forecast(row),
        beta=finite_or_none(beta),
        severity_k=finite_or_none(severity_k),
    )


def vol_forecast(row: Mapping[str, float | None]) -> float | None:
    """The volatility forecast (annualised fraction) from the realised volatilities of
    :data:`VOL_WINDOWS` in ``row``: the root of the mean of the available windows'
    variances; ``None`` when none is available."""
    variances = [v * v for v in (annualised_vol(row.get(n)) for n in VOL_WINDOWS) if v is not None]
    if not variances:
        return None
    return math.sqrt(sum(variances) / len(variances))
