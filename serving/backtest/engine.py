"""The hedge backtest engine: a long portfolio plus short perp hedges, bar by bar.

The same engine, cost model and limits run every policy on the same data
(:func:`policy_names` lists them in report order):

* ``model``: the hedge policy :func:`oihedge.serving.policy.policy.decide` fed with a probability
  series (and the severity fitted with each model); ``model_budget_<pct>``: the same at
  another risk budget (``loss_budget``), the model's points on the hedging frontier;
* ``scheduled``: the same policy re-decided only every ``schedule`` (24 h), the hedge held
  in between: what continuous rebalancing on live OI is worth;
* ``no_hedge``; ``static_<pct>``: ``<pct>`` % of the maximum hedge all the time
  (``static_fractions``), rebalanced only when the drift exceeds the no-trade band: the
  static line of the frontier;
* ``static_matched``: the model policy's own average size without its timing (per symbol,
  the mean of the model's ``target_fraction`` over the window, held all the time, opened
  even when smaller than the no-trade band or the minimum trade); the gap between the
  ``model`` and ``static_matched`` rows is what the model's timing is worth;
* ``vol_target_<pct>``: volatility targeting, the standard non-ML dynamic hedge (Moreira
  and Muir 2017): ``clip(1 - sigma_target / sigma_forecast, 0, 1)`` of the maximum hedge
  with ``sigma_target = <pct>`` % a year (``vol_targets``) and the policy's volatility
  forecast (:func:`oihedge.serving.policy.signals.vol_forecast`); ``vol_target_matched``: the target
  whose mean hedge equals the model policy's, per symbol (found by bisection);
* ``fixed_rule``: full hedge once ``oi_div_xvenue_4h >= rule_entry_pp``, 8 pp; back to
  baseline once it has stayed below ``rule_exit_pp``, 4 pp, or been missing, for
  ``rule_exit_confirm``, 2 h (the shape of the policy's own divergence exit);
* ``perfect_foresight``: full hedge decided at every bar whose label says a cascade
  follows within the horizon: it reads the future, an upper bound on *timing the label*;
  it is flat between label windows, so it is not a bound on every metric.

The ``*_matched`` sizes are known only at the window's end: benchmarks like perfect
foresight, not tradable policies; they read the model run, so ``model`` comes first. With
a same-asset hedge the static hedges never drift from their fraction (hedge and long move
with one price), so each trades once per symbol unless ``max_hedge_usd`` binds.

**Portfolio.** ``portfolio_usd x weight`` (weights normalised to sum to 1) is bought in
each symbol at the first bar of the window and held (constant units). The hedge of each
symbol is a short of its own perpetual; its maximum is the policy's
``min(max_hedge_usd, hedge_ratio_max x beta x long value)`` (per-symbol
:class:`~oihedge.serving.policy.params.PolicyParams`, majors or altcoin). Equity =
``portfolio_usd`` + long PnL + hedge PnL - fees - slippage - funding.

**Timing** (bar ``i`` closes at ``t_i``; every policy alike):

1. at ``t_i`` the order decided at ``t_{i-1}`` fills at the reference ``price`` of bar
   ``i`` (no look-ahead: one bar of latency); a bar without a price leaves the order
   pending until the next bar with one (orders decided meanwhile are netted into it);
2. the position after that fill is held over ``(t_i, t_{i+1}]``;
3. the policy decides at ``t_i`` from what is known at ``t_i`` (features, probability,
   the position including any pending order, marked at ``t_i``); its order is sized in
   base units at the ``t_i`` mark (``trade_usd / mark``) and fills at step 1 of the next
   bar with a price.

**PnL over** ``(t_{i-1}, t_i]`` (booked at ``t_i``): long ``units x (m_i - m_{i-1})``,
hedge ``-q_{i-1} x (m_i - m_{i-1})``, funding ``CostModel.funding_cost(q_{i-1} x m_{i-1},
funding_8h_{i-1}, t_i - t_{i-1})`` (the rate known at the start of the interval; a missing
rate costs 0), where ``m`` is the mark (the last known price) and ``q`` the short in base
units. A fill at bar ``i`` pays ``CostModel.trade_cost(-dq x price_i, price_i, vol_ann_i,
volume_24h_usd_i, stress_i)`` (fee and slippage, USD), booked at ``t_i``.

The probability series, labels and features are frames keyed by (``ts``, ``symbol``);
the market frame is :func:`oihedge.serving.backtest.market.build_market`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta

import numpy as np
import polars as pl

from oihedge.features.schema import UTC_US, infer_bar
from oihedge.serving.backtest import loops
from oihedge.serving.backtest.report import metrics_table
from oihedge.serving.policy.costs import CostModel
from oihedge.serving.policy.params import PolicyParams
from oihedge.serving.policy.signals import DIVERGENCE, SIGNAL_FEATURES

__all__ = [
    "BacktestResult",
    "BacktestSettings",
    "PolicyRun",
    "policy_names",
    "run_backtest",
    "vol_target_fractions",
]

#: policies that read the model run
_MATCHED = ("static_matched", "vol_target_matched")


def _pct(x: float) -> str:
    return f"{round(x * 100):d}"


def policy_names(
    static_fractions: tuple[float, ...] = (0.25, 0.5, 0.75, 1.0),
    vol_targets: tuple[float, ...] = (0.4, 0.6, 0.8, 1.2),
    model_budgets: tuple[float, ...] = (),
) -> tuple[str, ...]:
    """Every policy the engine can run for these sizes, in report order."""
    return (
        "model",
        *(f"model_budget_{_pct(b)}" for b in model_budgets),
        "scheduled",
        "no_hedge",
        *(f"static_{_pct(f)}" for f in static_fractions),
        "static_matched",
        *(f"vol_target_{_pct(v)}" for v in vol_targets),
        "vol_target_matched",
        "fixed_rule",
        "perfect_foresight",
    )


@dataclass(frozen=True)
class BacktestSettings:
    """Portfolio, per-symbol policy parameters, costs and the comparison rules.

    Attributes:
        portfolio_usd: initial long portfolio, USD (> 0).
        weights: symbol -> weight (> 0); normalised to sum to 1.
        params: symbol -> hedge-policy parameters (every weighted symbol needs one).
        costs: the shared cost model.
        static_fractions: the static hedges, fractions of the maximum hedge.
        vol_targets: the volatility-targeting hedges' targets, annualised fractions.
        model_budgets: risk budgets of the model policy's extra frontier points.
        schedule: how often the ``scheduled`` policy decides.
        rule_entry_pp / rule_exit_pp: the fixed rule's divergence levels, percentage
            points of ``oi_div_xvenue_4h``; ``rule_exit_confirm``: how long it must stay
            below the exit level.
        label_column: the label the perfect-foresight hedge follows.
        policies: which of :func:`policy_names` to run (None: all of them).
    """

    portfolio_usd: float
    weights: Mapping[str, float]
    params: Mapping[str, PolicyParams]
    costs: CostModel = field(default_factory=CostModel)
    static_fractions: tuple[float, ...] = (0.25, 0.5, 0.75, 1.0)
    vol_targets: tuple[float, ...] = (0.4, 0.6, 0.8, 1.2)
    model_budgets: tuple[float, ...] = ()
    schedule: timedelta = timedelta(hours=24)
    rule_entry_pp: float = 8.0
    rule_exit_pp: float = 4.0
    rule_exit_confirm: timedelta = timedelta(hours=2)
    label_column: str = "y_cascade_4h"
    policies: tuple[str, ...] | None = None

    def __post_init__(self) -> None:
        if not (math.isfinite(self.portfolio_usd) and self.portfolio_usd > 0):
            raise ValueError(f"portfolio_usd must be > 0, got {self.portfolio_usd!r}")
        if not self.weights:
            raise ValueError("weights must name at least one symbol, got {}")
        for symbol, w in self.weights.items():
            if not (math.isfinite(w) and w > 0):
                raise ValueError(f"weight of {symbol} must be > 0, got {w!r}")
            if symbol not in self.params:
                raise ValueError(f"no policy parameters for {symbol!r}")
        for name, top in (("static_fractions", 1.0), ("model_budgets", 1.0), ("vol_targets", 1e3)):
            values = getattr(self, name)
            if not all(math.isfinite(x) and 0 < x <= top for x in values):
                raise ValueError(f"{name} must hold numbers in (0, {top:g}], got {values!r}")
        if not self.schedule > timedelta(0):
            raise ValueError(f"schedule must be > 0, got {self.schedule!r}")
        if not 0 <= self.rule_exit_pp < self.rule_entry_pp:
            raise ValueError(
                f"rule_exit_pp must be in [0, rule_entry_pp={self.rule_entry_pp!r}), "
                f"got {self.rule_exit_pp!r}"
            )
        if self.rule_exit_confirm < timedelta(0):
            raise ValueError(f"rule_exit_confirm must be >= 0, got {self.rule_exit_confirm!r}")
        known = self.all_policies()
        chosen = self.chosen()
        unknown = [p for p in chosen if p not in known]
        if unknown:
            raise ValueError(f"unknown policy {unknown[0]!r}; known: {', '.join(known)}")
        for matched in _MATCHED:
            if matched in chosen and (
                "model" not in chosen or chosen.index("model") > chosen.index(matched)
            ):
                raise ValueError(
                    f"the {matched} policy is sized on the model policy's average hedge: "
                    f"list 'model' before it in policies, got {chosen!r}"
                )

    def all_policies(self) -> tuple[str, ...]:
        """Every policy these settings can run (:func:`policy_names`)."""
        return policy_names(self.static_fractions, self.vol_targets, self.model_budgets)

    def chosen(self) -> tuple[str, ...]:
        """The policies to run, in order."""
        return self.policies if self.policies is not None else self.all_policies()

    def long_usd(self, symbol: str) -> float:
        """Initial long notional of ``symbol``, USD."""
        return self.portfolio_usd * self.weights[symbol] / sum(self.weights.values())


@dataclass(frozen=True)
class PolicyRun:
    """One policy's ledger.

    ``bars``: one row per (ts, symbol): ``price`` (the mark), ``long_usd``, ``hedge_usd``
    (the short after this bar's fill, marked), ``target_fraction`` (of the maximum hedge;
    null before the first decision), ``long_pnl``, ``hedge_pnl``, ``fee_usd``,
    ``slippage_usd``, ``funding_usd`` (paid; negative when received), ``pnl_usd``; the
    hedge policy's runs (``model``, ``model_budget_*``, ``scheduled``) add ``p``, the
    probability read, ``p_entry``, the entry level derived (null on a bar not decided),
    and ``tier``, the tier held.
    ``trades``: one row per fill (:data:`oihedge.serving.backtest.loops.TRADE_COLUMNS`).
    ``equity``: one row per ts: ``equity_usd``, ``long_usd``, ``hedge_usd``.
    """

    name: str
    bars: pl.DataFrame
    trades: pl.DataFrame
    equity: pl.DataFrame


@dataclass(frozen=True)
class BacktestResult:
    """Every policy's run over the same window ``[start, end]`` of bars of ``bar``."""

    runs: dict[str, PolicyRun]
    settings: BacktestSettings
    start: datetime
    end: datetime
    bar: timedelta

    def table(
        self,
        *,
        loss_window: timedelta = timedelta(hours=24),
        cvar_level: float = 0.95,
        events: pl.DataFrame | None = None,
    ) -> pl.DataFrame:
        """The metrics table: one row per policy
        (:func:`oihedge.serving.backtest.report.metrics_table`).

        ``events``: the cascade events the cascade metrics are measured on (``symbol``,
        ``start``, ``trough_ts``: the simulator's ground truth, or label events); events of
        symbols outside the portfolio are left out.
        """
        return metrics_table(
            self.runs,
            portfolio_usd=self.settings.portfolio_usd,
            loss_window=loss_window,
            cvar_level=cvar_level,
            events=None
            if events is None
            else events.filter(pl.col("symbol").is_in(list(self.settings.weights))),
            hedge_ratio_max={s: p.hedge_ratio_max for s, p in self.settings.params.items()},
        )


