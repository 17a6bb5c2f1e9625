"""The embedded market simulator: perp venues where liquidation cascades emerge.

``oihedge simulate`` writes a market panel (:data:`oihedge.features.schema.PANEL_SCHEMA`) for
several venues (default: binanceusdm, bybit, okx -- centralised -- and hyperliquid, a
noisier decentralised venue) and assets (default BTC, ETH, NEAR) on 5-minute bars, plus
the ground-truth cascade events; seeded and deterministic. It is a mechanism, not drawn
labels:

* **Price.** Per asset a log-price with GARCH(1,1) volatility (``garch_alpha``,
  ``vol_halflife``) and Student-t shocks (``tail_df``), correlated by a one-factor model
  (``corr = market_beta_a * market_beta_b``: BTC-ETH ~0.85 before cascades, NEAR lower
  and more volatile). The GARCH sees the total return, cascades included.
* **Leverage.** Traders open leveraged longs and shorts on each venue; positions are held
  as USD notional per liquidation-price bin (``liq_bin_width``), per venue and side. A
  long's liquidation price is ``entry * (1 - 1/L + maintenance_margin)``. Leverage
  differs by venue (``leverage_mean``, ``leverage_dispersion``, ``max_leverage``) and
  asset (``leverage_appetite``), and rises with the venue's appetite
  (``leverage_euphoria``), with a fresh surge (``leverage_fomo``) and with a hidden
  leverage appetite (``leverage_vol``, ``leverage_halflife``).
* **Appetite.** A slow latent euphoria per asset (``euphoria_halflife``, ``euphoria_vol``),
  fed by returns (``momentum``) and cut by the falls long liquidations cause (``fear``),
  drives new longs (shorts open against it, ``short_appetite``). Each venue follows it
  with its own lag and sensitivity (``appetite_lag``, ``appetite_beta``) plus its own hype
  (``hype_vol``, ``hype_halflife``): OI builds venue by venue, concentrates on one venue
  at times, and venues diverge. Positions close with ``position_halflife``, faster for
  the side paying funding (``funding_close_sensitivity``). Liquidity providers hold the
  other side (hedged, ``spec_share``, ``lp_vol``); one-side OI = LP inventory + longs +
  shorts.
* **Funding.** Premium = ``interest_8h + s * (longs - shorts) / OI`` plus noise
  (``premium_noise_8h``), ``s`` = ``funding_sensitivity`` times a slow lognormal factor
  (``arbitrage_vol``); rate = ``premium + clamp(interest - premium, +-funding_band_8h)``
  capped at ``funding_cap``, averaged over the venue's ``funding_interval``. Funding is
  mostly positive and rises when longs build up.
* **Cascades.** Every bin whose liquidation price the intrabar low crosses is liquidated;
  the forced selling moves price by ``impact_coef * 1% * u / (1 + u) ** (1 -
  impact_exponent)``, ``u = liquidated USD / depth`` (depth = +-1% book, ``depth_usd``,
  thinner when volatile and after liquidations: ``depth_vol_elasticity``,
  ``stress_sensitivity``, ``stress_halflife``, ``max_stress``), which trips more
  liquidations, up to ``max_cascade_rounds`` rounds inside the bar. ``wick_recovery`` of
  the move comes back within the bar (the wick), it spills to the other assets
  (``contagion``), and ``transient_impact_share`` of the rest and of the spill decays
  over ``transient_halflife`` as books refill. Calibrated on real flushes: the median
  cascade gives back about 0.7 of its fall within 72h (:mod:`oihedge.pipelines.sim.recovery`).
  OI falls by the liquidated notional. Shorts are squeezed the same way.

Precursors are informative but noisy: build-ups raise the odds of a cascade without making
it certain (a trigger is needed and leverage decays), and hidden leverage, funding's
imperfect gauge and fat-tailed shocks make some cascades come with weak precursors.

What the venues publish (:mod:`oihedge.pipelines.sim.feeds`):

* ``close``/``high``/``low``: the perp (index times its premium basis, venue noise), the
  wick included; ``spot_close``: the index, the same on every venue's row of a symbol;
  ``spot_depth_usd``: the spot share of the +-1% depth (thins under stress).
* ``funding_rate``: on every bar, the venue's predicted rate for the next settlement
  normalised to 8h (hyperliquid settles hourly, the CEXs every 8h).
* ``liq_long_usd``/``liq_short_usd``: ``liq_report_fraction`` of the liquidated notional
  (CEX feeds are throttled); null while the liquidation feed is down.
* ``known_at = ts + publish_lag + uniform(0, publish_jitter)``, below one bar; rows come
  in arrival order.
* Gaps: during a venue's feed outage (``gap_rate_per_day``, ``gap_median``,
  ``gap_rate_scale``) the (venue, symbol) has *no rows*. The DEX has more outages and
  noisier OI, funding and prices (``oi_noise``, ``funding_noise``, ``price_noise``).
* Bad rows: ``bad_row_rate`` of the rows are corrupted on purpose (negative OI,
  non-finite close, a row delivered twice, a bar delivered late).
  ``oihedge.features.screening.validate(panel, bar=bar, arrival_order=True)`` quarantines exactly
  :attr:`SimulationResult.injected_bad_rows` of them.

Options (``options``, :mod:`oihedge.pipelines.sim.options`): a ``deribit`` venue whose rows carry
only the options columns of BTC and ETH (open interest, put/call OI ratio, 30-day ATM IV,
25-delta risk reversal), driven by the simulated market looking back: the IV rises with
realised volatility and drawdowns (into cascades), the skew turns put-heavy and the
put/call ratio rises as price falls from its trailing high.

Ground truth (:mod:`oihedge.pipelines.sim.events`): bars whose long liquidations reach
``event_bar_liq_frac`` of the asset's OI, merged when closer than ``event_merge_gap``; an
event starts at the first such bar whose next hour liquidates ``event_min_liq_frac`` of
OI. Defaults give roughly 2-6 downside cascades per asset per month, mostly mild.
"""

