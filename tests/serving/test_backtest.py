"""The hedge backtest: a hand-built cascade where the right answer is known, exact costs,
no look-ahead, the comparison policies, walk-forward purging, the metrics."""

from __future__ import annotations

import math
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import numpy as np
import polars as pl
import pytest
from backtest_cascade import (
    BAR,
    PATH,
    RATE_8H,
    T0,
    TS,
    UNITS,
    VOL_ANN,
    VOLUME,
    N,
    frames,
)

from oihedge.serving.backtest.engine import BacktestSettings, run_backtest, vol_target_fractions
from oihedge.serving.backtest.loops import _vol_forecast
from oihedge.serving.backtest.report import cvar, daily_returns, max_drawdown, worst_window_loss
from oihedge.serving.policy.costs import CostModel
from oihedge.serving.policy.params import PolicyParams
from oihedge.serving.policy.signals import VOL_WINDOWS, vol_forecast

#: the policy reads the raw probability here (no smoothing), so the fills computed by hand
#: below follow ``p`` bar by bar; the default smoothing is checked on the same cascade in
#: test_the_smoothed_probability_holds_the_hedge_one_bar_longer
SETTINGS = BacktestSettings(
    portfolio_usd=1_000_000.0,
    weights={"BTC": 1.0},
    params={"BTC": PolicyParams(p_halflife=timedelta(0))},
    costs=CostModel(),
)


def backtest(path: dict[str, list] = PATH, settings: BacktestSettings = SETTINGS):
    f = frames(path)
    return run_backtest(
        f["market"], f["features"], settings, probability=f["probability"], labels=f["labels"]
    )


def hedge_units(run) -> np.ndarray:
    bars = run.bars
    return (bars["hedge_usd"] / bars["price"]).to_numpy()


def hand_cost(qty: float, price: float, stress: bool) -> tuple[float, float, float]:
    """(notional, fee, slippage) of a fill, from the cost model's formula written out."""
    notional = -qty * price
    fee = abs(notional) * 5.0 / 1e4
    bps = 1.0 + 300.0 * math.sqrt(abs(notional) / VOLUME) + 10.0 * VOL_ANN
    slip = abs(notional) * bps * (3.0 if stress else 1.0) / 1e4
    return notional, fee, slip


# --- the hand-built cascade -----------------------------------------------------------


def test_hedge_is_on_before_the_drop_and_off_after_normalisation():
    run = backtest().runs["model"]
    q = hedge_units(run)
    # p_entry = cost / severity = (2 x (5 + 1 + 10 x 0.6) bps + 0.30 x 4h/1y) / (3 x 0.6 x
    # sqrt(4h/1y)) = 0.002537 / 0.038463 = 0.0660: p 0.01 is calm, p 0.40 an edge of 6.1
    assert (q[:25] == 0).all()  # calm: no hedge; the signal at 24 fills at 25
    assert q[25:28] == pytest.approx([7_500.0] * 3)  # high tier, 1 - 1/6.1 capped at 75 %
    assert q[28:34] == pytest.approx([UNITS] * 6)  # an edge >= 8 with 2 confirmations: full
    assert run.bars["hedge_usd"][29] == pytest.approx(UNITS * 103)  # on at the last close
    # normal from 32 (and held 5 h >= min_hold 4 h); the exit holds 1 h (32 -> 33), is
    # decided at 33 and fills at 34
    assert (q[34:] == 0).all()
    tiers = run.bars["target_fraction"].to_list()
    assert tiers[24] == pytest.approx(0.75) and tiers[27] == 1.0 and tiers[33] == 0.0


def test_the_smoothed_probability_holds_the_hedge_one_bar_longer():
    # the default half-life, 15 min, on 1 h bars: q = 0.0625 x q_prev + 0.9375 x p
    assert PolicyParams().p_halflife == timedelta(minutes=15)
    smoothed = replace(SETTINGS, params={"BTC": PolicyParams()})
    run = backtest(settings=smoothed).runs["model"]
    q = hedge_units(run)
    # entry as with the raw p: q = 0.3756 at 24 (an edge of 5.7: 75 %), 0.8687 at 27 (full)
    assert (q[:25] == 0).all()
    assert q[25:28] == pytest.approx([7_500.0] * 3)
    assert q[28:35] == pytest.approx([UNITS] * 7)
    # p falls to 0.01 at 32, but q = 0.0625 x 0.9 + 0.9375 x 0.01 = 0.0656 is still above
    # p_exit = 0.5 x 0.0660: the exit clock starts at 33 (q = 0.0135), the exit is decided
    # at 34 and fills at 35, one bar later than with the raw probability
    assert (q[35:] == 0).all()
    tiers = run.bars["target_fraction"].to_list()
    assert tiers[24] == pytest.approx(0.75) and tiers[27] == 1.0
    assert tiers[33] == 1.0 and tiers[34] == 0.0


