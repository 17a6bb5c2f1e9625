"""The promotion gate: a challenger's metrics against the champion's, on one held-out window.

:func:`gate` compares the metrics of :data:`GATE_METRICS` (each with its margin) and
refuses outright a challenger whose hedge policy never leaves its baseline
(:func:`never_hedges`); its :class:`GateVerdict` is what :func:`oihedge.models.registry.promote`
records on the version and acts on. Pure: no MLflow, no data; the metrics come from
:mod:`oihedge.models.promotion` (the held-out scores) and the backtest of the hedge policy
(``oihedge.serving.backtest.gate``), passed in as plain numbers.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any


@dataclass(frozen=True)
class GateRow:
    metric: str
    challenger: float
    champion: float | None
    margin: float
    higher_is_better: bool
    passed: bool


@dataclass(frozen=True)
class GateVerdict:
    """The gate's answer: ``passed`` when every row passed and nothing refused the
    challenger outright (``refusals``: why, e.g. a hedge policy that never trades)."""

    passed: bool
    rows: tuple[GateRow, ...]
    window: str
    refusals: tuple[str, ...] = ()

    def as_dict(self) -> dict[str, Any]:
        return {
            "passed": self.passed,
            "window": self.window,
            "rows": [asdict(r) for r in self.rows],
            "refusals": list(self.refusals),
        }


#: metric -> higher is better. The hedge metrics are measured by the backtest of the hedge
#: policy each model drives on the held-out window (``oihedge.serving.backtest.run.
#: panel_gate_metrics``): ``tail_excess`` is the model policy's worst 24 h loss minus that
#: of a static hedge of the same mean size (``static_matched``), the tail loss at equal
#: mean hedge; ``fees_slippage_annual`` its fees and slippage a year, fraction of the
#: portfolio (funding is reported apart: a short receives it as often as it pays it).
GATE_METRICS: dict[str, bool] = {
    "pr_auc": True,
    "brier": False,
    "tail_excess": False,  # a loss difference: lower (more negative) is better
    "fees_slippage_annual": False,
}

#: margin keys of earlier configurations -> the gate metric they now set
FORMER_MARGIN_KEYS: dict[str, str] = {
    "worst_24h_loss": "tail_excess",
    "hedge_cost_annual": "fees_slippage_annual",
}

#: the challenger's hedge readings :func:`gate` checks before comparing: label events in
#: the window, and the model policy's trades and share of time hedged there (and,
#: optionally, ``cascade_time``: the share of time its probability raised the hedge)
ACTIVITY_KEYS: tuple[str, ...] = ("events", "trades", "time_hedged")


def gate_margins(margins: dict[str, float]) -> dict[str, float]:
    """``margins`` with the keys of :data:`FORMER_MARGIN_KEYS` renamed; raises
    ``ValueError`` when a former key and its new name are both given."""
    out: dict[str, float] = {}
    for key, value in margins.items():
        metric = FORMER_MARGIN_KEYS.get(key, key)
        if metric in out:
            raise ValueError(f"gate margin {metric!r} is given twice (as {key!r} too)")
        out[metric] = value
    return out


def never_hedges(metrics: dict[str, float]) -> str | None:
    """Why a model's hedge policy is refused outright, or None: on a window where label
    events occur (``events > 0``) it never left its baseline: ``trades == 0``,
    ``time_hedged == 0``, or ``cascade_time == 0`` (its probability never raised the hedge
    above what the policy holds on volatility alone). Metrics without
    :data:`ACTIVITY_KEYS` are not judged."""
    if any(k not in metrics for k in ACTIVITY_KEYS):
        return None
    events, trades, hedged = (float(metrics[k]) for k in ACTIVITY_KEYS)
    cascade = float(metrics.get("cascade_time", math.nan))
    if events > 0 and (trades == 0 or hedged == 0 or cascade == 0):
        shown = "" if math.isnan(cascade) else f", raised by the probability {cascade:.1%}"
        return (
            f"the model's hedge policy never leaves its baseline on the held-out window "
            f"({int(trades)} trades, {hedged:.1%} of the time hedged{shown}) while "
            f"{int(events)} label events occur there: its probability never reaches the "
            "policy's entry level"
        )
    return None


def gate(
    challenger: dict[str, float],
    champion: dict[str, float] | None,
    margins: dict[str, float],
    *,
    window: str,
) -> GateVerdict:
    """Compare metrics measured on the same held-out ``window``.

    For each metric in ``margins`` (former keys renamed, :func:`gate_margins`) present for
    the challenger: higher-is-better metrics pass when ``challenger >= champion -
    margin``, lower-is-better ones when ``challenger <= champion + margin``. Without a
    champion every row passes (the first model). A metric the champion lacks (e.g. a
    backtest metric added later) passes. Whatever the rows say, a challenger whose hedge
    policy never leaves its baseline while label events occur (:func:`never_hedges`) is
    refused, with the reason in ``refusals``.
    """
    rows = []
    for metric, margin in gate_margins(margins).items():
        if metric not in GATE_METRICS:
            raise ValueError(f"unknown gate metric {metric!r}; known: {sorted(GATE_METRICS)}")
        if margin < 0:
            raise ValueError(f"gate margin for {metric} must be >= 0, got {margin!r}")
        if metric not in challenger:
            continue
        higher = GATE_METRICS[metric]
        ours = float(challenger[metric])
        theirs = None if champion is None or metric not in champion else float(champion[metric])
        if theirs is None:
            ok = ours == ours  # passes unless NaN
        elif higher:
            ok = ours >= theirs - margin
        else:
            ok = ours <= theirs + margin
        rows.append(GateRow(metric, ours, theirs, margin, higher, bool(ok)))
    if not rows:
        raise ValueError("gate has no metric to compare: margins and metrics share none")
    refusal = never_hedges(challenger)
    refusals = () if refusal is None else (refusal,)
    return GateVerdict(all(r.passed for r in rows) and not refusals, tuple(rows), window, refusals)
