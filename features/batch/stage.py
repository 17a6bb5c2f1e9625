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

import functools
import math
from collections.abc import Callable, Hashable, Sequence
from typing import Any

import numpy as np
import polars as pl

from oihedge.features import formulas as f


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
        null = np.isnan(self.v)
        if isinstance(b, np.ndarray):
            null |= np.isnan(b)
        elif math.isnan(b):
            null[:] = True
        # a comparison with NaN is false: the values are false where null
        return Mask(op(self.v, b), null)

    def __ge__(self, other: Any) -> Mask:  # type: ignore[override]
        return self._compare(other, np.greater_equal)

    def __gt__(self, other: Any) -> Mask:  # type: ignore[override]
        return self._compare(other, np.greater)

    def __le__(self, other: Any) -> Mask:  # type: ignore[override]
        return self._compare(other, np.less_equal)

    def __lt__(self, other: Any) -> Mask:  # type: ignore[override]
        return self._compare(other, np.less)


class Mask:
    """A boolean column with nulls (``null`` marks them; ``v`` is false there), combined
    with Kleene logic as polars combines booleans: ``True | null`` is true, ``False &
    null`` is false."""

    __slots__ = ("v", "null")

    def __init__(self, values: np.ndarray, null: np.ndarray) -> None:
        self.v = values
        self.null = null

    def __or__(self, other: Mask) -> Mask:
        true = self.v | other.v
        return Mask(true, (self.null | other.null) & ~true)

    def __and__(self, other: Mask) -> Mask:
        false = (~self.v & ~self.null) | (~other.v & ~other.null)
        return Mask(self.v & other.v, (self.null | other.null) & ~false)

    def __invert__(self) -> Mask:
        return Mask(~self.v & ~self.null, self.null)


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
        out = np.asarray(values_of(a) / den, dtype=np.float64)
        out[den == 0] = np.nan
        return Column(out)

    @staticmethod
    def log(x: Column) -> Column:
        out = pl.Series(x.v, dtype=pl.Float64).log().to_numpy(writable=True)
        out[x.v <= 0] = np.nan
        return Column(out)

    @staticmethod
    def sqrt(x: Column) -> Column:
        # the square root of a negative number is NaN: null
        return Column(np.sqrt(x.v))

    @staticmethod
    def abs(x: Column) -> Column:
        return Column(np.abs(x.v))

    @staticmethod
    def where(cond: Mask, a: Any, b: Any) -> Column:
        out = np.where(cond.v, values_of(a), values_of(b))
        out[cond.null] = np.nan
        return Column(out)

    @staticmethod
    def maximum(a: Any, b: Any) -> Column:
        x, y = values_of(a), values_of(b)
        return Column(_null_where_nan(np.where(x >= y, x, y), x))

    @staticmethod
    def minimum(a: Any, b: Any) -> Column:
        x, y = values_of(a), values_of(b)
        return Column(_null_where_nan(np.where(x <= y, x, y), x))


