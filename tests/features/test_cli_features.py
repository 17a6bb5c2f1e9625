"""``oihedge features``: reads the store, builds, writes Parquet with the spec inside."""

from __future__ import annotations

import json
from pathlib import Path

import polars as pl
import pyarrow.parquet as pq
import pytest

from oihedge.features.registry import CORE_V1, build_features
from oihedge.pipelines.cli.features import HASH_KEY, SPEC_KEY
from oihedge.pipelines.cli.main import main
from oihedge.pipelines.store import PanelStore

GOLDEN_PANEL = Path(__file__).resolve().parents[1] / "fixtures" / "golden" / "panel.parquet"


@pytest.fixture(scope="module")
def store_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("panel")
    PanelStore(root).append(pl.read_parquet(GOLDEN_PANEL))
    return root


def test_features_command_writes_the_table_for_the_range(
    store_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "f.parquet"
    report = tmp_path / "f.json"
    code = main(
        [
            "features",
            "--panel",
            str(store_dir),
            "--start",
            "2025-05-10",
            "--end",
            "2025-05-14T12:00",
            "--out",
            str(out),
            "--json",
            str(report),
        ]
    )
    assert code == 0
    table = pl.read_parquet(out)
    assert table.columns == ["ts", "symbol", *CORE_V1.features]
    assert table.height == 2 * (4 * 24 + 12)
    meta = pq.read_metadata(out).metadata
    spec = json.loads(meta[SPEC_KEY.encode()])
    assert spec["params"]["bar"] == "1h"
    assert meta[HASH_KEY.encode()].decode() == CORE_V1.resolve("1h").hash()
    summary = json.loads(report.read_text())
    assert summary["rows"] == table.height and 0 <= summary["null_share"] < 0.5
    printed = capsys.readouterr().out
    assert "written:" in printed and str(out) in printed.replace("\n", "")


def test_history_before_start_is_loaded_so_values_match_a_full_build(
    store_dir: Path, tmp_path: Path
) -> None:
    out = tmp_path / "f.parquet"
    assert (
        main(["features", "--panel", str(store_dir), "--start", "2025-05-12", "--out", str(out)])
        == 0
    )
    part = pl.read_parquet(out)
    full = build_features(pl.read_parquet(GOLDEN_PANEL), CORE_V1).table
    full = full.filter(pl.col("ts") >= part["ts"].min())
    assert full.height == part.height
    for name in CORE_V1.features:
        a, b = full[name], part[name]
        assert (a.is_null() == b.is_null()).all(), name
        diff = ((a - b).abs() / pl.Series([max(abs(x), 1e-300) for x in a.fill_null(1.0)])).max()
        assert diff is None or diff < 1e-9, name


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--spec", "nope"], "unknown feature spec 'nope'"),
        (["--start", "2025-05-10", "--end", "2025-05-09"], "--end must be after --start"),
        (["--start", "yesterday"], "--start must be a date or ISO datetime, got 'yesterday'"),
        (["--bar", "soon"], "duration must look like"),
    ],
)
def test_bad_arguments_are_one_line_and_exit_2(
    store_dir: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    args: list[str],
    message: str,
) -> None:
    code = main(
        ["features", "--panel", str(store_dir), "--out", str(tmp_path / "x.parquet"), *args]
    )
    err = capsys.readouterr().err
    assert code == 2
    assert message in err and err.count("\n") == 1


def test_empty_panel_folder_is_an_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["features", "--panel", str(tmp_path), "--out", str(tmp_path / "x.parquet")])
    assert code == 2 and "no panel files" in capsys.readouterr().err


def test_dump_online_prints_the_generated_pass_for_the_panels_bar(
    store_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from oihedge.features.online.engine import dump_source
    from oihedge.pipelines.cli.features import DUMP_VENUES

    code = main(["features", "--panel", str(store_dir), "--dump-online"])
    printed = capsys.readouterr().out
    assert code == 0 and printed == dump_source(CORE_V1, bar="1h", venues=DUMP_VENUES)
    assert not list(tmp_path.iterdir())  # nothing written
    # with --bar, no panel is read
    code = main(["features", "--panel", str(tmp_path / "none"), "--dump-online", "--bar", "5m"])
    assert code == 0 and "bar 5m" in capsys.readouterr().out.splitlines()[0]


def test_out_is_required_to_build(store_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["features", "--panel", str(store_dir)])
    assert code == 2 and "Missing option '--out'" in capsys.readouterr().err
