"""Batch backend: every feature of a graph over a whole panel, vectorised with polars.

:func:`compute` takes the accepted rows (:mod:`features.stream`), evaluates the row
nodes on each series (:mod:`features.batch_rows`), takes each venue's view at every
decision time, then the venue and scalar nodes on the (symbol, t) grid. Cross-venue
reductions fold over the venues in sorted order and cross-asset ones over the symbols in
sorted order, as the online backend does, so both give the same bits.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from itertools import combinations

import numpy as np
import polars as pl

from features import formulas as f
from features.batch_rows import NULL, compute_rows, row_grid, venue_column, venue_views
from features.batch_stage import WITHIN, Layout, Stager, apply_formula, shifted
from features.graph import (
    At,
    Corr,
    CorrOthers,
    CorrPair,
    CrossMean,
    GridLag,
    GridWindow,
    Map,
    Node,
    Reduce,
    ScalarNode,
    VenueLag,
    VenueMap,
    depth_levels,
    level,
    topo_order,
)
from features.spec import FeatureParams
from features.stream import decision_grid
from features.windows import bars_ceil, min_count

Progress = Callable[[float], None]


def node_names(order: Sequence[Node]) -> dict[Node, str]:
    """A column name per node: ``r<i>`` (row), ``v<i>`` (venue, suffixed), ``s<i>``."""
    prefix = {"row": "r", "venue": "v", "scalar": "s"}
    return {node: f"{prefix[level(node)]}{i}" for i, node in enumerate(order)}


def compute(
    accepted: pl.DataFrame,
    roots: dict[str, ScalarNode],
    params: FeatureParams,
    *,
    progress: Progress | None = None,
) -> pl.DataFrame:
    """The feature table: ``ts``, ``symbol`` and one Float64 column per root, one row per
    (decision time, symbol), sorted by (ts, symbol)."""
    assert params.bar is not None
    report = progress or (lambda _: None)
    order = topo_order(roots.values())
    names = node_names(order)
    venues = sorted(accepted["venue"].unique().to_list())
    symbols = sorted(accepted["symbol"].unique().to_list())
    times = decision_grid(accepted, params.bar)
    decisions = (
        pl.DataFrame({"symbol": symbols}, schema={"symbol": pl.String})
        .join(times.to_frame(), how="cross")
        .sort("symbol", "t")
        .with_columns(pl.int_range(pl.len(), dtype=pl.Int64).over("symbol").alias(WITHIN))
    )
    if accepted.is_empty():
        return _output(decisions, roots, names)
    rows = [n for n in order if level(n) == "row"]
    at_nodes = [n for n in order if isinstance(n, At)]
    grid = compute_rows(row_grid(accepted, params.bar), rows, names, params)
    report(0.35)
    frame = venue_views(decisions, grid, at_nodes, names, venues, params)
    del grid
    report(0.6)
    later = [n for n in order if level(n) != "row" and not isinstance(n, At)]
    frame = _compute_decisions(frame, later, names, venues, symbols, params, report)
    return _output(frame, roots, names)


def _output(
    frame: pl.DataFrame, roots: dict[str, ScalarNode], names: dict[Node, str]
) -> pl.DataFrame:
    cols = [
        (pl.col(names[node]) if names[node] in frame.columns else NULL).alias(name)
        for name, node in roots.items()
    ]
    table = frame.select(pl.col("t").alias("ts"), "symbol", *cols)
    # from one block of decision times per symbol to (ts, symbol) order
    blocks = max(frame["symbol"].n_unique(), 1)
    return table[np.arange(table.height).reshape(blocks, -1).T.ravel()]


def _compute_decisions(
    frame: pl.DataFrame,
    nodes: Sequence[Node],
    names: dict[Node, str],
    venues: Sequence[str],
    symbols: Sequence[str],
    params: FeatureParams,
    report: Progress,
) -> pl.DataFrame:
    depth = depth_levels(topo_order(nodes))
    levels = sorted({depth[n] for n in nodes})
    stager = Stager("_dt")
    layout = Layout(frame["symbol"].rle_id().to_numpy())
    pairs: dict[tuple[str, object], dict[tuple[str, ...], pl.Series]] = {}
    for step, lvl in enumerate(levels):
        batch = [n for n in nodes if depth[n] == lvl]
        exprs: list[pl.Expr] = []
        for node in batch:
            if not isinstance(node, CrossMean | CorrOthers | CorrPair):
                exprs.extend(_decision_exprs(node, names, len(venues), params, stager, layout))
        frame = stager.flush(frame).with_columns(exprs)
        frame = stager.release(frame)
        for node in batch:
            if isinstance(node, CrossMean | CorrOthers | CorrPair):
                frame = frame.with_columns(_cross(node, frame, names, symbols, params, pairs))
        report(0.6 + 0.4 * (step + 1) / len(levels))
    return frame


def _col(node: Node, names: dict[Node, str], venue: int) -> pl.Expr:
    """A node's column; venue nodes per venue, scalar nodes broadcast."""
    if level(node) == "venue":
        return pl.col(venue_column(names[node], venue))
    return pl.col(names[node])


