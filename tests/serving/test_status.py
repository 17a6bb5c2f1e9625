"""``oihedge.serving.live.status``: a read-only snapshot of a loop, taken while it holds its state."""

from __future__ import annotations

import hashlib
from datetime import datetime, timedelta

import pytest
from live_support import Dial, finish_replay, make_rig, simulated_panel, start_replay

from oihedge.features.registry import CORE_V1
from oihedge.serving.execution.guards import Caps, engage_kill_switch
from oihedge.serving.feeds.replay import ReplaySource
from oihedge.serving.live.decision_log import read_records
from oihedge.serving.live.status import read_status

N_FEATURES = len(CORE_V1.features)


@pytest.fixture(scope="module")
def bars():
    return list(ReplaySource(simulated_panel(1.5, seed=5)))


def _digest(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_status_reads_a_running_loop_without_touching_its_files(tmp_path, bars):
    rig = make_rig(tmp_path, predictor=Dial(0.9))  # the rig holds the state's lock
    rig.loop.run(bars[:240])
    engage_kill_switch(tmp_path / "KILL", "test: operator stop")
    rig.loop.run(bars[240:246])
    rig.loop.log.flush()
    state, log = tmp_path / "state.sqlite", rig.log_path
    before = (_digest(state), _digest(log))
    last = bars[245].t
    status = read_status(
        state, log, kill_switch_file=tmp_path / "KILL", bars=3, now=last + timedelta(minutes=7)
    )
    assert (_digest(state), _digest(log)) == before  # read-only: nothing written
    assert status.last_bar == last and status.age_seconds == pytest.approx(420)
    logged = {r["symbol"]: r for r in read_records(log) if r["kind"] == "decision"}
    assert [s.symbol for s in status.symbols] == sorted(logged)
    for s in status.symbols:
        mine = logged[s.symbol]
        assert s.ts == last and s.probability == pytest.approx(0.9)
        assert (s.tier, s.target_usd) == (mine["tier"], mine["target_usd"])
        assert s.forecast_loss == pytest.approx(0.9 * mine["severity"])
        assert s.hold_cost == pytest.approx(mine["hold_cost"]) and s.hedge_usd > 0
        assert s.last_order is not None and s.last_order["side"] == "sell"
        assert s.fresh_venues and s.left_out == {} and s.price == mine["price"] > 0
    assert status.kill_switch["state"] == "engaged"
    assert status.kill_switch["reason"] == "test: operator stop"
    assert status.kill_switch["file_present"] is True
    assert status.model["version"] == "test-1"
    record = status.record()
    assert record["age_seconds"] == pytest.approx(420) and len(record["symbols"]) == 3
    rig.close()


def test_status_lists_the_faults_of_the_last_bars_only(tmp_path, bars):
    caps = Caps(max_order_usd=1_000.0, max_hedge_usd=1e10, max_orders_per_minute=1000)
    dial = Dial(0.9)
    rig = make_rig(tmp_path, predictor=dial, caps=caps)
    rig.loop.run(bars[:30])  # every order too large: refused by the guard
    dial.p = 0.0
    rig.loop.run(bars[30:150])  # calm since
    rig.loop.log.flush()
    state = tmp_path / "state.sqlite"
    assert rig.store.events("guard_refusal")
    recent = read_status(state, rig.log_path, bars=3)
    assert not [e for e in recent.errors if e["error"] == "guard_refusal"]
    everything = read_status(state, rig.log_path, bars=10_000)
    refused = [e for e in everything.errors if e["error"] == "guard_refusal"]
    assert len(refused) == len(rig.store.events("guard_refusal"))
    assert all(e["detail"]["notional_usd"] > 1_000.0 for e in refused)
    rig.close()


def test_status_of_a_missing_state_file_names_it(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"no state file at .*nothing\.sqlite"):
        read_status(tmp_path / "nothing.sqlite", tmp_path / "decisions.jsonl")
    with pytest.raises(ValueError, match="bars must be >= 1"):
        read_status(tmp_path / "nothing.sqlite", tmp_path / "decisions.jsonl", bars=0)


def test_status_during_a_running_replay_and_after_it(tmp_path):
    """The loop runs in another process holding its state's lock; status reads it as it
    goes (the last bar moves on), never blocks it, and agrees with the log at the end."""
    panel = tmp_path / "panel.parquet"
    simulated_panel(1, seed=11).write_parquet(panel)
    folder = tmp_path / "run"
    child = start_replay(panel, folder, durable=True)  # live writes: a slower replay
    seen = []
    while child.poll() is None and len(seen) < 40:
        try:
            status = read_status(folder / "state.sqlite", folder / "decisions.jsonl", bars=2)
        except FileNotFoundError:
            continue
        if status.last_bar is not None and (not seen or status.last_bar > seen[-1]):
            seen.append(status.last_bar)
    finish_replay(child)
    assert len(seen) >= 2, "status saw the replay move on"
    final = read_status(folder / "state.sqlite", folder / "decisions.jsonl", bars=2)
    decided = [r for r in read_records(folder / "decisions.jsonl") if r["kind"] == "decision"]
    assert final.last_bar == max(datetime.fromisoformat(r["ts"]) for r in decided)
    assert final.last_bar >= seen[-1]
