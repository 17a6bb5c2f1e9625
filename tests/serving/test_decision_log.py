"""The JSON-lines decision log: one line per record, top contributions, masked secrets,
contributions that follow their decision line, and what a restart reads back."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from oihedge.serving.live.decision_log import (
    DecisionLog,
    read_records,
    top_contributions,
    top_contributions_rows,
)


def test_top_contributions_are_the_largest_by_absolute_value_without_the_bias():
    names = ("a", "b", "c", "d")
    values = np.array([0.1, -0.7, math.nan, 0.3, 5.0])  # the last entry is the bias
    assert top_contributions(names, values, k=2) == [["b", -0.7], ["d", 0.3]]
    assert top_contributions(names, np.zeros(5), k=3) == []


def test_lines_are_json_flushed_per_bar_and_secrets_masked(tmp_path, monkeypatch):
    monkeypatch.setenv("OIHEDGE_OKX_API_KEY", "very-secret-key-123")
    path = tmp_path / "log" / "decisions.jsonl"
    with DecisionLog(path) as log:
        log.write({"kind": "decision", "ts": "2025-01-01T00:05:00+00:00", "p": 0.25})
        assert path.read_text() == ""  # queued until the bar is flushed
        log.flush()
        log.write({"kind": "model", "detail": "refused: very-secret-key-123 echoed"})
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    assert [r["kind"] for r in lines] == ["decision", "model"]
    assert "very-secret-key-123" not in path.read_text() and "***" in lines[1]["detail"]


def test_memory_log_keeps_records_for_inspection():
    log = DecisionLog(None, keep=2)
    for i in range(3):
        log.write({"i": i})
    log.flush()
    assert log.records == [{"i": 0}, {"i": 1}]


def test_top_contributions_of_several_rows_are_each_rows_own():
    rng = np.random.default_rng(4)
    names = [f"f{i}" for i in range(12)]
    for _ in range(200):
        rows = rng.normal(size=(3, 13))
        rows[rng.integers(0, 3, 4), rng.integers(0, 12, 4)] = rng.choice(
            [0.0, np.nan, np.inf, -np.inf], 4
        )
        rows[0, 5] = rows[0, 7] = 2.0  # a tie: the first feature first, as one by one
        assert top_contributions_rows(names, rows, 4) == [
            top_contributions(names, row, 4) for row in rows
        ]
    with pytest.raises(ValueError, match="one vector per row, got shape"):
        top_contributions_rows(names, np.zeros(13), 4)


def test_times_and_other_values_are_written_as_their_text(tmp_path):
    from datetime import UTC, datetime, timedelta
    from pathlib import PurePosixPath

    t0 = datetime(2025, 1, 1, tzinfo=UTC)
    times = [t0 + timedelta(minutes=5 * (i % 90)) for i in range(200)]  # > the cache's 64
    with DecisionLog(tmp_path / "d.jsonl") as log:
        for t in times:
            log.write({"ts": t, "path": PurePosixPath("a/b"), "day": t.date()})
    lines = [json.loads(x) for x in (tmp_path / "d.jsonl").read_text().splitlines()]
    assert [x["ts"] for x in lines] == [str(t) for t in times]
    assert {x["path"] for x in lines} == {"a/b"} and lines[0]["day"] == "2025-01-01"


def test_values_json_has_no_type_for_are_written_as_their_meaning(tmp_path):
    from datetime import UTC, datetime
    from pathlib import Path

    path = tmp_path / "decisions.jsonl"
    ts = datetime(2025, 1, 1, 0, 5, tzinfo=UTC)
    with DecisionLog(path) as log:
        log.write(
            {
                "ts": ts,
                "p": np.float64(0.25),
                "n": np.int64(3),
                "nan": math.nan,
                "left_out": {"okx": "stale 900s"},
                "where": Path("/tmp/x"),
                "note": "déjà",
            }
        )
    (line,) = path.read_text().splitlines()
    assert json.loads(line) == {
        "ts": "2025-01-01 00:05:00+00:00",
        "p": 0.25,
        "n": 3,
        "nan": None,  # a non-finite float is null, never a bare NaN (invalid JSON)
        "left_out": {"okx": "stale 900s"},
        "where": "/tmp/x",
        "note": "déjà",
    }


def test_a_restart_cuts_a_partial_line_and_writes_no_decision_twice(tmp_path):
    from datetime import UTC, datetime, timedelta

    path = tmp_path / "decisions.jsonl"
    t0 = datetime(2025, 1, 1, tzinfo=UTC)
    bars = [t0 + timedelta(minutes=5 * i) for i in range(4)]
    with DecisionLog(path) as log:
        log.write({"kind": "start", "state_id": "other"})
        log.write({"kind": "decision", "ts": bars[2], "symbol": "BTC"})  # another state's
        log.write({"kind": "start", "state_id": "s1"})
        for t in bars:
            log.write({"kind": "decision", "ts": t, "symbol": "BTC"})
        log.write({"kind": "decision", "ts": bars[3], "symbol": "ETH"})
    with path.open("a") as fh:
        fh.write('{"kind": "decision", "ts": "2025-01-01 00:2')  # killed mid-write
    with DecisionLog(path) as log:  # the restart: the state resumes from bars[1]
        assert path.read_text().endswith('"symbol":"ETH"}\n')  # the half line is gone
        assert log.resume(bars[1], "s1") == 4  # BTC at 1, 2, 3; ETH at 3
        assert log.on_file(bars[1], "BTC") and not log.on_file(bars[0], "BTC")
        for t in bars[1:]:  # decided again
            for symbol in ("BTC", "ETH"):
                log.write({"kind": "decision", "ts": t, "symbol": symbol})
        assert log.skipped == 4
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    keys = [(r["ts"], r["symbol"]) for r in lines[2:] if r["kind"] == "decision"]
    assert len(keys) == len(set(keys)) == 5 + 2  # ETH at bars 1 and 2 added, nothing twice
    with DecisionLog(path) as log:  # a fresh state on the same file reads nothing back
        assert log.resume(None, "s2") == 0
        assert log.resume(None, "s1") == 7  # back to its first start line, not past it


def _decision(ts: str, symbol: str, **fields: object) -> dict:
    return {"kind": "decision", "ts": ts, "symbol": symbol, "contributions": [], **fields}


def test_contributions_that_follow_are_merged_into_their_decision(tmp_path):
    path = tmp_path / "decisions.jsonl"
    t0, t1 = "2025-01-01 00:00:00+00:00", "2025-01-01 00:05:00+00:00"
    with DecisionLog(path) as log:
        log.write({"kind": "start", "state_id": "s1"})
        log.write(_decision(t0, "BTC", contributions=[["a", 0.5]], contributions_ts=t0))
        log.write(_decision(t0, "ETH", errors=["x"], contributions_follow=True))
        log.write(_decision(t1, "BTC", errors=[], contributions_follow=True))
        log.write(_decision(t1, "ETH", errors=[], contributions_follow=True))
        log.write(
            {
                "kind": "contributions",
                "ts": t0,
                "symbol": "ETH",
                "contributions": [["b", -0.2]],
                "contributions_ts": t0,
                "errors": [],
            }
        )
        log.write(
            {
                "kind": "contributions",
                "ts": t1,
                "symbol": "BTC",
                "contributions": [],
                "contributions_ts": None,
                "errors": ["contributions: RuntimeError: no SHAP"],
            }
        )
    with path.open("a") as fh:
        fh.write('{"kind": "contributions", "ts": "2025-01-01 00:0')  # killed mid-write
    records = read_records(path)
    assert [r["kind"] for r in records] == ["start"] + ["decision"] * 4  # merged, not listed
    btc0, eth0, btc1, eth1 = records[1:]
    assert btc0["contributions"] == [["a", 0.5]] and "contributions_follow" not in btc0
    assert eth0 == _decision(
        t0, "ETH", errors=["x"], contributions=[["b", -0.2]], contributions_ts=t0
    )
    assert btc1["errors"] == ["contributions: RuntimeError: no SHAP"]
    assert btc1["contributions"] == [] and btc1["contributions_ts"] is None
    assert "contributions_follow" not in btc1
    # its line never came (the process was killed first): it says so
    assert eth1["contributions_follow"] is True and eth1["contributions"] == []


@pytest.mark.parametrize(
    ("lines", "message"),
    [
        (
            ['{"kind": "contributions", "ts": "t", "symbol": "BTC", "contributions": []}'],
            "line 1: contributions of BTC at t follow no decision waiting for them",
        ),
        (['{"kind": "start"}', '{"kind": "decis', '{"kind": "start"}'], "line 2 is not JSON"),
    ],
)
def test_a_log_that_breaks_its_format_is_refused_naming_the_line(tmp_path, lines, message):
    path = tmp_path / "decisions.jsonl"
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(ValueError, match=message):
        read_records(path)


def test_a_restart_drops_the_contributions_of_a_decision_already_on_file(tmp_path):
    from datetime import UTC, datetime

    path = tmp_path / "decisions.jsonl"
    t = datetime(2025, 1, 1, tzinfo=UTC)
    with DecisionLog(path) as log:
        log.write({"kind": "start", "state_id": "s1"})
        log.write(_decision(t, "BTC", errors=[], contributions_follow=True))  # then killed
    with DecisionLog(path) as log:  # the restart decides t again: on file already
        log.resume(t, "s1")
        log.write({"kind": "start", "state_id": "s1"})
        log.write(_decision(t, "BTC", errors=[], contributions_follow=True))
        log.write(
            {
                "kind": "contributions",
                "ts": t,
                "symbol": "BTC",
                "contributions": [["a", 1.0]],
                "contributions_ts": t,
                "errors": [],
            }
        )
        assert log.skipped == 2
    kinds = [json.loads(line)["kind"] for line in path.read_text().splitlines()]
    assert kinds == ["start", "decision", "start"]  # one line for the decision, as before
    (decision,) = [r for r in read_records(path) if r["kind"] == "decision"]
    assert decision["contributions_follow"] is True  # lost with the first process
