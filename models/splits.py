"""Time-ordered validation splits with purging and an embargo; nothing is ever shuffled.

A row's label at time ``t`` looks at ``(t, t + horizon]`` (its *label window*). A training
row leaks when its label window reaches into the evaluated period: it then carries the
outcome of an event that the test rows are asked to predict (e.g. the cascade just
after the test block starts labels both the last training rows and the first test rows).

Here training always comes *before* the test block (walk-forward: the model at each point
was trained only on the past), so the two classic guards collapse onto one boundary:

- **purge**: drop every training row whose label window overlaps the test block,
  i.e. keep only ``t + horizon < test_start``;
- **embargo**: López de Prado's embargo drops training rows just *after* a test block;
  with no training after the test there is nothing for it to drop, so it is applied on
  the only boundary there is, as the minimum gap between a training row and the test
  start: keep only ``t + embargo < test_start``. It defaults to ``horizon`` and must be
  at least ``horizon`` (then it contains the purge); make it longer to also keep apart
  rows whose *features* overlap (trailing windows), which are serially correlated.

Folds are defined on time, not on rows, so several rows sharing one timestamp (several
symbols) always fall on the same side. Indices returned are positions in the ``times``
given (which need not be sorted), sorted ascending.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import numpy as np
import polars as pl

_US = timedelta(microseconds=1)

TimesLike = pl.Series | np.ndarray | Sequence[datetime]


@dataclass(frozen=True)
class Fold:
    """One fold's first and last row times (UTC), of the training and of the test rows."""

    train_start: datetime
    train_end: datetime
    test_start: datetime
    test_end: datetime


def _as_us(times: TimesLike) -> np.ndarray:
    """Timestamps as int64 microseconds since the epoch (naive values are taken as UTC)."""
    if isinstance(times, pl.Series):
        series = times
    elif isinstance(times, np.ndarray) and np.issubdtype(times.dtype, np.datetime64):
        return times.astype("datetime64[us]").astype(np.int64)
    else:
        series = pl.Series(list(times) if not isinstance(times, np.ndarray) else times)
    if not isinstance(series.dtype, pl.Datetime):
        raise ValueError(f"times must be datetimes, got dtype {series.dtype}")
    if series.null_count():
        raise ValueError(f"times must not contain nulls, got {series.null_count()}")
    return series.dt.epoch("us").to_numpy().astype(np.int64)


def _dt(us: int) -> datetime:
    return datetime(1970, 1, 1, tzinfo=UTC) + timedelta(microseconds=int(us))


def _us(delta: timedelta) -> int:
    return int(delta / _US)


def _positive(name: str, value: object, *, optional: bool = False) -> None:
    if value is None and optional:
        return
    if not isinstance(value, timedelta) or value <= timedelta(0):
        raise ValueError(f"{name} must be a positive timedelta, got {value!r}")


def _gap(horizon: timedelta, embargo: timedelta | None) -> timedelta:
    _positive("horizon", horizon)
    _positive("embargo", embargo, optional=True)
    if embargo is not None and embargo < horizon:
        raise ValueError(f"embargo must be >= horizon ({horizon!r}), got {embargo!r}")
    return horizon if embargo is None else embargo


