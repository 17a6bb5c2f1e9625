"""One loop per state file: a second store (and a second ``oihedge live``) on the same
state refuses to start while the first holds it, naming the holder; the lock is the
kernel's, so it dies with its process (closed, or killed with SIGKILL)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import textwrap
from datetime import UTC, datetime
from pathlib import Path

import pytest

from oihedge.serving.execution.state import StateInUseError, StateStore

REPO = Path(__file__).resolve().parents[2]


def test_a_second_store_on_the_same_file_refuses_until_the_first_closes(tmp_path):
    path = tmp_path / "state.sqlite"
    first = StateStore(path)
    host = socket.gethostname()
    with pytest.raises(StateInUseError, match=rf"in use by pid {os.getpid()} on {host} since "):
        StateStore(path)
    # the refusal changed nothing: the holder still works
    first.record_event("probe", {}, now=datetime.now(UTC))
    first.close()
    with StateStore(path) as second:
        assert [e.kind for e in second.events()] == ["probe"]


def test_another_file_is_another_lock(tmp_path):
    with StateStore(tmp_path / "a.sqlite"), StateStore(tmp_path / "b.sqlite"):
        pass
    with StateStore(":memory:"), StateStore(":memory:"):  # nothing shared, nothing locked
        pass


_HOLDER = """
import sys, time
sys.path[:0] = [{repo!r}]
from oihedge.serving.execution.state import StateStore
store = StateStore({db!r})
print("held", flush=True)
time.sleep(60)
"""


def test_the_lock_dies_with_a_killed_holder(tmp_path):
    db = tmp_path / "state.sqlite"
    code = textwrap.dedent(_HOLDER).format(repo=str(REPO), db=str(db))
    holder = subprocess.Popen(
        [sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout.readline().strip() == "held", holder.stderr.read()
        with pytest.raises(StateInUseError, match=rf"in use by pid {holder.pid} on "):
            StateStore(db)
        holder.send_signal(signal.SIGKILL)  # no cleanup, no finally: only the kernel
        holder.wait(timeout=10)
    finally:
        if holder.poll() is None:
            holder.kill()
            holder.wait()
    with StateStore(db) as after:  # the kernel released it with the process
        assert after.orders() == []


def test_cli_live_refuses_a_second_loop_on_the_same_state(tmp_path, capsys):
    state = tmp_path / "live" / "state.sqlite"
    config = tmp_path / "config.toml"
    config.write_text(
        textwrap.dedent(
            f"""
            [mlflow]
            tracking_uri = "sqlite:///{tmp_path / "mlflow.db"}"
            artifact_root = "{tmp_path / "artifacts"}"
            [live]
            state_db = "{state}"
            kill_switch_file = "{tmp_path / "live" / "KILL"}"
            decision_log = "{tmp_path / "live" / "decisions.jsonl"}"
            """
        )
    )
    from live_support import simulated_panel

    from oihedge.pipelines.cli.main import main
    from oihedge.pipelines.store import PanelStore

    PanelStore(tmp_path / "panel").append(simulated_panel(0.2, seed=5))
    with StateStore(state):  # a loop running on it
        code = main(["live", "--replay", str(tmp_path / "panel"), "--config", str(config)])
        err = capsys.readouterr().err
    assert code == 2
    assert f"in use by pid {os.getpid()}" in err and "since" in err
    assert not (tmp_path / "live" / "decisions.jsonl").exists()  # refused before anything
