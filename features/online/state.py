"""Bounded state for the online backend: running prefix sums and short look-back queues.

Every structure holds at most one window of values. Sums over a window are differences
of running (prefix) sums, the same additions in the same order as the batch backend's
cumulative sums, so both backends produce identical numbers.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from operator import add, sub

from oihedge.features import formulas as f


def apply_formula(
    fn: f.Formula, args: Sequence[float | None], consts: Sequence[float]
) -> float | None:
    """``fn`` on floats: ``None`` when an input is ``None``, the formula fails, or the
    result is not finite (the batch backend's null rules)."""
    for value in args:
        if value is None:
            return None
    try:
        out = fn(f.SCALAR_OPS, *args, *consts)
    except (ArithmeticError, ValueError, TypeError):
        return None
    if out is None or out - out != 0.0:  # null, or not finite
        return None
    return out


class RowRef:
    """A column's recent values on a series' bars: a ring of bar slots, and the value at
    the latest row in ``[k - last, k - first]`` (bars) for any ``first <= last`` up to
    the ring's span (several references of one column share one ring). The online code
    generator inlines :meth:`lookup` and :meth:`add` (same operations)."""

    __slots__ = ("size", "slots", "values")

    def __init__(self, span: int) -> None:
        self.size = span + 1
        self.slots = [-1] * self.size
        self.values = [0.0] * self.size

    def lookup(self, k: int, first: int, last: int) -> float | None:
        size, slots = self.size, self.slots
        for j in range(k - first, k - last - 1, -1):
            if slots[j % size] == j:
                return self.values[j % size]
        return None

    def add(self, k: int, value: float) -> None:
        self.slots[k % self.size] = k
        self.values[k % self.size] = value

    def __len__(self) -> int:
        return self.size


class RowPrefixes:
    """Running sum and count of one row source over a series' bars, and their windowed
    differences for several windows (in bars).

    A ring of bar slots holds the running sums at each of the last bars (a bar without a
    row keeps the sums of the row before it, as the batch grid's filler rows do), so the
    sums ``n`` bars ago are one lookup. The online code generator inlines :meth:`add`
    (same operations); :meth:`fill` is its rare path, after a gap.
    """

    __slots__ = ("bars", "counts", "last", "size", "slots", "totals", "count", "total")

    def __init__(self, bars: Sequence[int], bar_us: int) -> None:
        self.bars = list(bars)
        self.size = max(bars) + 1
        self.slots = [-1] * self.size
        self.totals = [0.0] * self.size
        self.counts = [0.0] * self.size
        self.last = -1
        self.total = 0.0
        self.count = 0.0

    def fill(self, k: int) -> None:
        """Bars between the last row and bar ``k`` keep the last row's running sums."""
        size, slots, totals, counts = self.size, self.slots, self.totals, self.counts
        for j in range(max(self.last + 1, k - size + 1), k):
            s = j % size
            slots[s], totals[s], counts[s] = j, self.total, self.count

    def add(self, k: int, value: float | None) -> list[float]:
        """Add the row of bar ``k`` (``None`` adds nothing). Returns, per window, its sum
        and count, flat: ``[sum_0, count_0, sum_1, count_1, ...]``."""
        if self.last >= 0 and k - self.last > 1:
            self.fill(k)
        if value is not None:
            self.total += value
            self.count += 1.0
        total, count, size = self.total, self.count, self.size
        s = k % size
        self.slots[s], self.totals[s], self.counts[s] = k, total, count
        self.last = k
        out = []
        for n in self.bars:
            j = k - n
            s = j % size
            if self.slots[s] == j:
                out += (total - self.totals[s], count - self.counts[s])
            else:  # before the series' first bar
                out += (total - 0.0, count - 0.0)
        return out

    def __len__(self) -> int:
        return self.size


class GridPrefix:
    """Running sums of several quantities on the decision grid (one step per bar), with
    the sums ``bars`` steps ago (a ring of ``bars + 1`` snapshots). The online code
    generator inlines :meth:`add` (same operations; ``sums`` may then be a tuple)."""

    __slots__ = ("filled", "i", "ring", "size", "sums")

    def __init__(self, width: int, bars: int) -> None:
        self.sums: Sequence[float] = [0.0] * width
        self.size = bars + 1
        self.ring: list[tuple[float, ...]] = [()] * self.size
        self.i = 0
        self.filled = 0

    def add(self, values: Sequence[float]) -> list[float]:
        """Add one step's values (use 0.0 for a missing one); returns the window sums."""
        sums = self.sums = list(map(add, self.sums, values))
        snapshot = tuple(sums)
        i, size = self.i, self.size
        self.ring[i] = snapshot
        self.i = (i + 1) % size
        if self.filled < size:
            self.filled += 1
            if self.filled < size:
                return [s - 0.0 for s in snapshot]
        return list(map(sub, snapshot, self.ring[self.i]))

    def __len__(self) -> int:
        return self.filled


class GridLagQueue:
    """The value ``bars`` decision steps ago (a ring of ``bars + 1`` values; the online
    code generator inlines :meth:`add`)."""

    __slots__ = ("filled", "i", "ring", "size")

    def __init__(self, bars: int) -> None:
        self.size = bars + 1
        self.ring: list[float | None] = [None] * self.size
        self.i = 0
        self.filled = 0

    def add(self, value: float | None) -> float | None:
        i = self.i
        self.ring[i] = value
        i = self.i = (i + 1) % self.size
        if self.filled < self.size:
            self.filled += 1
            if self.filled < self.size:
                return None
        return self.ring[i]

    def __len__(self) -> int:
        return self.filled


def fold_sum(values: Sequence[float | None]) -> float | None:
    """Left-to-right sum of the non-null values (the batch fold's order)."""
    acc = None
    for v in values:
        if v is not None:
            acc = v if acc is None else acc + v
    return acc


def p_sum(present: list[float]) -> float | None:
    """Sum of already filtered (non-null) values, left to right."""
    acc = None
    for v in present:
        acc = v if acc is None else acc + v
    return acc


def p_mean(present: list[float]) -> float | None:
    return p_sum(present) / len(present) if present else None  # type: ignore[operator]


def p_max(present: list[float]) -> float | None:
    return max(present) if present else None


def p_min(present: list[float]) -> float | None:
    return min(present) if present else None


def p_spread(present: list[float]) -> float | None:
    return max(present) - min(present) if len(present) >= 2 else None


def p_std(present: list[float]) -> float | None:
    n = len(present)
    if n < 2:
        return None
    mean = p_sum(present) / n  # type: ignore[operator]
    if max(present) == min(present):
        return 0.0
    squares = p_sum([(v - mean) * (v - mean) for v in present])
    return math.sqrt(squares / n)  # type: ignore[operator]


#: reductions of one venue vector, fed with its non-null values (filtered once)
PRESENT_REDUCERS = {
    "sum": p_sum,
    "mean": p_mean,
    "max": p_max,
    "min": p_min,
    "spread": p_spread,
    "std": p_std,
}
