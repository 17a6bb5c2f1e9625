"""Backtest plots as PNG files: equity curves, drawdowns, hedge fraction with cascades,
and the hedging frontier (tail loss against mean hedge ratio, one point per policy);
:func:`write_plots` adds the trader's plots of :mod:`oihedge.serving.backtest.trader_plots`
(equity in USD with cascades marked, probability vs price with the policy's tiers)."""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

import matplotlib

matplotlib.use("Agg")  # files only, never a window

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import polars as pl  # noqa: E402

from oihedge.models.plots import save_figure  # noqa: E402  (also sets the Agg backend)
from oihedge.serving.backtest.trader_plots import equity_usd, policy_panels  # noqa: E402

if TYPE_CHECKING:
    from oihedge.serving.backtest.engine import BacktestResult

__all__ = [
    "FRONTIER_COLUMNS",
    "drawdowns",
    "equity_curves",
    "frontier",
    "hedge_fractions",
    "write_plots",
]

#: the metrics-table columns the frontier reads
FRONTIER_COLUMNS: tuple[str, ...] = (
    "policy",
    "mean_hedge_ratio",
    "worst_24h_loss",
    "cvar_95_daily",
)
#: the frontier's families drawn as one curve: name pattern (its group: the parameter,
#: percent), label, line style; static and vol-target curves follow their parameter
_CURVES: tuple[tuple[str, str, dict[str, object]], ...] = (
    (r"static_(\d+(?:\.\d+)?)", "static", {"color": "tab:grey", "marker": ".", "ls": "-"}),
    (r"vol_target_(\d+(?:\.\d+)?)", "vol target", {"color": "tab:blue", "marker": "s", "ls": "--"}),
    (
        r"model_budget_(\d+(?:\.\d+)?)",
        "model (risk budgets)",
        {"color": "tab:red", "marker": "o", "ls": "-"},
    ),
)
#: single labelled points, in legend order: name -> marker, colour (any other name: a
#: brown dot)
_POINTS: dict[str, tuple[str, str]] = {
    "no_hedge": ("X", "black"),
    "static_matched": ("D", "tab:grey"),
    "vol_target_matched": ("D", "tab:blue"),
    "fixed_rule": ("^", "tab:green"),
    "scheduled": ("v", "tab:purple"),
    "perfect_foresight": ("*", "tab:orange"),
}


def equity_curves(result: BacktestResult, path: Path) -> Path:
    """Equity of every policy as a multiple of the initial portfolio."""
    fig, ax = plt.subplots(figsize=(10, 5))
    for name, run in result.runs.items():
        eq = run.equity
        ax.plot(
            eq["ts"].to_numpy(),
            eq["equity_usd"].to_numpy() / result.settings.portfolio_usd,
            label=name,
            lw=1.0,
        )
    ax.set(title="Equity (x initial portfolio)", ylabel="equity / initial")
    ax.legend(loc="best", fontsize=8)
    ax.grid(alpha=0.3)
    return save_figure(fig, path)


def drawdowns(result: BacktestResult, path: Path) -> Path:
    """Drawdown from the running peak of every policy, percent."""
    fig, ax = plt.subplots(figsize=(10, 4))
    for name, run in result.runs.items():
        eq = run.equity["equity_usd"].to_numpy()
        dd = 100.0 * (eq / np.maximum.accumulate(eq) - 1.0)
        ax.plot(run.equity["ts"].to_numpy(), dd, label=name, lw=1.0)
    ax.set(title="Drawdown", ylabel="% below running peak")
    ax.legend(loc="lower left", fontsize=8)
    ax.grid(alpha=0.3)
    return save_figure(fig, path)


def hedge_fractions(
    result: BacktestResult,
    events: pl.DataFrame,
    path: Path,
    *,
    policies: tuple[str, ...] = ("model", "fixed_rule"),
    truth: pl.DataFrame | None = None,
) -> Path:
    """Per symbol: short hedge / long value over time for ``policies``, cascade windows
    (label events, ``start``-``end``) shaded red, ground-truth starts (``truth``) dotted."""
    symbols = list(result.settings.weights)
    fig, axes = plt.subplots(
        len(symbols), 1, figsize=(11, 2.6 * len(symbols)), sharex=True, squeeze=False
    )
    shown = [p for p in policies if p in result.runs]
    for ax, symbol in zip(axes[:, 0], symbols, strict=True):
        for name in shown:
            bars = result.runs[name].bars.filter(pl.col("symbol") == symbol)
            ratio = bars["hedge_usd"].to_numpy() / bars["long_usd"].to_numpy()
            ax.plot(
                bars["ts"].to_numpy(),
                ratio,
                label=name,
                lw=0.9,
                alpha=1.0 if name == shown[0] else 0.6,
            )
        _mark(ax, events, symbol, result)
        if truth is not None:
            for start in _in_window(truth, symbol, result)["start"].to_numpy():
                ax.axvline(start, color="black", ls=":", lw=0.8)
        ax.set(ylabel=f"{symbol}\nhedge / long", ylim=(-0.02, 1.05))
        ax.grid(alpha=0.3)
    axes[0, 0].set_title(
        "Hedge fraction; red: cascade windows (labels)"
        + ("; dotted: ground-truth starts" if truth is not None else "")
    )
    axes[0, 0].legend(loc="upper right", fontsize=8)
    return save_figure(fig, path)


def _in_window(events: pl.DataFrame, symbol: str, result: BacktestResult) -> pl.DataFrame:
    return events.filter(
        pl.col("symbol") == symbol,
        pl.col("start") <= result.end,
        pl.col("end") >= result.start,
    )


