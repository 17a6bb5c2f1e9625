"""The backtest plots a trader reads first: the portfolio in USD with the cascades marked
and its drawdown beneath (:func:`equity_usd_figure`), and per symbol the price, the
model's probability against the entry level the policy derived with its tier bands, and
the hedge it held (:func:`policy_figure`)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import matplotlib

matplotlib.use("Agg")  # files only, never a window

import matplotlib.dates as mdates  # noqa: E402
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import polars as pl  # noqa: E402
from matplotlib.patches import Patch  # noqa: E402
from matplotlib.ticker import FuncFormatter  # noqa: E402

from oihedge.models.plots import save_figure  # noqa: E402
from oihedge.serving.policy.params import PolicyParams  # noqa: E402
from oihedge.serving.policy.policy import EDGES, TIERS, VOL_TIER  # noqa: E402

if TYPE_CHECKING:
    from oihedge.serving.backtest.engine import BacktestResult

__all__ = [
    "EQUITY_POLICIES",
    "TIER_COLOURS",
    "equity_usd",
    "equity_usd_figure",
    "policy_figure",
    "policy_panels",
]

#: the rows of the USD equity plot, when the run has them: no hedge, the model, and the
#: two benchmarks of the model's own average size; name -> colour, line style, width
EQUITY_POLICIES: dict[str, tuple[str, str, float]] = {
    "no_hedge": ("black", "-", 1.0),
    "model": ("tab:red", "-", 1.6),
    "static_matched": ("tab:grey", "--", 1.1),
    "vol_target_matched": ("tab:blue", "-.", 1.1),
}
#: the tiers above baseline, their colour (the dashboard's Timeline uses the same hues)
TIER_COLOURS: dict[str, str] = {
    "early": "#ffd600",
    "elevated": "#ff8c00",
    "high": "#ff5000",
    "full": "#dc0000",
    VOL_TIER: "#4678ff",
}
#: one colour per symbol for the cascade marks of the portfolio plot
_SYMBOL_COLOURS = ("tab:purple", "tab:orange", "tab:green", "tab:brown", "tab:pink", "tab:olive")
_USD = FuncFormatter(lambda x, _: f"${x:,.0f}")


def _usd_ticks(prices: pl.Series) -> FuncFormatter:
    """Dollar ticks with the decimals the price range needs ($5.12 for a $5 coin)."""
    span = float((prices.max() or 0.0) - (prices.min() or 0.0))  # type: ignore[operator]
    decimals = int(min(6, max(0, 1 - np.floor(np.log10(span))))) if span > 0 else 2
    return FuncFormatter(lambda x, _: f"${x:,.{decimals}f}")


def _events_in(
    events: pl.DataFrame | None, result: BacktestResult, symbols: Sequence[str]
) -> pl.DataFrame:
    """The events of ``symbols`` overlapping the run's window, with an ``end`` (the start
    when the events have none), sorted by start."""
    if events is None or events.is_empty():
        return pl.DataFrame(schema={"symbol": pl.String, "start": pl.Datetime, "end": pl.Datetime})
    end = pl.col("end") if "end" in events.columns else pl.col("start")
    return (
        events.select("symbol", "start", end.alias("end"))
        .filter(
            pl.col("symbol").is_in(list(symbols)),
            pl.col("start") <= result.end,
            pl.col("end") >= result.start,
        )
        .sort("start")
    )


def _time_axis(ax: plt.Axes) -> None:
    ax.xaxis.set_major_locator(mdates.AutoDateLocator())
    ax.xaxis.set_major_formatter(mdates.ConciseDateFormatter(ax.xaxis.get_major_locator()))
    ax.set_xlabel("time (UTC)")


def equity_usd_figure(
    result: BacktestResult,
    events: pl.DataFrame | None,
    *,
    events_source: str = "cascades",
    policies: Sequence[str] = tuple(EQUITY_POLICIES),
) -> plt.Figure:
    """Portfolio value in USD over time (top) and its drawdown from the running peak in
    percent (bottom) for the ``policies`` the run has (every run when it has none of
    them); each cascade event of the portfolio's symbols is a span coloured by symbol,
    with a marker at its start on the top panel. ``events``: ``symbol``, ``start`` and
    optionally ``end`` (datetime UTC); ``events_source`` names them in the title."""
    shown = [p for p in policies if p in result.runs] or list(result.runs)
    symbols = list(result.settings.weights)
    colours = dict(zip(symbols, _SYMBOL_COLOURS * (1 + len(symbols) // 6), strict=False))
    marked = _events_in(events, result, symbols)
    fig, (top, bottom) = plt.subplots(
        2, 1, figsize=(12, 7), sharex=True, gridspec_kw={"height_ratios": [3, 1.3]}
    )
    for name in shown:
        colour, style, width = EQUITY_POLICIES.get(name, (None, "-", 1.0))
        eq = result.runs[name].equity
        ts, usd = eq["ts"].to_numpy(), eq["equity_usd"].to_numpy()
        top.plot(ts, usd, color=colour, ls=style, lw=width, label=name)
        dd = 100.0 * (usd / np.maximum.accumulate(usd) - 1.0)
        bottom.plot(ts, dd, color=colour, ls=style, lw=width, label=name)
    for symbol, start, end in marked.iter_rows():
        for ax in (top, bottom):
            ax.axvspan(start, end, color=colours[symbol], alpha=0.25, lw=0)
            ax.axvline(start, color=colours[symbol], alpha=0.6, lw=0.7)
    for symbol in symbols:
        starts = marked.filter(pl.col("symbol") == symbol)["start"].to_numpy()
        if starts.size:
            top.plot(
                starts,
                np.ones(starts.size),
                ls="none",
                marker="v",
                ms=7,
                color=colours[symbol],
                transform=top.get_xaxis_transform(),
                clip_on=False,
                label=f"cascade {symbol} ({starts.size})",
            )
    top.yaxis.set_major_formatter(_USD)
    top.set(
        ylabel="portfolio value (USD)",
        title=f"Portfolio value, USD; marked: {events_source} ({marked.height} in the window)",
    )
    bottom.set_ylabel("drawdown (% below peak)")
    for ax in (top, bottom):
        ax.grid(alpha=0.3)
    top.legend(loc="best", fontsize=8, ncols=2)
    _time_axis(bottom)
    fig.align_ylabels()
    return fig


def equity_usd(
    result: BacktestResult,
    events: pl.DataFrame | None,
    path: Path,
    *,
    events_source: str = "cascades",
) -> Path:
    """:func:`equity_usd_figure` as a PNG at ``path``."""
    return save_figure(equity_usd_figure(result, events, events_source=events_source), path)


def _runs(column: pl.Series) -> list[tuple[int, int, str]]:
    """Runs of equal values in ``column``: (first index, index after the last, value)."""
    values = column.to_list()
    out, first = [], 0
    for i in range(1, len(values) + 1):
        if i == len(values) or values[i] != values[first]:
            out.append((first, i, values[first]))
            first = i
    return out


def _tier_bands(ax: plt.Axes, ts: np.ndarray, p_entry: np.ndarray, top: float) -> None:
    """The probability ranges of the tiers at each bar: ``edge x p_entry`` up to the next
    edge (the last up to ``top``), and baseline below ``p_entry``, light grey."""
    bounds = [*EDGES, np.inf]
    ax.fill_between(ts, 0, p_entry, color="0.9", alpha=0.5, lw=0, label="baseline")
    for tier, lo, hi in zip(TIERS[1:], bounds[:-1], bounds[1:], strict=True):
        upper = np.minimum(p_entry * hi, top)
        ax.fill_between(
            ts,
            np.minimum(p_entry * lo, top),
            upper,
            color=TIER_COLOURS[tier],
            alpha=0.22,
            lw=0,
            label=f"{tier} (p/p_entry {lo:g}-{hi:g})" if np.isfinite(hi) else f"{tier} (>= {lo:g})",
        )


def policy_figure(
    result: BacktestResult,
    symbol: str,
    events: pl.DataFrame | None = None,
    *,
    policy: str = "model",
) -> plt.Figure:
    """One symbol under the hedge policy ``policy`` (a run whose bars carry ``p``,
    ``p_entry`` and ``tier``), on one time axis: the price in USD with the symbol's
    cascades shaded; the probability (log scale) with the entry level ``p_entry`` the
    policy derived at each bar and the tier bands in probability (the edge ``p / p_entry``
    at 1, 2, 4 and 8); the target (fraction of the maximum hedge) and the short held (of
    the long value), on the tier held (shaded, ``vol_target`` included)."""
    bars = result.runs[policy].bars.filter(pl.col("symbol") == symbol).sort("ts")
    missing = [c for c in ("p", "p_entry", "tier") if c not in bars.columns]
    if missing:
        raise ValueError(f"the {policy!r} run's bars lack {missing}: not the hedge policy's run")
    ts = bars["ts"].to_numpy()
    fig, (price, prob, hedge) = plt.subplots(
        3, 1, figsize=(12, 8.5), sharex=True, gridspec_kw={"height_ratios": [2, 2, 1.4]}
    )
    price.plot(ts, bars["price"].to_numpy(), color="0.15", lw=1.0, label="price")
    cascades = _events_in(events, result, [symbol])
    for _, start, end in cascades.iter_rows():
        price.axvspan(start, end, color="tab:purple", alpha=0.3, lw=0)
        price.axvline(start, color="tab:purple", alpha=0.7, lw=0.8)
    if cascades.height:
        price.plot(
            cascades["start"].to_numpy(),
            np.ones(cascades.height),
            ls="none",
            marker="v",
            ms=7,
            color="tab:purple",
            transform=price.get_xaxis_transform(),
            clip_on=False,
            label=f"cascade ({cascades.height})",
        )
    price.legend(loc="upper left", fontsize=7)
    price.yaxis.set_major_formatter(_usd_ticks(bars["price"]))
    price.set(ylabel=f"{symbol} price (USD)", title=f"{symbol}: price, probability and hedge")
    p = bars["p"].fill_null(np.nan).to_numpy()
    p_entry = bars["p_entry"].fill_null(np.nan).to_numpy()
    floor = _log_floor(p, p_entry)
    _tier_bands(prob, ts, p_entry, 1.0)
    # a probability below the axis is drawn on its floor, not dropped
    shown = np.where(np.isnan(p), np.nan, np.maximum(p, floor))
    prob.plot(ts, shown, color="#6a3d9a", lw=1.0, label="p (model)")
    below = int(np.sum(p < floor))
    if below:
        prob.text(
            0.995,
            0.02,
            f"{below} bars with p < {floor:.1e} drawn on the axis floor",
            transform=prob.transAxes,
            ha="right",
            bbox={"facecolor": "white", "alpha": 0.8, "lw": 0},
            fontsize=7,
            color="0.3",
        )
    prob.plot(ts, p_entry, color="darkred", ls="--", lw=1.0, label="p_entry (derived)")
    prob.set(yscale="log", ylim=(floor, 1.0), ylabel="cascade probability (0-1, log)")
    prob.legend(loc="upper left", fontsize=7, ncols=4)
    target = bars["target_fraction"].fill_null(np.nan).to_numpy()
    held = _of_max(bars, result.settings.params[symbol])
    hedge.step(ts, target, where="post", color="tab:orange", lw=1.1, label="target")
    hedge.step(ts, held, where="post", color="tab:blue", lw=1.1, label="held")
    _held_tiers(hedge, ts, bars["tier"], result)
    hedge.set(ylabel="hedge (fraction of max, 0-1)", ylim=(-0.02, 1.05))
    for ax in (price, prob, hedge):
        ax.grid(alpha=0.3)
    _time_axis(hedge)
    fig.align_ylabels()
    return fig


def _of_max(bars: pl.DataFrame, params: PolicyParams) -> np.ndarray:
    """The short held as a fraction of the backtest's maximum hedge ``min(max_hedge_usd,
    hedge_ratio_max x beta_default x long value)``, the unit of the policy's target."""
    long = bars["long_usd"].to_numpy()
    top = np.minimum(params.max_hedge_usd, params.hedge_ratio_max * params.beta_default * long)
    return np.divide(bars["hedge_usd"].to_numpy(), top, out=np.zeros(long.size), where=top > 0)


