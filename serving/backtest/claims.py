"""The source article's claims, each measured on the backtest's data (issue #16).

:func:`measure_claims` turns a finished :class:`~oihedge.serving.backtest.run.PanelBacktest` into
one :class:`Claim` per claim of the article; :func:`claims_markdown` and
:func:`claims_json` write them for ``oihedge backtest``. A claim is measured on whatever
data the backtest ran on (the simulator, whose cascades are known, or the real panel,
whose cascades are the label events), so a claim may hold on one and fail on the other.

The divergence claim's skill (precision, recall, base rate of an alarm) is measured by
:func:`oihedge.serving.backtest.divergence.divergence_skill`.

No look-ahead concern applies: this is a report on a finished backtest.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import timedelta
from typing import TYPE_CHECKING

import numpy as np
import polars as pl

from oihedge.serving.backtest.divergence import DivergenceSkill, divergence_skill, ratio
from oihedge.serving.backtest.engine import BacktestSettings, run_backtest
from oihedge.serving.backtest.report import daily_returns
from oihedge.serving.policy.params import PolicyParams

if TYPE_CHECKING:
    from oihedge.serving.backtest.run import PanelBacktest

__all__ = [
    "CLAIM_SIZES_USD",
    "Claim",
    "claims_json",
    "claims_markdown",
    "measure_claims",
]

#: the article's divergence level, percentage points of ``oi_div_xvenue_4h``
CLAIM_DIVERGENCE_PP = 8.0
#: the article's accuracy of that signal (read as precision)
CLAIM_ACCURACY = 0.73
#: the portfolio sizes (USD) of the notional claim
CLAIM_SIZES_USD: tuple[float, ...] = (1_000, 10_000, 100_000, 1_000_000, 10_000_000)
#: how far (fraction of the cascade loss) the small sizes' offset must fall short
SIZE_GAP = 0.10

Details = dict[str, float | int | str | None]


@dataclass(frozen=True)
class Claim:
    """One claim: the article's words, how it is measured here, the result.

    ``holds``: None when the data cannot measure it (``value`` says why); ``details``:
    the raw numbers (fractions, USD, counts), for the JSON.
    """

    claim: str
    measure: str
    value: str
    holds: bool | None
    details: Details


# --- formatting -------------------------------------------------------------------------


def _num(x: float | int | None) -> float | int | None:
    """A JSON-safe number: None for NaN / infinity."""
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return None
    return x


def _pct(x: float | None, digits: int = 1) -> str:
    return "n.a." if x is None or not math.isfinite(x) else f"{100 * x:.{digits}f} %"


def _skill_details(skill: DivergenceSkill, prefix: str) -> Details:
    return {f"{prefix}{k}": _num(v) for k, v in vars(skill).items() if k != "threshold_pp"} | {
        f"{prefix}threshold_pp": skill.threshold_pp
    }


def _row(table: pl.DataFrame, policy: str) -> dict[str, float] | None:
    rows = table.filter(pl.col("policy") == policy).to_dicts()
    return rows[0] if rows else None


# --- the claims -------------------------------------------------------------------------


def _claim_divergence(
    run: PanelBacktest, events: pl.DataFrame, horizon: timedelta, symbols: Sequence[str]
) -> Claim:
    """Claim 1: 8 pp divergence precedes liquidation events with 73 % accuracy."""
    r = run.result
    skill = divergence_skill(
        run.features,
        events,
        threshold_pp=CLAIM_DIVERGENCE_PP,
        horizon=horizon,
        start=r.start,
        end=r.end,
        symbols=symbols,
    )
    hours = horizon / timedelta(hours=1)
    value = (
        f"precision {_pct(skill.precision)} ({skill.hits} of {skill.episodes} crossings "
        f"followed by an event within {hours:g} h; base rate {_pct(skill.base_rate)}); "
        f"recall {_pct(skill.recall)} ({skill.caught} of {skill.events} events)"
    )
    holds = None if skill.episodes == 0 else skill.precision >= CLAIM_ACCURACY
    if skill.episodes == 0:
        value += "; no crossing of 8 pp in the window: precision cannot be measured"
    elif skill.events == 0:
        holds, value = None, value + "; no cascade event in the window: nothing to precede"
    return Claim(
        claim="8% cross-venue OI divergence precedes liquidation events with 73% accuracy",
        measure=(
            f"Accuracy read as precision: the share of crossings of oi_div_xvenue_4h to "
            f">= 8 pp (from below or missing) followed by a cascade start of the same "
            f"symbol within {hours:g} h (crossings with less than {hours:g} h of window "
            f"after them excluded); recall and the random-bar base rate beside it; holds "
            f"when precision >= 73 %."
        ),
        value=value,
        holds=holds,
        details=_skill_details(skill, ""),
    )


def _worst_day(run: PanelBacktest, policy: str) -> float:
    """Worst UTC-day equity return of ``policy`` as a positive fraction (0: no loss)."""
    equity = run.result.runs[policy].equity
    returns = daily_returns(equity["ts"].dt.epoch("us").to_numpy(), equity["equity_usd"].to_numpy())
    return max(0.0, -float(returns.min())) if returns.size else math.nan


def _claim_worst_session(run: PanelBacktest, table: pl.DataFrame) -> Claim:
    """Claim 2: the worst single-session loss falls from 23 % to under 8 %."""
    words = "the worst single-session loss falls from 23% to under 8%"
    measure = (
        "Worst 24 h equity loss (and worst UTC-day loss) of the unhedged portfolio "
        "(no_hedge) against the model policy; holds when no_hedge's worst 24 h loss is "
        ">= 20 % and the model's < 8 %."
    )
    nh, model = _row(table, "no_hedge"), _row(table, "model")
    if nh is None or model is None:
        return Claim(words, measure, "needs the model and no_hedge runs", None, {})
    details: Details = {
        "no_hedge_worst_24h_loss": _num(nh["worst_24h_loss"]),
        "model_worst_24h_loss": _num(model["worst_24h_loss"]),
        "no_hedge_worst_day_loss": _num(_worst_day(run, "no_hedge")),
        "model_worst_day_loss": _num(_worst_day(run, "model")),
    }
    value = (
        f"worst 24 h loss {_pct(nh['worst_24h_loss'])} unhedged -> "
        f"{_pct(model['worst_24h_loss'])} with the model; worst UTC day "
        f"{_pct(details['no_hedge_worst_day_loss'])} -> "  # type: ignore[arg-type]
        f"{_pct(details['model_worst_day_loss'])}"  # type: ignore[arg-type]
    )
    holds = nh["worst_24h_loss"] >= 0.20 and model["worst_24h_loss"] < 0.08
    if nh["worst_24h_loss"] < 0.20:
        value += " (the unhedged portfolio never lost 20 % in 24 h here: the claim's start)"
    return Claim(words, measure, value, bool(holds), details)


def _claim_continuous(table: pl.DataFrame) -> Claim:
    """Claim 3: continuous rebalancing on live OI beats scheduled rebalancing."""
    words = "continuous rebalancing on live OI beats scheduled rebalancing"
    measure = (
        "The model policy (decides every bar) against the same policy re-decided once per "
        "schedule (scheduled): holds when the model has the lower worst 24 h loss and the "
        "higher cascade_loss_offset."
    )
    model, sched = _row(table, "model"), _row(table, "scheduled")
    if model is None or sched is None:
        return Claim(words, measure, "needs the model and scheduled runs", None, {})
    keys = ("worst_24h_loss", "cascade_loss_offset", "cascades_protected", "fees_slippage_annual")
    details: Details = {
        f"{p}_{k}": _num(row[k])
        for p, row in (("model", model), ("scheduled", sched))
        for k in keys
    }
    value = "; ".join(f"{k} {_pct(model[k])} vs {_pct(sched[k])}" for k in keys)
    offsets = (model["cascade_loss_offset"], sched["cascade_loss_offset"])
    if not all(math.isfinite(x) for x in offsets):
        return Claim(
            words, measure, value + " (no cascade to measure the offset on)", None, details
        )
    holds = model["worst_24h_loss"] < sched["worst_24h_loss"] and offsets[0] > offsets[1]
    return Claim(words, measure, f"model vs scheduled: {value}", bool(holds), details)


def _rerun(
    run: PanelBacktest, settings: BacktestSettings, events: pl.DataFrame, **changes: object
) -> dict[str, dict[str, float]]:
    """The metrics rows (by policy) of a rerun over the backtest's window with ``changes``
    to ``settings`` (no labels: neither the model nor no_hedge reads them)."""
    changed = replace(settings, model_budgets=(), **changes)  # type: ignore[arg-type]
    result = run_backtest(
        run.market,
        run.features,
        changed,
        probability=run.probability,
        start=run.result.start,
        end=run.result.end,
    )
    return {row["policy"]: row for row in result.table(events=events).to_dicts()}


def _size_rows(
    run: PanelBacktest, settings: BacktestSettings, events: pl.DataFrame
) -> dict[float, dict[str, float]]:
    """Portfolio size (USD) -> the model's trades, time_hedged, cascade_loss_offset,
    fees_slippage_annual and worst 24 h loss / no_hedge's at that size."""
    out: dict[float, dict[str, float]] = {}
    for size in CLAIM_SIZES_USD:
        rows = _rerun(
            run, settings, events, portfolio_usd=float(size), policies=("model", "no_hedge")
        )
        model, unhedged = rows["model"], rows["no_hedge"]
        keys = ("trades", "time_hedged", "cascade_loss_offset", "fees_slippage_annual")
        out[size] = {k: model[k] for k in keys} | {
            "worst_24h_vs_unhedged": ratio(model["worst_24h_loss"], unhedged["worst_24h_loss"])
        }
    return out