from __future__ import annotations

import textwrap
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import polars as pl

from oihedge.features.schema import PANEL_SCHEMA
from oihedge.pipelines.sim.config import (
    DEFAULT_ASSETS,
    DEFAULT_VENUES,
    AssetSpec,
    SimulationConfig,
    VenueSpec,
    parameter_table,
)
from oihedge.pipelines.sim.events import EVENTS_SCHEMA, find_events
from oihedge.pipelines.sim.feeds import observe
from oihedge.pipelines.sim.market import run_market
from oihedge.pipelines.sim.options import options_rows

__all__ = [
    "DEFAULT_ASSETS",
    "DEFAULT_VENUES",
    "EVENTS_SCHEMA",
    "AssetSpec",
    "SimulationConfig",
    "SimulationResult",
    "VenueSpec",
    "help_text",
    "simulate",
]


@dataclass(frozen=True)
class SimulationResult:
    """A simulated panel and the cascades that happened in it.

    ``panel`` has exactly the :data:`oihedge.features.schema.PANEL_SCHEMA` columns, rows in
    arrival order (by ``known_at``), *including* the injected bad rows; ``events`` follows
    :data:`oihedge.pipelines.sim.events.EVENTS_SCHEMA`, one row per ground-truth downside cascade.
    """

    panel: pl.DataFrame
    events: pl.DataFrame
    injected_bad_rows: int
    config: SimulationConfig = field(repr=False, compare=False, default=SimulationConfig())


def simulate(
    config: SimulationConfig, progress: Callable[[float], None] | None = None
) -> SimulationResult:
    """Simulate ``config.days`` of market; return the panel and the ground-truth cascades.

    ``progress`` is called now and then with the fraction done (0..1). Deterministic: the
    same config (seed included) gives identical frames.
    """
    # (a third child for the options: the first two streams are unchanged by it)
    seeds = np.random.SeedSequence(config.seed).spawn(3)
    market_share = 0.9

    def market_progress(fraction: float) -> None:
        if progress is not None:
            progress(market_share * fraction)

    path = run_market(config, np.random.default_rng(seeds[0]), market_progress)
    events = find_events(path, config)
    panel, n_bad = observe(path, config, np.random.default_rng(seeds[1]))
    if config.options:
        options = options_rows(panel, seed=int(seeds[2].generate_state(1)[0]))
        # appended in arrival order, as the venues' rows are
        panel = pl.concat([panel, options]).sort("known_at", maintain_order=True)
    if progress is not None:
        progress(1.0)
    return SimulationResult(
        panel=panel.select(list(PANEL_SCHEMA)),
        events=events,
        injected_bad_rows=n_bad,
        config=config,
    )


def help_text(width: int = 100) -> str:
    """The mechanism and every parameter with its default, as plain text for ``--help``."""
    lines = [__doc__.strip() if __doc__ else "", ""]
    for title, kind in (
        ("SimulationConfig", SimulationConfig),
        ("VenueSpec", VenueSpec),
        ("AssetSpec", AssetSpec),
    ):
        lines.append(f"{title} parameters (name = default: meaning):")
        for name, default, doc in parameter_table(kind):
            lines.extend(
                textwrap.wrap(
                    f"{name} = {default}: {doc}",
                    width=width,
                    initial_indent="  ",
                    subsequent_indent="      ",
                )
            )
        lines.append("")
    venues = ", ".join(
        f"{v.name} ({v.kind}, {v.leverage_mean:g}x, {v.oi_share:.0%} of OI)" for v in DEFAULT_VENUES
    )
    assets = ", ".join(
        f"{a.symbol} (vol {a.vol_annual:.0%}, beta {a.market_beta:g})" for a in DEFAULT_ASSETS
    )
    lines.extend(textwrap.wrap(f"Default venues: {venues}", width=width))
    lines.extend(textwrap.wrap(f"Default assets: {assets}", width=width))
    return "\n".join(lines)
