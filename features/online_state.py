"""Bounded state for the online backend: running prefix sums and short look-back queues.

Every structure holds at most one window of values. Sums over a window are differences
of running (prefix) sums, the same additions in the same order as the batch backend's
cumulative sums, so both backends produce identical numbers.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Sequence

from features import formulas as f


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
    """A column's value at the latest row in ``[ts - last*bar, ts - first*bar]``.

    A ring of ``last + 1`` bar slots holding the rows of the look-back span.
    """

    __slots__ = ("_bar", "_first", "_last", "_size", "_slots", "_values")

    def __init__(self, first: int, last: int, bar_us: int) -> None:
        self._bar = bar_us
        self._first = first
        self._last = last
        self._size = last + 1
        self._slots = [-1] * self._size
        self._values = [0.0] * self._size

    def lookup(self, ts: int) -> float | None:
        k = ts // self._bar
        size, slots = self._size, self._slots
        for j in range(k - self._first, k - self._last - 1, -1):
            if slots[j % size] == j:
                return self._values[j % size]
        return None

    def add(self, ts: int, value: float) -> None:
        k = ts // self._bar
        self._slots[k % self._size] = k
        self._values[k % self._size] = value

    def __len__(self) -> int:
        return self._size


class RowPrefixes:
    """Running sum and count of one row source over a series' bars, and their windowed
    differences for several windows (in bars).

    A ring of bar slots holds the running sums at each of the last bars (a bar without a
    row keeps the sums of the row before it, as the batch grid's filler rows do), so the
    sums ``n`` bars ago are one lookup.
    """

    __slots__ = (
        "_bar",
        "_bars",
        "_counts",
        "_last",
        "_size",
        "_slots",
        "_totals",
        "count",
        "total",
    )

    def __init__(self, bars: Sequence[int], bar_us: int) -> None:
        self._bar = bar_us
        self._bars = list(bars)
        self._size = max(bars) + 1
        self._slots = [-1] * self._size
        self._totals = [0.0] * self._size
        self._counts = [0.0] * self._size
        self._last: int | None = None
        self.total = 0.0
        self.count = 0.0

    def add(self, ts: int, value: float | None) -> list[float]:
        """Add one accepted row (``None`` adds nothing). Returns, per window, its sum and
        count, flat: ``[sum_0, count_0, sum_1, count_1, ...]``."""
        k = ts // self._bar
        size, slots, totals, counts = self._size, self._slots, self._totals, self._counts
        total, count = self.total, self.count
        last = self._last
        if last is not None and k - last > 1:
            for j in range(max(last + 1, k - size + 1), k):
                s = j % size
                slots[s], totals[s], counts[s] = j, total, count
        if value is not None:
            total += value
            count += 1.0
            self.total, self.count = total, count
        s = k % size
        slots[s], totals[s], counts[s] = k, total, count
        self._last = k
        out = []
        for n in self._bars:
            j = k - n
            s = j % size
            if slots[s] == j:
                out.append(total - totals[s])
                out.append(count - counts[s])
            else:  # before the series' first bar
                out.append(total - 0.0)
                out.append(count - 0.0)
        return out

    def __len__(self) -> int:
        return self._size


class GridPrefix:
    """Running sums of several quantities on the decision grid (one step per bar), with
    the sums ``bars`` steps ago."""

    __slots__ = ("_past", "_sums")

    def __init__(self, width: int, bars: int) -> None:
        self._sums = [0.0] * width
        self._past: deque[tuple[float, ...]] = deque(maxlen=bars + 1)

    def add(self, values: Sequence[float]) -> list[float]:
        """Add one step's values (use 0.0 for a missing one); returns the window sums."""
        sums = self._sums
        for i, v in enumerate(values):
            sums[i] += v
        snapshot = tuple(sums)
        past = self._past
        past.append(snapshot)
        if len(past) == past.maxlen:
            old = past[0]
            return [s - o for s, o in zip(snapshot, old, strict=True)]
        return [s - 0.0 for s in snapshot]

    def __len__(self) -> int:
        return len(self._past)


class GridLagQueue:
    """The value ``bars`` decision steps ago."""

    __slots__ = ("_past",)

    def __init__(self, bars: int) -> None:
        self._past: deque[float | None] = deque(maxlen=bars + 1)

    def add(self, value: float | None) -> float | None:
        past = self._past
        past.append(value)
        return past[0] if len(past) == past.maxlen else None

    def __len__(self) -> int:
        return len(self._past)


def fold_sum(values: Sequence[float | None]) -> float | None:
    """Left-to-right sum of the non-null values (the batch fold's order)."""
    acc = None
    for v in values:
        if v is not None:
            acc = v if acc is None else acc + v
    return acc


def r_sum(xs: Sequence[float | None]) -> float | None:
    acc = None
    for v in xs:
        if v is not None:
            acc = v if acc is None else acc + v
    return acc


def r_mean(xs: Sequence[float | None]) -> float | None:
    acc = None
    n = 0
    for v in xs:
        if v is not None:
            acc = v if acc is None else acc + v
            n += 1
    return acc / n if n else None  # type: ignore[operator]


def r_max(xs: Sequence[float | None]) -> float | None:
    present = [v for v in xs if v is not None]
    return max(present) if present else None


def r_min(xs: Sequence[float | None]) -> float | None:
    present = [v for v in xs if v is not None]
    return min(present) if present else None


def r_spread(xs: Sequence[float | None]) -> float | None:
    present = [v for v in xs if v is not None]
    return max(present) - min(present) if len(present) >= 2 else None


def r_std(xs: Sequence[float | None]) -> float | None:
    """Population std over the present values (2 or more); exactly 0 when all are equal."""
    present = [v for v in xs if v is not None]
    n = len(present)
    if n < 2:
        return None
    mean = r_sum(present) / n  # type: ignore[operator]
    if max(present) == min(present):
        return 0.0
    squares = r_sum([(v - mean) * (v - mean) for v in present])
    return math.sqrt(squares / n)  # type: ignore[operator]


def r_ratio(a: Sequence[float | None], b: Sequence[float | None]) -> float | None:
    """sum(a) / sum(b) over the venues where both are present."""
    num = den = None
    for x, w in zip(a, b, strict=True):
        if x is None or w is None:
            continue
        num = x if num is None else num + x
        den = w if den is None else den + w
    if num is None or not den:
        return None
    out = num / den  # type: ignore[operator]
    return out if out - out == 0.0 else None


def r_wmean(a: Sequence[float | None], b: Sequence[float | None]) -> float | None:
    """sum(a * b) / sum(b) over the venues where both are present."""
    num = den = None
    for x, w in zip(a, b, strict=True):
        if x is None or w is None:
            continue
        top = x * w
        num = top if num is None else num + top
        den = w if den is None else den + w
    if num is None or not den:
        return None
    out = num / den  # type: ignore[operator]
    return out if out - out == 0.0 else None


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

#: the online twins of ``features.batch.reduce_expr``, by reduction kind
REDUCERS = {
    "sum": r_sum,
    "mean": r_mean,
    "max": r_max,
    "min": r_min,
    "spread": r_spread,
    "std": r_std,
    "ratio": r_ratio,
    "wmean": r_wmean,
}