def _claim_notional(run: PanelBacktest, settings: BacktestSettings, events: pl.DataFrame) -> Claim:
    """Claim 4: the policy is most effective above $10,000 of notional."""
    rows = _size_rows(run, settings, events)
    small = [rows[s]["cascade_loss_offset"] for s in rows if s <= 10_000]
    large = [rows[s]["cascade_loss_offset"] for s in rows if s >= 100_000]
    details: Details = {
        f"usd_{int(size)}_{k}": _num(v) for size, row in rows.items() for k, v in row.items()
    }
    value = "; ".join(
        f"${size:,.0f}: offset {_pct(r['cascade_loss_offset'])}, {int(r['trades'])} trades, "
        f"hedged {_pct(r['time_hedged'])} of bars, fees+slippage "
        f"{_pct(r['fees_slippage_annual'], 2)}/y, worst 24 h "
        f"{_pct(r['worst_24h_vs_unhedged'], 0)} of unhedged"
        for size, r in rows.items()
    )
    holds: bool | None = None
    if all(math.isfinite(x) for x in small + large):
        details["large_median_offset"] = float(np.median(large))
        holds = min(small) <= float(np.median(large)) - SIZE_GAP
    else:
        value += " (no cascade to measure the offset on)"
    return Claim(
        claim="the policy is most effective above $10,000 of notional "
        "(minimum order sizes and costs)",
        measure=(
            "The model policy rerun alone at portfolios of $1k, $10k, $100k, $1M and $10M "
            "(its min_trade_usd blocks small hedges); holds when the lower cascade_loss_offset "
            f"of $1k and $10k is at least {SIZE_GAP:.0%} of the cascade loss below the median "
            "offset of the sizes >= $100k."
        ),
        value=value,
        holds=holds,
        details=details,
    )


