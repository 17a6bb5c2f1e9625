"""The hedge policy: a pure function from the cascade probability to a target hedge.

:func:`decide` reads ``(probability, signals, state, params)`` and returns a
:class:`Decision` that carries the next :class:`PolicyState`. No I/O, no clock: time is
the bar's ``signals.ts``. The hedge is a short perpetual; its size is a *fraction* of the
maximum hedge ``max_usd = min(max_hedge_usd, hedge_ratio_max x beta x portfolio_usd)``.

**Ladder** (the raw target for this bar). Probability levels
``p_exit < p_early < p_elevated < p_high < p_extreme``:

* ``p < p_early``: ``baseline`` (``baseline_fraction``) -- confirmations alone never
  hedge, the model's probability already weighs them;
* otherwise the tier is ``early`` / ``elevated`` / ``high`` by the highest of
  ``p_early``, ``p_elevated``, ``p_high`` reached, and the fraction is
  ``(early_fraction + step_fraction x (levels above early) + confirmation_fraction x
  (confirmations)) x vol_scale``, capped at ``partial_cap`` (< 1);
* ``full`` (1.0) only when ``p >= p_extreme`` and at least ``full_min_confirmations``
  confirmations hold.

Confirmations (a missing reading is not a confirmation): ``xvenue_divergence``
(``oi_div_xvenue >= div_entry``), ``negative_funding_high_oi`` (``funding_8h <
funding_neg_8h`` and ``oi_dev_24h_pct >= oi_high_pct``), ``funding_extreme``
(``|funding_z| >= funding_z_entry``).

**Loss budget**. When ``p >= p_early`` the target is raised, if needed, to the smallest
hedge whose unhedged exposure has an expected cascade loss ``p x move x (beta x
portfolio_usd - hedge)`` of at most ``loss_budget x portfolio_usd``, with the stress move
``max(stress_move_min, stress_k x vol_ann x sqrt(stress_horizon / 1y))`` (never above
the maximum; the reasons say when the budget cannot be met; the tier is then
``loss_budget``). Calm bars stay at baseline.

**Hysteresis**. A raw target above the held one is taken at once. A lower one is taken
only once the exit conditions have held continuously for ``exit_confirm`` (from the first
bar that met them to the current bar): ``p < p_exit``, cross-venue divergence below
``div_exit``, ``|funding_z| < funding_z_exit`` and no negative-funding-with-high-OI
(missing readings count as normalised here, so a feature absent from the data cannot
pin the hedge forever). Since ``p_exit < p_early`` the exit goes back to baseline.

**Stale data**. With fewer than ``min_fresh_venues`` fresh venues, or no probability
(None/NaN), the hedge may grow but is never reduced and the exit clock restarts.

**Limits** (:func:`serving.sizing.limit_trade`): no-trade band ``no_trade_band x
max_usd``, ``min_trade_usd``, and at most ``max_daily_turnover x max_usd`` traded per UTC
day. The held target (state) is the policy's intent; ``hedge_usd`` is the position, which
lags the target while a limit binds.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import NamedTuple

from serving import sizing
from serving.policy_params import PolicyParams

__all__ = [
    "BUDGET_TIER",
    "TIERS",
    "Decision",
    "PolicyParams",
    "PolicyState",
    "Signals",
    "confirmations",
    "decide",
    "with_position",
]

#: the ladder's tiers, lowest first
TIERS: tuple[str, ...] = ("baseline", "early", "elevated", "high", "full")
#: tier of a target raised above the ladder by the loss budget
BUDGET_TIER = "loss_budget"


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
        vol_ann: realised volatility of the hedge instrument, annualised fraction.
        beta: slope of the exposure's returns on the hedge instrument's (rolling).
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
    beta: float | None = None


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
    """

    fraction: float = 0.0
    tier: str = "baseline"
    hedge_usd: float = 0.0
    exit_since: datetime | None = None
    day: date | None = None
    turnover_usd: float = 0.0
    last_change: datetime | None = None
    last_ts: datetime | None = None


