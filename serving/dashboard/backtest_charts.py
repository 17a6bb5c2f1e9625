"""The Backtest page's chart data, read from a report's data files
(:func:`oihedge.serving.backtest.outputs.write_outputs`): the hedging frontier from
``metrics.csv``, every shown policy's equity in USD and drawdown from ``equity.parquet``,
the cascades from ``events.parquet``, the hedge per symbol with the model's tiers from
``bars.parquet``. Plotly.js draws them in the browser (``static/dashboard.js``)."""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from oihedge.serving.dashboard.data import tier_bands

__all__ = ["EQUITY_POLICIES", "HEDGE_POLICIES", "backtest_charts", "frontier_series"]

#: the equity chart's rows, when the report has them (else every policy)
EQUITY_POLICIES: tuple[str, ...] = ("no_hedge", "model", "static_matched", "vol_target_matched")
#: the hedge chart's rows, when the report has them
HEDGE_POLICIES: tuple[str, ...] = ("model", "static_matched", "vol_target_matched", "fixed_rule")
#: the frontier's families drawn as one line each: name pattern (group: the parameter)
_FAMILIES: tuple[tuple[str, str], ...] = (
    ("static", r"static_(\d+(?:\.\d+)?)"),
    ("vol target", r"vol_target_(\d+(?:\.\d+)?)"),
    ("model (risk budgets)", r"model_budget_(\d+(?:\.\d+)?)"),
)
_TIME = "%Y-%m-%d %H:%M:%S"  # the date form Plotly reads (UTC, no offset)


def _finite(value: object) -> bool:
    return isinstance(value, int | float) and math.isfinite(value)


def frontier_series(table: pl.DataFrame) -> list[dict[str, Any]]:
    """The frontier's traces from a metrics table: one per family (static, vol target,
    the model's risk budgets, the default ``model`` joining the last) sorted by mean
    hedge, then one point per other policy. Each: ``name``, ``policies``, ``x`` (mean
    hedge ratio, % of long value), ``worst`` (worst 24 h loss, % of portfolio),
    ``cvar`` (CVaR 95 % of daily returns, %), ``line`` (a family or a point). Rows
    with a NaN mean hedge or tail metric are left out."""
    need = ("policy", "mean_hedge_ratio", "worst_24h_loss", "cvar_95_daily")
    missing = [c for c in need if c not in table.columns]
    if missing:
        raise ValueError(f"metrics.csv lacks the column(s) {missing} the frontier needs")
    rows = {
        r["policy"]: r
        for r in table.select(need).iter_rows(named=True)
        if all(_finite(r[c]) for c in need[1:])
    }
    traces, placed = [], set()
    for label, pattern in _FAMILIES:
        members = [n for n in rows if re.fullmatch(pattern, n)]
        if label.startswith("model") and "model" in rows:
            members.append("model")
        if not members:
            continue
        members.sort(key=lambda n: rows[n]["mean_hedge_ratio"])
        placed.update(members)
        traces.append(_trace(label, members, rows, line=True))
    for name in (n for n in rows if n not in placed):
        traces.append(_trace(name, [name], rows, line=False))
    return traces


def _trace(
    name: str, members: list[str], rows: dict[str, dict[str, Any]], *, line: bool
) -> dict[str, Any]:
    return {
        "name": name,
        "policies": members,
        "x": [100.0 * rows[n]["mean_hedge_ratio"] for n in members],
        "worst": [100.0 * rows[n]["worst_24h_loss"] for n in members],
        "cvar": [100.0 * rows[n]["cvar_95_daily"] for n in members],
        "line": line,
    }