def run_backtest(
    market: pl.DataFrame,
    features: pl.DataFrame,
    settings: BacktestSettings,
    *,
    probability: pl.DataFrame | None = None,
    labels: pl.DataFrame | None = None,
    start: datetime | None = None,
    end: datetime | None = None,
) -> BacktestResult:
    """Run every policy of ``settings`` over the bars ``start <= ts <= end``.

    ``market``: :func:`oihedge.serving.backtest.market.build_market`. ``features``: ``ts``,
    ``symbol`` and the signal features (:data:`oihedge.serving.policy.signals.SIGNAL_FEATURES`).
    ``probability``: ``ts``, ``symbol``, ``p`` (calibrated, null = no prediction) and
    optionally ``severity_k`` (the cascade severity fitted with the model), needed for
    ``model``; ``labels``: ``ts``, ``symbol``, ``settings.label_column``, needed for
    ``perfect_foresight``. A policy whose input is missing raises ``ValueError``.
    """
    window = market.filter(
        pl.col("symbol").is_in(list(settings.weights)),
        *([pl.col("ts") >= start] if start is not None else []),
        *([pl.col("ts") <= end] if end is not None else []),
    )
    missing = [s for s in settings.weights if s not in set(window["symbol"].unique())]
    if missing:
        raise ValueError(f"the market frame has no bars of {missing} in the window")
    chosen = settings.chosen()
    if any(p.startswith(("model", "scheduled")) for p in chosen) and probability is None:
        raise ValueError("the model policy needs a probability series")
    if "perfect_foresight" in chosen and labels is None:
        raise ValueError("the perfect-foresight policy needs the labels")
    grid = window.select("ts").unique().sort("ts")
    frames = _aligned(window, features, probability, labels, settings, grid)
    bar = infer_bar(grid)
    runs: dict[str, PolicyRun] = {}
    for name in chosen:  # in order: the matched policies read the model's run
        runs[name] = _run_policy(name, frames, settings, runs)
    return BacktestResult(runs, settings, grid["ts"][0], grid["ts"][-1], bar)


