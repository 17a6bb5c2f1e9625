"""Batch backend: every feature of a graph over a whole panel, vectorised with numpy.

:func:`compute` takes the accepted rows (:mod:`oihedge.features.stream`), evaluates the row
nodes on each series (:mod:`oihedge.features.batch.rows`), takes each venue's view at every
decision time, then the venue and scalar nodes on the (symbol, t) grid: one block of
decision times per symbol. Cross-venue reductions fold over the venues in sorted order
and cross-asset ones over the symbols in sorted order, as the online backend does, so
both give the same bits.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from itertools import combinations

import numpy as np
import polars as pl

from oihedge.features import formulas as f
from oihedge.features.batch.rows import RowNodes, row_grid, venue_views
from oihedge.features.batch.stage import Layout, apply_formula, is_null, masked
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
    ScalarNode,
    VenueLag,
    VenueMap,
    level,
    topo_order,
)
from oihedge.features.schema import UTC_US
from oihedge.features.screening import Screening
from oihedge.features.spec import ResolvedParams
from oihedge.features.stream import decision_times
from oihedge.features.windows import bars_ceil, min_count

Progress = Callable[[float], None]


def compute(
    accepted: Screening,
    roots: dict[str, ScalarNode],
    params: ResolvedParams,
    *,
    progress: Progress | None = None,
) -> pl.DataFrame:
    """The feature table of the ``accepted`` rows (:func:`oihedge.features.stream.accept`):
    ``ts``, ``symbol`` and one Float64 column per root, one row per (decision time,
    symbol), sorted by (ts, symbol)."""
    report = progress or (lambda _: None)
    order = topo_order(roots.values())
    t = np.empty(0, dtype=np.int64)
    symbols: list[str] = []
    values: dict[Node, np.ndarray] = {}
    if len(accepted.order):
        at_nodes = [n for n in order if isinstance(n, At)]
        # the float columns the row nodes read (values or channels): only they are laid
        # on the grid
        read: set[str] = set()
        for n in topo_order([a.row for a in at_nodes]):
            read.update(n.channel)
            if isinstance(n, Field | Ref):
                read.add(n.column)
        grid = row_grid(accepted, params.bar, sorted(read))
        t = decision_times(grid.known[grid.row], params.bar)
        venues, symbols = sorted(set(grid.venue)), sorted(set(grid.symbol))
        rows = RowNodes(grid, params, [a.row for a in at_nodes])
        report(0.35)
        views = venue_views(rows, t, symbols, at_nodes, venues)
        del rows, grid
        report(0.6)
        later = [n for n in order if level(n) != "row" and not isinstance(n, At)]
        values = DecisionGrid(len(t), symbols, params).evaluate(later, views, roots, report)
    return _output(t, symbols, roots, values)


def _output(
    t: np.ndarray,
    symbols: Sequence[str],
    roots: dict[str, ScalarNode],
    values: dict[Node, np.ndarray],
) -> pl.DataFrame:
    """The table in (ts, symbol) order, from one block of decision times per symbol."""
    columns = [
        pl.Series("ts", np.repeat(t, len(symbols))).cast(UTC_US),
        pl.Series("symbol", list(symbols) * len(t), dtype=pl.String),
    ]
    height = len(t)
    for name, node in roots.items():
        if node in values:
            column = np.empty(height * len(symbols))
            for i in range(len(symbols)):
                column[i :: len(symbols)] = values[node][i * height : (i + 1) * height]
            columns.append(pl.Series(name, column, dtype=pl.Float64, nan_to_null=True))
        else:
            columns.append(pl.Series(name, [None] * (len(t) * len(symbols)), dtype=pl.Float64))
    return pl.DataFrame(columns)


class DecisionGrid:
    """Venue and scalar nodes on the decision grid (one block of ``height`` decision
    times per symbol); venue nodes are one column per venue, in sorted venue order."""

    def __init__(self, height: int, symbols: Sequence[str], params: ResolvedParams) -> None:
        self.height = height
        self.symbols = list(symbols)
        self.params = params
        self.bar = params.bar
        self.layout = Layout(np.repeat(np.arange(len(symbols)), height))
        #: one symbol's decision times (pair correlations run over these)
        self._wide = Layout(np.zeros(height, dtype=np.int64))
        self._pairs: dict[tuple[Node, object], dict[tuple[str, ...], np.ndarray]] = {}
        self._folds: dict[Node, Across] = {}

    def _across(self, node: Node, venue: dict[Node, list[np.ndarray]]) -> Across:
        if node not in self._folds:
            self._folds[node] = Across(venue[node])
        return self._folds[node]

    def evaluate(
        self,
        nodes: Sequence[Node],
        views: dict[Node, list[np.ndarray]],
        roots: dict[str, ScalarNode],
        report: Progress,
    ) -> dict[Node, np.ndarray]:
        """The roots' columns; each node once, in dependency order, its inputs let go
        after their last use -- the venue views too: ``views`` is emptied as it is read
        (a copy of it would hold every view to the end)."""
        uses: dict[Node, int] = {}
        for node in nodes:
            for child in node.inputs:
                uses[child] = uses.get(child, 0) + 1
        keep = set(roots.values())
        venue = views
        scalar: dict[Node, np.ndarray] = {}
        for step, node in enumerate(nodes):
            if level(node) == "venue":
                venue[node] = self._venue(node, venue, scalar)
            else:
                scalar[node] = self._scalar(node, venue, scalar)
            for child in node.inputs:
                uses[child] -= 1
                if not uses[child] and child not in keep:
                    venue.pop(child, None)
                    scalar.pop(child, None)
                    self._folds.pop(child, None)
            report(0.6 + 0.4 * (step + 1) / len(nodes))
        return scalar

    def _venue(
        self, node: Node, venue: dict[Node, list[np.ndarray]], scalar: dict[Node, np.ndarray]
    ) -> list[np.ndarray]:
        if isinstance(node, VenueLag):
            n = bars_ceil(node.window, self.bar)
            return [self.layout.shifted(x, n) for x in venue[node.source]]
        if isinstance(node, VenueMap):
            count = len(next(venue[a] for a in node.args if level(a) == "venue"))
            args = [venue[a] if level(a) == "venue" else [scalar[a]] * count for a in node.args]
            return [apply_formula(node.fn, list(vs), node.consts) for vs in zip(*args, strict=True)]
        raise TypeError(f"not a venue node: {node!r}")

    def _scalar(
        self, node: Node, venue: dict[Node, list[np.ndarray]], scalar: dict[Node, np.ndarray]
    ) -> np.ndarray:
        if isinstance(node, Reduce):
            return reduce_columns(node.how, [self._across(a, venue) for a in node.args])
        if isinstance(node, Map):
            return apply_formula(node.fn, [scalar[a] for a in node.args], node.consts)
        if isinstance(node, GridLag):
            return self.layout.shifted(scalar[node.source], bars_ceil(node.window, self.bar))
        if isinstance(node, GridWindow):
            return self._grid_window(node, scalar[node.source])
        if isinstance(node, Corr):
            key = (node.x, node.y)
            return corr(scalar[node.x], scalar[node.y], node.window, self.params, self.layout, key)
        if isinstance(node, CrossMean | CorrOthers | CorrPair):
            return self._cross(node, scalar)
        raise TypeError(f"not a decision node: {node!r}")

    def _grid_window(self, node: GridWindow, x: np.ndarray) -> np.ndarray:
        """Mean / std / z of ``x`` over the last ``window`` of decision times, per symbol.

        std and z use sums of ``x - k`` with ``k`` the symbol's first value, which keeps
        the variance accurate when the level is far from zero.
        """
        n = bars_ceil(node.window, self.bar)
        needed = [float(min_count(node.window, self.params))]
        count = self.layout.window(x, n, count=True)
        if node.how == "mean":
            total = self.layout.window(x, n)
            return apply_formula(f.window_mean, [total, count], needed)
        dev = x - self.layout.first_valid(x)
        s1 = self.layout.window(dev, n)
        s2 = self.layout.window(dev * dev, n)
        if node.how == "std":
            return apply_formula(f.window_std, [count, s1, s2], needed)
        return apply_formula(f.window_z, [dev, count, s1, s2], needed)

    # -- across symbols -------------------------------------------------------------------

    def _cross(
        self, node: CrossMean | CorrOthers | CorrPair, scalar: dict[Node, np.ndarray]
    ) -> np.ndarray:
        """A cross-asset node; pair correlations are computed once per (input, window)."""
        source = node.source if isinstance(node, CrossMean) else node.x
        wide = list(scalar[source].reshape(len(self.symbols), self.height))
        if isinstance(node, CrossMean):
            return np.tile(fold_mean(wide), len(self.symbols))
        if (source, node.window) not in self._pairs:
            self._pairs[source, node.window] = self._pair_corrs(source, wide, node.window)
        pairs = self._pairs[source, node.window]
        missing = np.full(self.height, np.nan)
        if isinstance(node, CorrPair):
            return np.tile(pairs.get(tuple(sorted((node.a, node.b))), missing), len(self.symbols))
        out = []
        for s in self.symbols:
            others = [pairs[tuple(sorted((s, o)))] for o in self.symbols if o != s]
            out.append(fold_mean(others) if others else missing)
        return np.concatenate(out)

    def _pair_corrs(
        self, source: Node, wide: list[np.ndarray], window: object
    ) -> dict[tuple[str, ...], np.ndarray]:
        """Correlation of every pair of symbols (keys sorted), computed once per pair."""
        column = dict(zip(self.symbols, wide, strict=True))
        return {
            (a, b): corr(column[a], column[b], window, self.params, self._wide, (source, a, b))
            for a, b in combinations(self.symbols, 2)
        }


def corr(
    x: np.ndarray,
    y: np.ndarray,
    window: object,
    params: ResolvedParams,
    layout: Layout,
    key: object,
) -> np.ndarray:
    """Rolling Pearson correlation of the pairs where both are non-null; ``key`` names
    the pair (its running sums serve every window)."""
    n = bars_ceil(window, params.bar)  # type: ignore[arg-type]

    def quantities() -> list[np.ndarray]:
        # 0.0 where a pair is incomplete: it adds nothing to the sums
        both = ~is_null(x) & ~is_null(y)
        xs, ys = np.where(both, x, 0.0), np.where(both, y, 0.0)
        return [both.astype(np.float64), xs, ys, xs * ys, xs * xs, ys * ys]

    sums = layout.windows(quantities, n, key=key)
    needed = float(min_count(window, params))  # type: ignore[arg-type]
    return apply_formula(f.corr_from_sums, sums, [needed])


# -- folds across venues or symbols (in order; nulls skipped) -----------------------------


def _filled_sum(cols: Sequence[np.ndarray], nulls: Sequence[np.ndarray]) -> np.ndarray:
    """Left-to-right sum of the values, nulls skipped (``-0.0`` when all are null).

    A null adds ``-0.0``, which leaves any sum bit for bit as it is (``-0.0 + x == x``,
    also for ``x = -0.0``): the same as skipping it.
    """
    total = np.where(nulls[0], -0.0, cols[0])
    for col, null in zip(cols[1:], nulls[1:], strict=True):
        # (a plain add of a filled copy: numpy's masked add is several times slower)
        total += np.where(null, -0.0, col)
    return total


def _count(nulls: Sequence[np.ndarray]) -> np.ndarray:
    """The number of non-null values (a count of nulls in bytes, then as floats)."""
    seen = nulls[0].view(np.uint8).copy()
    for null in nulls[1:]:
        seen += null.view(np.uint8)
    return np.subtract(float(len(nulls)), seen)


def fold_mean(cols: Sequence[np.ndarray]) -> np.ndarray:
    """Mean of the non-null values, summed left to right; null when all are null
    (``-0.0 / 0`` is NaN)."""
    return Across(cols).mean


def _fold_extreme(cols: Sequence[np.ndarray], later: np.ufunc) -> np.ndarray:
    """Max (``later``: ``np.greater_equal``) or min (``np.less_equal``) of the non-null
    values; of equal ones (``0.0``, ``-0.0``) the later, as polars' ``max_horizontal``."""
    best = cols[0]
    for col in cols[1:]:
        # the later value where it is at least as extreme, or where none is kept yet
        # (a comparison with a null is false: a null never replaces a value)
        take = later(col, best)
        take |= np.isnan(best)
        best = np.where(take, col, best)
    return best


