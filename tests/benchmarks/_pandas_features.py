"""The benchmark's baseline: the same feature graph, written the straightforward pandas way.

Same accepted rows (arrival order, out-of-order bars dropped), same windows, same
formulas (:mod:`oihedge.features.formulas` with numpy-backed ``ops``), computed with the usual
pandas tools: ``groupby(...).rolling("24h", on="ts")``, ``groupby().shift()``,
``merge_asof`` into a long (symbol, venue, decision time) frame, cross-venue numbers as
``groupby(["symbol", "t"])`` aggregations, and ``rolling().corr()``. It is not tuned, but
nothing in it is deliberately slow (no Python-level ``apply``).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta
from typing import Any

import numpy as np
import pandas as pd

from oihedge.features import formulas as f
from oihedge.features.graph import (
    At,
    Corr,
    CorrOthers,
    CorrPair,
    CrossMean,
    Field,
    GridLag,
    GridWindow,
    Map,
    Node,
    Reduce,
    Ref,
    RowMap,
    RowWindow,
    ScalarNode,
    VenueLag,
    VenueMap,
    level,
    topo_order,
)
from oihedge.features.spec import FeatureParams
from oihedge.features.windows import bars_ceil, max_age, min_count, ref_offsets, window_needed

KEYS = ["venue", "symbol"]
FLOATS = [
    "close",
    "high",
    "low",
    "volume_usd",
    "oi_usd",
    "funding_rate",
    "spot_close",
    "spot_depth_usd",
    "liq_long_usd",
    "liq_short_usd",
]
AMOUNTS = [
    "close",
    "high",
    "low",
    "volume_usd",
    "oi_usd",
    "spot_close",
    "spot_depth_usd",
    "liq_long_usd",
    "liq_short_usd",
]


class PandasOps:
    """``ops`` on float Series, NaN standing for null."""

    NULL = np.nan

    @staticmethod
    def div(a: Any, b: Any) -> Any:
        b = pd.Series(b) if np.isscalar(b) else b
        return a / b.where(b != 0)

    @staticmethod
    def log(x: Any) -> Any:
        return np.log(x.where(x > 0))

    @staticmethod
    def sqrt(x: Any) -> Any:
        return np.sqrt(x.where(x >= 0))

    @staticmethod
    def abs(x: Any) -> Any:
        return np.abs(x)

    @staticmethod
    def where(cond: Any, a: Any, b: Any) -> Any:
        a = np.nan if a is None else a
        b = np.nan if b is None else b
        return pd.Series(np.where(cond, a, b), index=cond.index)

    @staticmethod
    def maximum(a: Any, b: Any) -> Any:
        return np.maximum(a, b)

    @staticmethod
    def minimum(a: Any, b: Any) -> Any:
        return np.minimum(a, b)


OPS = PandasOps()


def formula(fn: f.Formula, args: Sequence[pd.Series], consts: Sequence[float]) -> pd.Series:
    out = pd.Series(fn(OPS, *args, *consts), dtype="float64")
    bad = ~np.isfinite(out)
    for a in args:
        bad |= a.isna()
    return out.mask(bad)


def accept(panel: pd.DataFrame, bar: timedelta) -> pd.DataFrame:
    """Rows in arrival order; invalid and out-of-order rows dropped (sorted by series)."""
    df = panel.sort_values(["known_at", "ts", "venue", "symbol"], kind="stable")
    ok = df[["ts", "venue", "symbol", "known_at"]].notna().all(axis=1)
    for c in FLOATS:
        ok &= df[c].isna() | np.isfinite(df[c])
    for c in AMOUNTS:
        ok &= ~(df[c] < 0)
    ok &= ~(df["close"] == 0) & ~(df["high"] < df["low"])
    ok &= ~((df["close"] > df["high"] * (1 + 1e-9)) | (df["close"] < df["low"] * (1 - 1e-9)))
    ok &= df["known_at"] >= df["ts"]
    ok &= df["ts"].dt.as_unit("us").astype("int64") % (bar // timedelta(microseconds=1)) == 0
    df = df[ok]
    before = df.groupby(KEYS)["ts"].cummax().groupby([df["venue"], df["symbol"]]).shift(1)
    df = df[before.isna() | (df["ts"] > before)]
    return df.sort_values([*KEYS, "ts"]).reset_index(drop=True)


def row_grid(rows: pd.DataFrame, bar: timedelta) -> pd.DataFrame:
    parts = []
    for (venue, symbol), g in rows.groupby(KEYS, sort=True):
        full = pd.date_range(g["ts"].min(), g["ts"].max(), freq=bar)
        g = g.set_index("ts").reindex(full).rename_axis("ts").reset_index()
        g["venue"], g["symbol"] = venue, symbol
        parts.append(g)
    grid = pd.concat(parts, ignore_index=True)
    grid["_row"] = grid["known_at"].notna()
    return grid


def compute(
    panel: pd.DataFrame, roots: dict[str, ScalarNode], params: FeatureParams
) -> pd.DataFrame:
    """The feature table (ts, symbol, features), like :func:`oihedge.features.batch.engine.compute`."""
    assert params.bar is not None
    bar = params.bar
    rows = accept(panel, bar)
    order = topo_order(roots.values())
    name = {n: f"n{i}" for i, n in enumerate(order)}
    grid = _rows(row_grid(rows, bar), [n for n in order if level(n) == "row"], name, params)
    venues = sorted(rows["venue"].unique())
    symbols = sorted(rows["symbol"].unique())
    first = rows["known_at"].min().ceil(bar)
    last = rows["known_at"].max().ceil(bar)
    times = pd.date_range(first, last, freq=bar)
    dec = pd.DataFrame(
        {"symbol": np.repeat(symbols, len(times)), "t": np.tile(times, len(symbols))}
    )
    at_nodes = [n for n in order if isinstance(n, At)]
    long = _as_of(grid, dec, at_nodes, name, venues, params)
    cols: dict[str, pd.Series] = {}
    for node in order:
        if level(node) != "row" and not isinstance(node, At):
            _decision(dec, cols, long, node, name, symbols, params)
    out = pd.concat(
        [
            dec[["t", "symbol"]].rename(columns={"t": "ts"}),
            pd.DataFrame({feature: cols[name[node]] for feature, node in roots.items()}),
        ],
        axis=1,
    )
    return out.sort_values(["ts", "symbol"]).reset_index(drop=True)


def _chan(grid: pd.DataFrame, channel: tuple[str, ...]) -> pd.Series:
    return grid["_row"] & grid[list(channel)].notna().all(axis=1)


def _rows(
    grid: pd.DataFrame, order: Sequence[Node], name: dict[Node, str], params: FeatureParams
) -> pd.DataFrame:
    assert params.bar is not None
    for node in order:
        on = _chan(grid, node.channel)  # type: ignore[union-attr]
        if isinstance(node, Field):
            value = grid[node.column]
        elif isinstance(node, Ref):
            offsets = ref_offsets(node, params.bar)
            if offsets is None:
                grid[name[node]] = np.nan
                continue
            a, b = offsets
            masked = grid[node.column].where(on)
            filled = (
                masked.groupby([grid["venue"], grid["symbol"]]).ffill(limit=b - a or None)
                if b > a
                else masked
            )
            value = filled.groupby([grid["venue"], grid["symbol"]]).shift(a)
        elif isinstance(node, RowWindow):
            src = grid[[*KEYS, "ts"]].assign(x=grid[name[node.source]])
            rolled = src.groupby(KEYS).rolling(node.window, on="ts")["x"]
            # grid rows are sorted by (venue, symbol, ts), as the groups come out
            total = pd.Series(rolled.sum().to_numpy(), index=grid.index)
            count = pd.Series(rolled.count().to_numpy(), index=grid.index)
            fn = f.window_sum if node.how == "sum" else f.window_mean
            value = formula(fn, [total, count], [float(window_needed(node, params))])
        elif isinstance(node, RowMap):
            value = formula(node.fn, [grid[name[a]] for a in node.args], node.consts)
        else:
            raise TypeError(node)
        grid[name[node]] = value.where(on)
    return grid


def _as_of(
    grid: pd.DataFrame,
    dec: pd.DataFrame,
    at_nodes: Sequence[At],
    name: dict[Node, str],
    venues: Sequence[str],
    params: FeatureParams,
) -> pd.DataFrame:
    """The long frame: one row per (symbol, venue, decision time) with each At value."""
    index = pd.Series(np.arange(len(grid)), dtype="float64")
    right = grid[[*KEYS, "ts", "known_at", "_row"]].copy()
    stamps = grid["ts"].to_numpy(dtype="datetime64[us]")
    for c in sorted({a.row.channel for a in at_nodes}):
        last = index.where(_chan(grid, c)).groupby([grid["venue"], grid["symbol"]]).ffill()
        take = last.fillna(-1).astype(int).to_numpy()
        ok = take >= 0
        channel_ts = pd.Series(np.where(ok, stamps[take], np.datetime64("NaT")), index=grid.index)
        right[f"ts:{c}"] = channel_ts.dt.tz_localize("UTC")
        for a in at_nodes:
            if a.row.channel == c:
                right[name[a]] = np.where(ok, grid[name[a.row]].to_numpy()[take], np.nan)
    right = right[right["_row"]].drop_duplicates([*KEYS, "known_at"], keep="last")
    left = dec.merge(pd.DataFrame({"venue": list(venues)}), how="cross").sort_values("t")
    joined = pd.merge_asof(
        left,
        right.sort_values("known_at"),
        left_on="t",
        right_on="known_at",
        by=["symbol", "venue"],
    )
    out = joined[["symbol", "venue", "t"]].copy()
    for a in at_nodes:
        fresh = (joined["t"] - joined[f"ts:{a.row.channel}"]) <= max_age(a, params)
        out[name[a]] = joined[name[a]].where(fresh)
    return out.sort_values(["symbol", "venue", "t"]).reset_index(drop=True)


def _decision(
    dec: pd.DataFrame,
    cols: dict[str, pd.Series],
    long: pd.DataFrame,
    node: Node,
    name: dict[Node, str],
    symbols: Sequence[str],
    params: FeatureParams,
) -> None:
    """One decision node: venue nodes are columns of ``long``, scalar ones of ``cols``."""
    assert params.bar is not None
    key, sym = name[node], dec["symbol"]
    if isinstance(node, VenueLag):
        n = bars_ceil(node.window, params.bar)
        long[key] = long.groupby(["symbol", "venue"])[name[node.source]].shift(n)
    elif isinstance(node, VenueMap):
        scalars = [a for a in node.args if level(a) != "venue"]
        frame = long
        if scalars:
            table = dec[["symbol", "t"]].assign(**{name[a]: cols[name[a]] for a in scalars})
            frame = long[["symbol", "t"]].merge(table, on=["symbol", "t"], how="left")
            frame.index = long.index
        args = [long[name[a]] if level(a) == "venue" else frame[name[a]] for a in node.args]
        long[key] = formula(node.fn, args, node.consts)
    elif isinstance(node, Reduce):
        cols[key] = pd.Series(
            _reduce(node.how, long, [name[a] for a in node.args]), index=dec.index
        )
    elif isinstance(node, Map):
        cols[key] = formula(node.fn, [cols[name[a]] for a in node.args], node.consts)
    elif isinstance(node, GridLag):
        cols[key] = cols[name[node.source]].groupby(sym).shift(bars_ceil(node.window, params.bar))
    elif isinstance(node, GridWindow):
        n, needed = bars_ceil(node.window, params.bar), min_count(node.window, params)
        rolled = cols[name[node.source]].groupby(sym).rolling(n, min_periods=needed)
        # decision rows are sorted by (symbol, t), as the groups come out
        mean = pd.Series(rolled.mean().to_numpy(), index=dec.index)
        if node.how == "mean":
            cols[key] = mean
            return
        std = pd.Series(rolled.std().to_numpy(), index=dec.index).where(lambda s: s > 0)
        cols[key] = std if node.how == "std" else (cols[name[node.source]] - mean) / std
    elif isinstance(node, Corr):
        frame = pd.DataFrame({"symbol": sym, "x": cols[name[node.x]], "y": cols[name[node.y]]})
        cols[key] = _corr_by_symbol(frame, "x", "y", node.window, params)
    elif isinstance(node, CrossMean):
        cols[key] = dec["t"].map(cols[name[node.source]].groupby(dec["t"]).mean())
    elif isinstance(node, CorrOthers | CorrPair):
        frame = dec[["t", "symbol"]].assign(x=cols[name[node.x]])
        cols[key] = _cross_corr(frame, node, symbols, params)
    else:
        raise TypeError(node)


def _reduce(how: str, long: pd.DataFrame, columns: list[str]) -> np.ndarray:
    """Across venues: ``long.groupby(["symbol", "t"])`` aggregations (rows come out in
    (symbol, t) order, the decision frame's)."""
    keys = [long["symbol"], long["t"]]
    x = long[columns[0]]
    if how in ("ratio", "wmean"):
        w = long[columns[1]]
        both = x.notna() & w.notna()
        top = (x * w if how == "wmean" else x).where(both)
        sums = pd.DataFrame({"top": top, "w": w.where(both)}).groupby(keys).sum(min_count=1)
        return (sums["top"] / sums["w"].where(sums["w"] != 0)).to_numpy()
    grouped = x.groupby(keys)
    if how == "sum":
        return grouped.sum(min_count=1).to_numpy()
    if how == "mean":
        return grouped.mean().to_numpy()
    if how == "max":
        return grouped.max().to_numpy()
    if how == "min":
        return grouped.min().to_numpy()
    count = grouped.count()
    if how == "spread":
        return (grouped.max() - grouped.min()).where(count >= 2).to_numpy()
    if how == "std":
        return grouped.std(ddof=0).where(count >= 2).to_numpy()
    raise ValueError(how)


def _corr_by_symbol(
    dec: pd.DataFrame, x: str, y: str, window: timedelta, params: FeatureParams
) -> pd.Series:
    assert params.bar is not None
    n = bars_ceil(window, params.bar)
    needed = max(min_count(window, params), f.MIN_CORR_PAIRS)
    parts = [g[x].rolling(n, min_periods=needed).corr(g[y]) for _, g in dec.groupby("symbol")]
    return pd.concat(parts).sort_index().clip(-1, 1)


def _cross_corr(
    dec: pd.DataFrame, node: CorrOthers | CorrPair, symbols: Sequence[str], params: FeatureParams
) -> pd.Series:
    assert params.bar is not None
    n = bars_ceil(node.window, params.bar)
    needed = max(min_count(node.window, params), f.MIN_CORR_PAIRS)
    wide = dec.pivot(index="t", columns="symbol", values="x")
    pair = {}
    for i, a in enumerate(symbols):
        for b in symbols[i + 1 :]:
            pair[(a, b)] = pair[(b, a)] = (
                wide[a].rolling(n, min_periods=needed).corr(wide[b]).clip(-1, 1)
            )
    if isinstance(node, CorrPair):
        series = pair.get((node.a, node.b))
        values = series if series is not None else pd.Series(np.nan, index=wide.index)
        return dec["t"].map(values)
    out = pd.Series(np.nan, index=dec.index)
    for s in symbols:
        others = pd.concat([pair[(s, o)] for o in symbols if o != s], axis=1).mean(axis=1)
        rows = dec["symbol"] == s
        out[rows] = dec.loc[rows, "t"].map(others).to_numpy()
    return out
