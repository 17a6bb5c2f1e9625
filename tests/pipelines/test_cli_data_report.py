"""``oihedge data report``: completeness marker, duplicate keys, high below low (issue #17,
defects 2 and 8)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import polars as pl
import pytest

from oihedge.pipelines import panel_manifest
from oihedge.pipelines.cli.main import main
from oihedge.pipelines.store import PanelStore


def run(args: list[str], capsys) -> tuple[int, str, str]:
    code = main(args)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def report(panel: Path, tmp_path: Path, capsys) -> tuple[int, dict, str, str]:
    target = tmp_path / "report.json"
    code, out, err = run(["data", "report", "--panel", str(panel), "--json", str(target)], capsys)
    return code, json.loads(target.read_text()), out, err


def entry(data: dict, venue: str, symbol: str) -> dict:
    return next(e for e in data["venues"] if (e["venue"], e["symbol"]) == (venue, symbol))


@pytest.fixture(scope="module")
def simulated(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("sim") / "panel"
    assert main(["simulate", "--days", "0.25", "--seed", "4", "--out", str(root)]) == 0
    return root


def copy_of(simulated: Path, tmp_path: Path) -> Path:
    root = tmp_path / "panel"
    shutil.copytree(simulated, root)
    return root


# --- defect 8: duplicate keys, high below low -------------------------------------------


def test_the_same_key_in_two_files_is_flagged_and_coverage_stays_at_most_100(
    tmp_path, capsys, panel_factory
):
    panel = panel_factory(n_bars=12, venues=("binanceusdm",), symbols=("BTC",))
    root = tmp_path / "flat"
    (root / "copy").mkdir(parents=True)
    panel.write_parquet(root / "binanceusdm-BTC.parquet")
    panel.write_parquet(root / "copy" / "binanceusdm-BTC.parquet")
    code, data, out, _ = report(root, tmp_path, capsys)
    assert code == 0
    e = entry(data, "binanceusdm", "BTC")
    assert e["rows"] == 24 and e["bars"] == 12
    assert e["coverage_pct"] == 100.0
    assert all(s["coverage_pct"] <= 100.0 for n, s in e["series"].items() if n != "funding_rate")
    assert all(s["of_panel_pct"] <= 100.0 for n, s in e["series"].items() if n != "funding_rate")
    dup = e["flags"]["duplicate_key"]
    assert dup["count"] == 12 and dup["keys"] == 12
    assert dup["examples"][0] == {"ts": panel["ts"][0].isoformat(), "copies": 2}
    assert "duplicate_key 12" in out
    assert f"duplicate_key at {panel['ts'][0]:%Y-%m-%d %H:%M}: 2 copies" in out


def test_high_below_low_is_flagged_with_an_example(tmp_path, capsys, panel_factory):
    panel = panel_factory(n_bars=12, venues=("bybit",), symbols=("ETH",))
    bad = pl.int_range(pl.len()).is_in([3, 7])
    panel = panel.with_columns(
        pl.when(bad).then(pl.col("low") * 0.99).otherwise(pl.col("high")).alias("high")
    )
    root = tmp_path / "flat"
    root.mkdir()
    panel.write_parquet(root / "bybit-ETH.parquet")
    code, data, out, _ = report(root, tmp_path, capsys)
    assert code == 0
    flag = entry(data, "bybit", "ETH")["flags"]["high_below_low"]
    assert flag["count"] == 2
    first = panel.row(3, named=True)
    assert flag["examples"][0] == {
        "ts": first["ts"].isoformat(),
        "high": first["high"],
        "low": first["low"],
    }
    assert "high_below_low 2" in out
    assert f"high_below_low at {first['ts']:%Y-%m-%d %H:%M}" in out


def test_a_clean_panel_has_no_duplicate_or_high_low_flag(tmp_path, capsys, panel_factory):
    root = tmp_path / "clean"
    PanelStore(root).append(panel_factory(), source="test")
    code, data, _, _ = report(root, tmp_path, capsys)
    assert code == 0
    for e in data["venues"]:
        assert e["flags"]["duplicate_key"] == {"count": 0, "keys": 0, "examples": []}
        assert e["flags"]["high_below_low"] == {"count": 0, "examples": []}


# --- defect 2: the completeness marker --------------------------------------------------


def test_a_complete_simulated_panel_is_reported_complete(simulated, tmp_path, capsys):
    code, data, out, _ = report(simulated, tmp_path, capsys)
    assert code == 0
    assert data["completeness"]["status"] == "complete"
    assert data["completeness"]["writer"] == "simulate"
    assert "completeness: complete" in out


def test_a_panel_missing_a_partition_is_partial_and_exits_2(simulated, tmp_path, capsys):
    root = copy_of(simulated, tmp_path)
    (root / "venue=okx" / "symbol=ETH" / "panel.parquet").unlink()
    code, data, out, err = report(root, tmp_path, capsys)
    assert code == 2
    assert data["completeness"]["status"] == "partial"
    assert any("venue=okx/symbol=ETH/panel.parquet" in p for p in data["completeness"]["problems"])
    assert "PARTIAL" in out  # the report is printed, flagged
    line = err.strip().splitlines()[-1]  # after "JSON written to ..."
    assert line.startswith("oihedge: error: ") and "partial" in line and str(root) in line
    assert "missing file venue=okx/symbol=ETH/panel.parquet" in line


def test_a_partition_with_fewer_rows_than_written_is_partial(simulated, tmp_path, capsys):
    root = copy_of(simulated, tmp_path)
    path = root / "venue=bybit" / "symbol=BTC" / "panel.parquet"
    pl.read_parquet(path).head(5).write_parquet(path)
    code, data, _, err = report(root, tmp_path, capsys)
    assert code == 2 and data["completeness"]["status"] == "partial"
    assert "venue=bybit/symbol=BTC/panel.parquet holds 5 rows" in " ".join(err.split())


def test_an_unfinished_write_is_partial(simulated, tmp_path, capsys):
    root = copy_of(simulated, tmp_path)
    panel_manifest.begin(root, "ingest")
    code, data, _, err = report(root, tmp_path, capsys)
    assert code == 2 and data["completeness"]["status"] == "partial"
    assert "ingest" in err and "has not finished" in " ".join(err.split())


def test_a_file_added_after_the_write_is_reported_modified(simulated, tmp_path, capsys):
    root = copy_of(simulated, tmp_path)
    part = root / "venue=okx" / "symbol=BTC"
    shutil.copy(part / "panel.parquet", part / "copy.parquet")
    code, data, out, _ = report(root, tmp_path, capsys)
    assert code == 0
    assert data["completeness"]["status"] == "modified"
    assert "venue=okx/symbol=BTC/copy.parquet" in " ".join(data["completeness"]["problems"])
    assert entry(data, "okx", "BTC")["flags"]["duplicate_key"]["count"] > 0
    assert "completeness: modified" in out


def test_the_real_panel_without_a_marker_is_read_and_reported_unmarked(
    real_1h_dir, tmp_path, capsys
):
    code, data, out, _ = report(real_1h_dir, tmp_path, capsys)
    assert code == 0
    assert data["completeness"]["status"] == "unmarked"
    assert "no completeness marker" in out
    assert not (real_1h_dir / panel_manifest.MANIFEST).exists()