def _mark(ax: plt.Axes, events: pl.DataFrame, symbol: str, result: BacktestResult) -> None:
    for start, end in _in_window(events, symbol, result).select("start", "end").iter_rows():
        ax.axvspan(start, end, color="red", alpha=0.25, lw=0)


def frontier(
    table: pl.DataFrame,
    path: Path,
    *,
    title: str = "Hedging frontier: tail loss against mean hedge",
) -> Path:
    """The hedging frontier from a metrics table
    (:func:`oihedge.serving.backtest.report.metrics_table`): worst 24 h loss (left) and
    daily CVaR 95 % (right), percent of the portfolio, against the mean hedge ratio,
    percent of the long value.

    Rows are named by convention: ``static_<pct>`` form the "static" line,
    ``vol_target_<pct>`` the "vol target" curve, ``model`` and ``model_budget_<pct>`` the
    model's curve (``model`` highlighted); ``no_hedge``, ``static_matched``,
    ``vol_target_matched``, ``fixed_rule``, ``scheduled``, ``perfect_foresight`` and any
    other name are labelled points. Missing rows, and NaN metrics, are not drawn.
    """
    missing = [c for c in FRONTIER_COLUMNS if c not in table.columns]
    if missing:
        raise ValueError(f"the metrics table lacks the column(s) {missing} the frontier needs")
    rows = {
        row["policy"]: row
        for row in table.select(FRONTIER_COLUMNS).iter_rows(named=True)
        if _finite(row["mean_hedge_ratio"])
    }
    fig, axes = plt.subplots(1, 2, figsize=(13, 5.5), squeeze=False)
    panels = (
        ("worst_24h_loss", "worst 24 h loss (% of portfolio)"),
        ("cvar_95_daily", "CVaR 95 % of daily returns (% of portfolio)"),
    )
    for ax, (metric, label) in zip(axes[0], panels, strict=True):
        _frontier_panel(ax, rows, metric)
        ax.set(xlabel="mean hedge ratio (% of long value)", ylabel=label)
        ax.grid(alpha=0.3)
    if axes[0, 0].get_legend_handles_labels()[0]:
        axes[0, 0].legend(loc="best", fontsize=8)
    fig.suptitle(title)
    return save_figure(fig, path)


def _finite(value: object) -> bool:
    return isinstance(value, int | float) and math.isfinite(value)


def _frontier_panel(ax: plt.Axes, rows: Mapping[str, Mapping[str, float]], metric: str) -> None:
    """One metric against the mean hedge, both percent; ``rows``: policy -> its row."""

    def at(name: str) -> tuple[float, float] | None:
        x, y = rows[name]["mean_hedge_ratio"], rows[name][metric]
        return (100.0 * x, 100.0 * y) if _finite(y) else None

    on_curves = set()
    for pattern, label, style in _CURVES:
        members = {n: float(m.group(1)) for n in rows if (m := re.fullmatch(pattern, n))}
        on_curves |= set(members)
        points = sorted((p, xy) for n, p in members.items() if (xy := at(n)) is not None)
        if label.startswith("model"):
            # the default budget joins its curve; the curve runs along the mean hedge
            model = at("model") if "model" in rows else None
            points = sorted([*points, *([(math.nan, model)] if model else [])], key=lambda q: q[1])
        if not points:
            continue
        xs, ys = zip(*(xy for _, xy in points), strict=True)
        ax.plot(xs, ys, label=label, lw=1.2, ms=5, **style)  # type: ignore[arg-type]
        for param, xy in points:
            if label != "static" and math.isfinite(param):
                ax.annotate(
                    f"{'σ ' if label == 'vol target' else ''}{param:g}%",
                    xy,
                    textcoords="offset points",
                    xytext=(4, 3),
                    fontsize=7,
                    color=style["color"],
                )
    model = at("model") if "model" in rows else None
    if model is not None:
        ax.scatter(
            *model, s=180, marker="*", color="tab:red", edgecolor="black", zorder=5, label="model"
        )
        ax.annotate(
            "model", model, textcoords="offset points", xytext=(7, -11), fontsize=9, weight="bold"
        )
    others = [n for n in rows if n not in _POINTS and n not in on_curves and n != "model"]
    for name in [*(n for n in _POINTS if n in rows), *others]:
        point = at(name)
        if point is None:
            continue
        marker, color = _POINTS.get(name, ("o", "tab:brown"))
        ax.scatter(*point, s=50, marker=marker, color=color, zorder=4, label=name)
        ax.annotate(name, point, textcoords="offset points", xytext=(5, 4), fontsize=7)


def write_plots(
    result: BacktestResult,
    events: pl.DataFrame,
    folder: Path,
    *,
    truth: pl.DataFrame | None = None,
    table: pl.DataFrame | None = None,
    cascades: pl.DataFrame | None = None,
    cascades_source: str = "label events",
) -> Mapping[str, Path]:
    """Every plot into ``folder``; returns name -> path. ``table``: the metrics table the
    frontier is drawn from (default ``result.table()``); ``cascades``: the events the
    USD equity and the per-symbol policy plots mark (default: ``truth`` when given, else
    ``events``), named by ``cascades_source``."""
    marked = cascades if cascades is not None else truth if truth is not None else events
    return {
        "equity": equity_curves(result, folder / "equity.png"),
        "equity_usd": equity_usd(
            result, marked, folder / "equity_usd.png", events_source=cascades_source
        ),
        "drawdown": drawdowns(result, folder / "drawdown.png"),
        "hedge": hedge_fractions(result, events, folder / "hedge_fraction.png", truth=truth),
        "frontier": frontier(result.table() if table is None else table, folder / "frontier.png"),
        **policy_panels(result, marked, folder),
    }
