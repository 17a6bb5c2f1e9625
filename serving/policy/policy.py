"""The hedge policy: a pure function from the cascade probability to a target hedge.

:func:`decide` reads ``(probability, signals, state, params)`` and returns a
:class:`Decision` that carries the next :class:`PolicyState`. No I/O, no clock: time is
the bar's ``signals.ts``. The hedge is a short perpetual; its size is a *fraction* of the
maximum hedge ``max_usd = min(max_hedge_usd, hedge_ratio_max x beta x portfolio_usd)``.

A calibrated probability of a rare event (a 4 h cascade has a base rate of 1-2 %) is
small even when it is ten times its normal level, so the policy never compares it with an
absolute level. It reads the probability as what it means for the loss, in two parts, each
on its own scale, and holds the larger:

**Ordinary risk** (volatility targeting). The tail loss of the unhedged exposure over
``risk_horizon`` is ``z x sigma x sqrt(risk_horizon / 1y) x beta x portfolio`` (``z`` the
normal quantile of ``risk_quantile``, ``sigma`` the volatility forecast
``signals.vol_forecast_ann``, else ``signals.vol_ann``). The part is the smallest hedge
that keeps it within ``loss_budget x portfolio``, so a quiet market stays unhedged.

**The probability the policy reads** is the model's, smoothed over time: ``q = w x
q_prev + (1 - w) x p`` with ``w = 0.5 ** (dt / p_halflife)`` (``dt`` the time since the
previous bar, so the half-life means the same on any bar length; ``p_halflife = 0``: the raw
``p``). A probability that rises for one bar and falls back opens no hedge, and one that
hovers around the entry level does not open and close a full-size hedge on every crossing
(each a round trip of fees and slippage); a rise that persists is followed within a few
half-lives. The entry, the tiers and the exit below all read ``q``; without a probability
(None/NaN) ``q`` is held. It is part of the state, persisted with it.

**Cascade risk** (priced). Per unit of hedge over the cascade horizon ``H =
stress_horizon``, the loss a hedge avoids is ``p x severity`` and holding it costs ``cost``:

* ``severity = max(stress_move_min, k x vol_ann x sqrt(H / 1y))``, the drop a cascade
  brings, with ``k = signals.severity_k`` (fitted on the model's training window and
  carried with the model) or ``stress_k`` when the model carries none;
* ``cost`` = the round trip's fees and slippage (``params.costs``, the ``[costs]`` model:
  taker fee, half-spread and the slippage of the bar's volatility, twice; the size term
  is left out because the live loop does not know the hedge instrument's 24 h volume, so
  the backtest, which charges it, and the live loop decide alike), the funding a short
  *pays* over ``H`` (a negative rate; funding it would receive is reported apart, never a
  reason to hedge), and the forgone drift ``drift_ann x H / 1y``.

The probability threshold is thereby derived, not set: ``p_entry = cost / severity``. At
``p >= p_entry`` the part is ``1 - p_entry / p``, the share of the expected cascade loss
that exceeds the cost of hedging it. Its tier reads the edge ``e = p / p_entry``:
``early`` (1-2), ``elevated`` (2-4), ``high`` (4-8), capped at ``partial_cap``; ``full``
(1.0) at ``e >= 8`` with at least ``full_min_confirmations`` confirmations. A part below
``min_hedge_fraction`` is not taken (``baseline``): such a hedge pays a full round trip
and, held through the exit rules, hours of exposure for little protection (at 0.4 the
part starts at ``e >= 1 / 0.6 = 1.67``). A target set by the ordinary part has tier
``vol_target``; none: ``baseline`` (``baseline_fraction``).

Confirmations (a missing reading is not a confirmation): ``xvenue_divergence``
(``oi_div_xvenue >= div_entry``), ``negative_funding_high_oi`` (``funding_8h <
funding_neg_8h`` and ``oi_dev_24h_pct >= oi_high_pct``), ``funding_extreme``
(``|funding_z| >= funding_z_entry``).

**Hysteresis**. A raw target above the held one is taken at once. A lower one is taken
only when the held target is at least ``min_hold`` old and the exit conditions have held
continuously for ``exit_confirm``: ``p < p_exit = exit_share x p_entry``, cross-venue
divergence below ``div_exit``, ``|funding_z| < funding_z_exit`` and no
negative-funding-with-high-OI (missing readings count as normalised here, so a feature
absent from the data cannot pin the hedge forever).

**Stale data**. With fewer than ``min_fresh_venues`` fresh venues, or no probability
(None/NaN), the hedge may grow but is never reduced and the exit clock restarts.

**Limits** (:func:`oihedge.serving.policy.sizing.limit_trade`): no-trade band ``no_trade_band x
max_usd``, ``min_trade_usd``, and at most ``max_daily_turnover x max_usd`` traded per UTC
day. The held target (state) is the policy's intent; ``hedge_usd`` is the position, which
lags the target while a limit binds.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta

from oihedge.serving.policy import sizing
from oihedge.serving.policy.params import PolicyParams
from oihedge.serving.policy.pricing import (
    Pricing,
    Readings,
    confirmations,
    confirmed,
    pricing,
)
from oihedge.serving.policy.signals import Signals

__all__ = [
    "TIERS",
    "VOL_TIER",
    "Decision",
    "PolicyParams",
    "PolicyState",
    "Pricing",
    "Signals",
    "confirmations",
    "decide",
    "pricing",
    "smooth_probability",
    "with_position",
]

#: the cascade tiers, lowest first
TIERS: tuple[str, ...] = ("baseline", "early", "elevated", "high", "full")
#: tier of a target set by the ordinary-risk (volatility) part
VOL_TIER = "vol_target"
#: lower edge ``p / p_entry`` of the tiers above baseline (early, elevated, high, full)
EDGES: tuple[float, ...] = (1.0, 2.0, 4.0, 8.0)


@dataclass(frozen=True)
class PolicyState:
    """What the policy remembers between bars (persist it; start from ``PolicyState()``).

    Attributes:
        fraction: held target, fraction of the maximum hedge.
        tier: tier of the held target.
        hedge_usd: current short hedge notional, USD (the caller may replace it with the
            filled position).
        exit_since: first bar of the current unbroken run of exit conditions, or None.
        day: UTC day ``turnover_usd`` belongs to.
        turnover_usd: USD traded on ``day``.
        last_change: bar at which the held target last changed.
        last_ts: last bar decided.
        p_smooth: the smoothed probability the policy read at ``last_ts`` (None before
            the first probability).
    """

    fraction: float = 0.0
    tier: str = "baseline"
    hedge_usd: float = 0.0
    exit_since: datetime | None = None
    day: date | None = None
    turnover_usd: float = 0.0
    last_change: datetime | None = None
    last_ts: datetime | None = None
    p_smooth: float | None = None


@dataclass(frozen=True)
class Decision:
    """The policy's answer for one bar.

    ``target_fraction`` (of the maximum) and ``target_usd`` are the policy's target;
    ``trade_usd`` is the change of the short hedge to send now (``+`` sell more perp,
    ``-`` buy back; 0.0 when ``trade`` is false); ``hedge_usd`` is the hedge after it.
    ``pricing`` holds the derived levels and the forecast losses behind the target;
    ``reasons`` are human-readable lines for the decision log.
    """

    target_fraction: float
    target_usd: float
    max_usd: float
    tier: str
    trade_usd: float
    trade: bool
    hedge_usd: float
    confirmations: tuple[str, ...]
    reasons: tuple[str, ...]
    state: PolicyState
    pricing: Pricing


def decide(
    probability: float | None, signals: Signals, state: PolicyState, params: PolicyParams
) -> Decision:
    """Target hedge and order for one bar; see the module docstring for the rules.

    ``probability``: calibrated probability of a downside cascade within the label
    horizon, in [0, 1]; None or NaN means no prediction (held like stale data). Raises
    ``ValueError`` for a probability outside [0, 1], a naive or out-of-order
    ``signals.ts``, a negative or non-finite portfolio, or an invalid state.
    """
    p_raw = _check_inputs(probability, signals, state)
    p_smooth = smooth_probability(p_raw, signals.ts, state, params.p_halflife)
    p = None if p_raw is None else p_smooth
    reasons: list[str] = []
    if p is not None and p != p_raw:
        reasons.append(f"p {p_raw:.4f}, smoothed (half-life {params.p_halflife}) {p:.4f}")
    stale = p is None or signals.fresh_venues < params.min_fresh_venues
    if stale:
        reasons.append(
            "no probability: hold, no reduction"
            if p is None
            else f"stale data: {signals.fresh_venues} fresh venues < {params.min_fresh_venues}:"
            " no reduction"
        )
    readings = Readings.of(signals, params)
    conf = confirmed(readings, params)
    beta = sizing.effective_beta(
        signals.beta, default=params.beta_default, lo=params.beta_min, hi=params.beta_max
    )
    max_usd = sizing.max_hedge_usd(
        signals.portfolio_usd,
        beta,
        hedge_ratio_max=params.hedge_ratio_max,
        cap_usd=params.max_hedge_usd,
    )
    terms = pricing(signals, beta, params)
    if p is None:
        raw, raw_tier = params.baseline_fraction, "baseline"
    else:
        raw, raw_tier = _cascade(p, conf, terms, params, reasons)
    vol_part = _vol_fraction(terms, signals, beta, max_usd, params, reasons)
    if vol_part > raw:
        raw, raw_tier = vol_part, VOL_TIER
    target, tier, exit_since = _hysteresis(
        raw, raw_tier, p, stale, readings, signals.ts, state, params, terms, reasons
    )
    target_usd = target * max_usd
    day = signals.ts.astimezone(UTC).date()
    used = state.turnover_usd if state.day == day else 0.0
    trade_usd, limit_reasons = sizing.limit_trade(
        target_usd,
        state.hedge_usd,
        allow_reduce=not stale,
        band_usd=params.no_trade_band * max_usd,
        min_trade_usd=params.min_trade_usd,
        turnover_left_usd=params.max_daily_turnover * max_usd - used,
    )
    reasons.extend(limit_reasons)
    hedge_after = max(0.0, state.hedge_usd + trade_usd)
    reasons.append(
        f"target {target:.3f} ({tier}) = ${target_usd:,.0f} of max ${max_usd:,.0f};"
        f" hedge ${state.hedge_usd:,.0f} -> ${hedge_after:,.0f}"
    )
    new_state = PolicyState(
        fraction=target,
        tier=tier,
        hedge_usd=hedge_after,
        exit_since=exit_since,
        day=day,
        turnover_usd=used + abs(trade_usd),
        last_change=signals.ts if target != state.fraction else state.last_change,
        last_ts=signals.ts,
        p_smooth=p_smooth,
    )
    return Decision(
        target_fraction=target,
        target_usd=target_usd,
        max_usd=max_usd,
        tier=tier,
        trade_usd=trade_usd,
        trade=trade_usd != 0.0,
        hedge_usd=hedge_after,
        confirmations=conf,
        reasons=tuple(reasons),
        state=new_state,
        pricing=terms,
    )


def smooth_probability(
    p: float | None, ts: datetime, state: PolicyState, halflife: timedelta
) -> float | None:
    """The smoothed probability at ``ts`` (see the module docstring): the state's value
    decayed by the time since its bar toward ``p``; ``p`` itself on the first bar, after a
    gap with no smoothed value, or with a zero half-life; the state's value, unchanged,
    when ``p`` is None."""
    previous = state.p_smooth
    if p is None or previous is None or state.last_ts is None or halflife <= timedelta(0):
        return previous if p is None else p
    w = 0.5 ** ((ts - state.last_ts) / halflife)
    return p + w * (previous - p)  # = w x previous + (1 - w) x p, exactly p when they agree


def _cascade(
    p: float, conf: tuple[str, ...], terms: Pricing, params: PolicyParams, reasons: list[str]
) -> tuple[float, str]:
    edge = p / terms.p_entry if terms.p_entry > 0 else math.inf
    priced = (
        f"p={p:.4f} x severity {terms.severity:.2%} = {p * terms.severity:.3%}"
        f" vs cost {terms.cost:.3%} (p_entry {terms.p_entry:.4f})"
    )
    level = sum(edge >= e for e in EDGES)
    if level == 0:
        reasons.append(f"calm: {priced}")
        return params.baseline_fraction, "baseline"
    if conf:
        reasons.append("confirmed: " + ", ".join(conf))
    if level == len(EDGES) and len(conf) >= params.full_min_confirmations:
        reasons.append(f"full: {priced}, edge {edge:.1f} with {len(conf)} confirmations")
        return 1.0, "full"
    fraction = min(params.partial_cap, 1.0 - 1.0 / edge)
    tier = TIERS[min(level, len(EDGES) - 1)]
    if fraction < params.min_hedge_fraction:
        reasons.append(
            f"calm: {priced}, edge {edge:.2f}: hedge {fraction:.3f}"
            f" < min_hedge_fraction {params.min_hedge_fraction:.2f}"
        )
        return params.baseline_fraction, "baseline"
    fraction = max(params.baseline_fraction, fraction)
    if level == len(EDGES):
        reasons.append(
            f"edge {edge:.1f} but {len(conf)} confirmations < "
            f"{params.full_min_confirmations}: partial only"
        )
    reasons.append(f"{tier}: {priced}, edge {edge:.1f} -> {fraction:.3f}")
    return fraction, tier


def _vol_fraction(
    terms: Pricing,
    signals: Signals,
    beta: float,
    max_usd: float,
    params: PolicyParams,
    reasons: list[str],
) -> float:
    """The ordinary part: the smallest hedge keeping the tail loss within the budget."""
    if max_usd <= 0 or not terms.tail_loss > params.loss_budget:
        return 0.0
    exposure = beta * signals.portfolio_usd
    needed = exposure * (1.0 - params.loss_budget / terms.tail_loss)
    fraction = min(params.partial_cap, needed / max_usd)
    reasons.append(
        f"vol target: tail loss {terms.tail_loss:.2%} over {params.risk_horizon}"
        f" > budget {params.loss_budget:.1%} -> {fraction:.3f}"
    )
    return fraction


def _exit_conditions(
    p: float | None, r: Readings, params: PolicyParams, terms: Pricing
) -> list[str]:
    """What still blocks a reduction at this bar (empty: the exit conditions hold)."""
    blocks = []
    if p is None or p >= terms.p_exit:
        blocks.append(f"p >= exit {terms.p_exit:.4f}")
    if r.div is not None and r.div >= params.div_exit:
        blocks.append(f"divergence {r.div:.3f} >= {params.div_exit:.3f}")
    if r.z is not None and abs(r.z) >= params.funding_z_exit:
        blocks.append(f"|funding z| {abs(r.z):.2f} >= {params.funding_z_exit:.2f}")
    if r.negative_funding_high_oi:
        blocks.append("negative funding with high OI")
    return blocks


def _hysteresis(
    raw: float,
    raw_tier: str,
    p: float | None,
    stale: bool,
    readings: Readings,
    ts: datetime,
    state: PolicyState,
    params: PolicyParams,
    terms: Pricing,
    reasons: list[str],
) -> tuple[float, str, datetime | None]:
    blocks = ["stale data"] if stale else _exit_conditions(p, readings, params, terms)
    exit_since = None if blocks else (state.exit_since or ts)
    if raw >= state.fraction:
        return raw, raw_tier, exit_since
    if blocks:
        reasons.append(f"holding {state.fraction:.3f} ({state.tier}): " + "; ".join(blocks))
        return state.fraction, state.tier, exit_since
    held = ts - state.last_change if state.last_change is not None else params.min_hold
    if held < params.min_hold:
        reasons.append(
            f"holding {state.fraction:.3f} ({state.tier}): held for {held},"
            f" minimum {params.min_hold}"
        )
        return state.fraction, state.tier, exit_since
    normal_for = ts - (exit_since or ts)
    if normal_for < params.exit_confirm:
        reasons.append(
            f"holding {state.fraction:.3f} ({state.tier}): exit conditions met "
            f"for {normal_for}, need {params.exit_confirm}"
        )
        return state.fraction, state.tier, exit_since
    reasons.append(
        f"exit: conditions met for {normal_for} >= {params.exit_confirm}: "
        f"{state.fraction:.3f} -> {raw:.3f}"
    )
    return raw, raw_tier, exit_since


def _check_inputs(probability: float | None, signals: Signals, state: PolicyState) -> float | None:
    if signals.ts.tzinfo is None:
        raise ValueError(f"signals.ts must be timezone-aware, got {signals.ts!r}")
    if state.last_ts is not None and signals.ts < state.last_ts:
        raise ValueError(
            f"signals.ts {signals.ts.isoformat()} is before the state's last "
            f"bar {state.last_ts.isoformat()}"
        )
    if not (math.isfinite(signals.portfolio_usd) and signals.portfolio_usd >= 0):
        raise ValueError(
            f"portfolio_usd must be a finite number >= 0, got {signals.portfolio_usd!r}"
        )
    if not 0 <= state.fraction <= 1:
        raise ValueError(f"state.fraction must be in [0, 1], got {state.fraction!r}")
    if not (math.isfinite(state.hedge_usd) and state.hedge_usd >= 0):
        raise ValueError(f"state.hedge_usd must be a finite number >= 0, got {state.hedge_usd!r}")
    if probability is None or math.isnan(probability):
        return None
    if not 0 <= probability <= 1:
        raise ValueError(f"probability must be in [0, 1], got {probability!r}")
    return float(probability)


def with_position(state: PolicyState, hedge_usd: float) -> PolicyState:
    """``state`` with the hedge replaced by the actually filled position, USD (>= 0)."""
    if not (math.isfinite(hedge_usd) and hedge_usd >= 0):
        raise ValueError(f"hedge_usd must be a finite number >= 0, got {hedge_usd!r}")
    return PolicyState(  # not dataclasses.replace: this runs per symbol every bar
        fraction=state.fraction,
        tier=state.tier,
        hedge_usd=float(hedge_usd),
        exit_since=state.exit_since,
        day=state.day,
        turnover_usd=state.turnover_usd,
        last_change=state.last_change,
        last_ts=state.last_ts,
        p_smooth=state.p_smooth,
    )
