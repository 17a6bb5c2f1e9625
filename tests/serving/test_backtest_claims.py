"""The article's claims report: divergence precision / recall on hand-built inputs with
known answers, the markdown shape, and every claim measured on a tiny hand-built run."""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime, timedelta

import polars as pl
import pytest
from backtest_cascade import frames

from oihedge.features.schema import UTC_US
from oihedge.serving.backtest.claims import Claim, claims_json, claims_markdown, measure_claims
from oihedge.serving.backtest.divergence import divergence_skill
from oihedge.serving.backtest.engine import BacktestSettings, run_backtest
from oihedge.serving.backtest.run import PanelBacktest
from oihedge.serving.policy.costs import CostModel
from oihedge.serving.policy.params import PolicyParams
from oihedge.serving.policy.signals import DIVERGENCE

H = timedelta(hours=1)
T0 = datetime(2025, 1, 1, tzinfo=UTC)


def _at(*hours: int) -> list[datetime]:
    return [T0 + h * H for h in hours]


# --- divergence precision and recall ----------------------------------------------------

# A: crossings at 1 (from missing), 4 (from below), 7 (exactly 8 pp) and 16 (too near
# the end: no full 4 h after it). B: above from its first row: one crossing, at 0.
DIV_A = [None, 9, 9, 2, 10, 1, 1, 8, 8, 8, 1, 1, 1, 1, 1, 1, 9, 1, 1, 1]
DIV_B = [9.0] * 20
FEATURES = pl.DataFrame(
    {
        "ts": pl.Series(_at(*range(20)) * 2, dtype=UTC_US),
        "symbol": ["A"] * 20 + ["B"] * 20,
        DIVERGENCE: [float(x) if x is not None else None for x in DIV_A] + DIV_B,
    }
)
EVENTS = pl.DataFrame(
    {
        "symbol": ["A", "A", "A", "A", "B", "C"],
        "start": pl.Series(_at(3, 10, 14, 18, 2, 5), dtype=UTC_US),
        "trough_ts": pl.Series(_at(4, 11, 15, 19, 3, 6), dtype=UTC_US),
    }
)


def skill(symbols=("A", "B"), start=T0, threshold_pp=8.0):
    return divergence_skill(
        FEATURES,
        EVENTS,
        threshold_pp=threshold_pp,
        horizon=timedelta(hours=4),
        start=start,
        end=T0 + 19 * H,
        symbols=symbols,
    )


def test_precision_counts_crossings_followed_by_an_event_within_the_horizon():
    s = skill()
    # A1 -> event at 3 (hit), A4 -> nothing in (4, 8] (miss), A7 -> event at 10 (hit),
    # B0 -> event at 2 (hit); A16 has no full horizon before the window's end
    assert (s.episodes, s.hits) == (4, 3)
    assert s.precision == pytest.approx(0.75)


def test_recall_counts_events_with_high_divergence_in_the_horizon_before():
    s = skill()
    # A3 (1, 2 high), A10 (7-9), A18 (16), B2 (0, 1) caught; A14 (10-13 low) missed;
    # C is not a run symbol
    assert (s.events, s.caught) == (5, 4)
    assert s.recall == pytest.approx(0.8)


def test_base_rate_is_the_share_of_bars_followed_by_an_event():
    s = skill()
    # bars 0..15 of A and B; A: all but 3, 4, 5 followed; B: 0 and 1
    assert s.bars == 32
    assert s.base_rate == pytest.approx(15 / 32)


def test_an_episode_running_into_the_window_is_not_a_new_crossing():
    s = skill(symbols=("B",), start=T0 + H)
    assert s.episodes == 0 and math.isnan(s.precision)
    assert (s.events, s.caught) == (1, 1)  # its divergence before the window still counts


def test_a_higher_threshold_keeps_fewer_crossings():
    s = skill(threshold_pp=9.5)
    assert (s.episodes, s.hits) == (1, 0)  # A4 only (10 pp)


def test_horizon_must_be_positive():
    with pytest.raises(ValueError, match="horizon must be > 0"):
        divergence_skill(
            FEATURES,
            EVENTS,
            threshold_pp=8.0,
            horizon=timedelta(0),
            start=T0,
            end=T0,
            symbols=["A"],
        )


# --- markdown and JSON ------------------------------------------------------------------