def _held_tiers(ax: plt.Axes, ts: np.ndarray, tiers: pl.Series, result: BacktestResult) -> None:
    """The tier held, shaded over its bars (baseline left blank), one legend entry per
    tier shown."""
    seen: list[str] = []
    for first, after, tier in _runs(tiers):
        if tier in (None, "baseline"):
            continue
        end = ts[after] if after < ts.size else ts[-1] + np.timedelta64(result.bar)
        ax.axvspan(ts[first], end, color=TIER_COLOURS.get(tier, "0.6"), alpha=0.3, lw=0)
        seen += [] if tier in seen else [tier]
    handles = [Patch(color=TIER_COLOURS.get(t, "0.6"), alpha=0.3, label=f"held: {t}") for t in seen]
    lines, labels = ax.get_legend_handles_labels()
    ax.legend(
        [*lines, *handles],
        [*labels, *(h.get_label() for h in handles)],
        loc="upper left",
        fontsize=7,
        ncols=4,
    )


def _log_floor(p: np.ndarray, p_entry: np.ndarray) -> float:
    """The bottom of the probability axis: a tenth of the lower of the lowest entry level
    and the median positive probability, so that the tier bands and the bulk of ``p``
    fill the panel (scores decades below both are all calm: drawn on the floor)."""
    levels = [float(np.nanmin(p_entry[p_entry > 0]))] if (p_entry > 0).any() else []
    if (p > 0).any():
        levels.append(float(np.nanmedian(p[p > 0])))
    return max(1e-6, min(levels) / 10) if levels else 1e-4


def policy_panels(
    result: BacktestResult,
    events: pl.DataFrame | None,
    folder: Path,
    *,
    policy: str = "model",
) -> dict[str, Path]:
    """:func:`policy_figure` of every symbol as ``policy_<symbol>.png`` in ``folder``;
    returns ``policy_<symbol>`` -> path (nothing when the run has no ``policy``)."""
    if policy not in result.runs:
        return {}
    return {
        f"policy_{s}": save_figure(
            policy_figure(result, s, events, policy=policy), folder / f"policy_{s}.png"
        )
        for s in result.settings.weights
    }
