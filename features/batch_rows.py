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
        grid = stager.release(grid)
        done.update(ready)
        pending = [n for n in pending if n not in done]
    return grid


def venue_column(name: str, index: int) -> str:
    return f"{name}@{index}"


def _latest(mask: np.ndarray, within: np.ndarray) -> np.ndarray:
    """Per grid row, the index of the latest row at or before it (same series) where
    ``mask`` holds; -1 where there is none."""
    index = np.arange(len(mask))
    latest = np.maximum.accumulate(np.where(mask, index, -1))
    return np.where(latest >= index - within, latest, -1)


def _visible(
    grid: pl.DataFrame, decisions: pl.DataFrame, venues: Sequence[str]
) -> list[np.ndarray]:
    """Per venue, per decision row: the grid index of the venue's newest accepted row of
    the decision's symbol with ``known_at <= t`` (-1 where there is none).

    ``decisions`` holds one block of decision times per symbol (sorted); within a series
    the accepted rows are in ``known_at`` order (they were accepted in arrival order).
    """
    t = decisions["t"].dt.epoch("us").to_numpy()
    blocks = decisions["symbol"].rle().struct.unnest()
    lengths = blocks["len"].to_list()
    ends = np.cumsum(lengths).tolist()
    block_of = {
        symbol: (end - n, end)
        for symbol, n, end in zip(blocks["value"].to_list(), lengths, ends, strict=True)
    }
    row = grid["_row"].to_numpy()
    known = grid["known_at"].dt.epoch("us").fill_null(0).to_numpy()
    series = grid[SID].to_numpy()
    starts = np.flatnonzero(np.diff(series, prepend=-1))
    stops = np.append(starts[1:], grid.height)
    out = [np.full(len(t), -1, dtype=np.int64) for _ in venues]
    slot = {v: i for i, v in enumerate(venues)}
    for venue, symbol, start, stop in zip(
        grid["venue"].gather(starts),
        grid["symbol"].gather(starts),
        starts.tolist(),
        stops.tolist(),
        strict=True,
    ):
        if symbol not in block_of:
            continue
        a, b = block_of[symbol]
        rows = start + np.flatnonzero(row[start:stop])
        k = np.searchsorted(known[rows], t[a:b], side="right") - 1
        out[slot[venue]][a:b] = np.where(k >= 0, rows[np.maximum(k, 0)], -1)
    return out


def venue_views(
    decisions: pl.DataFrame,
    grid: pl.DataFrame,
    at_nodes: Sequence[At],
    names: dict[Node, str],
    venues: Sequence[str],
    params: FeatureParams,
) -> pl.DataFrame:
    """Per venue, the :class:`At` values at each decision time: on the venue's newest row
    known at ``t``, the node at the latest row of its channel, if fresh (else null)."""
    t = decisions["t"].dt.epoch("us").to_numpy()
    ts = grid["ts"].dt.epoch("us").to_numpy()
    within = grid[WITHIN].to_numpy()
    channels = sorted({a.row.channel for a in at_nodes})
    latest = {c: _latest(grid[channel_column(c)].to_numpy(), within) for c in channels}
    one_us = timedelta(microseconds=1)
    reads = {(a.row.channel, max_age(a, params) // one_us) for a in at_nodes}
    columns: list[pl.Series] = []
    for index, visible in enumerate(_visible(grid, decisions, venues)):
        seen = visible >= 0
        source: dict[tuple[tuple[str, ...], int], pl.Series] = {}
        for channel, age in reads:
            rows = np.where(seen, latest[channel][visible], -1)
            fresh = (rows >= 0) & (t - ts[rows] <= age)
            source[channel, age] = pl.Series(np.ma.masked_array(rows, ~fresh))
        views = grid.select(
            pl.col(names[a.row])
            .gather(source[a.row.channel, max_age(a, params) // one_us])
            .alias(venue_column(names[a], index))
            for a in at_nodes
        )
        columns.extend(views.get_columns())
    return decisions.with_columns(columns)
