"""Batch backend plumbing: float columns of series laid end to end, windows, formulas.

The batch backend holds every column as a numpy float array, NaN for null (the inputs
are finite, and a formula's non-finite result is null, so NaN never stands for a
value). Its frames hold several series one after the other (the row grid: one
(venue, symbol) after another; the decision grid: one symbol after another), each
complete on its bar grid. So a shift within a series is a global shift masked in the
series' first rows, and a window sum is a difference of per-series cumulative sums
(:class:`Layout`) -- the same additions, in the same order, as the online backend's
running sums.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Sequence
from typing import Any

import numpy as np
import polars as pl

from features import formulas as f


def is_null(values: np.ndarray) -> np.ndarray:
    return np.isnan(values)


# -- formulas on float columns ----------------------------------------------------------


class Column:
    """A float column for :class:`NumpyOps` (NaN is null); comparisons give a :class:`Mask`."""

    __slots__ = ("v",)

    def __init__(self, values: np.ndarray) -> None:
        self.v = values

    def __add__(self, other: Any) -> Column:
        return Column(self.v + values_of(other))

    def __radd__(self, other: Any) -> Column:
        return Column(values_of(other) + self.v)

    def __sub__(self, other: Any) -> Column:
        return Column(self.v - values_of(other))

    def __rsub__(self, other: Any) -> Column:
        return Column(values_of(other) - self.v)

    def __mul__(self, other: Any) -> Column:
        return Column(self.v * values_of(other))

    def __rmul__(self, other: Any) -> Column:
        return Column(values_of(other) * self.v)

    def __truediv__(self, other: Any) -> Column:
        return Column(self.v / values_of(other))

    def __rtruediv__(self, other: Any) -> Column:
        return Column(values_of(other) / self.v)

    def _compare(self, other: Any, op: Callable[[Any, Any], np.ndarray]) -> Mask:
        b = values_of(other)
        return Mask(op(self.v, b), np.isnan(self.v) | np.isnan(b))

    def __ge__(self, other: Any) -> Mask:  # type: ignore[override]
        return self._compare(other, np.greater_equal)

    def __gt__(self, other: Any) -> Mask:  # type: ignore[override]
        return self._compare(other, np.greater)

    def __le__(self, other: Any) -> Mask:  # type: ignore[override]
        return self._compare(other, np.less_equal)

    def __lt__(self, other: Any) -> Mask:  # type: ignore[override]
        return self._compare(other, np.less)


class Mask:
    """A boolean column with nulls (``null`` marks them), combined with Kleene logic as
    polars combines booleans: ``True | null`` is true, ``False & null`` is false."""

    __slots__ = ("v", "null")

    def __init__(self, values: np.ndarray, null: np.ndarray) -> None:
        self.v = values & ~null
        self.null = null

    def __or__(self, other: Mask) -> Mask:
        true = self.v | other.v
        return Mask(true, (self.null | other.null) & ~true)

    def __and__(self, other: Mask) -> Mask:
        false = (~self.v & ~self.null) | (~other.v & ~other.null)
        null = (self.null | other.null) & ~false
        return Mask(~false & ~null, null)

    def __invert__(self) -> Mask:
        return Mask(~self.v, self.null)


def values_of(x: Any) -> Any:
    """The array of a :class:`Column`, NaN for ``None``, a number as it is."""
    if isinstance(x, Column):
        return x.v
    return np.nan if x is None else x


class NumpyOps:
    """``ops`` for float columns (:class:`Column`, NaN is null): nulls propagate through
    every operation as through the scalar backend's exceptions. Logs are taken by polars,
    whose log is libm's (as ``math.log`` online); numpy's vectorised log can differ in
    the last bit. Call inside ``np.errstate(all="ignore")``: a division by zero or an
    overflow is a null here, not a warning."""

    NULL = None

    @staticmethod
    def div(a: Any, b: Any) -> Column:
        den = values_of(b)
        return Column(np.where(den != 0, values_of(a) / den, np.nan))

    @staticmethod
    def log(x: Column) -> Column:
        positive = np.where(x.v > 0, x.v, np.nan)
        return Column(pl.Series(positive, dtype=pl.Float64).log().to_numpy())

    @staticmethod
    def sqrt(x: Column) -> Column:
        return Column(np.sqrt(np.where(x.v >= 0, x.v, np.nan)))

    @staticmethod
    def abs(x: Column) -> Column:
        return Column(np.abs(x.v))

    @staticmethod
    def where(cond: Mask, a: Any, b: Any) -> Column:
        out = np.where(cond.v, values_of(a), values_of(b))
        return Column(np.where(cond.null, np.nan, out))

    @staticmethod
    def maximum(a: Any, b: Any) -> Column:
        x, y = values_of(a), values_of(b)
        return Column(np.where(np.isnan(x), np.nan, np.where(x >= y, x, y)))

    @staticmethod
    def minimum(a: Any, b: Any) -> Column:
        x, y = values_of(a), values_of(b)
        return Column(np.where(np.isnan(x), np.nan, np.where(x <= y, x, y)))


NUMPY_OPS = NumpyOps()


# -- series laid end to end ------------------------------------------------------------


class Layout:
    """Where each series starts in a frame sorted by series, complete on the bar grid.

    Prefix sums given a ``key`` are kept: windows of several lengths over the same
    values share one pass.
    """

    def __init__(self, series_id: np.ndarray) -> None:
        size = len(series_id)
        change = np.ones(size, dtype=bool)
        change[1:] = series_id[1:] != series_id[:-1]
        self.starts = np.flatnonzero(change)
        ends = np.append(self.starts[1:], size)
        self.bounds = list(zip(self.starts.tolist(), ends.tolist(), strict=True))
        #: each row's index within its series
        self.within = np.arange(size) - np.repeat(self.starts, ends - self.starts)
        self._prefix: dict[tuple[Hashable, bool], np.ndarray] = {}

    def _sums(self, values: np.ndarray) -> np.ndarray:
        """Running sums of the non-null values, restarting with each series (sequential,
        like the online ones)."""
        data = np.where(is_null(values), 0.0, values)
        prefix = np.empty_like(data)
        for a, b in self.bounds:
            np.cumsum(data[a:b], out=prefix[a:b])
        return prefix

    def window(
        self, values: np.ndarray, n: int, *, count: bool = False, key: Hashable = None
    ) -> np.ndarray:
        """Sum (``count``: number) of the non-null values over the last ``n`` rows of the
        series: the running sum minus the one ``n`` rows earlier (none before the series
        starts). Counts are sums of ones, exact in floats."""
        prefix = self._prefix.get((key, count)) if key is not None else None
        if prefix is None:
            prefix = self._sums((~is_null(values)).astype(np.float64) if count else values)
            if key is not None:
                self._prefix[key, count] = prefix
        out = np.empty_like(prefix)
        for a, b in self.bounds:
            head = min(a + n, b)
            out[a:head] = prefix[a:head]
            if head < b:
                np.subtract(prefix[head:b], prefix[a : b - n], out=out[head:b])
        return out

    def shifted(self, values: np.ndarray, n: int) -> np.ndarray:
        """``values`` ``n`` rows earlier in the same series (null in its first ``n`` rows)."""
        out = np.full(len(values), np.nan)
        if n < len(values):
            out[n:] = values[: len(values) - n]
        out[self.within < n] = np.nan
        return out

    def first_valid(self, values: np.ndarray) -> np.ndarray:
        """Each series' first non-null value, on every row of the series (null if none)."""
        valid = ~is_null(values)
        out = np.full(len(values), np.nan)
        for a, b in self.bounds:
            hits = np.flatnonzero(valid[a:b])
            if hits.size:
                out[a:b] = values[a + hits[0]]
        return out


#: rows per block of an elementwise step: its temporaries stay in the CPU cache and are
#: recycled by the allocator, where whole columns would each fault in fresh pages
BLOCK = 1 << 15


def blocks(size: int) -> list[slice]:
    return [slice(a, min(a + BLOCK, size)) for a in range(0, max(size, 1), BLOCK)]


def apply_formula(fn: f.Formula, args: Sequence[np.ndarray], consts: Sequence[float]) -> np.ndarray:
    """``fn`` on float columns: null where an input is null or the result is not finite."""
    size = len(args[0]) if args else 0
    out = np.empty(size)
    with np.errstate(all="ignore"):
        for part in blocks(size):
            inputs = [a[part] for a in args]
            result = values_of(fn(NUMPY_OPS, *[Column(a) for a in inputs], *consts))
            bad = np.isfinite(result)
            np.logical_not(bad, out=bad)
            for a in inputs:
                bad |= is_null(a)
            np.copyto(out[part], result)
            out[part][bad] = np.nan
    return out


def masked(values: np.ndarray, keep: np.ndarray) -> np.ndarray:
    """``values`` where ``keep``, null elsewhere."""
    return np.where(keep, values, np.nan)