class WalkForwardSplit:
    """Walk-forward splits by time, purged and embargoed (see the module docstring).

    The last ``n_splits`` consecutive test blocks of length ``test_size`` end at the last
    timestamp; each fold trains on the rows before its block with ``t + gap < test_start``
    (``gap = embargo``, default ``horizon``), from the first row (expanding window) or
    from ``test_start - gap - max_train`` (rolling window). When ``test_size`` is None the
    period after ``min_train + gap`` (or, without ``min_train``, after the first
    ``1 / (n_splits + 1)`` of the span) is cut into ``n_splits`` equal blocks.

    Args:
        n_splits: number of folds (>= 1).
        horizon: label horizon ``H``; the purge.
        embargo: gap between the last training row and the test start, >= ``horizon``.
        test_size: duration of each test block.
        min_train: the first fold's training rows must span at least this duration.
        max_train: rolling training window (None: expanding).

    Arguments are checked when the object is built; :meth:`split` raises ``ValueError``
    when the times cannot hold the folds (too short, or a test block without rows).
    """

    def __init__(
        self,
        n_splits: int = 5,
        *,
        horizon: timedelta,
        embargo: timedelta | None = None,
        test_size: timedelta | None = None,
        min_train: timedelta | None = None,
        max_train: timedelta | None = None,
    ) -> None:
        if not isinstance(n_splits, int) or isinstance(n_splits, bool) or n_splits < 1:
            raise ValueError(f"n_splits must be an int >= 1, got {n_splits!r}")
        self.n_splits = n_splits
        self.horizon = horizon
        self.embargo = embargo
        self.gap = _gap(horizon, embargo)
        _positive("test_size", test_size, optional=True)
        _positive("min_train", min_train, optional=True)
        _positive("max_train", max_train, optional=True)
        self.test_size = test_size
        self.min_train = min_train
        self.max_train = max_train

    def __repr__(self) -> str:
        return (
            f"WalkForwardSplit(n_splits={self.n_splits}, horizon={self.horizon!r}, "
            f"embargo={self.embargo!r}, test_size={self.test_size!r}, "
            f"min_train={self.min_train!r}, max_train={self.max_train!r})"
        )

    def get_n_splits(self, times: TimesLike | None = None) -> int:
        """Number of folds (scikit-learn's protocol)."""
        return self.n_splits

    def _bounds(self, t: np.ndarray) -> list[tuple[int, int]]:
        """Test blocks ``(start, end]`` in microseconds, oldest first.

        The last block ends at the last timestamp; blocks are left-open so that blocks of
        a whole number of bars hold exactly that many bars.
        """
        if t.size == 0:
            raise ValueError("times is empty")
        first, last = int(t.min()), int(t.max())
        span, gap = last - first, _us(self.gap)
        if self.test_size is not None:
            size = _us(self.test_size)
        elif self.min_train is not None:
            size = (span - _us(self.min_train) - gap) // self.n_splits
        else:
            size = span // (self.n_splits + 1)
        if size <= 0:
            raise ValueError(
                f"times span {_dt(last) - _dt(first)}: too short for {self.n_splits} test "
                f"blocks after min_train={self.min_train!r} and a gap of {self.gap!r}"
            )
        ends = [last - size * (self.n_splits - 1 - i) for i in range(self.n_splits)]
        return [(end - size, end) for end in ends]

    def folds(self, times: TimesLike) -> list[Fold]:
        """The first and last row time of every fold's train and test sets, oldest first."""
        t = _as_us(times)
        return [
            Fold(
                train_start=_dt(t[train].min()),
                train_end=_dt(t[train].max()),
                test_start=_dt(t[test].min()),
                test_end=_dt(t[test].max()),
            )
            for train, test in self._split(t)
        ]

    def split(
        self, times: TimesLike, y: object = None, groups: object = None
    ) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """Yield ``(train_idx, test_idx)`` int64 position arrays, oldest fold first.

        ``times`` are the rows' label times (any order, repeated timestamps allowed);
        ``y`` and ``groups`` are ignored (scikit-learn's signature). All folds are
        checked before the first is yielded.
        """
        yield from self._split(_as_us(times))

    def _split(self, t: np.ndarray) -> list[tuple[np.ndarray, np.ndarray]]:
        gap = _us(self.gap)
        folds = []
        for i, (start, end) in enumerate(self._bounds(t)):
            test = np.flatnonzero((t > start) & (t <= end))
            if test.size == 0:
                raise ValueError(f"fold {i}: test block ({_dt(start)}, {_dt(end)}] holds no rows")
            test_start = int(t[test].min())
            # purge + embargo: no training label window (t, t + H] reaches the test block
            train_mask = t + gap < test_start
            if self.max_train is not None:
                train_mask &= t >= test_start - gap - _us(self.max_train)
            train = np.flatnonzero(train_mask)
            if train.size == 0:
                raise ValueError(
                    f"fold {i}: no training rows before {_dt(test_start)} after a gap of {self.gap}"
                )
            folds.append((train, test))
        if self.min_train is not None:
            have = _dt(int(t[folds[0][0]].max())) - _dt(int(t.min()))
            if have < self.min_train:
                raise ValueError(
                    f"the first fold trains on {have} of data, less than min_train="
                    f"{self.min_train!r}"
                )
        return folds


def holdout_split(
    times: TimesLike,
    *,
    horizon: timedelta,
    holdout_fraction: float | None = None,
    start: datetime | None = None,
    embargo: timedelta | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Split off the final held-out period: ``(development_idx, holdout_idx)``.

    The holdout is every row with ``t >= start`` (or, with ``holdout_fraction``, the last
    that fraction of the time span); development rows satisfy ``t + gap < start`` with
    ``gap = embargo`` (default ``horizon``, must be >= ``horizon``), so no development
    label window reaches the holdout. Give exactly one of ``holdout_fraction`` (in (0, 1))
    and ``start`` (timezone-aware). Raises ``ValueError`` when either side is empty.
    """
    gap = _gap(horizon, embargo)
    if (holdout_fraction is None) == (start is None):
        raise ValueError("give exactly one of holdout_fraction and start")
    t = _as_us(times)
    if t.size == 0:
        raise ValueError("times is empty")
    first, last = int(t.min()), int(t.max())
    if holdout_fraction is not None:
        ok = isinstance(holdout_fraction, float | int) and 0 < holdout_fraction < 1
        if not ok:
            raise ValueError(f"holdout_fraction must be in (0, 1), got {holdout_fraction!r}")
        cut = last - int((last - first) * holdout_fraction)
    else:
        assert start is not None
        if start.tzinfo is None:
            raise ValueError(f"start must be timezone-aware, got {start!r}")
        cut = _us(start - _dt(0))
    holdout = np.flatnonzero(t >= cut)
    development = np.flatnonzero(t + _us(gap) < cut)
    if holdout.size == 0 or development.size == 0:
        raise ValueError(
            f"holdout from {_dt(cut)} with a gap of {gap} leaves "
            f"{development.size} development and {holdout.size} holdout rows"
        )
    return development, holdout