class Across:
    """One node's columns (one per venue or symbol, in order) and their folds, each
    computed once: several reductions of one node share them. Nulls are skipped."""

    def __init__(self, cols: Sequence[np.ndarray]) -> None:
        self.cols = list(cols)

    @functools.cached_property
    def nulls(self) -> list[np.ndarray]:
        return [is_null(c) for c in self.cols]

    @functools.cached_property
    def count(self) -> np.ndarray:
        return _count(self.nulls)

    @functools.cached_property
    def total(self) -> np.ndarray:
        return _filled_sum(self.cols, self.nulls)

    @functools.cached_property
    def mean(self) -> np.ndarray:
        with np.errstate(all="ignore"):
            return self.total / self.count

    @functools.cached_property
    def high(self) -> np.ndarray:
        return _fold_extreme(self.cols, np.greater_equal)

    @functools.cached_property
    def low(self) -> np.ndarray:
        return _fold_extreme(self.cols, np.less_equal)


def reduce_columns(how: str, args: Sequence[Across]) -> np.ndarray:
    """One :class:`Reduce` over a node's venue columns (``args``: one per input)."""
    a = args[0]
    if how in ("ratio", "wmean"):
        # where no venue has both inputs the sums are -0.0: the share of them is null,
        # as the share of two nulls
        num = den = None
        b = args[1]
        for x, y, null_x, null_y in zip(a.cols, b.cols, a.nulls, b.nulls, strict=True):
            top = x * y if how == "wmean" else x
            skip = null_x | null_y
            if num is None or den is None:
                num, den = np.where(skip, -0.0, top), np.where(skip, -0.0, y)
            else:
                # adding -0.0 where skipped is adding nothing (and a plain add of a
                # filled copy is faster than numpy's masked add)
                num += np.where(skip, -0.0, top)
                den += np.where(skip, -0.0, y)
        return apply_formula(f.share, [num, den], [])
    if how == "sum":
        return masked(a.total, a.count > 0)
    if how == "mean":
        return a.mean
    if how == "max":
        return a.high
    if how == "min":
        return a.low
    if how == "spread":
        return masked(a.high - a.low, a.count >= 2)
    if how == "std":
        with np.errstate(all="ignore"):
            devs = [d * d for d in (c - a.mean for c in a.cols)]
            squares = _filled_sum(devs, a.nulls)
            std = np.where(a.high == a.low, 0.0, np.sqrt(squares / a.count))
        return masked(std, a.count >= 2)
    raise ValueError(f"unknown reduction {how!r}")