def test_costs_are_charged_exactly():
    run = backtest().runs["model"]
    trades = run.trades
    expected = [(24, 25, 7_500.0), (27, 28, 2_500.0), (33, 34, -UNITS)]
    assert trades.height == len(expected)
    fees = slips = 0.0
    for trade, (decided, filled, qty) in zip(trades.iter_rows(named=True), expected, strict=True):
        assert (trade["decided_at"], trade["ts"]) == (TS[decided], TS[filled])
        assert trade["qty"] == pytest.approx(qty, rel=1e-12)
        price = PATH["price"][filled]
        assert trade["price"] == price  # the next bar's price: no look-ahead
        notional, fee, slip = hand_cost(trade["qty"], price, PATH["stress"][filled])
        assert trade["notional_usd"] == pytest.approx(notional, abs=1e-9)
        assert trade["fee_usd"] == pytest.approx(fee, abs=1e-9)
        assert trade["slippage_usd"] == pytest.approx(slip, abs=1e-9)
        fees, slips = fees + fee, slips + slip
    bars = run.bars
    assert bars["fee_usd"].sum() == pytest.approx(fees, abs=1e-9)
    assert bars["slippage_usd"].sum() == pytest.approx(slips, abs=1e-9)
    # funding over (t-1, t] on the short held after t-1's fill, at t-1's price and rate
    q, price = hedge_units(run), PATH["price"]
    funding = sum(
        -(q[i - 1] * price[i - 1]) * RATE_8H * (BAR / timedelta(hours=8)) for i in range(1, N)
    )
    assert bars["funding_usd"].sum() == pytest.approx(funding, abs=1e-9)
    assert funding < 0  # positive funding: the short received it
    # PnL: long 10,000 x (83 - 100); hedge -7,500 x (102.5 - 101) - 10,000 x (83 - 102.5)
    assert bars["long_pnl"].sum() == pytest.approx(-170_000.0, abs=1e-6)
    assert bars["hedge_pnl"].sum() == pytest.approx(183_750.0, abs=1e-6)
    final = run.equity["equity_usd"][-1]
    assert final == pytest.approx(1e6 - 170_000 + 183_750 - fees - slips - funding, abs=1e-6)


def test_a_fill_inside_a_cascade_pays_the_stress_multiplier():
    late = {**PATH, "p": [0.01] * 30 + [0.90] * 2 + [0.01] * 16}  # full hedge decided at 30
    trades = backtest(late).runs["model"].trades
    first = trades.row(0, named=True)
    assert (first["decided_at"], first["ts"], first["stress"]) == (TS[30], TS[31], True)
    _, fee, slip = hand_cost(first["qty"], 82.0, True)
    assert first["slippage_usd"] == pytest.approx(slip, abs=1e-9)
    assert first["slippage_bps"] == pytest.approx(
        3 * (1 + 300 * math.sqrt(UNITS * 82 / VOLUME) + 6)
    )


# --- timing ---------------------------------------------------------------------------


@pytest.mark.parametrize("cut", [20, 26, 29, 31, 36])
def test_no_look_ahead_changing_the_future_leaves_the_past_alone(cut):
    changed = {k: list(v) for k, v in PATH.items()}
    for i in range(cut + 1, N):
        changed["price"][i] *= 0.5
        changed["p"][i] = 1.0 - changed["p"][i]
        changed["div_pp"][i] = 30.0
        changed["stress"][i] = not changed["stress"][i]
        changed["y"][i] = 1 - changed["y"][i]
    a, b = backtest(), backtest(changed)
    # the matched policies are sized on the whole window's average (hindsight on the size,
    # like perfect foresight's label): benchmarks, not tradable policies
    for name in set(a.runs) - {"static_matched", "vol_target_matched"}:
        past_a = a.runs[name].bars.filter(pl.col("ts") <= TS[cut])
        past_b = b.runs[name].bars.filter(pl.col("ts") <= TS[cut])
        assert past_a.equals(past_b), name
        assert a.runs[name].equity.head(cut + 1).equals(b.runs[name].equity.head(cut + 1))


