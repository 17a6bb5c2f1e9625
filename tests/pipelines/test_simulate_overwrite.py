"""``oihedge simulate --out DIR [--overwrite]``: the old panel survives until the new one
is complete, a folder that is not a simulated panel is never deleted, and a panel written
to completion carries its completeness marker (issue #17, defect 2)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import polars as pl
import pytest

from oihedge.pipelines.cli.main import main
from oihedge.pipelines.store import PanelStore

MANIFEST = "_manifest.json"


def run(args: list[str], capsys) -> tuple[int, str, str]:
    code = main(args)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def simulate_small(target: Path, capsys, *extra: str) -> None:
    code, _, err = run(["simulate", "--days", "0.25", "--out", str(target), *extra], capsys)
    assert code == 0, err


def siblings(target: Path) -> list[Path]:
    """Everything beside ``target`` in its parent folder whose name mentions it."""
    return [p for p in target.parent.iterdir() if p != target and target.name in p.name]


def test_killed_overwrite_leaves_the_old_panel_intact(tmp_path, capsys):
    target = tmp_path / "sim"
    simulate_small(target, capsys)
    before = PanelStore(target).read()
    assert before.height > 0
    # a 60-day run takes far longer than the wait below: it is killed while working
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "oihedge.pipelines.cli.main",
            "simulate",
            "--days",
            "60",
            "--out",
            str(target),
            "--overwrite",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 30
        # the run has started its work once the old panel is touched (the defect) or the
        # new panel's folder exists beside it (the fix)
        while time.monotonic() < deadline and proc.poll() is None:
            if not (target / "venue=binanceusdm").exists() or siblings(target):
                break
            time.sleep(0.02)
        assert proc.poll() is None, "the 60-day simulation ended before it could be killed"
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait(timeout=30)
    after = PanelStore(target).read()
    assert after.equals(before), "the old panel was lost or changed by a killed overwrite"
    leftovers = siblings(target)
    assert all(p.name.startswith(".") and "partial" in p.name for p in leftovers), leftovers
    # the next run cleans up what the killed one left, and replaces the panel
    simulate_small(target, capsys, "--overwrite", "--seed", "3")
    assert siblings(target) == []
    assert not PanelStore(target).read().equals(before)
    assert json.loads((target / MANIFEST).read_text())["complete"] is True


def test_overwrite_refuses_a_folder_that_is_not_a_panel(tmp_path, capsys):
    target = tmp_path / "mine"
    (target / "sub").mkdir(parents=True)
    (target / "notes.txt").write_text("keep me")
    (target / "sub" / "data.csv").write_text("a,b\n1,2\n")
    code, _, err = run(["simulate", "--days", "0.25", "--out", str(target), "--overwrite"], capsys)
    assert code == 2
    assert len(err.strip().splitlines()) == 1
    assert str(target) in err and "not a simulated panel" in err and "notes.txt" in err
    assert (target / "notes.txt").read_text() == "keep me"
    assert (target / "sub" / "data.csv").exists()
    assert siblings(target) == []


def test_overwrite_refuses_a_panel_with_foreign_files(tmp_path, capsys):
    target = tmp_path / "sim"
    simulate_small(target, capsys)
    (target / "venue=okx" / "notes.txt").write_text("mine")
    code, _, err = run(["simulate", "--days", "0.25", "--out", str(target), "--overwrite"], capsys)
    assert code == 2 and "notes.txt" in err and len(err.strip().splitlines()) == 1
    assert (target / "venue=okx" / "notes.txt").exists()


def test_overwrite_refuses_a_panel_not_written_by_simulate(tmp_path, capsys, panel_factory):
    target = tmp_path / "ingested"
    PanelStore(target).append(panel_factory(), source="ingest")
    before = PanelStore(target).read()
    code, _, err = run(["simulate", "--days", "0.25", "--out", str(target), "--overwrite"], capsys)
    assert code == 2 and str(target) in err and "simulate" in err
    assert PanelStore(target).read().equals(before)


def test_a_complete_panel_has_its_marker_listing_every_partition(tmp_path, capsys):
    target = tmp_path / "sim"
    simulate_small(target, capsys, "--seed", "5")
    manifest = json.loads((target / MANIFEST).read_text())
    assert manifest["complete"] is True and manifest["writer"] == "simulate"
    files = manifest["files"]
    stored = PanelStore(target).files()
    assert sorted(files) == sorted(str(p.relative_to(target)) for p in stored)
    for path in stored:
        assert files[str(path.relative_to(target))] == pl.read_parquet(path).height
    assert sum(files.values()) == PanelStore(target).read().height


def test_without_overwrite_a_non_empty_folder_is_refused(tmp_path, capsys):
    target = tmp_path / "sim"
    simulate_small(target, capsys)
    code, _, err = run(["simulate", "--days", "0.25", "--out", str(target)], capsys)
    assert code == 2 and "--overwrite" in err


@pytest.mark.parametrize("kind", ["file", "empty"])
def test_out_may_be_missing_or_an_empty_folder_but_not_a_file(tmp_path, capsys, kind):
    target = tmp_path / "sim"
    if kind == "file":
        target.write_text("x")
        code, _, err = run(["simulate", "--days", "0.25", "--out", str(target)], capsys)
        assert code == 2 and str(target) in err
        assert target.read_text() == "x"
    else:
        target.mkdir()
        simulate_small(target, capsys)
        assert (target / MANIFEST).exists()


def test_swap_without_an_atomic_exchange_replaces_the_panel(tmp_path, capsys, monkeypatch):
    import oihedge.pipelines.sim.output as sim_output

    monkeypatch.setattr(sim_output, "_exchange", lambda a, b: False)
    target = tmp_path / "sim"
    simulate_small(target, capsys)
    before = PanelStore(target).read()
    simulate_small(target, capsys, "--overwrite", "--seed", "9")
    assert not PanelStore(target).read().equals(before)
    assert siblings(target) == []


def test_a_run_stopped_after_writing_partitions_leaves_the_old_panel(tmp_path, capsys, monkeypatch):
    import oihedge.pipelines.sim.output as sim_output

    target = tmp_path / "sim"
    simulate_small(target, capsys)
    before = PanelStore(target).read()

    def interrupted(*args, **kwargs):  # the partitions are written, the marker is not
        raise KeyboardInterrupt

    monkeypatch.setattr(sim_output.panel_manifest, "write_complete", interrupted)
    code, _, _ = run(
        ["simulate", "--days", "0.25", "--seed", "8", "--out", str(target), "--overwrite"], capsys
    )
    assert code == 130
    assert PanelStore(target).read().equals(before)
    assert siblings(target) == []  # the half-written folder is removed on the way out
