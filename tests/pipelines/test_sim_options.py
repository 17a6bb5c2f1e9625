"""The simulator's options venue: BTC and ETH only, options columns only, valid rows, and
plausible behaviour: implied volatility rises into cascades, the skew turns put-heavy."""

from __future__ import annotations

from datetime import timedelta

import polars as pl
import pytest

from oihedge.features.screening import validate
from oihedge.pipelines.sim.simulate import SimulationConfig, SimulationResult, simulate

BAR = timedelta(minutes=5)
OPTIONS = ("opt_oi_usd", "opt_put_call_oi", "opt_iv_atm_pct", "opt_rr25_pct")


@pytest.fixture(scope="module")
def result() -> SimulationResult:
    return simulate(SimulationConfig(days=45, seed=7, options=True))


def test_options_rows_are_their_own_venue_for_btc_and_eth_only(result) -> None:
    panel = result.panel
    opt = panel.filter(pl.col("venue") == "deribit")
    assert set(opt["symbol"]) == {"BTC", "ETH"}
    others = [c for c in panel.columns if c not in (*OPTIONS, "ts", "venue", "symbol", "known_at")]
    assert opt.select(others).null_count().row(0) == (opt.height,) * len(others)
    # the perp venues carry no options values, and NEAR has none anywhere (null, not zero)
    perp = panel.filter(pl.col("venue") != "deribit")
    assert perp.select(OPTIONS).null_count().row(0) == (perp.height,) * len(OPTIONS)
    # every options row is valid: the quarantine is exactly the injected bad rows
    checked = validate(panel, bar=BAR, arrival_order=True)
    assert checked.n_quarantined == result.injected_bad_rows
    assert (opt["known_at"] > opt["ts"]).all() and (opt["known_at"] - opt["ts"]).max() < BAR


def test_without_options_the_market_is_the_same() -> None:
    plain = simulate(SimulationConfig(days=6, seed=7))
    with_options = simulate(SimulationConfig(days=6, seed=7, options=True))
    assert "deribit" not in set(plain.panel["venue"])
    assert with_options.injected_bad_rows == plain.injected_bad_rows
    again = with_options.panel.filter(pl.col("venue") != "deribit")
    assert again.sort("venue", "symbol", "ts", "known_at").equals(
        plain.panel.sort("venue", "symbol", "ts", "known_at")
    )


def test_iv_rises_into_cascades_and_the_skew_turns_put_heavy(result) -> None:
    opt = result.panel.filter(pl.col("venue") == "deribit").sort("ts")
    events = result.events.filter(pl.col("symbol").is_in(["BTC", "ETH"]))
    assert events.height >= 3
    iv_up, rr_down, pcr_up = [], [], []
    for event in events.iter_rows(named=True):
        series = opt.filter(pl.col("symbol") == event["symbol"])
        before = series.filter(
            pl.col("ts").is_between(event["start"] - timedelta(hours=30), event["start"])
        ).select(pl.col(c).median() for c in OPTIONS)
        during = series.filter(
            pl.col("ts").is_between(event["trough_ts"], event["trough_ts"] + timedelta(hours=1))
        ).select(pl.col(c).median() for c in OPTIONS)
        iv_up.append(during["opt_iv_atm_pct"][0] - before["opt_iv_atm_pct"][0])
        rr_down.append(during["opt_rr25_pct"][0] - before["opt_rr25_pct"][0])
        pcr_up.append(during["opt_put_call_oi"][0] - before["opt_put_call_oi"][0])
    assert sum(x > 0 for x in iv_up) >= 0.8 * len(iv_up) and min(iv_up) > -2.0
    assert sum(x < 0 for x in rr_down) >= 0.8 * len(rr_down)
    assert sum(x > 0 for x in pcr_up) >= 0.8 * len(pcr_up)
    levels = opt.select(OPTIONS).describe()
    iv = opt["opt_iv_atm_pct"]
    assert 20 < iv.median() < 120 and opt["opt_rr25_pct"].median() < 0, levels
