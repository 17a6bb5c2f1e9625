"""Batch backend plumbing: staged expressions and windows over series laid end to end.

Frames of the batch backend hold several series one after the other (the row grid:
one (venue, symbol) after another; the decision grid: one symbol after another), each
complete on its bar grid, with ``_k`` = the row's index within its series. So a shift
within a series is a global shift masked where ``_k < n``, and a window sum is a
difference of per-series cumulative sums (:class:`Layout`) -- the same additions, in the
same order, as the online backend's running sums.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import polars as pl

from features import formulas as f

WITHIN = "_k"

#: a temporary computed from the frame after its inputs exist (numpy, not an expression)
Deferred = Callable[[pl.DataFrame], pl.Series]


class Layout:
    """Where each series starts in a frame sorted by series, complete on the bar grid."""

    def __init__(self, series_id: np.ndarray) -> None:
        size = len(series_id)
        change = np.ones(size, dtype=bool)
        change[1:] = series_id[1:] != series_id[:-1]
        self.starts = np.flatnonzero(change)
        ends = np.append(self.starts[1:], size)
        self.bounds = list(zip(self.starts.tolist(), ends.tolist(), strict=True))
        self.within = np.arange(size) - np.repeat(self.starts, ends - self.starts)

    def windowed(self, values: pl.Series, n: int) -> np.ndarray:
        """Sum over the last ``n`` rows of the series (nulls count 0), as the difference
        of the running sum now and ``n`` rows earlier (0 before the series starts); the
        running sums restart with each series (sequential, like the online ones)."""
        data = values.cast(pl.Float64).fill_null(0.0).to_numpy()
        prefix = np.empty_like(data)
        out = np.empty_like(data)
        for a, b in self.bounds:
            np.cumsum(data[a:b], out=prefix[a:b])
            head = min(a + n, b)
            out[a:head] = prefix[a:head]
            if head < b:
                np.subtract(prefix[head:b], prefix[a : b - n], out=out[head:b])
        return out

    def counted(self, values: pl.Series, n: int) -> np.ndarray:
        """Number of non-null values over the last ``n`` rows of the series."""
        prefix = np.cumsum(values.is_not_null().to_numpy(), dtype=np.int64)
        out = prefix.copy()
        for a, b in self.bounds:
            if a:
                out[a:b] -= prefix[a - 1]
            if a + n < b:
                out[a + n : b] -= prefix[a : b - n] - (prefix[a - 1] if a else 0)
        return out.astype(np.float64)

    def first_valid(self, values: pl.Series) -> np.ndarray:
        """Each series' first non-null value, on every row of the series (NaN if none)."""
        data = values.to_numpy()
        valid = ~np.isnan(data)
        out = np.full(len(data), np.nan)
        for a, b in self.bounds:
            hits = np.flatnonzero(valid[a:b])
            if hits.size:
                out[a:b] = data[a + hits[0]]
        return out


def shifted(expr: pl.Expr, n: int) -> pl.Expr:
    """``expr`` ``n`` rows earlier in the same series (null in the first ``n`` rows)."""
    return pl.when(pl.col(WITHIN) >= n).then(expr.shift(n))


class Stager:
    """Collects intermediate results as temporary columns, computed level by level.

    :meth:`put` returns a reference to a new temporary column holding an expression;
    :meth:`window` one holding a window sum over a :class:`Layout`. :meth:`flush` adds
    them to a frame, depth by depth. Formulas stay small trees of column references,
    whatever their nesting.
    """

    def __init__(self, prefix: str = "_t") -> None:
        self._prefix = prefix
        self._depth: dict[str, int] = {}
        self._pending: list[tuple[str, pl.Expr | Deferred, int]] = []
        self._count = 0
        #: the temporary already holding an expression or window (computed once)
        self._known: dict[object, str] = {}
        self.ops = f.PolarsOps(self.put)

    def _name(self, depth: int) -> str:
        name = f"{self._prefix}{self._count}"
        self._count += 1
        self._depth[name] = depth
        return name

    def depth_of(self, expr: pl.Expr) -> int:
        return max((self._depth.get(n, 0) for n in expr.meta.root_names()), default=0)

    def put(self, expr: pl.Expr) -> pl.Expr:
        key = expr.meta.serialize(format="binary")
        if key not in self._known:
            name = self._name(1 + self.depth_of(expr))
            self._pending.append((name, expr, self._depth[name]))
            self._known[key] = name
        return pl.col(self._known[key])

    def window(self, values: pl.Expr, n: int, layout: Layout, *, count: bool = False) -> pl.Expr:
        """Windowed sum (or count of non-nulls) of ``values`` over the last ``n`` rows."""
        source = values if values.meta.is_column() else self.put(values)
        column = source.meta.output_name()
        key = ("window", column, n, count, id(layout))
        if key in self._known:
            return pl.col(self._known[key])
        name = self._name(1 + self.depth_of(source))
        self._known[key] = name

        def compute(frame: pl.DataFrame) -> pl.Series:
            data = frame[column]
            return pl.Series(name, layout.counted(data, n) if count else layout.windowed(data, n))

        self._pending.append((name, compute, self._depth[name]))
        return pl.col(name)

    def flush(self, frame: pl.DataFrame) -> pl.DataFrame:
        for depth in sorted({d for _, _, d in self._pending}):
            at_depth = [(n, e) for n, e, d in self._pending if d == depth]
            exprs = [e.alias(n) for n, e in at_depth if isinstance(e, pl.Expr)]
            if exprs:
                frame = frame.with_columns(exprs)
            deferred = [e(frame) for _, e in at_depth if not isinstance(e, pl.Expr)]
            if deferred:
                frame = frame.with_columns(deferred)
        self._pending = []
        return frame

    def release(self, frame: pl.DataFrame) -> pl.DataFrame:
        """``frame`` without the temporaries (which are then computed afresh if needed)."""
        self._known = {}
        return frame.drop([c for c in frame.columns if c in self._depth])


def apply_formula(
    fn: f.Formula, args: Sequence[pl.Expr], consts: Sequence[float], stager: Stager
) -> pl.Expr:
    """``fn`` on expressions: null when an input is null or the result is not finite."""
    out = fn(stager.ops, *args, *consts)
    out = out if isinstance(out, pl.Expr) else pl.lit(out, dtype=pl.Float64)
    out = stager.put(out.cast(pl.Float64))
    ok = out.is_finite()
    if args:
        ok = pl.all_horizontal([a.is_not_null() for a in args]) & ok
    return pl.when(ok).then(out)