def _null_where_nan(out: np.ndarray, x: Any) -> np.ndarray:
    """``out`` with NaN where ``x`` (an array or a number) is NaN."""
    if isinstance(x, np.ndarray):
        out[np.isnan(x)] = np.nan
    elif math.isnan(x):
        out[:] = np.nan
    return out


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
        self._set_starts(np.flatnonzero(change), size)

    @classmethod
    def from_lengths(cls, lengths: np.ndarray) -> Layout:
        """The layout of series of ``lengths`` rows each (each at least one), in order
        (no whole-frame series ids made)."""
        layout = cls.__new__(cls)
        ends = np.cumsum(lengths)
        layout._set_starts(ends - lengths, int(ends[-1]) if len(ends) else 0)
        return layout

    def _set_starts(self, starts: np.ndarray, size: int) -> None:
        self.starts = starts
        ends = np.append(self.starts[1:], size)
        self.bounds = list(zip(self.starts.tolist(), ends.tolist(), strict=True))
        #: each row's index within its series
        self.within = np.arange(size)
        self.within -= np.repeat(self.starts, ends - self.starts)
        self._prefix: dict[tuple[Hashable, bool], np.ndarray] = {}
        self._prefixes: dict[Hashable, list[np.ndarray]] = {}

    def _sums(self, values: np.ndarray, count: bool) -> np.ndarray:
        """Running sums (``count``: numbers, as sums of ones) of the non-null values,
        restarting with each series (sequential, like the online ones)."""
        prefix = np.empty(len(values))
        for a, b in self.bounds:
            part = values[a:b]
            null = is_null(part)
            if count:
                _running_count(null, prefix[a:b])
            else:
                np.cumsum(np.where(null, 0.0, part), out=prefix[a:b])
        return prefix

    def forget(self, key: Hashable) -> None:
        """Drop the running sums kept for ``key``."""
        for count in (False, True):
            self._prefix.pop((key, count), None)

    def windows(
        self, values: Callable[[], list[np.ndarray]], n: int, *, key: Hashable
    ) -> list[Window]:
        """Sums over the last ``n`` rows of several columns without nulls, made by
        ``values`` only if their running sums are not kept under ``key`` yet."""
        if key not in self._prefixes:
            self._prefixes[key] = [self._running_sums(v) for v in values()]
        return [Window(prefix, n, self) for prefix in self._prefixes[key]]

    def _running_sums(self, values: np.ndarray) -> np.ndarray:
        """Running sums of a column without nulls, restarting with each series."""
        prefix = np.empty(len(values))
        for a, b in self.bounds:
            np.cumsum(values[a:b], out=prefix[a:b])
        return prefix

    def window(
        self, values: np.ndarray, n: int, *, count: bool = False, key: Hashable = None
    ) -> Window:
        """Sum (``count``: number) of the non-null values over the last ``n`` rows of the
        series: the running sum minus the one ``n`` rows earlier (none before the series
        starts). Counts are sums of ones, exact in floats."""
        prefix = self._prefix.get((key, count)) if key is not None else None
        if prefix is None:
            prefix = self._sums(values, count)
            if key is not None:
                self._prefix[key, count] = prefix
        return Window(prefix, n, self)

    def heads(self, n: int) -> list[tuple[int, int]]:
        """The first ``n`` rows of each series, as (start, stop) (none empty)."""
        return [(a, min(a + n, b)) for a, b in self.bounds]

    def shifted(self, values: np.ndarray, n: int) -> np.ndarray:
        """``values`` ``n`` rows earlier in the same series (null in its first ``n`` rows)."""
        out = np.empty(len(values))
        out[n:] = values[: max(len(values) - n, 0)]
        for a, b in self.bounds:
            out[a : min(a + n, b)] = np.nan
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


def _running_count(null: np.ndarray, out: np.ndarray) -> None:
    """The number of non-null values up to each row (whole numbers, exact in floats:
    the same as a running sum of ones), as the row number minus the nulls up to it --
    no sequential sum over the rows."""
    out[:] = np.arange(1, len(null) + 1)
    nulls = np.flatnonzero(null)
    if nulls.size:
        # between the k-th null and the next, k nulls have been seen
        seen = np.repeat(np.arange(nulls.size + 1), np.diff(nulls, prepend=0, append=len(null)))
        out -= seen


class Window:
    """A window sum column (:meth:`Layout.window`), made block by block as
    :func:`apply_formula` reads it: no whole column of it is ever held.

    Row ``i`` is ``prefix[i] - prefix[i - n]``, or ``prefix[i]`` in the first ``n``
    rows of its series -- the same subtraction of the same running sums, whichever
    block it falls in.
    """

    __slots__ = ("prefix", "n", "heads")

    def __init__(self, prefix: np.ndarray, n: int, layout: Layout) -> None:
        self.prefix = prefix
        self.n = n
        self.heads = layout.heads(n)

    def __len__(self) -> int:
        return len(self.prefix)

    def __getitem__(self, part: slice) -> np.ndarray:
        start, stop = part.start, part.stop
        prefix, n = self.prefix, self.n
        out = np.empty(stop - start)
        # a row before n is in its series' first n rows: a head, written below
        lo = min(max(start, n), stop)
        np.subtract(prefix[lo:stop], prefix[lo - n : stop - n], out=out[lo - start :])
        for a, b in self.heads:
            a, b = max(a, start), min(b, stop)
            if a < b:
                out[a - start : b - start] = prefix[a:b]
        return out