def _every(frame: pl.DataFrame, max_points: int) -> pl.DataFrame:
    """Every k-th row (and the last) so that at most about ``max_points`` remain."""
    if frame.height <= max_points:
        return frame
    step = -(-frame.height // max_points)
    keep = np.zeros(frame.height, dtype=bool)
    keep[::step] = True
    keep[-1] = True
    return frame.filter(pl.Series(keep))


def _times(column: pl.Series) -> list[str]:
    return column.dt.convert_time_zone("UTC").dt.strftime(_TIME).to_list()


def _equity(folder: Path, max_points: int) -> dict[str, dict[str, Any]]:
    """Per shown policy: ``ts``, ``usd`` (portfolio value) and ``drawdown_pct`` (below
    the running peak, computed on every bar before thinning)."""
    equity = pl.read_parquet(folder / "equity.parquet")
    names = equity["policy"].unique(maintain_order=True).to_list()
    shown = [p for p in EQUITY_POLICIES if p in names] or names
    out = {}
    for name in shown:
        rows = (
            equity.filter(pl.col("policy") == name)
            .sort("ts")
            .with_columns(
                (100.0 * (pl.col("equity_usd") / pl.col("equity_usd").cum_max() - 1.0)).alias(
                    "drawdown_pct"
                )
            )
        )
        rows = _every(rows, max_points)
        out[name] = {
            "ts": _times(rows["ts"]),
            "usd": rows["equity_usd"].to_list(),
            "drawdown_pct": rows["drawdown_pct"].to_list(),
        }
    return out


def _cascades(folder: Path, equity: pl.DataFrame | None) -> tuple[list[dict[str, Any]], str]:
    """The report's cascade events ``{symbol, start, end, usd}`` (``usd``: the first
    shown policy's portfolio value at the start, where its marker sits) and their source."""
    path = folder / "events.parquet"
    if not path.is_file():
        raise FileNotFoundError(f"no events.parquet in {folder}: no cascade is marked")
    events = pl.read_parquet(path).sort("start")
    source = str(events["source"][0]) if events.height and "source" in events.columns else ""
    usd: list[float | None] = [None] * events.height
    if equity is not None and events.height:
        at = events.select(pl.col("start").alias("ts")).join_asof(
            equity.select("ts", "equity_usd").sort("ts"), on="ts", strategy="backward"
        )
        usd = at["equity_usd"].to_list()
    rows = [
        {"symbol": s, "start": a, "end": b, "usd": u}
        for s, a, b, u in zip(
            events["symbol"].to_list(),
            _times(events["start"]),
            _times(events["end"]),
            usd,
            strict=True,
        )
    ]
    return rows, source


def _hedges(folder: Path, max_points: int) -> dict[str, dict[str, Any]]:
    """Per symbol: ``ts``; ``policies``: policy -> hedge held as a fraction of the long
    value (short / long); ``bands``: the tiers the model held
    (:func:`oihedge.serving.dashboard.data.tier_bands`; none without the model's tiers)."""
    bars = pl.read_parquet(folder / "bars.parquet")
    names = set(bars["policy"].unique())
    shown = [p for p in HEDGE_POLICIES if p in names]
    out: dict[str, dict[str, Any]] = {}
    for symbol in bars["symbol"].unique(maintain_order=True).to_list():
        part = bars.filter(pl.col("symbol") == symbol)
        series: dict[str, Any] = {"policies": {}, "bands": []}
        for name in shown:
            rows = _every(part.filter(pl.col("policy") == name).sort("ts"), max_points)
            ratio = rows.select(
                pl.when(pl.col("long_usd") > 0)
                .then(pl.col("hedge_usd") / pl.col("long_usd"))
                .otherwise(0.0)
            ).to_series()
            series["ts"] = _times(rows["ts"])
            series["policies"][name] = ratio.to_list()
            if name == "model" and "tier" in rows.columns:
                model = part.filter(pl.col("policy") == "model").sort("ts")
                series["bands"] = tier_bands(_times(model["ts"]), model["tier"].to_list())
        if series["policies"]:
            out[symbol] = series
    return out


def backtest_charts(folder: Path, max_points: int) -> tuple[dict[str, Any], list[str]]:
    """The Backtest page's chart data from the report in ``folder``, and what could not
    be charted (a file missing or unreadable, said on the page): ``frontier``
    (:func:`frontier_series`), ``equity`` (per policy ``{ts, usd, drawdown_pct}``),
    ``cascades`` and ``cascades_source``, ``hedge`` (per symbol). Each series keeps at
    most about ``max_points`` points."""
    charts: dict[str, Any] = {
        "frontier": [],
        "equity": {},
        "cascades": [],
        "cascades_source": "",
        "hedge": {},
    }
    problems: list[str] = []
    try:
        charts["frontier"] = frontier_series(pl.read_csv(folder / "metrics.csv"))
    except (ValueError, OSError, pl.exceptions.PolarsError) as err:
        problems.append(f"frontier: {err}")
    equity = None
    try:
        charts["equity"] = _equity(folder, max_points)
        first = next(iter(charts["equity"]), None)
        equity = pl.read_parquet(folder / "equity.parquet").filter(pl.col("policy") == first)
    except (OSError, pl.exceptions.PolarsError) as err:
        problems.append(f"equity: {err} (a report written before equity.parquet existed?)")
    try:
        charts["cascades"], charts["cascades_source"] = _cascades(folder, equity)
    except (OSError, pl.exceptions.PolarsError) as err:
        problems.append(f"cascades: {err}")
    try:
        charts["hedge"] = _hedges(folder, max_points)
    except (OSError, pl.exceptions.PolarsError) as err:
        problems.append(f"hedge: {err}")
    return charts, problems
