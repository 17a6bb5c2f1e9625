"""Walk-forward splits: purging, embargo, ordering, coverage, and a leakage case."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
import polars as pl
import pytest

from oihedge.models.splits import WalkForwardSplit, holdout_split

START = datetime(2025, 1, 1, tzinfo=UTC)
BAR = timedelta(minutes=5)
H = timedelta(hours=4)


def panel_times(days: float = 30, n_symbols: int = 3, bar: timedelta = BAR) -> pl.Series:
    """Row times of a long panel: ``n_symbols`` rows per timestamp, sorted by symbol."""
    n = int(timedelta(days=days) / bar)
    one = pl.datetime_range(START, START + bar * (n - 1), bar, time_zone="UTC", eager=True)
    return pl.concat([one] * n_symbols)


def us(series: pl.Series) -> np.ndarray:
    return series.dt.epoch("us").to_numpy()


# --- arguments -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"n_splits": 0, "horizon": H}, r"n_splits must be an int >= 1, got 0"),
        ({"n_splits": 2.5, "horizon": H}, r"n_splits must be an int >= 1, got 2.5"),
        ({"horizon": timedelta(0)}, r"horizon must be a positive timedelta"),
        ({"horizon": "4h"}, r"horizon must be a positive timedelta, got '4h'"),
        ({"horizon": H, "embargo": timedelta(hours=1)}, r"embargo must be >= horizon"),
        ({"horizon": H, "test_size": timedelta(hours=-1)}, r"test_size must be a positive"),
        ({"horizon": H, "min_train": timedelta(0)}, r"min_train must be a positive"),
        ({"horizon": H, "max_train": 5}, r"max_train must be a positive timedelta, got 5"),
    ],
)
def test_bad_arguments_raise_when_built(kwargs, match):
    with pytest.raises(ValueError, match=match):
        WalkForwardSplit(**kwargs)


def test_impossible_configurations_raise_on_split():
    times = panel_times(days=10)
    with pytest.raises(ValueError, match=r"no training rows before"):
        list(WalkForwardSplit(5, horizon=H, test_size=timedelta(days=2)).split(times))
    with pytest.raises(ValueError, match=r"too short for 5 test blocks"):
        list(WalkForwardSplit(5, horizon=H, min_train=timedelta(days=10)).split(times))
    with pytest.raises(ValueError, match=r"less than min_train"):
        splitter = WalkForwardSplit(
            4, horizon=H, test_size=timedelta(days=2), min_train=timedelta(days=3)
        )
        list(splitter.split(times))
    with pytest.raises(ValueError, match=r"times is empty"):
        list(WalkForwardSplit(2, horizon=H).split(pl.Series([], dtype=pl.Datetime("us", "UTC"))))
    with pytest.raises(ValueError, match=r"times must be datetimes"):
        list(WalkForwardSplit(2, horizon=H).split(pl.Series([1, 2, 3])))


def test_a_test_block_without_rows_raises():
    times = panel_times(days=20, n_symbols=1)
    hole = (times >= START + timedelta(days=16)) & (times < START + timedelta(days=18))
    with pytest.raises(ValueError, match=r"fold 3: test block .* holds no rows"):
        list(WalkForwardSplit(5, horizon=H, test_size=timedelta(days=2)).split(times.filter(~hole)))


# --- structure -----------------------------------------------------------------------


@pytest.mark.parametrize("max_train", [None, timedelta(days=7)])
def test_folds_are_ordered_disjoint_purged_and_cover_the_tail(max_train):
    times = panel_times()
    t = us(times)
    splitter = WalkForwardSplit(5, horizon=H, max_train=max_train)
    folds = list(splitter.split(times))
    assert len(folds) == splitter.get_n_splits() == 5
    tested = np.concatenate([test for _, test in folds])
    # test blocks are disjoint, consecutive, and cover every row from the first test start
    assert np.unique(tested).size == tested.size
    assert set(tested.tolist()) == set(np.flatnonzero(t >= t[folds[0][1]].min()).tolist())
    previous_end = None
    for train, test in folds:
        assert train.dtype == np.int64 and test.dtype == np.int64
        assert np.all(np.diff(train) > 0) and np.all(np.diff(test) > 0)
        assert np.intersect1d(train, test).size == 0
        # train strictly before test, with the purge: t + H < first test time
        assert t[train].max() + H / timedelta(microseconds=1) < t[test].min()
        if previous_end is not None:
            assert t[test].min() > previous_end
        previous_end = t[test].max()
        # every symbol of a timestamp falls on the same side
        assert set(t[test]).isdisjoint(set(t[train]))
        if max_train is not None:
            span = t[train].max() - t[train].min()
            assert span <= max_train / timedelta(microseconds=1)
    # expanding window: each fold trains on a superset of the previous one
    if max_train is None:
        for (a, _), (b, _) in zip(folds, folds[1:], strict=False):
            assert set(a.tolist()) < set(b.tolist())


def test_unsorted_input_gives_positions_into_the_input():
    times = panel_times(days=10)
    order = np.random.default_rng(0).permutation(times.len())
    shuffled = times.gather(order)
    for (tr_a, te_a), (tr_b, te_b) in zip(
        WalkForwardSplit(3, horizon=H).split(times),
        WalkForwardSplit(3, horizon=H).split(shuffled),
        strict=True,
    ):
        assert sorted(order[tr_b].tolist()) == tr_a.tolist()
        assert sorted(order[te_b].tolist()) == te_a.tolist()


def test_accepts_numpy_and_python_datetimes():
    times = panel_times(days=5, n_symbols=1)
    expected = [(a.tolist(), b.tolist()) for a, b in WalkForwardSplit(2, horizon=H).split(times)]
    as_numpy = times.dt.replace_time_zone(None).to_numpy()
    as_list = times.to_list()
    for other in (as_numpy, as_list):
        got = [(a.tolist(), b.tolist()) for a, b in WalkForwardSplit(2, horizon=H).split(other)]
        assert got == expected


def test_embargo_widens_the_gap_and_folds_report_bounds():
    times = panel_times(days=20, n_symbols=2)
    splitter = WalkForwardSplit(
        3, horizon=H, embargo=timedelta(days=1), test_size=timedelta(days=3)
    )
    for fold, (_train, test) in zip(splitter.folds(times), splitter.split(times), strict=True):
        assert fold.test_start - fold.train_end > timedelta(days=1)
        assert fold.test_start - fold.train_end <= timedelta(days=1) + BAR
        assert fold.test_end - fold.test_start == timedelta(days=3) - BAR
        assert us(pl.Series([fold.test_start]))[0] == us(times)[test].min()
    assert splitter.folds(times)[-1].test_end == times.max()


# --- leakage -------------------------------------------------------------------------


def _event_labels(t: np.ndarray, events: np.ndarray, horizon_us: int) -> np.ndarray:
    """y(t) = 1 when an event happens in (t, t + H]: a label built from the future."""
    lo = np.searchsorted(events, t, side="right")
    hi = np.searchsorted(events, t + horizon_us, side="right")
    return (hi > lo).astype(int)


def _nearest_past_label(t_train: np.ndarray, y_train: np.ndarray, t_test: np.ndarray):
    """A memorising model: predict the label of the latest training timestamp."""
    order = np.argsort(t_train, kind="stable")
    pos = np.searchsorted(t_train[order], t_test, side="right") - 1
    return y_train[order][pos]


def test_leakage_case_without_purge_leaks_and_with_purge_does_not():
    """A cascade right after each test block starts is seen by naive training labels.

    The label at t is 1 when an event falls in (t, t + H]. Events sit 1h after the start
    of every test block, and nowhere else near a boundary. Without purging, the last
    training rows are labelled 1 *because of the test-period event*; a model that
    memorises the most recent training label then "predicts" the first test rows
    perfectly. With the purge no training label window reaches the test block: the
    memoriser sees only 0s, and an index check confirms no overlap.
    """
    times = panel_times(days=30, n_symbols=2)
    t = us(times)
    h_us = int(H / timedelta(microseconds=1))
    splitter = WalkForwardSplit(4, horizon=H, test_size=timedelta(days=5))
    starts = [us(pl.Series([f.test_start]))[0] for f in splitter.folds(times)]
    events = np.array(sorted(s + 3_600_000_000 for s in starts))
    y = _event_labels(t, events, h_us)

    for start, (train, test) in zip(starts, splitter.split(times), strict=True):
        first_test = test[(t[test] < start + 3_600_000_000)]
        assert y[first_test].all()  # the rows before the event are positive
        # naive split: train on everything before the test block
        naive = np.flatnonzero(t < start)
        leaked = _nearest_past_label(t[naive], y[naive], t[first_test])
        assert leaked.all(), "the naive split should leak the test event"
        # purged split: the same memoriser learns nothing about the test event
        purged = _nearest_past_label(t[train], y[train], t[first_test])
        assert not purged.any()
        # and by index: every training label window (t, t+H] ends before the test block
        assert np.all(t[train] + h_us < t[test].min())
        # so no training label depends on any event inside the test block
        in_block = events[(events >= t[test].min()) & (events <= t[test].max())]
        assert in_block.size
        windows_hit = (in_block[None, :] > t[train][:, None]) & (
            in_block[None, :] <= t[train][:, None] + h_us
        )
        assert not windows_hit.any()


# --- holdout -------------------------------------------------------------------------


def test_holdout_split_by_fraction_and_start():
    times = panel_times(days=10)
    t = us(times)
    dev, hold = holdout_split(times, horizon=H, holdout_fraction=0.2)
    assert np.intersect1d(dev, hold).size == 0
    assert t[dev].max() + H / timedelta(microseconds=1) < t[hold].min()
    assert abs(hold.size / t.size - 0.2) < 0.01
    cut = START + timedelta(days=8)
    dev, hold = holdout_split(times, horizon=H, start=cut, embargo=timedelta(hours=12))
    assert pl.Series(times.gather(hold)).min() == cut
    assert cut - pl.Series(times.gather(dev)).max() > timedelta(hours=12)
    # everything is either development, holdout, or in the purged gap
    gap_rows = t.size - dev.size - hold.size
    assert gap_rows == 3 * int(timedelta(hours=12) / BAR)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"horizon": H}, r"exactly one of holdout_fraction and start"),
        ({"horizon": H, "holdout_fraction": 0.2, "start": START}, r"exactly one of"),
        ({"horizon": H, "holdout_fraction": 1.5}, r"holdout_fraction must be in \(0, 1\), got 1.5"),
        ({"horizon": H, "start": datetime(2025, 1, 5)}, r"start must be timezone-aware"),
        (
            {"horizon": H, "start": START + timedelta(days=30)},
            r"leaves \d+ development and 0 holdout",
        ),
        ({"horizon": H, "start": START + timedelta(hours=2)}, r"leaves 0 development"),
        (
            {"horizon": H, "holdout_fraction": 0.2, "embargo": timedelta(hours=1)},
            r"embargo must be >= horizon",
        ),
    ],
)
def test_holdout_split_errors(kwargs, match):
    with pytest.raises(ValueError, match=match):
        holdout_split(panel_times(days=10), **kwargs)