def _majors_params(settings: BacktestSettings, altcoins: Sequence[str]) -> PolicyParams:
    """The majors' policy parameters: a non-altcoin symbol's (weighted first), else the
    defaults (which are the majors')."""
    majors = [s for s in (*settings.weights, *settings.params) if s not in altcoins]
    return settings.params[majors[0]] if majors else PolicyParams()


def _altcoin_runs(
    run: PanelBacktest, settings: BacktestSettings, events: pl.DataFrame, alts: Sequence[str]
) -> dict[str, dict[str, float]]:
    """The model policy on the altcoins alone (their long notional as in the run), with
    their own parameters (``own``) and with the majors' (``majors``, keeping each
    altcoin's hedge_ratio_max and max_hedge_usd): fees_slippage_annual and
    cascade_loss_offset."""
    major = _majors_params(settings, alts)
    borrowed = {
        a: replace(
            major,
            hedge_ratio_max=settings.params[a].hedge_ratio_max,
            max_hedge_usd=settings.params[a].max_hedge_usd,
        )
        for a in alts
    }
    common = {
        "portfolio_usd": sum(settings.long_usd(a) for a in alts),
        "weights": {a: settings.weights[a] for a in alts},
        "policies": ("model",),
    }
    out = {}
    for name, params in (("own", settings.params), ("majors", {**settings.params, **borrowed})):
        model = _rerun(run, settings, events, params=params, **common)["model"]
        out[name] = {k: model[k] for k in ("fees_slippage_annual", "cascade_loss_offset")}
    return out


def _efficiency_kept(runs: Mapping[str, Mapping[str, float]]) -> bool | None:
    """Do the altcoin parameters keep at least the majors' cascade_loss_offset per unit of
    fees (cross-multiplied, so zero fees need no division)? None without an offset."""
    own, major = runs["own"], runs["majors"]
    offsets = (own["cascade_loss_offset"], major["cascade_loss_offset"])
    if not all(math.isfinite(x) for x in offsets):
        return None
    fees = (own["fees_slippage_annual"], major["fees_slippage_annual"])
    if max(fees) <= 0:  # no cost on either side: the offsets alone
        return bool(offsets[0] >= offsets[1])
    return bool(offsets[0] * fees[1] >= offsets[1] * fees[0] - 1e-12)


def _altcoin_skills(
    run: PanelBacktest, events: pl.DataFrame, horizon: timedelta, alts: Sequence[str], wide: float
) -> dict[str, DivergenceSkill]:
    """Divergence skill of majors / altcoins at 8 pp and at the altcoins' ``wide`` pp."""
    majors = [s for s in run.result.settings.weights if s not in alts]
    r = run.result
    return {
        f"{group}_{pp:g}pp_": divergence_skill(
            run.features,
            events,
            threshold_pp=pp,
            horizon=horizon,
            start=r.start,
            end=r.end,
            symbols=symbols,
        )
        for group, symbols in (("majors", majors), ("altcoins", alts))
        for pp in (CLAIM_DIVERGENCE_PP, wide)
    }