def test_orders_fill_at_the_next_bar_with_a_price():
    gap = {**PATH, "price": list(PATH["price"])}
    gap["price"][25] = None  # no venue printed a price at 25
    f = frames(gap)
    run = run_backtest(
        f["market"], f["features"], SETTINGS, probability=f["probability"], labels=f["labels"]
    ).runs["model"]
    first = run.trades.row(0, named=True)
    assert (first["decided_at"], first["ts"], first["price"]) == (TS[24], TS[26], 101.5)
    for name, result in backtest().runs.items():
        trades = result.trades
        assert ((trades["ts"] - trades["decided_at"]) == BAR).all(), name


# --- comparison policies --------------------------------------------------------------


def test_no_hedge_is_never_hedged_and_costs_nothing():
    run = backtest().runs["no_hedge"]
    assert (run.bars["hedge_usd"] == 0).all() and run.trades.height == 0
    assert (
        run.bars.select(
            pl.col("fee_usd", "slippage_usd", "funding_usd").abs().sum()
        ).sum_horizontal()[0]
        == 0
    )
    assert run.equity["equity_usd"][-1] == pytest.approx(1e6 + UNITS * (83 - 100))


def test_static_hedge_is_half_hedged_all_the_time():
    run = backtest().runs["static_50"]
    ratio = (run.bars["hedge_usd"] / run.bars["long_usd"]).to_numpy()
    assert ratio[0] == 0 and ratio[1:] == pytest.approx([0.5] * (N - 1))
    # a same-asset hedge never drifts from half of the long: set once, never rebalanced
    assert run.trades.height == 1


def test_static_matched_holds_the_models_average_hedge_without_its_timing():
    result = backtest()
    model = result.runs["model"].bars["target_fraction"].fill_null(0.0)
    run = result.runs["static_matched"]
    ratio = (run.bars["hedge_usd"] / run.bars["long_usd"]).to_numpy()
    assert 0 < model.mean() < 0.5  # the model hedges the cascade only
    assert ratio[0] == 0 and ratio[1:] == pytest.approx([model.mean()] * (N - 1))
    # the same average hedge spread over the whole window protects less than the timed one
    loss = dict(zip(*result.table().select("policy", "max_drawdown"), strict=True))
    assert loss["model"] < 0.5 * loss["static_matched"] < loss["no_hedge"]


def test_static_matched_needs_the_model_run_first():
    with pytest.raises(ValueError, match="list 'model' before it"):
        replace(SETTINGS, policies=("static_matched", "model"))
    with pytest.raises(ValueError, match="list 'model' before it"):
        replace(SETTINGS, policies=("no_hedge", "static_matched"))


def test_vol_targeting_hedges_the_volatility_above_its_target():
    vol = np.array([0.5, 1.0, 2.0, np.nan, 0.0])
    assert vol_target_fractions(vol, 0.8) == pytest.approx([0.0, 0.2, 0.6, 0.0, 0.0])
    matched = vol_target_fractions(vol, None, 0.3)
    assert matched.mean() == pytest.approx(0.3, abs=1e-9)
    assert vol_target_fractions(vol, None, 0.0).sum() == 0.0


def test_the_engine_forecasts_volatility_as_the_policy_does():
    rows = [
        {"vol_rv_4h_pct": 2.0, "vol_rv_24h_pct": 3.0, "vol_rv_7d_pct": 4.0},
        {"vol_rv_4h_pct": None, "vol_rv_24h_pct": 3.0, "vol_rv_7d_pct": -1.0},
        {"vol_rv_4h_pct": None, "vol_rv_24h_pct": None, "vol_rv_7d_pct": None},
    ]
    frame = pl.DataFrame(rows, schema={n: pl.Float64 for n in VOL_WINDOWS})
    got = _vol_forecast(frame)
    for value, row in zip(got, rows, strict=True):
        want = vol_forecast(row)
        assert (math.isnan(value) and want is None) or value == pytest.approx(want)


