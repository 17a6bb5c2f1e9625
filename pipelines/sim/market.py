"""The market mechanism behind ``oihedge simulate``: leveraged positions, funding, cascades.

This module advances the *true* state of a simulated market bar by bar. The positions
live in :mod:`oihedge.pipelines.sim.books`, the per-bar constants and random inputs come from
:mod:`oihedge.pipelines.sim.drivers`, what venues publish about the market (noise, lags, gaps,
bad rows) is :mod:`oihedge.pipelines.sim.feeds`, and the public entry point with every parameter
is :mod:`oihedge.pipelines.sim.simulate`. Per asset and bar (rates per bar, from the durations):

1. **Volatility and depth.** GARCH(1,1) variance fed by the *total* realised return
   (shocks, flow and liquidation impact; clipped at 6 sigma, capped at 8x calm), so
   volatility clusters and stays high after a cascade. Depth (+-1% book, USD) thins as
   ``(calm vol / vol) ** depth_vol_elasticity`` and after liquidations (``stress``).
2. **Appetite.** A mean-reverting latent *euphoria* per asset (one-factor correlated
   noise) that rises with returns (``momentum``) and falls with the moves long
   liquidations cause (``fear``), bounded at +-3. Each venue follows it with its own lag
   (EMA over ``appetite_lag``) and sensitivity (``appetite_beta``), plus its own hype
   (an OU term, ``hype_vol``): OI builds venue by venue and venues diverge.
3. **Flows.** Per venue, new longs open at ``c0 * L0 * exp(x)`` and shorts at
   ``c0 * S0 * exp(-short_appetite * x)`` (``x`` the venue's appetite, lognormal noise);
   positions close at ``c0 = 1 - 0.5 ** (bar / position_halflife)``, faster for the side
   that pays funding. The net opening flow moves price by ``flow_impact * 1% * net/depth``.
4. **Shock and extremes.** Shock ``sqrt(h) z`` (correlated Student-t); the intrabar low
   and high are Brownian-bridge extremes of the bar's move.
5. **Liquidations.** :func:`oihedge.pipelines.sim.books.cascade` empties the long bins the low
   crosses; the forced selling moves the low by the impact of everything liquidated so
   far, which may cross more bins: a cascade, in rounds inside the bar (shorts with the
   high). ``wick_recovery`` of the move comes back inside the bar; a vol-scaled
   ``contagion`` share pushes the other assets in the next bar; of the rest and of the
   contagion push, ``transient_impact_share`` decays over ``transient_halflife`` (the
   books refill and the forced orders' price pressure fades: real flushes give back
   most of their fall within days, see :mod:`oihedge.pipelines.sim.recovery`).
6. **Positions.** Closing scales every bin; new positions enter at the close, spread
   over liquidation prices by the venue's leverage distribution, whose level (re-set
   every 15 minutes) rises with the venue's appetite (``leverage_euphoria``), with a
   surge above its 24h average (``leverage_fomo``: late-comers chase with more leverage)
   and with a hidden leverage appetite per asset (``leverage_vol``: the source of
   cascades with weak OI precursors).
7. **Funding.** Premium per venue ``interest + s * (L - S) / OI`` plus noise, where the
   sensitivity ``s`` is the venue's ``funding_sensitivity`` times a lognormal OU factor
   (``arbitrage_vol``: how hard basis traders lean against the imbalance, so funding is
   an imperfect gauge of leverage). The rate is
   ``premium + clamp(interest - premium, +-funding_band_8h)`` capped at ``funding_cap``;
   the published rate (per 8h) is its EMA over the venue's funding interval -- the
   predicted rate of the next settlement. One-side OI is liquidity providers' hedged
   inventory (lognormal OU) plus speculative longs plus shorts.

The market runs for two days before ``config.start`` (dropped) so that the books start in
a steady state. Nothing is scheduled: a cascade happens when densely clustered leverage
meets a large enough move. ``fragility`` (measured every 30 minutes, carried forward) is
the extra % fall long liquidations would add to a 1% dip, given the book and the depth.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, fields
from typing import TYPE_CHECKING

import numpy as np

from oihedge.pipelines.sim.books import (
    LEV_LEVELS,
    LEV_STEP,
    AssetBooks,
    Impact,
    cascade,
    fragility,
    initial_books,
    leverage_kernels,
)
from oihedge.pipelines.sim.drivers import MarketParams, draw_drivers, market_params

if TYPE_CHECKING:
    from oihedge.pipelines.sim.simulate import SimulationConfig

_GARCH_CLIP_SIGMAS = 6.0
#: euphoria is bounded (sd units): the market's appetite saturates
_EUPHORIA_BOUND = 3.0
#: scales of closed positions are folded into the books below this
_SCALE_FLOOR = 1e-100


@dataclass(frozen=True)
class MarketPath:
    """The true state of the simulated market.

    Arrays are indexed ``[bar, asset]`` or ``[bar, asset, venue]`` in the order of
    ``config.assets`` / ``config.venues``; bar ``t`` closes at ``start + (t + 1) * bar``
    (the warm-up is not included).
    Prices are natural logs of USD prices; amounts are USD notional; funding and premium
    are rates per 8 hours; ``impact_long`` is the log move caused by long liquidations.
    """

    log_close: np.ndarray
    log_high: np.ndarray
    log_low: np.ndarray
    sigma: np.ndarray
    depth_usd: np.ndarray
    fragility: np.ndarray
    euphoria: np.ndarray
    rounds: np.ndarray
    impact_long: np.ndarray
    oi_long: np.ndarray
    oi_short: np.ndarray
    oi_lp: np.ndarray
    liq_long: np.ndarray
    liq_short: np.ndarray
    turnover: np.ndarray
    premium: np.ndarray
    funding: np.ndarray

    @property
    def n_bars(self) -> int:
        return int(self.log_close.shape[0])

    @property
    def oi_usd(self) -> np.ndarray:
        """One-side open interest per ``[bar, asset, venue]``, USD."""
        return self.oi_long + self.oi_short + self.oi_lp


def _recorders(n: int, n_a: int, n_v: int) -> dict[str, np.ndarray]:
    out: dict[str, np.ndarray] = {}
    for f in fields(MarketPath):
        per_venue = f.name.startswith(("oi_", "liq_")) or f.name in (
            "turnover",
            "premium",
            "funding",
        )
        out[f.name] = np.zeros((n, n_a, n_v) if per_venue else (n, n_a))
    return out


class _Market:
    """The mutable state of the market between bars; :meth:`step` advances one bar."""

    def __init__(self, config: SimulationConfig, rng: np.random.Generator) -> None:
        self.c = config
        self.p = p = market_params(config)
        self.d = draw_drivers(config, p, rng)
        n_a, n_v = len(config.assets), len(config.venues)
        self.rec = _recorders(p.n_bars, n_a, n_v)
        self.kern_long = leverage_kernels(config, +1)
        self.kern_short = leverage_kernels(config, -1)
        self.margin = self.kern_long.shape[-1] + self.kern_short.shape[-1] + 2
        self.scale_l, self.total_l = np.ones((n_a, n_v)), np.zeros((n_a, n_v))
        self.scale_s, self.total_s = np.ones((n_a, n_v)), np.zeros((n_a, n_v))
        self.books: list[AssetBooks] = initial_books(
            config,
            p.long0,
            p.short0,
            (self.kern_long, self.kern_short),
            (self.scale_l, self.total_l, self.scale_s, self.total_s),
        )
        self.venue_idx = np.arange(n_v)
        self.buf_long = np.empty((n_v, self.kern_long.shape[-1]))
        self.buf_short = np.empty((n_v, self.kern_short.shape[-1]))
        mid = LEV_LEVELS // 2
        self.lev_long = self.kern_long[:, :, mid].copy()
        self.lev_short = self.kern_short[:, :, mid].copy()
        self.impact = Impact(config.impact_coef * 0.01, config.impact_exponent)
        self.log_p = np.log([a.start_price for a in config.assets])
        self.base, self.trans = self.log_p.copy(), np.zeros(n_a)
        self.h = p.sig_ref**2
        self.r_prev, self.e = np.zeros(n_a), np.zeros(n_a)
        self.app, self.x_slow = np.zeros((n_a, n_v)), np.zeros((n_a, n_v))
        self.longs, self.shorts = self.scale_l * self.total_l, self.scale_s * self.total_s
        oi = self.longs + self.shorts + p.lp0
        self.funding = config.interest_8h + p.fund_sens * (self.longs - self.shorts) / oi
        self.stress, self.contagion = np.zeros(n_a), np.zeros(n_a)
        self.imp_l, self.imp_s = np.zeros(n_a), np.zeros(n_a)
        self.fragility = np.zeros(n_a)

    def step(self, t: int) -> None:
        """Advance the market by bar ``t`` and record its state."""
        depth = self._volatility(t)
        x = self._appetite(t)
        open_l, open_s, close_l, close_s, r = self._flows(t, x, depth)
        low, high = self._liquidate(t, r, depth)
        self._move_price(t, r, low, high)
        self._reposition(t, x, open_l, open_s, close_l, close_s, depth)
        self._settle(t, depth)

    def _volatility(self, t: int) -> np.ndarray:
        p, rec = self.p, self.rec
        r2 = np.minimum(self.r_prev * self.r_prev, _GARCH_CLIP_SIGMAS**2 * self.h)
        self.h = np.minimum(p.omega + self.c.garch_alpha * r2 + p.garch_beta * self.h, p.max_var)
        sig = np.sqrt(self.h)
        thin = (p.sig_ref / sig) ** self.c.depth_vol_elasticity * (1.0 - self.stress)
        depth = p.depth0 * np.maximum(thin, 1.0 - self.c.max_stress) * self.d.depth[t]
        rec["sigma"][t], rec["depth_usd"][t] = sig, depth
        return depth

    def _appetite(self, t: int) -> np.ndarray:
        """Euphoria, then each venue's lagged, hyped appetite ``x`` (log-OI units)."""
        c, p = self.c, self.p
        e = (
            p.keep_e * self.e
            + self.d.euphoria[t]
            + (c.momentum * self.r_prev + c.fear * (self.imp_l + 0.5 * self.imp_s)) / p.sig_day
        )
        self.e = e = np.minimum(np.maximum(e, -_EUPHORIA_BOUND), _EUPHORIA_BOUND)
        self.app += p.app_k * (e[:, None] - self.app)
        self.rec["euphoria"][t] = e
        return p.app_beta * self.app + self.d.hype[t]

    def _flows(self, t: int, x: np.ndarray, depth: np.ndarray) -> tuple[np.ndarray, ...]:
        """Opening and closing (USD and rates), and the bar's return before liquidations."""
        c, p, d = self.c, self.p, self.d
        open_l = d.open_long[t] * np.exp(x)
        open_s = d.open_short[t] * np.exp(-c.short_appetite * x)
        paid = (c.funding_close_sensitivity / 1e-3) * self.funding
        close_l = p.close0 * (1.0 + np.maximum(paid, 0.0))
        close_s = p.close0 * (1.0 - np.minimum(paid, 0.0))
        net = (open_l - close_l * self.longs - open_s + close_s * self.shorts).sum(axis=1)
        recovery = self.trans * (p.keep_trans - 1.0)
        r = (
            np.sqrt(self.h) * d.shock[t]
            + (c.flow_impact * 0.01) * net / depth
            + self.contagion
            + recovery
        )
        return open_l, open_s, close_l, close_s, r

    def _liquidate(self, t: int, r: np.ndarray, depth: np.ndarray) -> tuple[np.ndarray, ...]:
        """Intrabar extremes, then the liquidations and cascades they set off."""
        bridge, h2 = self.d.bridge[t], 2.0 * self.h
        low = self.log_p + 0.5 * (r - np.sqrt(r * r - h2 * bridge[0]))
        high = self.log_p + 0.5 * (r + np.sqrt(r * r - h2 * bridge[1]))
        rec, rounds = self.rec, self.c.max_cascade_rounds
        self.imp_l, self.imp_s = np.zeros(low.size), np.zeros(low.size)
        for a, books in enumerate(self.books):
            # most bars cross no occupied bin: skip the call
            reach_l = math.ceil(books.position(low[a])) <= books.longs.hi
            reach_s = math.floor(books.position(high[a])) >= books.shorts.lo
            if not (reach_l or reach_s):
                continue
            self.impact.depth = depth[a]
            n_l = n_s = 0
            if reach_l:
                self.imp_l[a], rec["liq_long"][t, a], n_l = cascade(
                    books, low[a], +1, self.impact, rounds
                )
            if reach_s:
                self.imp_s[a], rec["liq_short"][t, a], n_s = cascade(
                    books, high[a], -1, self.impact, rounds
                )
            rec["rounds"][t, a] = max(n_l, n_s)
        rec["impact_long"][t] = self.imp_l
        return low, high

    def _move_price(self, t: int, r: np.ndarray, low: np.ndarray, high: np.ndarray) -> None:
        c, p = self.c, self.p
        share = c.transient_impact_share
        # the liquidation move left at the close, and the spill-over of the last bar's
        # liquidation moves into this one (``contagion``, part of ``r``): both are forced
        # orders eating the book, so the same share of both comes back as it refills
        kept = (self.imp_l + self.imp_s) * (1.0 - c.wick_recovery)
        forced = kept * share + self.contagion * share
        self.base += r - self.trans * (p.keep_trans - 1.0) + kept - forced
        self.trans = self.trans * p.keep_trans + forced
        new_p = self.base + self.trans
        self.r_prev = new_p - self.log_p
        self.log_p = new_p
        self.rec["log_close"][t] = new_p
        self.rec["log_low"][t] = np.minimum(low + self.imp_l, new_p)
        self.rec["log_high"][t] = np.maximum(high + self.imp_s, new_p)

    def _reposition(
        self,
        t: int,
        x: np.ndarray,
        open_l: np.ndarray,
        open_s: np.ndarray,
        close_l: np.ndarray,
        close_s: np.ndarray,
        depth: np.ndarray,
    ) -> None:
        """Close a share of every position, open new ones at the close."""
        p = self.p
        self.scale_l *= 1.0 - close_l
        self.scale_s *= 1.0 - close_s
        if t % 64 == 0:
            self._fold_scales()
        if t % p.leverage_every == 0:
            self._set_leverage(t, x)
        raw_l, raw_s = open_l / self.scale_l, open_s / self.scale_s
        self.total_l += raw_l
        self.total_s += raw_s
        k_long = self.kern_long.shape[-1]
        every = t % p.fragility_every == 0
        for a, books in enumerate(self.books):
            entry = books.recentre(books.bin_of(self.log_p[a]), self.margin)
            books.longs.add(entry - k_long, self.lev_long[a], raw_l[a], self.buf_long)
            books.shorts.add(entry + 1, self.lev_short[a], raw_s[a], self.buf_short)
            if every:
                self.impact.depth = depth[a]
                self.fragility[a] = fragility(books, self.log_p[a], self.impact)
        self.longs = self.scale_l * self.total_l
        self.shorts = self.scale_s * self.total_s
        self.rec["fragility"][t] = self.fragility
        # turnover: opened here; closed and liquidated notional added after the run
        self.rec["turnover"][t] = open_l + open_s

    def _set_leverage(self, t: int, x: np.ndarray) -> None:
        """Pick each venue's leverage distribution for the next ``leverage_every`` bars.

        Higher with the venue's appetite, higher still for late-comers chasing a surge
        (appetite above its 24h average), plus the hidden leverage appetite.
        """
        c, p = self.c, self.p
        self.x_slow += p.fomo_k * (x - self.x_slow)
        lev_log = c.leverage_euphoria * x + c.leverage_fomo * (x - self.x_slow) + self.d.leverage[t]
        level = np.rint(lev_log * (1.0 / LEV_STEP)).astype(int) + LEV_LEVELS // 2
        np.clip(level, 0, LEV_LEVELS - 1, out=level)
        assets = np.arange(level.shape[0])[:, None]
        self.lev_long = self.kern_long[assets, self.venue_idx, level]
        self.lev_short = self.kern_short[assets, self.venue_idx, level]

    def _fold_scales(self) -> None:
        for scale, side in ((self.scale_l, "longs"), (self.scale_s, "shorts")):
            if scale.min() < _SCALE_FLOOR:
                for books in self.books:
                    getattr(books, side).fold_scale()

    def _settle(self, t: int, depth: np.ndarray) -> None:
        """Funding follows the premium; stress and contagion carry into the next bar."""
        c, p, rec = self.c, self.p, self.rec
        lp = self.d.lp[t]
        oi = lp + self.longs + self.shorts
        prem = self.d.premium[t] + self.d.sensitivity[t] * (self.longs - self.shorts) / oi
        # the exchanges' formula: premium + clamp(interest - premium, +-band), capped
        band = c.funding_band_8h
        rate = prem + np.minimum(np.maximum(c.interest_8h - prem, -band), band)
        self.funding += p.fund_k * (
            np.minimum(np.maximum(rate, -p.fund_cap), p.fund_cap) - self.funding
        )
        liq = rec["liq_long"][t].sum(axis=1) + rec["liq_short"][t].sum(axis=1)
        self.stress = np.minimum(
            c.max_stress, self.stress * p.keep_stress + c.stress_sensitivity * liq / depth
        )
        scaled = (self.imp_l + self.imp_s) / p.sig_ref
        self.contagion = c.contagion * (scaled.sum() - scaled) * p.sig_ref
        rec["oi_long"][t], rec["oi_short"][t], rec["oi_lp"][t] = self.longs, self.shorts, lp
        rec["premium"][t], rec["funding"][t] = prem, self.funding


