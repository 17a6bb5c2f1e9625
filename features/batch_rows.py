"""Batch backend, first half: expression staging, row nodes on every (venue, symbol)
series, and the as-of view of each venue at every decision time.

Each series is laid on its complete bar grid (first to last accepted ts; missing bars
are null rows), so a window of ``window`` is a fixed number of grid rows, a reference
``window`` back is a shift, and sums over windows are differences of cumulative sums --
the same additions, in the same order, as the online backend's running sums.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta

import numpy as np
import polars as pl

from features import formulas as f
from features.batch_stage import WITHIN, Layout, Stager, apply_formula
from features.graph import At, Field, Node, Ref, RowMap, RowWindow
from features.spec import FeatureParams
from features.windows import bars_ceil, max_age, ref_offsets, window_needed

SERIES = ("venue", "symbol")
#: the integer series id column the grid carries (cheaper to group by than two strings)
SID = "_sid"
NULL = pl.lit(None, dtype=pl.Float64)


def row_grid(accepted: pl.DataFrame, bar: timedelta) -> pl.DataFrame:
    """Accepted rows on each series' complete bar grid, sorted by (venue, symbol, ts).

    ``_sid`` numbers the series, ``_k`` is the row's index in its series, ``_i`` in the
    frame; ``_row`` is true on accepted rows, false on the filler rows of missing bars.
    ``accepted`` must be sorted by (venue, symbol, ts).
    """
    step = bar // timedelta(microseconds=1)
    ts = accepted["ts"].dt.epoch("us").to_numpy()
    venue, symbol = accepted["venue"], accepted["symbol"]
    new = (venue != venue.shift(1)).fill_null(True) | (symbol != symbol.shift(1)).fill_null(True)
    sid = np.cumsum(new.to_numpy()) - 1
    starts = np.flatnonzero(new.to_numpy())
    first = ts[starts]
    last = np.append(ts[starts[1:] - 1], ts[-1]) if len(ts) else first
    lengths = (last - first) // step + 1
    offsets = np.concatenate([[0], np.cumsum(lengths)[:-1]])
    size = int(lengths.sum())
    grid_sid = np.repeat(np.arange(len(starts)), lengths)
    within = np.arange(size) - np.repeat(offsets, lengths)
    position = offsets[sid] + (ts - first[sid]) // step
    columns: dict[str, pl.Series] = {
        "_sid": pl.Series("_sid", grid_sid, dtype=pl.Int32),
        "venue": venue.gather(starts).gather(grid_sid),
        "symbol": symbol.gather(starts).gather(grid_sid),
        "ts": pl.Series("ts", first[grid_sid] + within * step).cast(pl.Datetime("us", "UTC")),
    }
    row = np.zeros(size, dtype=bool)
    row[position] = True
    for name, dtype in accepted.schema.items():
        if name in columns:
            continue
        if dtype == pl.Float64:
            values = np.full(size, np.nan)
            values[position] = accepted[name].fill_null(np.nan).to_numpy()
            columns[name] = pl.Series(name, values, nan_to_null=True)
        elif name == "known_at":
            values = np.zeros(size, dtype=np.int64)
            values[position] = accepted[name].dt.epoch("us").to_numpy()
            known = pl.Series(name, values).cast(pl.Datetime("us", "UTC"))
            columns[name] = (
                known.to_frame().select(pl.when(pl.Series(row)).then(pl.col(name))).to_series()
            )
    return pl.DataFrame(columns).with_columns(
        pl.Series("_row", row),
        pl.Series(WITHIN, within, dtype=pl.Int64),
        pl.Series("_i", np.arange(size), dtype=pl.Int64),
    )


def channel_column(channel: tuple[str, ...]) -> str:
    return "_ch:" + ",".join(channel)


def channel_mask(channel: tuple[str, ...]) -> pl.Expr:
    """True on accepted rows where every column of ``channel`` has a value."""
    return pl.all_horizontal(pl.col("_row"), *[pl.col(c).is_not_null() for c in channel])


def row_expr(
    node: Node, names: dict[Node, str], params: FeatureParams, st: Stager, layout: Layout
) -> pl.Expr:
    """The polars expression of one row node (its inputs are already columns)."""
    assert params.bar is not None
    bar = params.bar
    on_channel = pl.col(channel_column(node.channel))  # type: ignore[union-attr]
    if isinstance(node, Field):
        value = pl.col(node.column)
    elif isinstance(node, Ref):
        offsets = ref_offsets(node, bar)
        if offsets is None:
            return NULL
        first, last = offsets
        # the latest channel row in [k - last, k - first] of the same series
        source = pl.when(on_channel).then(pl.col("_i")).forward_fill(limit=last - first)
        source = st.put(source.shift(first))
        same_series = (pl.col(WITHIN) >= first) & (source >= pl.col("_i") - pl.col(WITHIN))
        value = pl.when(same_series).then(pl.col(node.column).gather(source))
    elif isinstance(node, RowWindow):
        n = bars_ceil(node.window, bar)
        source = pl.col(names[node.source])
        total = st.window(source, n, layout)
        count = st.window(source, n, layout, count=True)
        fn = f.window_sum if node.how == "sum" else f.window_mean
        value = apply_formula(fn, [total, count], [float(window_needed(node, params))], st)
    elif isinstance(node, RowMap):
        value = apply_formula(node.fn, [pl.col(names[a]) for a in node.args], node.consts, st)
    else:
        raise TypeError(f"not a row node: {node!r}")
    return pl.when(on_channel).then(value)


def compute_rows(
    grid: pl.DataFrame, order: Sequence[Node], names: dict[Node, str], params: FeatureParams
) -> pl.DataFrame:
    """Add a column per row node (in dependency order) to the series grid."""
    channels = sorted({n.channel for n in order})  # type: ignore[union-attr]
    grid = grid.with_columns(channel_mask(c).alias(channel_column(c)) for c in channels)
    layout = Layout(grid[SID].to_numpy())
    done: set[Node] = set()
    pending = list(order)
    stager = Stager("_rt")
    while pending:
        ready = [n for n in pending if all(c in done for c in n.inputs)]
        exprs = [row_expr(n, names, params, stager, layout).alias(names[n]) for n in ready]
        grid = stager.flush(grid).with_columns(exprs)
        grid = grid.drop(stager.temporaries(grid))
        done.update(ready)
        pending = [n for n in pending if n not in done]
    return grid


def as_of_frame(
    grid: pl.DataFrame, at_nodes: Sequence[At], names: dict[Node, str]
) -> tuple[pl.DataFrame, dict[tuple[str, ...], str]]:
    """One row per accepted row (known_at deduplicated), carrying, for each channel an
    :class:`At` reads, the ts and node values of the latest channel row at or before it.

    Returns the frame and the name of each channel's ts column.
    """
    channels = sorted({a.row.channel for a in at_nodes})
    index_cols = {c: f"_idx:{channel_column(c)}" for c in channels}
    ts_cols = {c: f"_ts:{channel_column(c)}" for c in channels}
    series_start = pl.col("_i") - pl.col(WITHIN)
    latest = {
        c: pl.when(pl.col(channel_column(c))).then(pl.col("_i")).forward_fill() for c in channels
    }
    grid = grid.with_columns(
        pl.when(latest[c] >= series_start).then(latest[c]).alias(index_cols[c]) for c in channels
    )
    gathered = [pl.col("ts").gather(pl.col(index_cols[c])).alias(ts_cols[c]) for c in channels]
    gathered += [
        pl.col(names[a.row]).gather(pl.col(index_cols[a.row.channel])).alias(names[a])
        for a in at_nodes
    ]
    # rows of a series known at the same instant: the decision sees the newest only
    frame = (
        grid.with_columns(gathered)
        .filter(pl.col("_row"))
        .select(SID, *SERIES, "known_at", *ts_cols.values(), *[names[a] for a in at_nodes])
    )
    newest = (frame[SID] != frame[SID].shift(-1)).fill_null(True) | (
        frame["known_at"] != frame["known_at"].shift(-1)
    ).fill_null(True)
    frame = frame.filter(newest).drop(SID)
    return frame, ts_cols


def venue_column(name: str, index: int) -> str:
    return f"{name}@{index}"


def venue_views(
    decisions: pl.DataFrame,
    visible: pl.DataFrame,
    ts_cols: dict[tuple[str, ...], str],
    at_nodes: Sequence[At],
    names: dict[Node, str],
    venues: Sequence[str],
    params: FeatureParams,
) -> pl.DataFrame:
    """Per venue, the :class:`At` values at each decision time (null when stale)."""
    columns: list[pl.Series] = []
    for index, venue in enumerate(venues):
        rows = visible.filter(pl.col("venue") == venue).drop("venue")
        joined = decisions.join_asof(
            rows,
            left_on="t",
            right_on="known_at",
            by="symbol",
            strategy="backward",
            check_sortedness=False,
        )
        exprs = [
            pl.when((pl.col("t") - pl.col(ts_cols[a.row.channel])) <= max_age(a, params))
            .then(pl.col(names[a]))
            .alias(venue_column(names[a], index))
            for a in at_nodes
        ]
        columns.extend(joined.select(exprs).get_columns())
    return decisions.with_columns(columns)
