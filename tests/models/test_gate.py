"""The gate's comparison (:mod:`oihedge.models.gate`): margins, the hedge metrics, a policy that
never leaves its baseline."""

from __future__ import annotations

import pytest

from oihedge.models.gate import gate


def test_gate_rules():
    v = gate(
        {"pr_auc": 0.50, "brier": 0.05},
        {"pr_auc": 0.51, "brier": 0.049},
        {"pr_auc": 0.02, "brier": 0.002},
        window="w",
    )
    assert v.passed
    v = gate({"pr_auc": 0.45}, {"pr_auc": 0.51}, {"pr_auc": 0.02, "brier": 0.0}, window="w")
    assert not v.passed and [r.metric for r in v.rows] == ["pr_auc"]
    with pytest.raises(ValueError, match="unknown gate metric 'auc'"):
        gate({"auc": 1.0}, None, {"auc": 0.0}, window="w")
    with pytest.raises(ValueError, match="must be >= 0"):
        gate({"pr_auc": 1.0}, None, {"pr_auc": -1.0}, window="w")


def test_gate_judges_tail_loss_at_equal_mean_hedge_and_fees():
    ours = {"tail_excess": -0.004, "fees_slippage_annual": 0.010}
    theirs = {"tail_excess": -0.002, "fees_slippage_annual": 0.012}
    margins = {"tail_excess": 0.0, "fees_slippage_annual": 0.0}
    assert gate(ours, theirs, margins, window="w").passed
    assert not gate(theirs, ours, margins, window="w").passed
    # within the margin: 0.012 <= 0.010 + 0.003
    loose = {"tail_excess": 0.003, "fees_slippage_annual": 0.003}
    assert gate(theirs, ours, loose, window="w").passed
    # the former margin keys set the new metrics (until the configuration renames them)
    former = {"worst_24h_loss": 0.0, "hedge_cost_annual": 0.0}
    verdict = gate(ours, theirs, former, window="w")
    assert [r.metric for r in verdict.rows] == ["tail_excess", "fees_slippage_annual"]
    with pytest.raises(ValueError, match="'tail_excess' is given twice"):
        gate(ours, theirs, {"tail_excess": 0.0, "worst_24h_loss": 0.0}, window="w")


@pytest.mark.parametrize(
    ("activity", "refused"),
    [
        ({"events": 3, "trades": 0, "time_hedged": 0.0}, True),
        ({"events": 3, "trades": 2, "time_hedged": 0.2, "cascade_time": 0.0}, True),
        ({"events": 3, "trades": 2, "time_hedged": 0.2, "cascade_time": 0.1}, False),
        ({"events": 3, "trades": 2, "time_hedged": 0.2}, False),
        ({"events": 0, "trades": 0, "time_hedged": 0.0}, False),  # nothing to hedge
        ({"trades": 0}, False),  # no activity readings: not judged
    ],
)
def test_gate_refuses_a_hedge_policy_that_never_leaves_baseline(activity, refused):
    challenger = {"pr_auc": 0.6, **activity}
    verdict = gate(challenger, {"pr_auc": 0.5}, {"pr_auc": 0.0}, window="w")
    assert verdict.rows[0].passed
    assert verdict.passed is not refused
    assert bool(verdict.refusals) is refused
    if refused:
        assert "never leaves its baseline" in verdict.as_dict()["refusals"][0]
