"""Batch backend, first half: row nodes on every (venue, symbol) series, and the as-of
view of each venue at every decision time.

Each series is laid on its complete bar grid (first to last accepted ts; missing bars
are filler rows where every value is null), so a window of ``window`` is a fixed number
of grid rows, a reference ``window`` back is a shift, and sums over windows are
differences of cumulative sums -- the same additions, in the same order, as the online
backend's running sums.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta

import numpy as np
import polars as pl

from oihedge.features import formulas as f
from oihedge.features.batch.stage import Layout, apply_formula, is_null
from oihedge.features.graph import At, Field, Node, Ref, RowMap, RowWindow, topo_order
from oihedge.features.screening import Screening
from oihedge.features.spec import ResolvedParams
from oihedge.features.windows import bars_ceil, max_age, ref_offsets, window_needed


@dataclass(frozen=True)
class RowGrid:
    """The accepted rows on each series' complete bar grid, series after series.

    ``values``: each float panel column (null on filler rows; :class:`RowNodes` lets
    a column go after its last reader); ``row``: true on accepted
    rows; ``ts`` and ``known`` in epoch microseconds (``known`` 0 on filler rows);
    ``venue`` and ``symbol`` of each series, in order.
    """

    values: dict[str, np.ndarray]
    row: np.ndarray
    ts: np.ndarray
    known: np.ndarray
    layout: Layout
    venue: list[str]
    symbol: list[str]


def row_grid(accepted: Screening, bar: timedelta, columns: Sequence[str] | None = None) -> RowGrid:
    """The accepted rows (their row numbers in (venue, symbol, ts) order) on each
    series' complete bar grid.

    ``columns``: the float columns to lay on the grid (default: every one); the others
    are never read.
    """
    step = bar // timedelta(microseconds=1)
    ts = accepted.ts[accepted.order]
    series = accepted.series[accepted.order]
    new = np.ones(len(series), dtype=bool)
    new[1:] = series[1:] != series[:-1]
    starts = np.flatnonzero(new)
    sid = np.cumsum(new) - 1
    first = ts[starts]
    last = np.append(ts[starts[1:] - 1], ts[-1]) if len(ts) else first
    lengths = (last - first) // step + 1
    offsets = np.concatenate([[0], np.cumsum(lengths)[:-1]])
    size = int(lengths.sum())
    layout = Layout.from_lengths(lengths)
    position = offsets[sid] + (ts - first[sid]) // step
    row = np.zeros(size, dtype=bool)
    row[position] = True
    filler = np.flatnonzero(~row)
    # each grid row's row of the input, read in one gather per column (a filler row
    # reads row 0 and is nulled after)
    source = np.zeros(size, dtype=np.intp)
    source[position] = accepted.order
    values: dict[str, np.ndarray] = {}
    for name, dtype in accepted.frame.schema.items():
        if dtype == pl.Float64 and (columns is None or name in columns):
            values[name] = accepted.values(name)[source]
            values[name][filler] = np.nan
    known = accepted.values("known_at")[source]
    known[filler] = 0
    grid_ts = layout.within * step
    grid_ts += np.repeat(first, lengths)
    venue, symbol = accepted.names(series[starts])
    return RowGrid(
        values=values,
        row=row,
        ts=grid_ts,
        known=known,
        layout=layout,
        venue=venue,
        symbol=symbol,
    )


def index_dtype(size: int) -> type[np.signedinteger]:
    """The narrowest signed integer that indexes ``size`` rows (and holds -1): half the
    memory of int64 for the whole-grid index columns of any real panel."""
    return np.int32 if size < np.iinfo(np.int32).max else np.int64


def _latest(off: np.ndarray, within: np.ndarray) -> np.ndarray:
    """Per grid row, the index of the latest row at or before it (same series) that is
    not one of the sorted positions ``off``; -1 where there is none."""
    latest = np.arange(len(within), dtype=index_dtype(len(within)))
    if off.size:
        # a run of consecutive off positions reaches back to the row before the run
        first = np.ones(off.size, dtype=bool)
        first[1:] = off[1:] != off[:-1] + 1
        runs = np.flatnonzero(first)
        before = np.repeat(off[runs] - 1, np.diff(np.append(runs, off.size)))
        latest[off] = np.where(before >= off - within[off], before, -1)
    return latest


def gather(values: np.ndarray, rows: np.ndarray, missing: np.ndarray) -> np.ndarray:
    """``values`` at ``rows``, null at the positions ``missing`` (where ``rows`` is -1)."""
    out = values[rows]
    out[missing] = np.nan
    return out


class RowNodes:
    """Row nodes evaluated on a :class:`RowGrid`, each once, on demand.

    Off its channel a node is null: the positions off each channel are kept (few, so
    nulling them is cheap). A :class:`RowMap`'s inputs share its channel, so it is null
    there already. Node values are never written once made.
    """

    def __init__(self, grid: RowGrid, params: ResolvedParams, readers: Sequence[Node]) -> None:
        """``readers``: the nodes read from outside, once per entry (each read ends with
        :meth:`release`)."""
        self.grid = grid
        self.params = params
        self._bar = params.bar
        self._off: dict[tuple[str, ...], np.ndarray] = {}
        self._latest: dict[tuple[str, ...], np.ndarray] = {}
        self.values: dict[Node, np.ndarray] = {}
        self._uses = Counter(readers)
        nodes = topo_order(readers)
        for node in nodes:
            self._uses.update(node.inputs)
        # every channel's off positions now, so that a grid column is read only by the
        # fields and references on it: after the last of them it is let go
        for channel in {node.channel for node in nodes}:
            self.off_channel(channel)
        self._readers = Counter(n.column for n in nodes if isinstance(n, Field | Ref))
        for name in [c for c in grid.values if c not in self._readers]:
            del grid.values[name]

    def off_channel(self, channel: tuple[str, ...]) -> np.ndarray:
        """Positions that are not accepted rows with every column of ``channel``."""
        if channel not in self._off:
            off = ~self.grid.row
            for column in channel:
                off |= is_null(self.grid.values[column])
            self._off[channel] = np.flatnonzero(off)
        return self._off[channel]

    def latest(self, channel: tuple[str, ...]) -> np.ndarray:
        """Per grid row, its series' latest row of ``channel`` at or before it (or -1)."""
        if channel not in self._latest:
            self._latest[channel] = _latest(self.off_channel(channel), self.grid.layout.within)
        return self._latest[channel]

    def __getitem__(self, node: Node) -> np.ndarray:
        if node not in self.values:
            values = self._compute(node)
            if not isinstance(node, RowMap) and not self._own_column(node):
                values[self.off_channel(node.channel)] = np.nan
            self.values[node] = values
            for child in node.inputs:
                self.release(child)
        return self.values[node]

    @staticmethod
    def _own_column(node: Node) -> bool:
        """A field on its own column's channel: the grid column, null exactly off the
        channel already (read, never written)."""
        return isinstance(node, Field) and node.channel == (node.column,)

    def release(self, node: Node) -> None:
        """One reader is done with ``node``: after the last, its values (and running
        sums) are let go, so few whole-grid columns are held at once."""
        self._uses[node] -= 1
        if not self._uses[node]:
            del self.values[node]
            self.grid.layout.forget(node)

    def _column(self, name: str) -> np.ndarray:
        """A grid column, for one of its readers (let go by the grid after the last)."""
        values = self.grid.values[name]
        self._readers[name] -= 1
        if not self._readers[name]:
            del self.grid.values[name]
        return values

    def _compute(self, node: Node) -> np.ndarray:
        """The node's values (a new array), before nulling them off the channel."""
        layout = self.grid.layout
        if isinstance(node, Field):
            column = self._column(node.column)
            return column if self._own_column(node) else column.copy()
        if isinstance(node, Ref):
            return self._ref(node)
        if isinstance(node, RowWindow):
            n = bars_ceil(node.window, self._bar)
            source = self[node.source]
            total = layout.window(source, n, key=node.source)
            count = layout.window(source, n, count=True, key=node.source)
            fn = f.window_sum if node.how == "sum" else f.window_mean
            needed = [float(window_needed(node, self.params))]
            return apply_formula(fn, [total, count], needed)
        if isinstance(node, RowMap):
            return apply_formula(node.fn, [self[a] for a in node.args], node.consts)
        raise TypeError(f"not a row node: {node!r}")

    def _ref(self, node: Ref) -> np.ndarray:
        """The latest channel row in ``[k - last, k - first]`` of the same series: the
        latest at or before ``j = k - first``, if at most ``last - first`` rows before it.

        That is row ``j`` itself where ``j`` is on the channel, so the column shifted by
        ``first`` rows; only the few off-channel ``j`` look further back.
        """
        offsets = ref_offsets(node, self._bar)
        values = self._column(node.column)
        size = len(values)
        if offsets is None:
            return np.full(size, np.nan)
        first, last = offsets
        out = self.grid.layout.shifted(values, first)
        off = self.off_channel(node.channel)
        off = off[off < size - first]
        # a j before k's series starts stays null (shifted nulls each series' head)
        off = off[self.grid.layout.within[off + first] >= first]
        source = self.latest(node.channel)[off]
        far = (source < 0) | (source < off - (last - first))
        out[off + first] = np.where(far, np.nan, values[source])
        return out