def _aligned(
    window: pl.DataFrame,
    features: pl.DataFrame,
    probability: pl.DataFrame | None,
    labels: pl.DataFrame | None,
    settings: BacktestSettings,
    grid: pl.DataFrame,
) -> dict[str, pl.DataFrame]:
    """Per symbol: every input on the common grid, sorted by ts."""
    missing = [c for c in SIGNAL_FEATURES if c not in features.columns]
    if missing:
        raise ValueError(f"the feature table lacks signal features {missing}")
    keys = ["ts", "symbol"]
    table = window.join(features.select(*keys, *SIGNAL_FEATURES), on=keys, how="left")
    if probability is None:
        probability = pl.DataFrame(schema={"ts": UTC_US, "symbol": pl.String(), "p": pl.Float64()})
    if "severity_k" not in probability.columns:  # no fitted severity: the policy's stress_k
        probability = probability.with_columns(pl.lit(None, dtype=pl.Float64).alias("severity_k"))
    table = table.join(probability.select(*keys, "p", "severity_k"), on=keys, how="left")
    if labels is not None:
        y = labels.select(*keys, pl.col(settings.label_column).cast(pl.Float64).alias("y"))
        table = table.join(y, on=keys, how="left")
    else:
        table = table.with_columns(pl.lit(None, dtype=pl.Float64).alias("y"))
    return {
        symbol: grid.join(table.filter(pl.col("symbol") == symbol), on="ts", how="left")
        .with_columns(pl.lit(symbol).alias("symbol"))
        .sort("ts")
        for symbol in settings.weights
    }