def _decision_exprs(
    node: Node,
    names: dict[Node, str],
    n_venues: int,
    params: FeatureParams,
    st: Stager,
    layout: Layout,
) -> list[pl.Expr]:
    assert params.bar is not None
    name = names[node]
    if isinstance(node, VenueLag):
        n = bars_ceil(node.window, params.bar)
        return [
            shifted(_col(node.source, names, v), n).alias(venue_column(name, v))
            for v in range(n_venues)
        ]
    if isinstance(node, VenueMap):
        return [
            apply_formula(node.fn, [_col(a, names, v) for a in node.args], node.consts, st).alias(
                venue_column(name, v)
            )
            for v in range(n_venues)
        ]
    if isinstance(node, Reduce):
        cols = [[_col(a, names, v) for v in range(n_venues)] for a in node.args]
        return [reduce_expr(node.how, cols, st).alias(name)]
    if isinstance(node, Map):
        args = [pl.col(names[a]) for a in node.args]
        return [apply_formula(node.fn, args, node.consts, st).alias(name)]
    if isinstance(node, GridLag):
        n = bars_ceil(node.window, params.bar)
        return [shifted(pl.col(names[node.source]), n).alias(name)]
    if isinstance(node, GridWindow):
        source = pl.col(names[node.source])
        return [grid_window_expr(node, source, params, st, layout).alias(name)]
    if isinstance(node, Corr):
        x, y = pl.col(names[node.x]), pl.col(names[node.y])
        return [corr_expr(x, y, node.window, params, st, layout).alias(name)]
    raise TypeError(f"not a decision node: {node!r}")


# -- folds across venues (sorted venue order; nulls skipped) ------------------------------


def fold_sum(cols: Sequence[pl.Expr]) -> pl.Expr:
    """Left-to-right sum of the non-null values; null when all are null.

    A null adds ``-0.0``, which leaves any sum bit for bit as it is (``-0.0 + x == x``,
    also for ``x = -0.0``): the same as skipping it, in one expression.
    """
    total = cols[0].fill_null(-0.0)
    for col in cols[1:]:
        total = total + col.fill_null(-0.0)
    return pl.when(pl.any_horizontal([c.is_not_null() for c in cols])).then(total)


def fold_count(cols: Sequence[pl.Expr]) -> pl.Expr:
    return pl.sum_horizontal([c.is_not_null() for c in cols]).cast(pl.Float64)


def reduce_expr(how: str, args: Sequence[Sequence[pl.Expr]], st: Stager) -> pl.Expr:
    """One :class:`Reduce` over venue columns ``args[i][venue]``."""
    cols = args[0]
    if how in ("ratio", "wmean"):
        a, b = args
        both = [x.is_not_null() & y.is_not_null() for x, y in zip(a, b, strict=True)]
        top = [x * y if how == "wmean" else x for x, y in zip(a, b, strict=True)]
        num = fold_sum([pl.when(ok).then(t) for ok, t in zip(both, top, strict=True)])
        den = fold_sum([pl.when(ok).then(y) for ok, y in zip(both, b, strict=True)])
        return apply_formula(f.share, [st.put(num), st.put(den)], [], st)
    if how == "sum":
        return fold_sum(cols)
    if how == "max":
        return pl.max_horizontal(cols)
    if how == "min":
        return pl.min_horizontal(cols)
    count = st.put(fold_count(cols))
    if how == "mean":
        return pl.when(count > 0).then(fold_sum(cols) / count)
    high, low = st.put(pl.max_horizontal(cols)), st.put(pl.min_horizontal(cols))
    if how == "spread":
        return pl.when(count >= 2).then(high - low)
    if how == "std":
        mean = st.put(fold_sum(cols) / count)
        squares = fold_sum([(c - mean) * (c - mean) for c in cols])
        return (
            pl.when(count < 2)
            .then(None)
            .when(high == low)
            .then(0.0)
            .otherwise((squares / count).sqrt())
        )
    raise ValueError(f"unknown reduction {how!r}")


# -- windows on the decision grid -------------------------------------------------------


