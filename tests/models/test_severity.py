"""Cascade severity: the forward drop of positive label rows (to the lowest close within
the horizon) in units of the horizon's volatility."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta

import polars as pl
import pytest

from oihedge.features.schema import UTC_US
from oihedge.models.severity import (
    CLOSE,
    SEVERITY_VOL,
    Severity,
    card_severity_k,
    fit_severity,
    severity_rows,
)

T0 = datetime(2025, 1, 1, tzinfo=UTC)
H = timedelta(hours=2)  # two hourly bars ahead
SCALE = math.sqrt(2 / 24)  # the 24 h volatility (per sqrt(day)) scaled to 2 h


def frames(closes, vols, labels):
    ts = pl.Series([T0 + timedelta(hours=i) for i in range(len(closes))], dtype=UTC_US)
    keys = {"ts": ts, "symbol": ["BTC"] * len(closes)}
    features = pl.DataFrame(
        {**keys, SEVERITY_VOL: vols}, schema_overrides={SEVERITY_VOL: pl.Float64}
    )
    label_frame = pl.DataFrame(
        {**keys, "y_cascade_4h": labels, CLOSE: closes},
        schema_overrides={CLOSE: pl.Float64, "y_cascade_4h": pl.Int8},
    )
    return features, label_frame


def test_severity_is_the_mean_drop_to_the_lowest_close_in_horizon_volatility():
    features, labels = frames(
        closes=[100.0, 98.0, 90.0, 99.0, 99.0, 95.0, 97.0, 97.0],
        vols=[3.0, 3.0, 6.0, 3.0, None, 3.0, 3.0, 3.0],
        labels=[1, 1, 1, 0, 1, 1, 1, 1],
    )
    rows = severity_rows(features, labels, "y_cascade_4h", H)
    # t=0: lowest close in (0h, 2h] 90 -> 10 %; t=1: 90 -> 8.16 %; t=2: min(99, 99) > 90,
    # no drop; t=3 negative; t=4 no volatility; t=5: 97 > 95, no drop; t=6, 7: no full
    # horizon after them (the lowest close is read 2 h ahead)
    assert rows["drop_pct"].to_list() == pytest.approx([10.0, 100 * (1 - 90 / 98)])
    assert rows["ratio"].to_list() == pytest.approx(
        [10.0 / (3 * SCALE), 100 * (1 - 90 / 98) / (3 * SCALE)]
    )
    fitted = fit_severity(rows, min_rows=2)
    assert fitted is not None
    assert fitted.k == pytest.approx((10.0 + 100 * (1 - 90 / 98)) / 2 / (3 * SCALE))
    assert fitted.n_rows == 2
    assert fitted.card()["k"] == fitted.k
    assert card_severity_k({"severity": fitted.card()}) == fitted.k
    assert fit_severity(rows, min_rows=3) is None


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (
            lambda f, lab: severity_rows(f.drop(SEVERITY_VOL), lab, "y_cascade_4h", H),
            "feature table lacks column 'vol_rv_24h_pct'",
        ),
        (
            lambda f, lab: severity_rows(f, lab.drop(CLOSE), "y_cascade_4h", H),
            "label table lacks column 'y_ref_close'",
        ),
        (
            lambda f, lab: severity_rows(f, lab, "y_cascade_1h", H),
            "label table lacks column 'y_cascade_1h'",
        ),
        (
            lambda f, lab: severity_rows(f, lab, "y_cascade_4h", timedelta(0)),
            "horizon must be > 0",
        ),
        (
            lambda f, lab: fit_severity(severity_rows(f, lab, "y_cascade_4h", H), min_rows=0),
            "min_rows must be >= 1",
        ),
    ],
)
def test_bad_inputs_are_named(call, match):
    features, labels = frames([100.0, 90.0, 95.0], [3.0, 3.0, 3.0], [1, 0, 0])
    with pytest.raises(ValueError, match=match):
        call(features, labels)


def test_card_severity_k_reads_the_card_s_entry():
    card = {"severity": Severity(k=4.5, n_rows=12, median_drop_pct=3.0).card()}
    assert card_severity_k(card) == 4.5
    assert card_severity_k({"severity": {"k": 3}}) == 3.0


@pytest.mark.parametrize(
    "card",
    [
        None,
        {},
        {"severity": None, "severity_note": "2 positive development rows < min_rows=5"},
        {"severity": {}},
        {"severity": {"k": None}},
        {"severity": {"k": math.nan}},
        {"severity": {"k": math.inf}},
        {"severity": {"k": 0.0}},
        {"severity": {"k": -1.0}},
        {"severity": {"k": "4"}},
        {"severity": {"k": True}},
        {"severity": 4.0},
    ],
)
def test_card_severity_k_is_none_without_a_usable_k(card):
    assert card_severity_k(card) is None
