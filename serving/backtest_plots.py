"""Backtest plots as PNG files: equity curves, drawdowns, hedge fraction with cascades."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

import matplotlib

matplotlib.use("Agg")  # files only, never a window

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import polars as pl  # noqa: E402

from models.plots import save_figure  # noqa: E402  (also sets the Agg backend)

if TYPE_CHECKING:
    from serving.backtest import BacktestResult

__all__ = ["drawdowns", "equity_curves", "hedge_fractions", "write_plots"]


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


def write_plots(
    result: BacktestResult,
    events: pl.DataFrame,
    folder: Path,
    *,
    truth: pl.DataFrame | None = None,
) -> Mapping[str, Path]:
    """Every plot into ``folder``; returns name -> path."""
    return {
        "equity": equity_curves(result, folder / "equity.png"),
        "drawdown": drawdowns(result, folder / "drawdown.png"),
        "hedge": hedge_fractions(result, events, folder / "hedge_fraction.png", truth=truth),
    }
