from __future__ import annotations

import numpy as np
import polars as pl
import pytest

from oihedge.models.baselines import (
    FixedRuleBaseline,
    FundingRuleBaseline,
    LogisticBaseline,
    OiDeviationRuleBaseline,
)


def _frame() -> pl.DataFrame:
    return pl.DataFrame(
        {
            "oi_div_xvenue_4h": [1.0, 9.0, None, 2.0, 12.0, 0.5],
            "oi_dev_24h_pct": [2.0, 1.0, 20.0, None, -5.0, 1.0],
            "funding_z_7d": [0.0, 3.0, -2.5, 0.1, 0.0, None],
        }
    )


def test_fixed_rule_fires_on_divergence_or_deviation_and_never_on_missing():
    rule = FixedRuleBaseline()
    assert rule.fired(_frame()).tolist() == [False, True, True, False, True, False]


def test_oi_deviation_rule_fires_on_deviation_alone():
    rule = OiDeviationRuleBaseline()
    assert rule.name == "oi_deviation_rule"
    assert rule.fired(_frame()).tolist() == [False, False, True, False, False, False]
    assert OiDeviationRuleBaseline(threshold=1.5).fired(_frame()).tolist() == [
        True,
        False,
        True,
        False,
        False,
        False,
    ]
    with pytest.raises(ValueError, match="threshold must be > 0, got 0"):
        OiDeviationRuleBaseline(threshold=0)


def test_rule_scores_are_training_frequencies():
    y = np.array([0, 1, 1, 0, 0, 0])
    rule = FixedRuleBaseline().fit(_frame(), y)
    assert rule.rate_fired_ == pytest.approx(2 / 3)
    assert rule.rate_quiet_ == pytest.approx(0.0)
    assert rule.predict_proba(_frame()).tolist() == pytest.approx([0, 2 / 3, 2 / 3, 0, 2 / 3, 0])


def test_funding_rule_needs_extreme_funding_with_high_oi():
    assert FundingRuleBaseline().fired(_frame()).tolist() == [
        False,
        True,
        True,
        False,
        False,
        False,
    ]


def test_logistic_imputes_training_medians_and_ranks():
    rng = np.random.default_rng(0)
    x = rng.normal(size=2000)
    y = (rng.random(2000) < 1 / (1 + np.exp(-(3 * x - 3)))).astype(int)
    train = pl.DataFrame({"a": x, "b": rng.normal(size=2000)})
    model = LogisticBaseline(("a", "b")).fit(train, y)
    p = model.predict_proba(pl.DataFrame({"a": [-2.0, 0.0, 2.0, None], "b": [0.0, 0.0, 0.0, 0.0]}))
    assert p[0] < p[1] < p[2]
    assert p[3] == pytest.approx(
        model.predict_proba(pl.DataFrame({"a": [model.medians_[0]], "b": [0.0]}))[0]
    )
    assert abs(model.predict_proba(train).mean() - y.mean()) < 0.03  # prior restored


def test_errors_name_the_problem():
    with pytest.raises(ValueError, match="needs feature column 'funding_z_7d'"):
        FundingRuleBaseline().fired(_frame().drop("funding_z_7d"))
    with pytest.raises(ValueError, match="thresholds must be > 0"):
        FixedRuleBaseline(divergence_threshold=0)
    with pytest.raises(RuntimeError, match="not fitted"):
        FixedRuleBaseline().predict_proba(_frame())
    with pytest.raises(ValueError, match="C must be > 0"):
        LogisticBaseline(("a",), C=0)