#: rows per block of an elementwise step over a long column: its temporaries stay in
#: the CPU cache and are recycled by the allocator, where whole columns would each fault
#: in fresh pages; a column up to ``4 * BLOCK`` rows is one block (no copy out of them)
BLOCK = 1 << 15


def blocks(size: int) -> list[slice]:
    if size <= 4 * BLOCK:
        return [slice(0, size)]
    return [slice(a, min(a + BLOCK, size)) for a in range(0, size, BLOCK)]


class _Nulls:
    """A formula's trace: the inputs a null of which surely makes this value null."""

    __slots__ = ("of",)

    def __init__(self, of: frozenset[int]) -> None:
        self.of = of

    def _join(self, other: Any) -> _Nulls:
        return _Nulls(self.of | other.of) if isinstance(other, _Nulls) else self

    __add__ = __radd__ = __sub__ = __rsub__ = __mul__ = __rmul__ = _join
    __truediv__ = __rtruediv__ = __ge__ = __gt__ = __le__ = __lt__ = _join  # type: ignore[assignment]

    def __or__(self, other: _Nulls) -> _Nulls:
        # Kleene: true | null is true, false & null is false -- null only if both are
        return _Nulls(self.of & other.of)

    __and__ = __or__

    def __invert__(self) -> _Nulls:
        return self


class _TraceOps:
    """``ops`` on :class:`_Nulls`, following how :class:`NumpyOps` lets nulls through."""

    NULL = None

    def __init__(self, n_inputs: int) -> None:
        self._all = frozenset(range(n_inputs))

    def _of(self, x: Any) -> frozenset[int]:
        if isinstance(x, _Nulls):
            return x.of
        return self._all if x is None else frozenset()

    def div(self, a: Any, b: Any) -> _Nulls:
        return _Nulls(self._of(a) | self._of(b))

    maximum = minimum = div

    def log(self, x: _Nulls) -> _Nulls:
        return x

    sqrt = abs = log

    def where(self, cond: _Nulls, a: Any, b: Any) -> _Nulls:
        return _Nulls(cond.of | (self._of(a) & self._of(b)))


@functools.cache
def null_with_any_input(fn: f.Formula, n_inputs: int, consts: tuple[float, ...]) -> bool:
    """Whether ``fn`` is null wherever one of its inputs is (so that need not be checked)."""
    ops = _TraceOps(n_inputs)
    out = fn(ops, *[_Nulls(frozenset([i])) for i in range(n_inputs)], *consts)
    return isinstance(out, _Nulls) and out.of == ops._of(None)


def apply_formula(
    fn: f.Formula, args: Sequence[np.ndarray | Window], consts: Sequence[float]
) -> np.ndarray:
    """``fn`` on float columns (or window sums, made block by block), as a new column:
    null where an input is null or the result is not finite."""
    size = len(args[0]) if args else 0
    parts = blocks(size)
    out = np.empty(size)
    checked = not null_with_any_input(fn, len(args), tuple(consts))
    with np.errstate(all="ignore"):
        for part in parts:
            values = [a[part] for a in args]
            result = values_of(fn(NUMPY_OPS, *[Column(v) for v in values], *consts))
            bad = np.isfinite(result)
            np.logical_not(bad, out=bad)
            for v in values if checked else ():
                bad |= is_null(v)
            whole = len(parts) == 1 and isinstance(result, np.ndarray) and result.shape == out.shape
            if whole and result.flags.owndata:
                # a new array of the formula's own (not an input): null it in place
                result[bad] = np.nan
                return result
            np.copyto(out[part], result)
            out[part][bad] = np.nan
    return out


def masked(values: np.ndarray, keep: np.ndarray) -> np.ndarray:
    """``values`` where ``keep``, null elsewhere."""
    return np.where(keep, values, np.nan)
