"""The backtest report's frontier metrics on hand-built ledgers whose answers are known:
upside capture, the share of cascades met with a hedge and the share of their loss the
hedge offset."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta

import numpy as np
import polars as pl
import pytest

from oihedge.features.schema import UTC_US
from oihedge.serving.backtest.engine import PolicyRun
from oihedge.serving.backtest.report import (
    METRIC_COLUMNS,
    daily_returns,
    metrics_table,
    upside_capture,
)

BAR = timedelta(hours=1)
T0 = datetime(2025, 1, 1, tzinfo=UTC)
N = 48  # two UTC days
PORTFOLIO = 1_000_000.0
UNITS = {"BTC": 5_000.0, "ETH": 5_000.0}  # $500k each at 100
DROP = {"BTC": 20, "ETH": 30}  # the bar whose close starts each symbol's cascade
# flat at 100, three bars down to 70 after the start, flat after
PRICES = {s: [100.0] * (i + 1) + [90.0, 80.0, 70.0] + [70.0] * (N - i - 4) for s, i in DROP.items()}
EVENTS = pl.DataFrame(
    {
        "symbol": list(DROP),
        "start": [T0 + i * BAR for i in DROP.values()],
        "trough_ts": [T0 + (i + 3) * BAR for i in DROP.values()],
    },
    schema={"symbol": pl.String, "start": UTC_US, "trough_ts": UTC_US},
)


def ledger(
    name: str,
    fraction: float | Mapping[str, Sequence[float]],
    prices: Mapping[str, Sequence[float]] = PRICES,
) -> PolicyRun:
    """A cost-free run: the long holds ``UNITS``; the short after bar ``i``'s fill is
    ``fraction[i] x UNITS`` (one number: all the time), held over ``(t_i, t_{i+1}]``."""
    bars = []
    for symbol, price in prices.items():
        m = np.asarray(price)
        f = (
            np.full(m.size, fraction)
            if isinstance(fraction, float)
            else np.asarray(fraction[symbol])
        )
        units, q = UNITS[symbol], f * UNITS[symbol]
        move = np.diff(m, prepend=m[0])
        long_pnl, hedge_pnl = units * move, -np.concatenate(([0.0], q[:-1])) * move
        bars.append(
            pl.DataFrame(
                {
                    "ts": pl.Series([T0 + i * BAR for i in range(m.size)], dtype=UTC_US),
                    "symbol": [symbol] * m.size,
                    "price": m,
                    "long_usd": units * m,
                    "hedge_usd": q * m,
                    "target_fraction": f,
                    "long_pnl": long_pnl,
                    "hedge_pnl": hedge_pnl,
                    "fee_usd": 0.0,
                    "slippage_usd": 0.0,
                    "funding_usd": 0.0,
                    "pnl_usd": long_pnl + hedge_pnl,
                }
            )
        )
    table = pl.concat(bars).sort("ts", "symbol")
    equity = (
        table.group_by("ts")
        .agg(pl.col("pnl_usd").sum(), pl.col("long_usd").sum(), pl.col("hedge_usd").sum())
        .sort("ts")
        .select(
            "ts",
            (PORTFOLIO + pl.col("pnl_usd").cum_sum()).alias("equity_usd"),
            "long_usd",
            "hedge_usd",
        )
    )
    trades = pl.DataFrame(schema={"ts": UTC_US, "symbol": pl.String, "notional_usd": pl.Float64})
    return PolicyRun(name, table, trades, equity)


def table(*runs: PolicyRun, **kwargs: object) -> dict[str, dict[str, object]]:
    """policy -> its row of the metrics table."""
    frame = metrics_table({r.name: r for r in runs}, portfolio_usd=PORTFOLIO, **kwargs)  # type: ignore[arg-type]
    return {row["policy"]: row for row in frame.iter_rows(named=True)}


def step(before: float, after: float, at: int) -> list[float]:
    """``before`` up to bar ``at - 1``, ``after`` from bar ``at`` (its fill) on."""
    return [before] * at + [after] * (N - at)


def test_table_has_every_metric_column_in_order() -> None:
    frame = metrics_table(
        {"no_hedge": ledger("no_hedge", 0.0)}, portfolio_usd=PORTFOLIO, events=EVENTS
    )
    assert frame.columns == ["policy", *METRIC_COLUMNS]
    assert METRIC_COLUMNS[-4:] == (
        "upside_capture",
        "cascades_protected",
        "cascade_loss_offset",
        "events",
    )
    assert frame.schema["events"] == pl.Int64


def test_a_static_half_hedge_offsets_half_and_protects_every_cascade() -> None:
    rows = table(ledger("no_hedge", 0.0), ledger("static_50", 0.5), events=EVENTS)
    static, bare = rows["static_50"], rows["no_hedge"]
    assert static["cascades_protected"] == 1.0
    assert static["cascade_loss_offset"] == pytest.approx(0.5, abs=1e-12)
    assert static["events"] == bare["events"] == 2
    assert bare["cascades_protected"] == 0.0
    assert bare["cascade_loss_offset"] == 0.0


def test_a_hedge_opened_after_the_start_does_not_protect() -> None:
    # BTC's short fills at bar 21 (one bar after the start, 20): it earns the last two of
    # the three 10-point falls; ETH's fills at its start bar, 30: protected, all three
    late = {"BTC": step(0.0, 1.0, DROP["BTC"] + 1), "ETH": step(0.0, 1.0, DROP["ETH"])}
    row = table(ledger("late", late), events=EVENTS)["late"]
    assert row["cascades_protected"] == 0.5
    # hedge (20 + 30 points) / long loss (30 + 30 points), same units
    assert row["cascade_loss_offset"] == pytest.approx(50 / 60, abs=1e-12)


def test_protection_is_measured_against_the_full_hedge() -> None:
    fifth = ledger("static_20", 0.2)
    quarter = ledger("static_25", 0.25)
    events = EVENTS
    assert table(fifth, events=events)["static_20"]["cascades_protected"] == 0.0
    assert table(quarter, events=events)["static_25"]["cascades_protected"] == 1.0
    # a full hedge of 0.4 x the long: 0.2 of the long is half of it; ETH's of 1.0 is not
    ratio_max = {"BTC": 0.4, "ETH": 1.0}
    row = table(fifth, events=events, hedge_ratio_max=ratio_max)["static_20"]
    assert row["cascades_protected"] == 0.5
    assert row["cascade_loss_offset"] == pytest.approx(0.2, abs=1e-12)  # of the long, still


def test_the_position_is_read_at_the_last_bar_at_or_before_the_start() -> None:
    # the start falls between bars 20 and 21: bar 20's position counts, not bar 21's
    between = EVENTS.with_columns(pl.col("start") + BAR / 2)
    opened = {"BTC": step(0.0, 1.0, DROP["BTC"] + 1), "ETH": step(0.0, 1.0, DROP["ETH"])}
    row = table(ledger("p", opened), events=between)["p"]
    assert row["cascades_protected"] == 0.5  # ETH: open at bar 30, 30 <= start
    closed = {s: step(1.0, 0.0, i + 1) for s, i in DROP.items()}  # closed by bar i + 1
    assert table(ledger("p", closed), events=between)["p"]["cascades_protected"] == 1.0


def test_events_outside_the_window_or_of_other_symbols_are_ignored() -> None:
    outside = pl.DataFrame(
        {
            "symbol": ["BTC", "BTC", "SOL"],
            "start": [T0 - 2 * BAR, T0 + N * BAR, T0 + 10 * BAR],
            "trough_ts": [T0 + 2 * BAR, T0 + (N + 3) * BAR, T0 + 12 * BAR],
        },
        schema={"symbol": pl.String, "start": UTC_US, "trough_ts": UTC_US},
    )
    late = {"BTC": step(0.0, 1.0, DROP["BTC"] + 1), "ETH": step(0.0, 1.0, DROP["ETH"])}
    run = ledger("late", late)
    alone = table(run, events=EVENTS)["late"]
    mixed = table(run, events=pl.concat([outside, EVENTS]))["late"]
    assert mixed["events"] == 2
    for key in ("cascades_protected", "cascade_loss_offset"):
        assert mixed[key] == alone[key]
    only_outside = table(run, events=outside)["late"]
    assert only_outside["events"] == 0
    assert math.isnan(only_outside["cascades_protected"])
    assert math.isnan(only_outside["cascade_loss_offset"])


def test_a_trough_after_the_window_counts_up_to_the_last_bar() -> None:
    past_end = EVENTS.with_columns(pl.col("trough_ts") + 100 * BAR)
    row = table(ledger("static_50", 0.5), events=past_end)["static_50"]
    assert row["events"] == 2
    assert row["cascade_loss_offset"] == pytest.approx(0.5, abs=1e-12)


def test_cascade_metrics_are_nan_without_events_or_losses() -> None:
    rows = table(ledger("no_hedge", 0.0), ledger("static_50", 0.5))
    for row in rows.values():
        assert row["events"] == 0
        assert math.isnan(row["cascades_protected"])
        assert math.isnan(row["cascade_loss_offset"])
    flat = {s: [100.0] * N for s in UNITS}
    row = table(ledger("static_50", 0.5, flat), events=EVENTS)["static_50"]
    assert row["cascades_protected"] == 1.0  # protected, but nothing was lost
    assert math.isnan(row["cascade_loss_offset"])
    empty = EVENTS.clear()
    row = table(ledger("static_50", 0.5), events=empty)["static_50"]
    assert row["events"] == 0
    assert math.isnan(row["cascades_protected"])


def test_only_cascades_where_the_long_lost_count_in_the_offset() -> None:
    # ETH rises over its window: left out, BTC's offset alone remains
    prices = {"BTC": PRICES["BTC"], "ETH": [100.0 + i for i in range(N)]}
    late = {"BTC": step(0.0, 1.0, DROP["BTC"] + 1), "ETH": step(0.0, 1.0, DROP["ETH"])}
    row = table(ledger("late", late, prices), events=EVENTS)["late"]
    assert row["cascade_loss_offset"] == pytest.approx(20 / 30, abs=1e-12)


def rising(days: int = 3) -> dict[str, list[float]]:
    """+0.1 % a bar on every symbol."""
    return {s: list(100.0 * 1.001 ** np.arange(24 * days)) for s in UNITS}


def test_upside_capture_of_a_static_half_hedge_on_a_rising_market_is_about_half() -> None:
    prices = rising()
    bare, half = ledger("no_hedge", 0.0, prices), ledger("static_50", 0.5, prices)
    rows = table(bare, half)
    assert rows["no_hedge"]["upside_capture"] == 1.0
    capture = rows["static_50"]["upside_capture"]

    def returns(run: PolicyRun) -> np.ndarray:
        return daily_returns(
            run.equity["ts"].dt.epoch("us").to_numpy(), run.equity["equity_usd"].to_numpy()
        )

    assert capture == pytest.approx(returns(half).sum() / returns(bare).sum(), rel=1e-12)
    # a little above half: the hedged equity grows more slowly, so the same dollar gain
    # is a larger return on it
    assert 0.5 < capture < 0.52


def test_upside_capture_counts_only_the_unhedged_portfolios_up_days() -> None:
    # day 1 up 10 %, day 2 down 10 %, day 3 up 10 % (one step each, at noon)
    path = np.full(72, 100.0)
    path[12:], path[36:], path[60:] = 110.0, 99.0, 108.9
    prices = {s: list(path) for s in UNITS}
    late = {s: [0.0] * 30 + [1.0] * 42 for s in UNITS}  # hedged through day 2 and 3
    bare, hedged = ledger("no_hedge", 0.0, prices), ledger("h", late, prices)
    ts_us = bare.equity["ts"].dt.epoch("us").to_numpy()
    eq, eq_h = bare.equity["equity_usd"].to_numpy(), hedged.equity["equity_usd"].to_numpy()
    # day 3's gain is hedged away, day 2's loss (not an up day) does not count
    expected = (eq_h[23] / eq_h[0] - 1.0) / (eq[23] / eq[0] - 1.0 + eq[71] / eq[47] - 1.0)
    assert upside_capture(ts_us, eq_h, ts_us, eq) == pytest.approx(expected, rel=1e-12)
    assert table(bare, hedged)["h"]["upside_capture"] == pytest.approx(0.5, rel=1e-12)


def test_upside_capture_is_nan_without_the_unhedged_run_or_an_up_day() -> None:
    assert math.isnan(table(ledger("static_50", 0.5))["static_50"]["upside_capture"])
    falling = {s: [100.0 - i for i in range(N)] for s in UNITS}
    rows = table(ledger("no_hedge", 0.0, falling), ledger("static_50", 0.5, falling))
    assert all(math.isnan(r["upside_capture"]) for r in rows.values())
    # another reference run by name
    rows = table(ledger("static_50", 0.5), ledger("zero", 0.0, rising(2)), unhedged="zero")
    assert rows["zero"]["upside_capture"] == 1.0


def test_bad_events_and_ratios_are_refused() -> None:
    run = ledger("static_50", 0.5)
    with pytest.raises(ValueError, match=r"events lack the column\(s\) \['trough_ts'\]"):
        table(run, events=EVENTS.drop("trough_ts"))
    naive = EVENTS.with_columns(pl.col("start").dt.replace_time_zone(None))
    with pytest.raises(ValueError, match=r"'start' must be datetime\[us, UTC\], got Datetime"):
        table(run, events=naive)
    with pytest.raises(ValueError, match=r"hedge_ratio_max has no entry .* \['ETH'\]"):
        table(run, events=EVENTS, hedge_ratio_max={"BTC": 1.0})
    with pytest.raises(ValueError, match=r"hedge_ratio_max of BTC must be > 0, got 0.0"):
        table(run, events=EVENTS, hedge_ratio_max={"BTC": 0.0, "ETH": 1.0})