@dataclass(frozen=True)
class Decision:
    """The policy's answer for one bar.

    ``target_fraction`` (of the maximum) and ``target_usd`` are the policy's target;
    ``trade_usd`` is the change of the short hedge to send now (``+`` sell more perp,
    ``-`` buy back; 0.0 when ``trade`` is false); ``hedge_usd`` is the hedge after it.
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


def confirmations(signals: Signals, params: PolicyParams) -> tuple[str, ...]:
    """Names of the confirmations that hold at this bar (missing readings never do)."""
    return _confirmed(_Readings.of(signals, params), params)


class _Readings(NamedTuple):
    """The readings the confirmations and the exit test share, read once per bar:
    divergence and funding z (finite or None), negative funding with high OI."""

    div: float | None
    z: float | None
    negative_funding_high_oi: bool

    @classmethod
    def of(cls, signals: Signals, params: PolicyParams) -> _Readings:
        return cls(
            sizing.finite_or_none(signals.oi_div_xvenue),
            sizing.finite_or_none(signals.funding_z),
            _negative_funding_high_oi(signals, params),
        )


def _confirmed(r: _Readings, params: PolicyParams) -> tuple[str, ...]:
    out = []
    if r.div is not None and r.div >= params.div_entry:
        out.append("xvenue_divergence")
    if r.negative_funding_high_oi:
        out.append("negative_funding_high_oi")
    if r.z is not None and abs(r.z) >= params.funding_z_entry:
        out.append("funding_extreme")
    return tuple(out)


def decide(
    probability: float | None, signals: Signals, state: PolicyState, params: PolicyParams
) -> Decision:
    """Target hedge and order for one bar; see the module docstring for the rules.

    ``probability``: calibrated probability of a downside cascade within the label
    horizon, in [0, 1]; None or NaN means no prediction (held like stale data). Raises
    ``ValueError`` for a probability outside [0, 1], a naive or out-of-order
    ``signals.ts``, a negative or non-finite portfolio, or an invalid state.
    """
    p = _check_inputs(probability, signals, state)
    reasons: list[str] = []
    stale = p is None or signals.fresh_venues < params.min_fresh_venues
    if stale:
        reasons.append(
            "no probability: hold, no reduction"
            if p is None
            else f"stale data: {signals.fresh_venues} fresh venues < {params.min_fresh_venues}:"
            " no reduction"
        )
    readings = _Readings.of(signals, params)
    conf = _confirmed(readings, params)
    beta = sizing.effective_beta(
        signals.beta, default=params.beta_default, lo=params.beta_min, hi=params.beta_max
    )
    max_usd = sizing.max_hedge_usd(
        signals.portfolio_usd,
        beta,
        hedge_ratio_max=params.hedge_ratio_max,
        cap_usd=params.max_hedge_usd,
    )
    if p is None:
        raw, raw_tier = params.baseline_fraction, "baseline"
    else:
        raw, raw_tier = _ladder(p, conf, signals, params, reasons)
    if p is not None and p >= params.p_early:
        budget = _budget_fraction(p, signals, beta, max_usd, params, reasons)
        if budget > raw:
            raw, raw_tier = budget, BUDGET_TIER
    target, tier, exit_since = _hysteresis(
        raw, raw_tier, p, stale, readings, signals.ts, state, params, reasons
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
    )


def _negative_funding_high_oi(signals: Signals, params: PolicyParams) -> bool:
    funding = sizing.finite_or_none(signals.funding_8h)
    oi_dev = sizing.finite_or_none(signals.oi_dev_24h_pct)
    return (
        funding is not None
        and oi_dev is not None
        and funding < params.funding_neg_8h
        and oi_dev >= params.oi_high_pct
    )


def _ladder(
    p: float, conf: tuple[str, ...], signals: Signals, params: PolicyParams, reasons: list[str]
) -> tuple[float, str]:
    levels = sum(p >= level for level in (params.p_early, params.p_elevated, params.p_high))
    if levels == 0:
        reasons.append(f"calm: p={p:.3f} < early {params.p_early:.2f}")
        return params.baseline_fraction, "baseline"
    if conf:
        reasons.append("confirmed: " + ", ".join(conf))
    if p >= params.p_extreme and len(conf) >= params.full_min_confirmations:
        reasons.append(
            f"full: p={p:.3f} >= extreme {params.p_extreme:.2f} with {len(conf)} confirmations"
        )
        return 1.0, "full"
    if p >= params.p_extreme:
        reasons.append(
            f"extreme p={p:.3f} but {len(conf)} confirmations < "
            f"{params.full_min_confirmations}: partial only"
        )
    scale = sizing.vol_scale(
        signals.vol_ann, ref=params.vol_ref, lo=params.vol_scale_min, hi=params.vol_scale_max
    )
    fraction = (
        params.early_fraction
        + params.step_fraction * (levels - 1)
        + params.confirmation_fraction * len(conf)
    )
    fraction = max(params.baseline_fraction, min(params.partial_cap, fraction * scale))
    tier = TIERS[levels]
    reasons.append(
        f"{tier}: p={p:.3f}, {len(conf)} confirmations, vol scale {scale:.2f} -> {fraction:.3f}"
    )
    return fraction, tier


def _budget_fraction(
    p: float,
    signals: Signals,
    beta: float,
    max_usd: float,
    params: PolicyParams,
    reasons: list[str],
) -> float:
    if max_usd <= 0:
        return 0.0
    move = sizing.stress_move(
        signals.vol_ann,
        k=params.stress_k,
        horizon=params.stress_horizon,
        floor=params.stress_move_min,
    )
    needed = sizing.loss_budget_usd(
        signals.portfolio_usd, beta, budget=params.loss_budget, move=move, probability=p
    )
    if needed > max_usd:
        reasons.append(
            f"loss budget not met: needs ${needed:,.0f} of hedge, max "
            f"${max_usd:,.0f} (p={p:.3f} x stress move {move:.1%})"
        )
    elif needed > 0:
        reasons.append(
            f"loss budget {params.loss_budget:.1%} with p={p:.3f} x stress move "
            f"{move:.1%} needs >= {needed / max_usd:.3f} of max"
        )
    return min(1.0, needed / max_usd)


def _exit_conditions(p: float | None, r: _Readings, params: PolicyParams) -> list[str]:
    """What still blocks a reduction at this bar (empty: the exit conditions hold)."""
    blocks = []
    if p is None or p >= params.p_exit:
        blocks.append(f"p >= exit {params.p_exit:.2f}")
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
    readings: _Readings,
    ts: datetime,
    state: PolicyState,
    params: PolicyParams,
    reasons: list[str],
) -> tuple[float, str, datetime | None]:
    blocks = ["stale data"] if stale else _exit_conditions(p, readings, params)
    exit_since = None if blocks else (state.exit_since or ts)
    if raw >= state.fraction:
        return raw, raw_tier, exit_since
    if blocks:
        reasons.append(f"holding {state.fraction:.3f} ({state.tier}): " + "; ".join(blocks))
        return state.fraction, state.tier, exit_since
    held_for = ts - (exit_since or ts)
    if held_for < params.exit_confirm:
        reasons.append(
            f"holding {state.fraction:.3f} ({state.tier}): exit conditions met "
            f"for {held_for}, need {params.exit_confirm}"
        )
        return state.fraction, state.tier, exit_since
    reasons.append(
        f"exit: conditions met for {held_for} >= {params.exit_confirm}: "
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
    )
