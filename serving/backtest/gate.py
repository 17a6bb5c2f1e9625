"""What the model stage asks of the hedge policy, on a model's held-out window.

- :func:`hedge_gate_metrics`: the hedge side of the promotion gate
  (:mod:`oihedge.models.promotion`): the backtest of the hedge policy each contender drives,
  measured by :func:`oihedge.serving.backtest.run.panel_gate_metrics` (tail loss at equal mean
  hedge, fees and slippage, and the policy's activity). `oihedge promote` passes the
  numbers to :func:`oihedge.models.promotion.verdict`.
- :func:`probability_vs_entry`: `oihedge train`'s check that the calibrated probability
  reaches the policy's entry level on some held-out bar.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np
import polars as pl

from oihedge.models.severity import card_severity_k
from oihedge.serving.backtest.engine import BacktestSettings
from oihedge.serving.backtest.run import panel_gate_metrics, window_probability
from oihedge.serving.policy import sizing
from oihedge.serving.policy.policy import pricing
from oihedge.serving.policy.signals import SIGNAL_FEATURES, signals_from_row


def hedge_gate_metrics(
    panel: pl.DataFrame,
    prepared: Any,
    models: Mapping[str, Any],
    cards: Mapping[str, dict[str, Any] | None],
    settings: BacktestSettings,
) -> dict[str, dict[str, float]]:
    """The hedge metrics of the gate of the hedge policy driven by each of ``models``
    (name -> pyfunc model), each with the severity its card in ``cards`` carries, on the
    held-out window of ``prepared`` (:class:`oihedge.models.workflow.Prepared`), with the backtest
    ``settings`` and costs: name -> metric -> value."""
    start = prepared.holdout.frame["ts"].min()
    out = {}
    for name, model in models.items():
        probability = window_probability(
            prepared.features,
            prepared.spec.features,
            model,
            start,
            severity_k=card_severity_k(cards.get(name)),
        )
        out[name] = panel_gate_metrics(
            panel,
            prepared.features,
            probability,
            settings,
            max_staleness=prepared.spec.params.max_staleness,
            events=prepared.events,
            start=start,
        )
    return out


def probability_vs_entry(
    rows: pl.DataFrame,
    p: Any,
    params: dict[str, Any],
    *,
    severity_k: float | None,
    window: str,
    calibrator_max: float | None = None,
) -> dict[str, Any]:
    """Compare calibrated probabilities with the policy's derived entry level, bar by bar.

    ``rows``: ``ts``, ``symbol`` and the signal features (:data:`oihedge.serving.policy.signals.
    SIGNAL_FEATURES`; absent ones count as missing), row-aligned with ``p``; ``params``:
    symbol -> :class:`oihedge.serving.policy.params.PolicyParams`. At each row the entry level is
    ``oihedge.serving.policy.policy.pricing(signals, beta, params).p_entry`` with the signals of
    :func:`oihedge.serving.policy.signals.signals_from_row` (and ``severity_k``). Returns
    ``window``, ``bars``, ``share_at_entry`` (share of rows with ``p >= p_entry``),
    ``max_p``, ``min_p_entry``, ``median_p_entry``, ``calibrator_max``, ``warning`` (a
    line, or None when some bar reaches its entry level) and ``line``, what the CLI
    prints.
    """
    probs = np.asarray(p, dtype=np.float64)
    if probs.shape != (rows.height,):
        raise ValueError(f"{probs.size} probabilities for {rows.height} rows")
    present = [c for c in SIGNAL_FEATURES if c in rows.columns]
    entries = np.full(rows.height, np.nan)
    for i, row in enumerate(rows.select("ts", "symbol", *present).iter_rows(named=True)):
        prm = params[row["symbol"]]
        signals = signals_from_row(
            row, ts=row["ts"], portfolio_usd=1.0, fresh_venues=0, severity_k=severity_k
        )
        beta = sizing.effective_beta(
            signals.beta, default=prm.beta_default, lo=prm.beta_min, hi=prm.beta_max
        )
        entries[i] = pricing(signals, beta, prm).p_entry
    ok = np.isfinite(probs) & np.isfinite(entries)
    bars = int(ok.sum())
    share = float(np.mean(probs[ok] >= entries[ok])) if bars else math.nan
    max_p = float(probs[ok].max()) if bars else math.nan
    min_entry = float(entries[ok].min()) if bars else math.nan
    median_entry = float(np.median(entries[ok])) if bars else math.nan
    warning = None
    ceiling_below = calibrator_max is not None and calibrator_max < min_entry
    if not share > 0 or ceiling_below:
        relation = "<" if max_p < min_entry else ">= (never at the same bar)"
        warning = (
            f"warning: the calibrated probability never reaches the policy's entry level "
            f"on {window} (max p {max_p:.3f} {relation} min p_entry {min_entry:.3f})"
        )
    line = warning or (
        f"entry level: {share:.1%} of the held-out bars on {window} have p >= p_entry "
        f"(median p_entry {median_entry:.3f}, max p {max_p:.3f})"
    )
    return {
        "window": window,
        "bars": bars,
        "share_at_entry": share,
        "max_p": max_p,
        "min_p_entry": min_entry,
        "median_p_entry": median_entry,
        "calibrator_max": calibrator_max,
        "severity_k": severity_k,
        "warning": warning,
        "line": line,
    }