def grid_window_expr(
    node: GridWindow, x: pl.Expr, params: FeatureParams, st: Stager, layout: Layout
) -> pl.Expr:
    """Mean / std / z of ``x`` over the last ``window`` of decision times, per symbol.

    std and z use sums of ``x - k`` with ``k`` the symbol's first value, which keeps the
    variance accurate when the level is far from zero.
    """
    assert params.bar is not None
    n = bars_ceil(node.window, params.bar)
    needed = [float(min_count(node.window, params))]
    count = st.window(x, n, layout, count=True)
    if node.how == "mean":
        return apply_formula(f.window_mean, [st.window(x, n, layout), count], needed, st)
    dev = st.put(x - x.filter(x.is_not_null()).first().over("symbol"))
    s1 = st.window(dev, n, layout)
    s2 = st.window(dev * dev, n, layout)
    if node.how == "std":
        return apply_formula(f.window_std, [count, s1, s2], needed, st)
    return apply_formula(f.window_z, [dev, count, s1, s2], needed, st)


def corr_expr(
    x: pl.Expr,
    y: pl.Expr,
    window: object,
    params: FeatureParams,
    st: Stager,
    layout: Layout,
) -> pl.Expr:
    """Rolling Pearson correlation of the pairs where both are non-null."""
    assert params.bar is not None
    n = bars_ceil(window, params.bar)  # type: ignore[arg-type]
    both = x.is_not_null() & y.is_not_null()
    xs, ys = st.put(pl.when(both).then(x)), st.put(pl.when(both).then(y))
    quantities = [both.cast(pl.Float64), xs, ys, xs * ys, xs * xs, ys * ys]
    sums = [st.window(q, n, layout) for q in quantities]
    needed = float(min_count(window, params))  # type: ignore[arg-type]
    return apply_formula(f.corr_from_sums, sums, [needed], st)


# -- across symbols ---------------------------------------------------------------------


def _wide(frame: pl.DataFrame, column: str, symbols: Sequence[str]) -> pl.DataFrame:
    """``column`` with one column per symbol, rows in decision-time order."""
    height = frame.height // len(symbols)
    values = frame[column]
    return pl.DataFrame({s: values.slice(i * height, height) for i, s in enumerate(symbols)})


def _long(per_symbol: dict[str, pl.Series], symbols: Sequence[str], name: str) -> pl.Series:
    return pl.concat([per_symbol[s] for s in symbols]).alias(name).cast(pl.Float64)


def _cross(
    node: CrossMean | CorrOthers | CorrPair,
    frame: pl.DataFrame,
    names: dict[Node, str],
    symbols: Sequence[str],
    params: FeatureParams,
    known_pairs: dict[tuple[str, object], dict[tuple[str, ...], pl.Series]],
) -> pl.Series:
    """A cross-asset node; pair correlations are computed once per (input, window) and
    kept in ``known_pairs``."""
    name = names[node]
    source = names[node.source if isinstance(node, CrossMean) else node.x]
    wide = _wide(frame, source, symbols)
    if isinstance(node, CrossMean):
        mean = _fold_mean(wide, [pl.col(s) for s in symbols])
        return _long({s: mean for s in symbols}, symbols, name)
    if (source, node.window) not in known_pairs:
        known_pairs[source, node.window] = _pair_corrs(wide, node.window, params, symbols)
    pairs = known_pairs[source, node.window]
    if isinstance(node, CorrPair):
        key = tuple(sorted((node.a, node.b)))
        series = pairs.get(key)
        if series is None:
            series = pl.Series([None] * wide.height, dtype=pl.Float64)
        return _long({s: series for s in symbols}, symbols, name)
    out: dict[str, pl.Series] = {}
    for s in symbols:
        others = [pairs[tuple(sorted((s, o)))] for o in symbols if o != s]
        if not others:
            out[s] = pl.Series([None] * wide.height, dtype=pl.Float64)
            continue
        table = pl.DataFrame({str(i): c for i, c in enumerate(others)})
        out[s] = _fold_mean(table, [pl.col(str(i)) for i in range(len(others))])
    return _long(out, symbols, name)


def _fold_mean(frame: pl.DataFrame, cols: Sequence[pl.Expr]) -> pl.Series:
    """Row-wise mean of the non-null values, summed left to right."""
    count = fold_count(cols)
    return frame.select(pl.when(count > 0).then(fold_sum(cols) / count)).to_series()


def _pair_corrs(
    wide: pl.DataFrame, window: object, params: FeatureParams, symbols: Sequence[str]
) -> dict[tuple[str, ...], pl.Series]:
    """Correlation of every pair of symbols (keys sorted), computed once per pair."""
    st = Stager("_pt")
    layout = Layout(np.zeros(wide.height, dtype=np.int64))
    exprs = [
        corr_expr(pl.col(a), pl.col(b), window, params, st, layout).alias(f"{a}|{b}")
        for a, b in combinations(symbols, 2)
    ]
    if not exprs:
        return {}
    table = st.flush(wide).select(exprs)
    return {tuple(c.split("|")): table[c] for c in table.columns}