def run_market(
    config: SimulationConfig,
    rng: np.random.Generator,
    progress: Callable[[float], None] | None = None,
) -> MarketPath:
    """Run the mechanism for ``config.days``; return the true state of every bar.

    ``progress`` is called with the fraction of bars done (0..1) about a hundred times.
    """
    market = _Market(config, rng)
    n = market.p.n_bars
    tick = max(1, n // 100)
    for t in range(n):
        market.step(t)
        if progress is not None and t % tick == 0:
            progress(t / n)
    if progress is not None:
        progress(1.0)
    rec = market.rec
    rec["turnover"] += _closed(config, market.p, rec) + rec["liq_long"] + rec["liq_short"]
    warm = market.p.warmup_bars
    if warm:
        # log prices are translation-invariant in the mechanism: re-anchor on start_price
        shift = np.log([a.start_price for a in config.assets])
        shift -= rec["log_close"][warm - 1]
        for name in ("log_close", "log_high", "log_low"):
            rec[name] += shift
    return MarketPath(**{name: arr[warm:] for name, arr in rec.items()})


def _closed(config: SimulationConfig, p: MarketParams, rec: dict[str, np.ndarray]) -> np.ndarray:
    """Notional closed in each bar, USD: the closing rates applied to the open positions."""
    funding = np.concatenate([rec["funding"][:1], rec["funding"][:-1]])
    paid = (config.funding_close_sensitivity / 1e-3) * funding
    longs = np.concatenate([rec["oi_long"][:1], rec["oi_long"][:-1]])
    shorts = np.concatenate([rec["oi_short"][:1], rec["oi_short"][:-1]])
    return p.close0 * (
        (1.0 + np.maximum(paid, 0.0)) * longs + (1.0 - np.minimum(paid, 0.0)) * shorts
    )