def _run_policy(
    name: str,
    frames: dict[str, pl.DataFrame],
    settings: BacktestSettings,
    earlier: Mapping[str, PolicyRun],
) -> PolicyRun:
    bars, trades = [], []
    for symbol, frame in frames.items():
        series = loops.SymbolSeries.from_frame(frame, settings.long_usd(symbol))
        params = settings.params[symbol]
        if name == "model" or name.startswith("model_budget_"):
            if name != "model":
                params = replace(params, loss_budget=float(name.rsplit("_", 1)[1]) / 100)
            ledger = loops.run_model(series, params, settings.costs)
        elif name == "scheduled":
            ledger = loops.run_model(series, params, settings.costs, every=settings.schedule)
        else:
            fraction = _target_fractions(name, series, params, settings, earlier)
            if name == "static_matched" and fraction.any():
                # the average may sit inside the no-trade band: narrow it to half the
                # average, so the hedge opens once and still does not chase price noise
                band = min(params.no_trade_band, float(fraction[0]) / 2)
                params = replace(params, no_trade_band=band, min_trade_usd=0.0)
            ledger = loops.run_targets(series, fraction, params, settings.costs)
        bar_frame, trade_frame = loops.ledger_frames(series, ledger)
        bars.append(bar_frame)
        trades.append(trade_frame)
    bar_table = pl.concat(bars).sort("ts", "symbol")
    equity = (
        bar_table.group_by("ts")
        .agg(pl.col("pnl_usd").sum(), pl.col("long_usd").sum(), pl.col("hedge_usd").sum())
        .sort("ts")
        .select(
            "ts",
            (settings.portfolio_usd + pl.col("pnl_usd").cum_sum()).alias("equity_usd"),
            "long_usd",
            "hedge_usd",
        )
    )
    return PolicyRun(name, bar_table, pl.concat(trades).sort("ts", "symbol"), equity)


