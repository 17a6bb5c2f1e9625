"""A replay killed with SIGKILL at random points and restarted on the same state and
decision log ends as one uninterrupted run -- with a replay's writes (decision rows in
blocks) and with a live loop's (each committed and fsynced): the same client order ids, the same
positions, and exactly one decision-log line per (bar, symbol) -- none lost, none
repeated (:mod:`serving.loop`'s "Restart" and :mod:`serving.decision_log`)."""

from __future__ import annotations

import random
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest
from live_support import HEDGE_VENUE, read_log, simulated_panel

from serving.brokers import PaperBroker
from serving.costs import CostModel
from serving.state import StateStore

REPO = Path(__file__).resolve().parents[2]
KILLS = 4
_CHILD = (
    "import sys; from pathlib import Path; sys.path[:0] = [{repo!r}, {tests!r}];"
    " from live_support import replay_in_folder;"
    " replay_in_folder(Path({panel!r}), Path({folder!r}), durable={durable!r})"
)


def _start(panel: Path, folder: Path, durable: bool) -> subprocess.Popen[str]:
    code = _CHILD.format(
        repo=str(REPO),
        tests=str(REPO / "tests"),
        panel=str(panel),
        folder=str(folder),
        durable=durable,
    )
    child = subprocess.Popen(
        [sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    line = child.stdout.readline().strip()
    if line != "started":
        child.kill()
        raise AssertionError(f"the replay did not start: {line!r} {child.stderr.read()}")
    return child


def _finish(child: subprocess.Popen[str]) -> None:
    out, err = child.communicate(timeout=120)
    assert child.returncode == 0 and "done" in out, err


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
    reference = _start(panel, tmp_path / "ref", durable)
    began = time.perf_counter()  # the loop's run, without the interpreter's start
    _finish(reference)
    took = time.perf_counter() - began
    ref_ids, ref_positions, ref_lines = _outcome(tmp_path / "ref")
    assert len(ref_ids) >= 4  # it trades: the comparison means something

    rng = random.Random(17)
    folder = tmp_path / "run"
    killed = 0
    for _ in range(KILLS):
        child = _start(panel, folder, durable)
        # a restart warms up to where it stopped, then goes on: short delays, so that
        # every kill lands before the run is done
        time.sleep(rng.uniform(0.05, 0.2) * took)
        child.send_signal(signal.SIGKILL)
        child.communicate(timeout=30)
        killed += child.returncode == -signal.SIGKILL
    _finish(_start(panel, folder, durable))
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