def _claim_altcoins(
    run: PanelBacktest,
    settings: BacktestSettings,
    events: pl.DataFrame,
    horizon: timedelta,
    altcoins: Sequence[str],
) -> Claim:
    """Claim 5: altcoins need wider thresholds."""
    words = "altcoins need wider thresholds"
    measure = (
        "Precision of divergence crossings for majors vs altcoins at 8 pp and at the "
        "altcoins' div_entry; the model rerun on the altcoins with their own parameters vs "
        "the majors' (keeping their hedge_ratio_max and max_hedge_usd); holds when the "
        "altcoins' precision at 8 pp is below the majors' and their own parameters keep at "
        "least the majors' cascade_loss_offset per unit of fees_slippage_annual."
    )
    alts = [s for s in run.result.settings.weights if s in altcoins]
    if not alts:
        return Claim(words, measure, "no altcoin in the run: cannot be measured", None, {})
    wide = 100 * settings.params[alts[0]].div_entry
    skills = _altcoin_skills(run, events, horizon, alts, wide)
    runs = _altcoin_runs(run, settings, events, alts)
    details: Details = {"altcoins": ", ".join(alts), "altcoin_div_entry_pp": wide}
    for prefix, skill in skills.items():
        details |= {prefix + k: _num(getattr(skill, k)) for k in ("episodes", "hits", "precision")}
    for name, row in runs.items():
        details |= {f"{name}_params_{k}": _num(v) for k, v in row.items()}
    value = "precision " + ", ".join(
        f"{p.rstrip('_').replace('_', ' ')} {_pct(s.precision)} ({s.hits}/{s.episodes})"
        for p, s in skills.items()
    )
    value += "; altcoins with own vs majors' parameters: " + ", ".join(
        f"{k} {_pct(runs['own'][k], 2)} vs {_pct(runs['majors'][k], 2)}" for k in runs["own"]
    )
    lower = skills[f"altcoins_{CLAIM_DIVERGENCE_PP:g}pp_"].precision
    higher = skills[f"majors_{CLAIM_DIVERGENCE_PP:g}pp_"].precision
    kept = _efficiency_kept(runs)
    if kept is None or not (math.isfinite(lower) and math.isfinite(higher)):
        return Claim(
            words, measure, value + " (a precision or offset is not measurable)", None, details
        )
    return Claim(words, measure, value, bool(lower < higher and kept), details)


def measure_claims(
    run: PanelBacktest,
    settings: BacktestSettings,
    *,
    events: pl.DataFrame,
    horizon: timedelta,
    altcoins: Sequence[str],
) -> list[Claim]:
    """Every claim of the article measured on ``run`` (module docstring; each claim's
    ``measure`` says how).

    ``events``: the cascade events (``symbol``, ``start``, ``trough_ts``, datetime[us,
    UTC]) the table's cascade metrics use; ``horizon``: how soon after a divergence
    crossing an event counts as announced (the label horizon); ``altcoins``: the symbols
    with the altcoin parameters. Reruns the model policy at five portfolio sizes and on
    the altcoins (a few backtests of one or two policies)."""
    table = run.result.table(events=events)
    symbols = list(run.result.settings.weights)
    return [
        _claim_divergence(run, events, horizon, symbols),
        _claim_worst_session(run, table),
        _claim_continuous(table),
        _claim_notional(run, settings, events),
        _claim_altcoins(run, settings, events, horizon, altcoins),
    ]


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def claims_markdown(claims: Sequence[Claim], *, title: str) -> str:
    """A markdown section: ``title`` and a table claim | measured how | result | holds
    (yes / no / n.a.)."""
    verdict = {True: "yes", False: "no", None: "n.a."}
    lines = [
        f"## {title}",
        "",
        "| claim | measured how | result | holds |",
        "| --- | --- | --- | --- |",
    ]
    lines += [
        f"| {_cell(c.claim)} | {_cell(c.measure)} | {_cell(c.value)} | {verdict[c.holds]} |"
        for c in claims
    ]
    return "\n".join(lines) + "\n"


def claims_json(claims: Sequence[Claim]) -> list[dict[str, object]]:
    """The claims as JSON-ready dicts (``claim``, ``measure``, ``value``, ``holds``,
    ``details``; NaN and infinities as None)."""
    return [
        {
            "claim": c.claim,
            "measure": c.measure,
            "value": c.value,
            "holds": c.holds,
            "details": {k: _num(v) if not isinstance(v, str) else v for k, v in c.details.items()},
        }
        for c in claims
    ]
