"""Cascade severity: forward drops of positive label rows in units of the horizon's volatility."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta

import polars as pl
import pytest

from features.schema import UTC_US
from models.severity import (
    DROP,
    SEVERITY_VOL,
    Severity,
    card_severity_k,
    fit_severity,
    severity_rows,
)

T0 = datetime(2025, 1, 1, tzinfo=UTC)
H = timedelta(hours=4)
SCALE = math.sqrt(4 / 24)  # the 24 h volatility (per sqrt(day)) scaled to 4 h


def frames(drops, vols, labels):
    ts = pl.Series([T0 + timedelta(hours=i) for i in range(len(drops))], dtype=UTC_US)
    keys = {"ts": ts, "symbol": ["BTC"] * len(drops)}
    features = pl.DataFrame(
        {**keys, SEVERITY_VOL: vols}, schema_overrides={SEVERITY_VOL: pl.Float64}
    )
    label_frame = pl.DataFrame(
        {**keys, "y_cascade_4h": labels, DROP: drops},
        schema_overrides={DROP: pl.Float64, "y_cascade_4h": pl.Int8},
    )
    return features, label_frame


def test_severity_is_the_mean_drop_of_positive_rows_in_horizon_volatility():
    features, labels = frames(
        drops=[2.0, 6.0, 9.0, 1.0, 3.0, None, 4.0],
        vols=[3.0, 3.0, 6.0, 3.0, None, 3.0, 0.0],
        labels=[1, 1, 1, 0, 1, 1, 1],
    )
    rows = severity_rows(features, labels, "y_cascade_4h", H)
    # the negative row, the missing volatility, the missing drop and the zero vol are left out
    assert rows["ratio"].to_list() == pytest.approx(
        [2 / (3 * SCALE), 6 / (3 * SCALE), 9 / (6 * SCALE)]
    )
    fitted = fit_severity(rows, min_rows=3)
    assert fitted is not None
    assert fitted.k == pytest.approx((2 / 3 + 2 + 1.5) / 3 / SCALE)
    assert (fitted.n_rows, fitted.median_drop_pct) == (3, 6.0)
    assert fitted.card() == {"k": fitted.k, "n_rows": 3, "median_drop_pct": 6.0}
    assert fit_severity(rows, min_rows=4) is None


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (
            lambda f, lab: severity_rows(f.drop(SEVERITY_VOL), lab, "y_cascade_4h", H),
            "feature table lacks column 'vol_rv_24h_pct'",
        ),
        (
            lambda f, lab: severity_rows(f, lab.drop(DROP), "y_cascade_4h", H),
            "label table lacks column 'y_fwd_price_drop_pct'",
        ),
        (
            lambda f, lab: severity_rows(f, lab, "y_cascade_1h", H),
            "label table lacks column 'y_cascade_1h'",
        ),
        (lambda f, lab: severity_rows(f, lab, "y_cascade_4h", timedelta(0)), "horizon must be > 0"),
        (
            lambda f, lab: fit_severity(severity_rows(f, lab, "y_cascade_4h", H), min_rows=0),
            "min_rows must be >= 1",
        ),
    ],
)
def test_bad_inputs_are_named(call, match):
    features, labels = frames([2.0], [3.0], [1])
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
