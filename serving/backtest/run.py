"""The whole backtest from a market panel: features -> labels -> market -> probabilities
(walk-forward, or given) -> every policy. What `oihedge backtest` and the benchmark run.

Stages take frames: the caller loads and validates the panel. Timings of each stage are
kept (seconds) so the benchmark can say where the time goes.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta

import numpy as np
import polars as pl

from oihedge.features.registry import build_features
from oihedge.features.spec import FeatureSpec
from oihedge.models.label_params import LabelConfig
from oihedge.models.label_report import label_events
from oihedge.models.labels import cascade_labels
from oihedge.serving.backtest.engine import BacktestResult, BacktestSettings, run_backtest
from oihedge.serving.backtest.market import build_market
from oihedge.serving.backtest.walkforward import WalkForward, WalkForwardSettings, walk_forward

__all__ = ["PanelBacktest", "backtest_panel", "panel_gate_metrics", "window_probability"]

Progress = Callable[[str, float], None]


@dataclass(frozen=True)
class PanelBacktest:
    """The result and everything it was computed from.

    ``features``: the feature table; ``labels``: the cascade labels; ``events``: the label
    events (the stress windows and the plots' cascade marks); ``market``: the market
    frame; ``probability``: ``ts``, ``symbol``, ``p``; ``walk_forward``: the refits (None
    when the probability was given); ``seconds``: wall time per stage.
    """

    result: BacktestResult
    features: pl.DataFrame
    labels: pl.DataFrame
    events: pl.DataFrame
    market: pl.DataFrame
    probability: pl.DataFrame
    walk_forward: WalkForward | None
    spec: FeatureSpec
    seconds: dict[str, float] = field(default_factory=dict)


def backtest_panel(
    panel: pl.DataFrame,
    settings: BacktestSettings,
    *,
    spec: FeatureSpec,
    labels: LabelConfig,
    walk_forward_settings: WalkForwardSettings | None = None,
    probability: pl.DataFrame | None = None,
    scorer: Callable[[pl.DataFrame], np.ndarray] | None = None,
    severity_k: float | None = None,
    start: datetime | None = None,
    end: datetime | None = None,
    volume_window: timedelta = timedelta(hours=24),
    progress: Progress | None = None,
) -> PanelBacktest:
    """Backtest every policy of ``settings`` on ``panel`` (validated market panel rows).

    The probability series is ``probability`` (``ts``, ``symbol``, ``p``) when given, else
    ``scorer(feature table)`` (one calibrated probability per row, e.g. a registered
    model's, priced with the cascade severity it carries: ``severity_k``, None: the
    policy's ``stress_k``), else walk-forward refits with ``walk_forward_settings``
    (default settings when None), each with its own fitted severity. The
    window starts at ``start`` or, by default, at the first bar with a probability (the
    first refit), and ends at ``end`` (default: the last bar). ``volume_window``: the
    slippage model's volume window (:func:`oihedge.serving.backtest.market.build_market`).
    """
    note = progress or (lambda _stage, _f: None)
    seconds: dict[str, float] = {}
    clock = time.perf_counter()

    def lap(stage: str) -> None:
        nonlocal clock
        now = time.perf_counter()
        seconds[stage] = now - clock
        clock = now
        note(stage, 1.0)

    built = build_features(panel, spec, progress=lambda f: note("features", f))
    table, resolved = built.table, built.spec
    lap("features")
    label_frame = cascade_labels(panel, labels, bar=resolved.params.bar)
    events = label_events(label_frame, labels)
    lap("labels")
    market = build_market(
        panel,
        table,
        max_staleness=resolved.params.max_staleness,
        volume_window=volume_window,
        cascades=events,
    )
    lap("market")
    wf = None
    if probability is None and scorer is not None:
        p = np.asarray(scorer(table), dtype=np.float64)
        probability = table.select(
            "ts",
            "symbol",
            pl.Series("p", p).fill_nan(None),
            pl.lit(severity_k, dtype=pl.Float64).alias("severity_k"),
        )
        lap("score")
    if probability is None:
        wf = walk_forward(
            table,
            label_frame,
            resolved.features,
            labels.label_column,
            labels.horizon,
            walk_forward_settings or WalkForwardSettings(),
            start=start,
            progress=lambda f: note("walk-forward", f),
        )
        probability = wf.probability
        lap("walk-forward")
    if start is None:
        scored = probability.filter(pl.col("p").is_not_null())
        if scored.is_empty():
            raise ValueError("no bar has a probability: the panel is too short to train on")
        start = scored["ts"].min()  # type: ignore[assignment]
    result = run_backtest(
        market,
        table,
        replace(settings, label_column=labels.label_column),
        probability=probability,
        labels=label_frame,
        start=start,
        end=end,
    )
    lap("policies")
    return PanelBacktest(
        result, table, label_frame, events, market, probability, wf, resolved, seconds
    )


def panel_gate_metrics(
    panel: pl.DataFrame,
    features: pl.DataFrame,
    probability: pl.DataFrame,
    settings: BacktestSettings,
    *,
    max_staleness: timedelta,
    events: pl.DataFrame,
    start: datetime | None = None,
    end: datetime | None = None,
    volume_window: timedelta = timedelta(hours=24),
    loss_window: timedelta = timedelta(hours=24),
) -> dict[str, float]:
    """The promotion gate's hedge metrics from a panel: the hedge policy fed with
    ``probability`` (``ts``, ``symbol``, ``p``, optionally the model's ``severity_k``) over
    ``[start, end]``, run beside ``static_matched`` (the model's own mean hedge held all
    the time) on the same engine, settings and costs.

    Returns (fractions of the portfolio; losses positive):

    * ``tail_excess``: the model policy's ``worst_24h_loss`` minus ``static_matched``'s,
      the tail loss at equal mean hedge (lower is better; < 0: the timing is worth it);
    * ``fees_slippage_annual``: the model policy's fees and slippage a year;
    * for the record: ``worst_24h_loss``, ``static_matched_worst_24h_loss``,
      ``hedge_cost_annual``, ``funding_annual`` (negative when the short receives it),
      ``mean_hedge_ratio``;
    * the activity the gate checks (:func:`oihedge.models.gate.never_hedges`): ``trades``,
      ``time_hedged`` of the model policy; ``cascade_time``, the share of (symbol, bar)
      pairs at which its target hedge exceeds that of the same policy fed ``p = 0`` (its
      ordinary-risk part alone, which hedges on volatility whatever the model says): the
      time the probability raised the hedge; ``events``, the label events of the
      settings' symbols that start within the window.

    ``features``: the feature table of the model's spec over the panel; ``max_staleness``:
    its resolved staleness; ``events``: the label events (the stress windows). With
    :func:`oihedge.models.workflow.prepare` these are ``prepared.features``,
    ``prepared.spec.params.max_staleness`` and ``prepared.events``. Score the challenger
    and the champion on the same window with the same settings.
    """
    market = build_market(
        panel,
        features,
        max_staleness=max_staleness,
        volume_window=volume_window,
        cascades=events,
    )
    result = run_backtest(
        market,
        features,
        replace(settings, policies=("model", "static_matched"), model_budgets=()),
        probability=probability,
        start=start,
        end=end,
    )
    calm = run_backtest(  # the same policy with a probability that never prices a cascade
        market,
        features,
        replace(settings, policies=("model",), model_budgets=()),
        probability=probability.with_columns(pl.lit(0.0, dtype=pl.Float64).alias("p")),
        start=start,
        end=end,
    )
    keys = ["ts", "symbol"]
    fractions = (
        result.runs["model"]
        .bars.select(*keys, pl.col("target_fraction").fill_null(0.0).alias("model"))
        .join(
            calm.runs["model"].bars.select(
                *keys, pl.col("target_fraction").fill_null(0.0).alias("calm")
            ),
            on=keys,
            how="left",
        )
    )
    raised = fractions["model"] > fractions["calm"].fill_null(0.0) + 1e-12
    table = result.table(loss_window=loss_window, events=events)
    rows = {r["policy"]: r for r in table.iter_rows(named=True)}
    model, matched = rows["model"], rows["static_matched"]
    return {
        "tail_excess": float(model["worst_24h_loss"] - matched["worst_24h_loss"]),
        "fees_slippage_annual": float(model["fees_slippage_annual"]),
        "worst_24h_loss": float(model["worst_24h_loss"]),
        "static_matched_worst_24h_loss": float(matched["worst_24h_loss"]),
        "hedge_cost_annual": float(model["hedge_cost_annual"]),
        "funding_annual": float(model["funding_annual"]),
        "mean_hedge_ratio": float(model["mean_hedge_ratio"]),
        "trades": float(model["trades"]),
        "time_hedged": float(model["time_hedged"]),
        "cascade_time": float(raised.mean()) if fractions.height else 0.0,
        "events": float(model["events"]),
    }


def window_probability(
    features: pl.DataFrame,
    feature_names: tuple[str, ...],
    model: object,
    start: datetime,
    *,
    severity_k: float | None = None,
) -> pl.DataFrame:
    """``ts``, ``symbol``, ``p``, ``severity_k``: a pyfunc model's calibrated probability
    on every feature row from ``start`` on (labelled or not: the hedge decides at every
    bar) and the cascade severity it carries (``severity_k``, e.g.
    :func:`oihedge.models.severity.card_severity_k` of its card; None: null, the policy's
    ``stress_k``)."""
    rows = features.filter(pl.col("ts") >= start).sort("ts", "symbol")
    frame = rows.select(feature_names).to_pandas()
    p = model.predict(frame)["p_cascade"].to_numpy()  # type: ignore[attr-defined]
    return rows.select("ts", "symbol").with_columns(
        pl.Series("p", p, dtype=pl.Float64),
        pl.lit(severity_k, dtype=pl.Float64).alias("severity_k"),
    )