def test_markdown_is_a_table_with_one_row_per_claim():
    claims = [
        Claim("a | b", "how", "1 %", True, {"x": 1.0}),
        Claim("c", "how", "2 %", False, {}),
        Claim("d", "how", "no data", None, {"y": math.nan}),
    ]
    text = claims_markdown(claims, title="Claims")
    lines = text.strip().splitlines()
    assert lines[0] == "## Claims"
    assert lines[2] == "| claim | measured how | result | holds |"
    rows = lines[4:]
    assert len(rows) == 3
    assert [r.rsplit("|", 2)[1].strip() for r in rows] == ["yes", "no", "n.a."]
    assert rows[0].startswith("| a \\| b |")
    data = claims_json(claims)
    assert data[2]["details"] == {"y": None}
    json.dumps(data, allow_nan=False)


# --- every claim on a tiny run ----------------------------------------------------------

ALT = PolicyParams(
    div_entry=0.12, div_exit=0.06, hedge_ratio_max=0.6, max_hedge_usd=2e6, no_trade_band=0.08
)
SETTINGS = BacktestSettings(
    portfolio_usd=1_000_000.0,
    weights={"BTC": 0.5, "NEAR": 0.5},
    params={"BTC": PolicyParams(), "NEAR": ALT},
    costs=CostModel(),
)


@pytest.fixture(scope="module")
def run() -> PanelBacktest:
    parts = [frames(symbol="BTC"), frames(symbol="NEAR")]
    f = {k: pl.concat([p[k] for p in parts]) for k in parts[0]}
    result = run_backtest(
        f["market"], f["features"], SETTINGS, probability=f["probability"], labels=f["labels"]
    )
    events = pl.DataFrame(
        {
            "symbol": ["BTC", "NEAR"],
            "start": pl.Series(_at(29, 29), dtype=UTC_US),
            "trough_ts": pl.Series(_at(31, 31), dtype=UTC_US),
        }
    )
    return PanelBacktest(
        result, f["features"], f["labels"], events, f["market"], f["probability"], None, None
    )


@pytest.fixture(scope="module")
def claims(run) -> list[Claim]:
    return measure_claims(
        run, SETTINGS, events=run.events, horizon=timedelta(hours=4), altcoins=["NEAR", "DOGE"]
    )


def test_every_claim_is_measured(claims):
    assert len(claims) == 5
    words = [c.claim for c in claims]
    assert words[0].startswith("8% cross-venue OI divergence")
    assert words[1].startswith("the worst single-session loss")
    assert words[2].startswith("continuous rebalancing")
    assert words[3].startswith("the policy is most effective above $10,000")
    assert words[4] == "altcoins need wider thresholds"
    for c in claims:
        assert c.holds in (True, False, None)
        assert c.measure and c.value
        assert any(isinstance(v, int | float) for v in c.details.values())
    json.dumps(claims_json(claims), allow_nan=False)


def test_the_divergence_claim_on_the_cascade(claims):
    c = claims[0]
    # one crossing per symbol at 24; the event starts at 29, 5 h later: outside 4 h
    assert (c.details["episodes"], c.details["hits"]) == (2, 0)
    assert (c.details["events"], c.details["caught"]) == (2, 2)
    assert c.holds is False


def test_small_portfolios_cannot_hedge(claims):
    d = claims[3].details
    assert d["usd_1000_trades"] == 0  # every hedge is below min_trade_usd
    assert d["usd_1000000_trades"] > 0
    assert claims[3].holds is True


def test_the_worst_session_numbers_are_printed(claims):
    d = claims[1].details
    assert d["no_hedge_worst_24h_loss"] > d["model_worst_24h_loss"]
    assert f"{100 * d['no_hedge_worst_24h_loss']:.1f} %" in claims[1].value


def test_the_altcoin_claim_compares_both_parameter_sets(claims):
    d = claims[4].details
    assert d["altcoins"] == "NEAR" and d["altcoin_div_entry_pp"] == 12.0
    # the same path for both symbols: the precisions tie, so altcoins are not worse
    assert d["altcoins_8pp_precision"] == d["majors_8pp_precision"]
    assert d["own_params_cascade_loss_offset"] is not None
    assert d["majors_params_cascade_loss_offset"] is not None
    assert claims[4].holds is False


def test_without_an_altcoin_the_altcoin_claim_is_not_measured(run):
    claims = measure_claims(
        run, SETTINGS, events=run.events, horizon=timedelta(hours=4), altcoins=()
    )
    assert claims[4].holds is None
    assert "no altcoin in the run" in claims[4].value


def test_without_events_the_cascade_claims_are_not_measured(run):
    none = run.events.clear()
    claims = measure_claims(run, SETTINGS, events=none, horizon=timedelta(hours=4), altcoins=())
    assert claims[0].holds is None  # crossings, but no event they could precede
    assert claims[2].holds is None and claims[3].holds is None