def test_vol_target_policies_run_on_the_engine():
    f = frames()
    f["features"] = f["features"].with_columns(
        pl.Series("vol_rv_4h_pct", [100 * VOL_ANN / math.sqrt(365)] * 40 + [10.0] * 8)
    )
    result = run_backtest(
        f["market"], f["features"], SETTINGS, probability=f["probability"], labels=f["labels"]
    )
    model_mean = result.runs["model"].bars["target_fraction"].fill_null(0.0).mean()
    matched = result.runs["vol_target_matched"].bars["target_fraction"].mean()
    assert matched == pytest.approx(model_mean, abs=1e-6)
    # vol 60 %/yr before bar 40 (the 4 h window at 10 %/sqrt(day) = 191 %/yr afterwards):
    # a 120 % target hedges only then, 1 - 1.2 / forecast
    late = np.sqrt((3 * (VOL_ANN**2) + (0.1 * math.sqrt(365)) ** 2 - VOL_ANN**2) / 3)
    target = result.runs["vol_target_120"].bars["target_fraction"].to_numpy()
    assert (target[:40] == 0).all() and target[40:] == pytest.approx([1 - 1.2 / late] * 8)


def test_the_scheduled_policy_decides_once_a_day():
    start = datetime(2024, 12, 31, 12, tzinfo=UTC)  # the path's day boundary falls at bar 12
    shifted = replace(SETTINGS, policies=("model", "scheduled"))
    f = frames()
    for name in ("market", "features", "probability", "labels"):
        f[name] = f[name].with_columns(pl.col("ts") - (T0 - start))
    result = run_backtest(
        f["market"], f["features"], shifted, probability=f["probability"], labels=f["labels"]
    )
    target = result.runs["scheduled"].bars["target_fraction"].to_numpy()
    # decided at bar 0 (calm) and at bar 36 (00:00 UTC of the next day: after the cascade)
    assert (target[:36] == 0).all() and result.runs["model"].trades.height == 3
    assert result.runs["scheduled"].trades.height == 0
    # the entry level is derived only on the bars it decided; the tier is held between
    scheduled = result.runs["scheduled"].bars
    decided = scheduled["p_entry"].is_not_null().arg_true().to_list()
    assert decided == [0, 12, 36] and set(scheduled["tier"]) == {"baseline"}


def test_the_model_run_records_what_the_policy_read_and_derived():
    result = backtest()
    bars = result.runs["model"].bars
    assert bars["p"].to_list() == PATH["p"]
    # p_entry = cost / severity = 0.0660 on every bar (vol, funding and costs are constant)
    assert bars["p_entry"].to_numpy() == pytest.approx([0.06596] * N, abs=1e-5)
    tiers = bars["tier"].to_list()
    # edge 0.40 / 0.066 = 6.1: high; 0.90 with 2 confirmations: full, held to the exit at 33
    assert tiers[:24] == ["baseline"] * 24 and tiers[24:27] == ["high"] * 3
    assert tiers[27:33] == ["full"] * 6 and tiers[33:] == ["baseline"] * (N - 33)
    assert not {"p", "p_entry", "tier"} & set(result.runs["no_hedge"].bars.columns)


def test_fixed_rule_hedges_fully_from_8pp_until_normalised():
    q = hedge_units(backtest().runs["fixed_rule"])
    # divergence >= 8 pp from 24; below 4 pp from 32, held 2 h -> off decided 34, filled 35
    assert (q[:25] == 0).all() and q[25:35] == pytest.approx([UNITS] * 10) and (q[35:] == 0).all()


def test_perfect_foresight_follows_the_label():
    q = hedge_units(backtest().runs["perfect_foresight"])
    on = np.zeros(N, dtype=bool)
    on[28:32] = True  # labels 1 at 27..30, each filled one bar later
    assert (q[on] == pytest.approx(UNITS)) and (q[~on] == 0).all()


def test_the_policy_table_ranks_the_cascade_as_expected():
    table = backtest().table()
    loss = dict(zip(table["policy"], table["max_drawdown"], strict=True))
    assert loss["no_hedge"] == pytest.approx(1 - 82 / 103, rel=1e-9)
    assert loss["model"] < 0.25 * loss["no_hedge"]
    assert loss["static_50"] == pytest.approx(loss["no_hedge"] / 2, rel=0.05)


