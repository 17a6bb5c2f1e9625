"""Feature formulas, written once, evaluated by both backends.

Every formula is a plain function ``fn(ops, *inputs, *consts)``. The batch backend calls
it with numpy float columns and its ``NUMPY_OPS`` (:mod:`oihedge.features.batch.stage`); the
online backend with Python floats and :data:`SCALAR_OPS`. Arithmetic operators
(``+ - * /``) work on both; everything else (division that may hit zero, logs, square
roots, branches) goes through ``ops`` so that both backends give a null in the same
places. The order of operations is the order written here, in both backends, so the
results agree bit for bit.

Null rules (identical in both): an input that is null makes the result null; a division
by zero, the log of a non-positive number, the square root of a negative one, or a
non-finite result is null. In the scalar backend these raise and the caller turns the
exception into ``None``: a formula must therefore never raise in a branch of
``ops.where`` that is not taken unless the taken branch is null too.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

#: a formula: ``fn(ops, *inputs, *consts)``
Formula = Callable[..., Any]
#: a window whose variance is below this share of its mean square is flat: no std, no z
FLAT_VARIANCE_REL = 1e-10
#: a correlation needs at least this many pairs, whatever the coverage rule says
MIN_CORR_PAIRS = 3


class ScalarOps:
    """``ops`` for Python floats (inputs are never ``None``; failures raise)."""

    NULL = None

    @staticmethod
    def div(a: float, b: float) -> float:
        return a / b

    log = staticmethod(math.log)
    sqrt = staticmethod(math.sqrt)
    abs = staticmethod(abs)

    @staticmethod
    def where(cond: bool, a: float | None, b: float | None) -> float | None:
        return a if cond else b

    @staticmethod
    def maximum(a: float, b: float) -> float:
        return a if a >= b else b

    @staticmethod
    def minimum(a: float, b: float) -> float:
        return a if a <= b else b


SCALAR_OPS = ScalarOps()


# -- elementwise formulas ----------------------------------------------------------------


def pct_change(ops: Any, x: Any, x0: Any) -> Any:
    """Percent change from ``x0`` to ``x``."""
    return (ops.div(x, x0) - 1.0) * 100.0


def pct_from_ratio(ops: Any, ratio: Any) -> Any:
    """Percent change given the ratio new / old."""
    return (ratio - 1.0) * 100.0


def log_ratio(ops: Any, x: Any, x0: Any) -> Any:
    """Natural log of ``x / x0`` (a log return)."""
    return ops.log(ops.div(x, x0))


def log_of(ops: Any, x: Any) -> Any:
    return ops.log(x)


def square(ops: Any, x: Any) -> Any:
    return x * x


def parkinson_term(ops: Any, high: Any, low: Any) -> Any:
    """Parkinson's per-bar variance estimate ``ln(high / low)^2 / (4 ln 2)``."""
    hl = ops.log(ops.div(high, low))
    return hl * hl * (0.25 / math.log(2.0))


def daily_vol_pct(ops: Any, mean_square: Any, bars_per_day: float) -> Any:
    """Volatility in % per sqrt(day) from a mean squared per-bar log return."""
    return ops.sqrt(mean_square * bars_per_day) * 100.0


def to_bp(ops: Any, x: Any) -> Any:
    """A rate (fraction) in basis points."""
    return x * 10_000.0


def ratio_bp(ops: Any, num: Any, den: Any) -> Any:
    """``num / den`` in basis points."""
    return ops.div(num, den) * 10_000.0


def share(ops: Any, x: Any, total: Any) -> Any:
    """``x / total`` (a fraction of the total)."""
    return ops.div(x, total)


def share_sq(ops: Any, x: Any, total: Any) -> Any:
    s = ops.div(x, total)
    return s * s


def diff(ops: Any, a: Any, b: Any) -> Any:
    return a - b


def diff_pp(ops: Any, a: Any, b: Any) -> Any:
    """Difference of two fractions, in percentage points."""
    return (a - b) * 100.0


def times_100(ops: Any, x: Any) -> Any:
    return x * 100.0


def floored_ratio(ops: Any, num: Any, den: Any, floor: float) -> Any:
    """``num / den`` with ``|den|`` raised to at least ``floor`` (sign kept, 0 counts as +)."""
    safe = ops.where(den >= 0.0, ops.maximum(den, floor), ops.minimum(den, -floor))
    return ops.div(num, safe)


def negative_times_positive(ops: Any, rate: Any, excess: Any) -> Any:
    """``max(-rate, 0) * max(excess, 0)``: large only when rate < 0 while excess > 0."""
    return ops.maximum(0.0 - rate, 0.0) * ops.maximum(excess, 0.0)


def imbalance(ops: Any, a: Any, b: Any) -> Any:
    """``(a - b) / (a + b)`` in [-1, 1]; null when both are zero."""
    return ops.div(a - b, a + b)


# -- window formulas (fed with sums over a window; shared by every window kind) ------------


def window_sum(ops: Any, total: Any, count: Any, needed: float) -> Any:
    """The window's sum when it holds at least ``needed`` values."""
    return ops.where(count >= needed, total, ops.NULL)


def window_mean(ops: Any, total: Any, count: Any, needed: float) -> Any:
    return ops.where(count >= needed, ops.div(total, count), ops.NULL)


def _variance(ops: Any, count: Any, s1: Any, s2: Any, needed: float) -> Any:
    """Sample variance from sums of (x - k) and (x - k)^2; null when short or flat."""
    var = ops.div(s2 - ops.div(s1 * s1, count), count - 1.0)
    flat = var <= ops.div(s2, count) * FLAT_VARIANCE_REL
    return ops.where(count >= needed, ops.where(flat, ops.NULL, var), ops.NULL)


def window_std(ops: Any, count: Any, s1: Any, s2: Any, needed: float) -> Any:
    return ops.sqrt(_variance(ops, count, s1, s2, needed))


def window_z(ops: Any, x_dev: Any, count: Any, s1: Any, s2: Any, needed: float) -> Any:
    """z-score of the newest value; ``x_dev`` and the sums are taken about the same shift."""
    std = ops.sqrt(_variance(ops, count, s1, s2, needed))
    return ops.div(x_dev - ops.div(s1, count), std)


def corr_from_sums(
    ops: Any, count: Any, sx: Any, sy: Any, sxy: Any, sxx: Any, syy: Any, needed: float
) -> Any:
    """Pearson correlation from the window sums of paired values; clipped to [-1, 1]."""
    cov = sxy - ops.div(sx * sy, count)
    vx = sxx - ops.div(sx * sx, count)
    vy = syy - ops.div(sy * sy, count)
    flat = (vx <= sxx * FLAT_VARIANCE_REL) | (vy <= syy * FLAT_VARIANCE_REL)
    raw = ops.div(cov, ops.sqrt(vx * vy))
    clipped = ops.maximum(ops.minimum(raw, 1.0), -1.0)
    enough = count >= max(needed, MIN_CORR_PAIRS)
    return ops.where(enough, ops.where(flat, ops.NULL, clipped), ops.NULL)
