"""`oihedge live --replay PANEL --start ... --end ...`: only the bars asked for."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from oihedge.pipelines.cli.main import main


@pytest.fixture(scope="module")
def panel(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("p") / "p3"
    assert main(["simulate", "--days", "3", "--seed", "3", "--out", str(root)]) == 0
    return root


def test_a_replay_decides_only_inside_its_window(panel, live_env, capsys):
    args = ["live", "--replay", str(panel), "--start", "2025-01-03", "--end", "2025-01-03 06:00:00"]
    assert main([*args, "--json", str(live_env / "live.json")]) == 0, capsys.readouterr().err
    lines = [json.loads(x) for x in (live_env / "decisions.jsonl").read_text().splitlines()]
    bars = sorted({r["ts"] for r in lines if r.get("kind") == "decision"})
    # 5-minute bars from 00:00 to 06:00 inclusive; the rows before 00:00 only warm up
    assert (bars[0], bars[-1], len(bars)) == (
        "2025-01-03 00:00:00+00:00",
        "2025-01-03 06:00:00+00:00",
        73,
    )


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--start", "2025-01-03"], "--start/--end choose the bars of a replay: give --replay"),
        (
            ["--replay", "{panel}", "--start", "2025-01-03", "--end", "2025-01-02"],
            "--start 2025-01-03 00:00:00 must be before --end 2025-01-02 00:00:00",
        ),
    ],
)
def test_a_bad_window_is_one_line(panel, live_env, capsys, extra, message):
    code = main(["live", *(a.format(panel=panel) for a in extra)])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and message in err[0], err