def test_the_table_annualises_costs_and_turnover():
    result = backtest()
    run, row = result.runs["model"], result.table().row(0, named=True)
    years = (N - 1) * BAR / timedelta(days=365)
    bars = run.bars
    fees_slip = bars["fee_usd"].sum() + bars["slippage_usd"].sum()
    assert row["fees_slippage_annual"] == pytest.approx(fees_slip / 1e6 / years, rel=1e-12)
    assert row["funding_annual"] == pytest.approx(bars["funding_usd"].sum() / 1e6 / years)
    assert row["hedge_cost_annual"] == pytest.approx(
        row["fees_slippage_annual"] + row["funding_annual"]
    )
    traded = 7_500 * 101 + 2_500 * 102.5 + UNITS * 83
    assert row["turnover_annual"] == pytest.approx(traded / 1e6 / years, rel=1e-9)
    assert row["time_hedged"] == pytest.approx(9 / N)  # bars 25..33
    assert row["trades"] == 3
    assert row["total_return"] == pytest.approx(run.equity["equity_usd"][-1] / 1e6 - 1)


@pytest.mark.parametrize(
    ("change", "match"),
    [
        ({"portfolio_usd": 0.0}, "portfolio_usd must be > 0"),
        ({"weights": {"BTC": -1.0}}, "weight of BTC must be > 0"),
        ({"weights": {"ETH": 1.0}}, "no policy parameters for 'ETH'"),
        ({"rule_exit_pp": 9.0}, r"rule_exit_pp must be in \[0, rule_entry_pp"),
        ({"policies": ("model", "magic")}, "unknown policy 'magic'"),
        ({"static_fractions": (0.5, 1.5)}, r"static_fractions must hold numbers in \(0, 1\]"),
        ({"model_budgets": (0.0,)}, r"model_budgets must hold numbers in \(0, 1\]"),
        ({"vol_targets": (0.6, math.nan)}, r"vol_targets must hold numbers in \(0, 1000\]"),
        ({"schedule": timedelta(0)}, "schedule must be > 0"),
    ],
)
def test_settings_are_checked(change, match):
    with pytest.raises(ValueError, match=match):
        replace(SETTINGS, **change)


def test_missing_inputs_are_refused():
    f = frames()
    with pytest.raises(ValueError, match="model policy needs a probability"):
        run_backtest(f["market"], f["features"], SETTINGS, labels=f["labels"])
    with pytest.raises(ValueError, match="no bars of"):
        run_backtest(
            f["market"],
            f["features"],
            replace(
                SETTINGS,
                weights={"BTC": 1, "ETH": 1},
                params={"BTC": PolicyParams(), "ETH": PolicyParams()},
            ),
            probability=f["probability"],
            labels=f["labels"],
        )


# --- metrics --------------------------------------------------------------------------

EQUITY = np.array([100.0] * 30 + [80.0] * 24 + [70.0] * 18)  # 72 hourly bars, 3 UTC days
EQ_TS = np.array([int((T0 + i * BAR).timestamp() * 1e6) for i in range(72)], dtype=np.int64)


def test_worst_24h_loss_on_a_known_curve():
    # at 06:00 on day 2 the equity is 80, 24 h earlier it was 100: -20 %; the later fall
    # to 70 is -12.5 % against the 80 of 24 h before
    assert worst_window_loss(EQ_TS, EQUITY, timedelta(hours=24)) == pytest.approx(0.20)
    assert worst_window_loss(EQ_TS, EQUITY, timedelta(hours=48)) == pytest.approx(0.30)
    assert worst_window_loss(EQ_TS[:20], EQUITY[:20], timedelta(hours=24)) == 0.0
    assert worst_window_loss(EQ_TS[:40], EQUITY[:40], timedelta(days=5)) == pytest.approx(0.20)


def test_max_drawdown_on_a_known_curve():
    assert max_drawdown(EQUITY) == pytest.approx(0.30)
    assert max_drawdown(np.array([1.0, 2.0, 1.5, 3.0, 2.4])) == pytest.approx(0.25)


def test_daily_returns_and_cvar_on_a_known_curve():
    returns = daily_returns(EQ_TS, EQUITY)
    assert returns == pytest.approx([0.0, -0.20, -0.125])
    assert cvar(returns, 0.95) == pytest.approx(0.20)  # ceil(5 % x 3) = 1 worst day
    assert cvar(returns, 0.50) == pytest.approx(0.1625)  # ceil(1.5) = 2 worst days
    many = np.linspace(-0.10, 0.10, 120)
    assert cvar(many, 0.95) == pytest.approx(-many[:6].mean())  # exactly 6, not 7
    with pytest.raises(ValueError, match="level must be in"):
        cvar(returns, 1.0)
