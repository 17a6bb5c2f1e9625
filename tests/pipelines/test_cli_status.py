"""`oihedge live status`: the loop's last bar, symbols, venues, kill switch, model, errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from oihedge.pipelines.cli.main import main


@pytest.fixture(scope="module")
def panel(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("p") / "p2"
    assert main(["simulate", "--days", "2", "--seed", "4", "--out", str(root)]) == 0
    return root


def test_status_after_a_replay_shows_its_last_bar_and_the_kill_switch(panel, live_env, capsys):
    args = ["live", "--replay", str(panel), "--start", "2025-01-02", "--end", "2025-01-02 03:00:00"]
    assert main(args) == 0, capsys.readouterr().err
    assert main(["live", "kill", "--reason", "test: desk closed"]) == 0
    capsys.readouterr()
    assert main(["live", "status", "--bars", "4", "--json", "-"]) == 0
    captured = capsys.readouterr()
    record = json.loads(captured.out)
    assert record["last_bar"] == "2025-01-02T03:00:00+00:00"
    assert [s["symbol"] for s in record["symbols"]] == ["BTC", "ETH", "NEAR"]
    for s in record["symbols"]:
        assert s["ts"] == record["last_bar"] and s["fresh_venues"]
        assert s["tier"] and s["target_usd"] is not None
    assert record["kill_switch"]["file_present"] is True  # the loop has not seen it yet
    assert record["model"]["name"] == "oihedge-cascade-default"
    assert "registry" in record["model"]  # no model served: nothing to look up
    # with --json -, the tables go to stderr
    assert "last bar 2025-01-02T03:00:00+00:00" in captured.err and "NEAR" in captured.err
    assert "kill switch: never engaged" in captured.err and "is present" in captured.err


def test_status_of_a_loop_that_never_ran_is_one_line(live_env, capsys):
    assert main(["live", "status"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "live.state_db" in err[0] and "state.sqlite" in err[0]
