"""Exogenous inputs of the market mechanism: per-bar constants and every random draw.

:func:`market_params` turns a :class:`~oihedge.pipelines.sim.simulate.SimulationConfig` (durations,
annual volatilities, USD amounts) into per-bar constants; :func:`draw_drivers` draws, up
front and in a fixed order, every random number the mechanism (:mod:`oihedge.pipelines.sim.market`)
uses, so that a seed fixes the whole market:

* shocks: one-factor standardised Student-t (``tail_df``), correlation
  ``market_beta_a * market_beta_b``, truncated at 12 sigma;
* euphoria innovations (one-factor Gaussian), hidden leverage appetite and venue hype
  (Ornstein-Uhlenbeck), lognormal opening-flow noise, premium noise, the funding
  sensitivity's lognormal OU factor, liquidity providers' inventory (lognormal OU) and a
  small lognormal depth noise.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from oihedge.pipelines.sim.simulate import SimulationConfig

_YEAR_S = 365.25 * 86400.0
_DAY_S = 86400.0
#: standardised shocks are truncated here (a t with few degrees of freedom is unbounded)
_MAX_SHOCK = 12.0
#: conditional volatility never exceeds this multiple of the calm volatility
MAX_VOL_MULTIPLE = 8.0
#: a surge is appetite above its exponential average over this window
FOMO_WINDOW = timedelta(hours=24)
#: fragility is measured this often (carried forward in between)
FRAGILITY_EVERY = timedelta(minutes=30)
#: the leverage distribution of new positions is re-set this often
LEVERAGE_EVERY = timedelta(minutes=15)
#: simulated before the start and dropped, so that the books start in a steady state
WARMUP = timedelta(days=2)


def _half(bar_s: float, halflife: timedelta) -> float:
    """Per-bar keep factor of something that halves every ``halflife``."""
    return 0.5 ** (bar_s / halflife.total_seconds())


def _ou(rng: np.random.Generator, shape: tuple[int, ...], keep: float, sd: float) -> np.ndarray:
    """Stationary AR(1) paths along axis 0 (``x_t = keep x_{t-1} + noise``) with sd ``sd``."""
    from scipy.signal import lfilter

    noise = rng.standard_normal(shape) * (sd * math.sqrt(1.0 - keep * keep))
    noise[0] = rng.standard_normal(shape[1:]) * sd
    return lfilter([1.0], [1.0, -keep], noise, axis=0)


def _factor_draws(
    rng: np.random.Generator, n: int, betas: np.ndarray, df: float | None
) -> np.ndarray:
    """Unit-variance one-factor draws ``[n, asset]`` with corr(a, b) = beta_a beta_b.

    With ``df``, the common and the idiosyncratic parts are each standardised Student-t
    (one chi-square per bar for the common part, so large moves come together).
    """
    common = rng.standard_normal((n, 1))
    idio = rng.standard_normal((n, betas.size))
    if df is not None:
        common *= np.sqrt((df - 2.0) / rng.chisquare(df, (n, 1)))
        idio *= np.sqrt((df - 2.0) / rng.chisquare(df, (n, betas.size)))
    return common * betas + idio * np.sqrt(1.0 - betas * betas)


@dataclass
class MarketParams:
    """Per-bar constants derived from the config (arrays over asset, or asset x venue)."""

    n_bars: int
    sig_ref: np.ndarray
    sig_day: np.ndarray
    omega: np.ndarray
    max_var: np.ndarray
    garch_beta: float
    depth0: np.ndarray
    long0: np.ndarray
    short0: np.ndarray
    lp0: np.ndarray
    close0: float
    keep_e: float
    app_k: np.ndarray
    app_beta: np.ndarray
    fomo_k: float
    fund_k: np.ndarray
    fund_sens: np.ndarray
    fund_cap: np.ndarray
    keep_trans: float
    keep_stress: float
    fragility_every: int
    leverage_every: int
    warmup_bars: int


def market_params(config: SimulationConfig) -> MarketParams:
    """Derive the per-bar constants of the mechanism from ``config``."""
    bar_s = config.bar.total_seconds()
    assets, venues = config.assets, config.venues
    vol = np.array([a.vol_annual for a in assets])
    sig_ref = vol * math.sqrt(bar_s / _YEAR_S)
    persist = _half(bar_s, config.vol_halflife)
    oi = np.array([a.oi_usd for a in assets])[:, None] * np.array([v.oi_share for v in venues])
    spec = np.array([a.spec_share for a in assets])[:, None]
    long_share = np.array([a.long_share for a in assets])[:, None]
    warmup = round(WARMUP.total_seconds() / bar_s)
    leverage_every = max(1, round(LEVERAGE_EVERY.total_seconds() / bar_s))
    return MarketParams(
        n_bars=warmup + max(1, round(config.days * _DAY_S / bar_s)),
        warmup_bars=warmup,
        sig_ref=sig_ref,
        sig_day=vol * math.sqrt(_DAY_S / _YEAR_S),
        omega=sig_ref**2 * (1.0 - persist),
        max_var=(sig_ref * MAX_VOL_MULTIPLE) ** 2,
        garch_beta=persist - config.garch_alpha,
        depth0=np.array([a.depth_usd for a in assets]),
        long0=oi * spec * long_share,
        short0=oi * spec * (1.0 - long_share),
        lp0=oi * (1.0 - spec),
        close0=1.0 - _half(bar_s, config.position_halflife),
        keep_e=_half(bar_s, config.euphoria_halflife),
        app_k=np.array([1.0 - math.exp(-bar_s / v.appetite_lag.total_seconds()) for v in venues]),
        app_beta=np.array([v.appetite_beta for v in venues]),
        fomo_k=1.0 - math.exp(-leverage_every * bar_s / FOMO_WINDOW.total_seconds()),
        leverage_every=leverage_every,
        fund_k=np.array(
            [1.0 - math.exp(-bar_s / v.funding_interval.total_seconds()) for v in venues]
        ),
        fund_sens=np.array([v.funding_sensitivity for v in venues]),
        fund_cap=np.array([v.funding_cap for v in venues]),
        keep_trans=_half(bar_s, config.transient_halflife),
        keep_stress=_half(bar_s, config.stress_halflife),
        fragility_every=max(1, round(FRAGILITY_EVERY.total_seconds() / bar_s)),
    )


@dataclass
class Drivers:
    """Every random number the mechanism uses, drawn up front (deterministic per seed)."""

    shock: np.ndarray  # [bar, asset] standardised
    bridge: np.ndarray  # [bar, 2, asset] log-uniforms for the intrabar low / high
    euphoria: np.ndarray  # [bar, asset] innovations
    leverage: np.ndarray  # [bar, asset, 1] hidden leverage appetite (log)
    hype: np.ndarray  # [bar, asset, venue] venue hype (log-OI units)
    open_long: np.ndarray  # [bar, asset, venue] c0 * L0 * lognormal noise, USD
    open_short: np.ndarray
    premium: np.ndarray  # [bar, asset, venue] interest plus noise, per 8h
    sensitivity: np.ndarray  # [bar, asset, venue] premium per unit of (L - S) / OI
    lp: np.ndarray  # [bar, asset, venue] liquidity providers' inventory, USD
    depth: np.ndarray  # [bar, asset] lognormal multiplier


def draw_drivers(config: SimulationConfig, p: MarketParams, rng: np.random.Generator) -> Drivers:
    """Every random input of the mechanism, ``[bar, ...]`` arrays (see the module doc)."""
    n, n_a, n_v = p.n_bars, len(config.assets), len(config.venues)
    bar_s = config.bar.total_seconds()
    betas = np.array([a.market_beta for a in config.assets])
    hype_sd = np.array([v.hype_vol for v in config.venues])
    noise = config.opening_noise
    opening = np.exp(rng.standard_normal((2, n, n_a, n_v)) * noise - 0.5 * noise**2)
    return Drivers(
        shock=np.clip(_factor_draws(rng, n, betas, config.tail_df), -_MAX_SHOCK, _MAX_SHOCK),
        bridge=np.log(rng.uniform(1e-12, 1.0, (n, 2, n_a))),
        euphoria=_factor_draws(rng, n, betas, None)
        * (config.euphoria_vol * math.sqrt(1.0 - p.keep_e**2)),
        leverage=_ou(rng, (n, n_a), _half(bar_s, config.leverage_halflife), config.leverage_vol)[
            :, :, None
        ],
        hype=_ou(rng, (n, n_a, n_v), _half(bar_s, config.hype_halflife), 1.0) * hype_sd,
        open_long=opening[0] * (p.close0 * p.long0),
        open_short=opening[1] * (p.close0 * p.short0),
        premium=rng.standard_normal((n, n_a, n_v)) * config.premium_noise_8h + config.interest_8h,
        sensitivity=np.exp(
            _ou(rng, (n, n_a, n_v), _half(bar_s, config.arbitrage_halflife), config.arbitrage_vol)
            - 0.5 * config.arbitrage_vol**2
        )
        * p.fund_sens,
        lp=np.exp(_ou(rng, (n, n_a, n_v), _half(bar_s, config.lp_halflife), config.lp_vol)) * p.lp0,
        depth=np.exp(rng.standard_normal((n, n_a)) * 0.05),
    )