def _visible(
    grid: RowGrid, t: np.ndarray, symbols: Sequence[str], venues: Sequence[str], step: int
) -> list[np.ndarray]:
    """Per venue, per decision row (one block of decision times ``t`` per symbol): the
    grid index of the venue's newest accepted row of the symbol with ``known_at <= t``
    (-1 where there is none).

    ``t``: the decision grid of the rows (every ``step`` microseconds from the first
    ``known_at`` to the last, rounded up to bar closes), so a row is first visible at
    decision ``ceil((known_at - t[0]) / step)``. Within a series the accepted rows are
    in ``known_at`` order (they were accepted in arrival order): the newest visible row
    at each decision is a running maximum.
    """
    height = len(t)
    block = {symbol: i * height for i, symbol in enumerate(symbols)}
    slot = {v: i for i, v in enumerate(venues)}
    out = [np.full(height * len(symbols), -1, dtype=np.intp) for _ in venues]
    for (start, stop), venue, symbol in zip(
        grid.layout.bounds, grid.venue, grid.symbol, strict=True
    ):
        rows = start + np.flatnonzero(grid.row[start:stop])
        first = -((int(t[0]) - grid.known[rows]) // step)
        # the newest row of each decision it is first visible at
        newest = np.ones(len(rows), dtype=bool)
        newest[:-1] = first[1:] != first[:-1]
        view = out[slot[venue]][block[symbol] : block[symbol] + height]
        view[first[newest]] = rows[newest]
        np.maximum.accumulate(view, out=view)
    return out


def venue_views(
    rows: RowNodes,
    t: np.ndarray,
    symbols: Sequence[str],
    at_nodes: Sequence[At],
    venues: Sequence[str],
) -> dict[Node, list[np.ndarray]]:
    """Per :class:`At` node, per venue, its value at each decision row (one block of
    decision times ``t`` per symbol): on the venue's newest row known at ``t``, the node
    at the latest row of its channel, if fresh (else null)."""
    grid, params = rows.grid, rows.params
    t_rows = np.tile(t, len(symbols))
    one_us = timedelta(microseconds=1)
    ages = {(a.row.channel, max_age(a, params) // one_us) for a in at_nodes}
    reads: list[dict[tuple[tuple[str, ...], int], tuple[np.ndarray, np.ndarray]]] = []
    oldest = {age: t_rows - age for _, age in ages}
    step = params.bar // one_us
    # (the decision-grid index columns are intp: numpy converts a narrow index array on
    # every gather)
    for visible in _visible(grid, t, symbols, venues, step):
        reads.append({})
        unseen = visible < 0
        for channel, age in ages:
            latest = rows.latest(channel)[visible].astype(np.intp)
            # t - ts <= age, as ts >= t - age (exact in integers); stale where not
            stale = grid.ts[latest] < oldest[age]
            stale |= latest < 0
            stale |= unseen
            reads[-1][channel, age] = (latest, np.flatnonzero(stale))
    out: dict[Node, list[np.ndarray]] = {}
    for a in at_nodes:
        key = (a.row.channel, max_age(a, params) // one_us)
        out[a] = [gather(rows[a.row], *read[key]) for read in reads]
        rows.release(a.row)
    return out
