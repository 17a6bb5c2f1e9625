"""The batch backend's column arithmetic: formulas on numpy columns give the online
backend's scalar values bit for bit, folds across venues follow polars' rules."""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable
from typing import Any

import numpy as np
import polars as pl
import pytest

from oihedge.features import formulas as f
from oihedge.features.batch.engine import Across, reduce_columns
from oihedge.features.batch.stage import Layout, apply_formula, null_with_any_input

#: every formula with its number of column inputs and its constants
FORMULAS: list[tuple[Callable[..., Any], int, tuple[float, ...]]] = [
    (f.pct_change, 2, ()),
    (f.pct_from_ratio, 1, ()),
    (f.log_ratio, 2, ()),
    (f.log_of, 1, ()),
    (f.square, 1, ()),
    (f.parkinson_term, 2, ()),
    (f.daily_vol_pct, 1, (288.0,)),
    (f.to_bp, 1, ()),
    (f.ratio_bp, 2, ()),
    (f.share, 2, ()),
    (f.share_sq, 2, ()),
    (f.diff, 2, ()),
    (f.diff_pp, 2, ()),
    (f.times_100, 1, ()),
    (f.floored_ratio, 2, (0.1,)),
    (f.negative_times_positive, 2, ()),
    (f.imbalance, 2, ()),
    (f.window_sum, 2, (3.0,)),
    (f.window_mean, 2, (3.0,)),
    (f.window_std, 3, (3.0,)),
    (f.window_z, 4, (3.0,)),
    (f.corr_from_sums, 6, (3.0,)),
]


def _scalar(fn: Callable[..., Any], inputs: list[float], consts: tuple[float, ...]) -> float:
    """The online backend's value (NaN for its null): null inputs, a failing operation
    or a non-finite result give null."""
    if any(math.isnan(x) for x in inputs):
        return math.nan
    try:
        out = fn(f.SCALAR_OPS, *inputs, *consts)
    except (ArithmeticError, ValueError, TypeError):  # TypeError: an operation on a null
        return math.nan
    return float(out) if out is not None and math.isfinite(out) else math.nan


def _inputs(n: int, size: int, seed: int) -> list[np.ndarray]:
    """Columns mixing nulls, zeros, negatives, equal values and small counts."""
    rng = np.random.default_rng(seed)
    pool = np.array([np.nan, 0.0, -0.0, 1.0, 2.0, 3.0, -1.0, 0.5, 1e-12, 1e300])
    cols = []
    for _ in range(n):
        col = rng.normal(size=size) * rng.choice([1e-3, 1.0, 1e4], size=size)
        special = rng.random(size) < 0.3
        col[special] = rng.choice(pool, size=int(special.sum()))
        cols.append(col)
    return cols


@pytest.mark.parametrize(("fn", "n", "consts"), FORMULAS, ids=lambda v: getattr(v, "__name__", ""))
def test_formula_on_columns_equals_scalar_bits(
    fn: Callable[..., Any], n: int, consts: tuple[float, ...]
) -> None:
    cols = _inputs(n, 50_000, seed=n)
    got = apply_formula(fn, cols, consts)
    rows = zip(*[c.tolist() for c in cols], strict=True)
    want = np.array([_scalar(fn, list(row), consts) for row in rows])
    assert np.array_equal(np.isnan(got), np.isnan(want))
    assert np.array_equal(got.view(np.int64)[~np.isnan(got)], want.view(np.int64)[~np.isnan(want)])


def test_null_trace_finds_inputs_a_formula_can_skip() -> None:
    assert null_with_any_input(f.corr_from_sums, 6, (3.0,))
    # the untaken branch's input may be null: its nulls must be checked
    assert not null_with_any_input(lambda ops, x, y: ops.where(x > 0.0, 1.0, y), 2, ())
    # Kleene: true | null is true
    assert not null_with_any_input(lambda ops, x, y: ops.where((x > 0) | (y > 0), x, x), 2, ())


def test_where_with_kleene_or_is_null_only_when_undecided() -> None:
    def fn(ops: Any, x: Any, y: Any) -> Any:
        return ops.where((x > 0.0) | (y > 0.0), 1.0, 2.0)

    x = np.array([1.0, np.nan, -1.0, np.nan, -1.0])
    y = np.array([np.nan, 1.0, np.nan, -1.0, -1.0])
    # inputs are checked for nulls too (the trace cannot prove them needless)
    assert np.array_equal(apply_formula(fn, [x, y], ()), [np.nan] * 4 + [2.0], equal_nan=True)


@pytest.mark.parametrize("how", ["max", "min", "spread", "sum", "mean", "std"])
def test_venue_folds_match_polars_on_signed_zeros_and_nulls(how: str) -> None:
    values = [0.0, -0.0, None, 1.0, -1.0]
    rows = list(itertools.product(values, repeat=4))
    frame = pl.DataFrame(
        {f"v{i}": [r[i] for r in rows] for i in range(4)},
        schema={f"v{i}": pl.Float64 for i in range(4)},
    )
    cols = [pl.col(c) for c in frame.columns]
    count = pl.sum_horizontal([c.is_not_null() for c in cols]).cast(pl.Float64)
    total = pl.sum_horizontal([c.fill_null(-0.0) for c in cols])
    high, low = pl.max_horizontal(cols), pl.min_horizontal(cols)
    mean = total / count
    squares = pl.sum_horizontal([((c - mean) * (c - mean)).fill_null(-0.0) for c in cols])
    expected = {
        "max": high,
        "min": low,
        "spread": pl.when(count >= 2).then(high - low),
        "sum": pl.when(count > 0).then(total),
        "mean": pl.when(count > 0).then(mean),
        "std": pl.when(count >= 2).then(
            pl.when(high == low).then(0.0).otherwise((squares / count).sqrt())
        ),
    }[how]
    want = frame.select(expected).to_series().to_numpy()
    got = reduce_columns(how, [Across([frame[c].to_numpy() for c in frame.columns])])
    assert np.array_equal(np.isnan(got), np.isnan(want))
    assert np.array_equal(got.view(np.int64)[~np.isnan(got)], want.view(np.int64)[~np.isnan(want)])


def test_window_sums_and_counts_are_differences_of_running_sums() -> None:
    """Windows over series of unequal lengths with nulls (none, some, all): the sum and
    the count of the non-null values in the last ``n`` rows of the series, computed
    directly (the counts exactly, the sums to rounding) -- in one block or several."""
    rng = np.random.default_rng(4)
    lengths = np.array([1, 7, 300, 5, 200_000])
    values = rng.normal(size=int(lengths.sum()))
    values[rng.random(values.size) < 0.1] = np.nan
    values[1:8] = np.nan
    layout = Layout.from_lengths(lengths)
    starts = np.concatenate([[0], np.cumsum(lengths)[:-1]])
    for n in (1, 3, 250):
        total = apply_formula(f.diff, [layout.window(values, n), np.zeros(values.size)], ())
        count = apply_formula(
            f.diff, [layout.window(values, n, count=True), np.zeros(values.size)], ()
        )
        for a, length in zip(starts.tolist(), lengths.tolist(), strict=True):
            for i in sorted({0, 1, n - 1, n, length - 1} & set(range(length))) + [length // 2]:
                part = values[a + max(0, i - n + 1) : a + i + 1]
                present = part[~np.isnan(part)]
                assert count[a + i] == float(present.size)
                expected = math.fsum(present) if present.size else 0.0
                assert total[a + i] == pytest.approx(expected, rel=1e-12, abs=1e-9)