def _model_mean(series: loops.SymbolSeries, earlier: Mapping[str, PolicyRun]) -> float:
    model = earlier["model"].bars.filter(pl.col("symbol") == series.symbol)
    return float(model["target_fraction"].fill_null(0.0).mean() or 0.0)  # type: ignore[arg-type]


def _target_fractions(
    name: str,
    series: loops.SymbolSeries,
    params: PolicyParams,
    settings: BacktestSettings,
    earlier: Mapping[str, PolicyRun],
) -> np.ndarray:
    """The comparison policies' target, fraction of the maximum hedge, per bar."""
    n = series.n
    base = params.baseline_fraction
    if name == "no_hedge":
        return np.zeros(n)
    if name == "static_matched":
        return np.full(n, _model_mean(series, earlier))
    if name.startswith("static_"):
        return np.full(n, float(name.rsplit("_", 1)[1]) / 100)
    if name == "vol_target_matched":
        return vol_target_fractions(series.vol_forecast, None, _model_mean(series, earlier))
    if name.startswith("vol_target_"):
        return vol_target_fractions(series.vol_forecast, float(name.rsplit("_", 1)[1]) / 100)
    if name == "perfect_foresight":
        return np.where(series.y == 1.0, 1.0, base)
    if name == "fixed_rule":
        on = loops.rule_hysteresis(
            series.features[DIVERGENCE],
            series.ts_us,
            entry=settings.rule_entry_pp,
            exit_=settings.rule_exit_pp,
            confirm_us=settings.rule_exit_confirm // timedelta(microseconds=1),
        )
        return np.where(on, 1.0, base)
    raise ValueError(f"unknown policy {name!r}")


def vol_target_fractions(
    vol_forecast: np.ndarray, target: float | None, mean: float | None = None
) -> np.ndarray:
    """Volatility targeting: ``clip(1 - target / vol_forecast, 0, 1)`` per bar (0 where the
    forecast is missing); with ``target=None``, the target whose mean fraction over the
    bars equals ``mean`` (bisection on the target; the mean falls as the target rises)."""
    known = np.isfinite(vol_forecast) & (vol_forecast > 0)
    vol = np.where(known, vol_forecast, 1.0)

    def fractions(t: float) -> np.ndarray:
        return np.where(known, np.clip(1.0 - t / vol, 0.0, 1.0), 0.0)

    if target is not None:
        return fractions(target)
    if mean is None or mean <= 0:
        return np.zeros(vol.size)
    lo, hi = 0.0, float(np.max(vol, initial=0.0))
    if fractions(lo).mean() <= mean:
        return fractions(lo)
    for _ in range(60):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if fractions(mid).mean() > mean else (lo, mid)
    return fractions((lo + hi) / 2)
