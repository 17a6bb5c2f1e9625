"""A replay killed with SIGKILL at random points and restarted on the same state and
decision log ends as one uninterrupted run -- with a replay's writes (decision rows in
blocks) and with a live loop's (each committed and fsynced): the same client order ids, the same
positions, and exactly one decision-log line per (bar, symbol) -- none lost, none
repeated (:mod:`oihedge.serving.live.loop`'s "Restart" and :mod:`oihedge.serving.live.decision_log`). And what
each kill leaves, before any restart: every decision before the state's last persisted
bar on file, in order (their contributions may follow in later lines)."""

from __future__ import annotations

import random
import signal
import time
from collections import Counter
from datetime import datetime
from pathlib import Path

import pytest
from live_support import HEDGE_VENUE, finish_replay, read_log, simulated_panel, start_replay

from oihedge.serving.execution.brokers import PaperBroker
from oihedge.serving.execution.state import StateStore
from oihedge.serving.feeds.replay import ReplaySource
from oihedge.serving.live.decision_log import read_records
from oihedge.serving.policy.costs import CostModel

KILLS = 4


def _outcome(folder: Path) -> tuple[list[str], dict[str, float], list[dict]]:
    """Client ids in order, broker positions (base units), decision lines."""
    store = StateStore(folder / "state.sqlite")
    broker = PaperBroker(HEDGE_VENUE, folder / "state.sqlite", costs=CostModel())
    try:
        ids = [o.client_order_id for o in store.orders()]
        positions = {s: p.base_amount for s, p in broker.positions().items()}
    finally:
        broker.close()
        store.close()
    lines = [r for r in read_log(folder / "decisions.jsonl") if r["kind"] == "decision"]
    return ids, positions, lines


@pytest.mark.slow
@pytest.mark.parametrize("durable", [False, True], ids=["replay", "live-writes"])
def test_replay_killed_and_restarted_ends_as_one_uninterrupted_run(tmp_path, durable):
    panel = tmp_path / "panel.parquet"
    simulated_panel(3, seed=11).write_parquet(panel)
    reference = start_replay(panel, tmp_path / "ref", durable)
    began = time.perf_counter()  # the loop's run, without the interpreter's start
    finish_replay(reference)
    took = time.perf_counter() - began
    ref_ids, ref_positions, ref_lines = _outcome(tmp_path / "ref")
    assert len(ref_ids) >= 4  # it trades: the comparison means something

    rng = random.Random(17)
    folder = tmp_path / "run"
    killed = 0
    for _ in range(KILLS):
        child = start_replay(panel, folder, durable)
        # a restart warms up to where it stopped, then goes on: short delays, so that
        # every kill lands before the run is done
        time.sleep(rng.uniform(0.05, 0.2) * took)
        child.send_signal(signal.SIGKILL)
        child.communicate(timeout=30)
        killed += child.returncode == -signal.SIGKILL
    finish_replay(start_replay(panel, folder, durable))
    assert killed == KILLS  # every kill landed while it ran

    ids, positions, lines = _outcome(folder)
    assert ids == ref_ids  # no order lost, none added, none sent twice
    assert positions == pytest.approx(ref_positions, rel=1e-9, abs=1e-12)
    raw = Counter((folder / "decisions.jsonl").read_text().splitlines())
    assert [line for line, n in raw.items() if n > 1] == []  # no line of any kind twice
    keys = Counter((r["ts"], r["symbol"]) for r in lines)
    assert [k for k, n in keys.items() if n > 1] == []  # no line repeated
    assert set(keys) == {(r["ts"], r["symbol"]) for r in ref_lines}  # none lost
    ordered = [o["client_order_id"] for r in lines for o in r["orders"]]
    assert sorted(ordered) == sorted(ref_ids)  # every order on exactly one decision line


def _check_what_a_kill_left(folder: Path, bars: list[datetime]) -> int:
    """The crash guarantee on the files a kill left (no restart yet): every decision
    line before the last bar the state persisted a decision at (R) is on file, once,
    bars in order, and so is every persisted decision before R. Returns the number of
    bars before R."""
    store = StateStore(folder / "state.sqlite")
    try:
        persisted = {(datetime.fromisoformat(r["ts"]), r["symbol"]) for r in store.decisions()}
    finally:
        store.close()
    if not persisted:
        return 0
    resume = max(t for t, _ in persisted)
    # read_records also checks that each contributions line follows its decision line
    lines = [r for r in read_records(folder / "decisions.jsonl") if r["kind"] == "decision"]
    on_file = [(datetime.fromisoformat(r["ts"]), r["symbol"]) for r in lines]
    assert on_file == sorted(on_file, key=lambda k: k[0])  # bars in order
    before = [k for k in on_file if k[0] < resume]
    assert len(before) == len(set(before))  # none twice
    expected = {(t, s) for t in bars if t < resume for s in ("BTC", "ETH", "NEAR")}
    assert set(before) == expected  # none lost: every decision before R
    assert {k for k in persisted if k[0] < resume} <= set(before)
    return sum(t < resume for t in bars)


@pytest.mark.slow
@pytest.mark.parametrize("durable", [False, True], ids=["replay", "live-writes"])
def test_each_kill_leaves_every_decision_before_the_persisted_state_on_file(tmp_path, durable):
    panel = tmp_path / "panel.parquet"
    frame = simulated_panel(3, seed=11)
    frame.write_parquet(panel)
    bars = [bar.t for bar in ReplaySource(frame)]
    reference = start_replay(panel, tmp_path / "ref", durable)
    began = time.perf_counter()
    finish_replay(reference)
    took = time.perf_counter() - began

    rng = random.Random(23)
    folder = tmp_path / "run"
    reached = []
    for _ in range(KILLS):
        child = start_replay(panel, folder, durable)
        time.sleep(rng.uniform(0.05, 0.2) * took)
        child.send_signal(signal.SIGKILL)
        child.communicate(timeout=30)
        assert child.returncode == -signal.SIGKILL
        reached.append(_check_what_a_kill_left(folder, bars))
    assert reached[-1] > 0  # the state moved: the check means something
    finish_replay(start_replay(panel, folder, durable))
    lines = [r for r in read_records(folder / "decisions.jsonl") if r["kind"] == "decision"]
    assert len(lines) == 3 * len(bars)  # one line per decision after the restarts
    raw = (folder / "decisions.jsonl").read_text()
    assert '"kind":"contributions"' in raw  # the decisions did not wait for them
