"""The completeness marker kept by the incremental writers (``ingest``, ``import-archive``)
and read by ``data report`` (issue #17, defect 2)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import polars as pl
import pytest
from ccxt_replay import no_sockets, sync_collectors  # noqa: F401 - a fixture
from ccxt_venues import SyntheticVenues, venue_router

from oihedge.pipelines import panel_manifest
from oihedge.pipelines.cli.main import main
from oihedge.pipelines.ingest.archive import ArchiveError, import_archive
from oihedge.pipelines.ingest.incremental import IngestPlan, ingest
from oihedge.pipelines.ingest.normalise import to_ms
from oihedge.pipelines.store import PanelStore

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "archive"
FIVE = timedelta(minutes=5)
NOW = datetime(2024, 4, 10, 9, 2, tzinfo=UTC)


def marker(root: Path) -> dict:
    return json.loads((root / panel_manifest.MANIFEST).read_text())


def listed_matches_store(root: Path) -> bool:
    files = marker(root)["files"]
    stored = PanelStore(root).files()
    return sorted(files) == sorted(str(p.relative_to(root)) for p in stored) and all(
        files[str(p.relative_to(root))] == pl.read_parquet(p).height for p in stored
    )


def archive_files(folder: Path, *, bad_value: bool = False) -> Path:
    """The built fixtures under Binance's names; ``bad_value`` breaks one OI value."""
    folder.mkdir(parents=True)
    shutil.copy(FIXTURES / "built-BTCUSDT-5m-2024-01-01.csv", folder / "BTCUSDT-5m-2024-01-01.csv")
    metrics = (FIXTURES / "built-BTCUSDT-metrics-2024-01-01.csv").read_text()
    if bad_value:
        metrics = metrics.replace(",3389908526.33056,", ",three billion,", 1)
    (folder / "BTCUSDT-metrics-2024-01-01.csv").write_text(metrics)
    return folder


# --- import-archive ---------------------------------------------------------------------


def test_an_import_marks_the_panel_complete(tmp_path):
    root = tmp_path / "panel"
    import_archive(PanelStore(root), [archive_files(tmp_path / "files")], bar=FIVE)
    data = marker(root)
    assert data["complete"] is True and data["writer"] == "import-archive"
    assert data["in_progress"] == {}
    assert listed_matches_store(root)
    assert panel_manifest.check(root).status == "complete"


def test_an_import_stopped_by_a_bad_file_leaves_the_panel_partial(tmp_path, capsys):
    root = tmp_path / "panel"
    files = archive_files(tmp_path / "files", bad_value=True)
    with pytest.raises(ArchiveError, match="BTCUSDT-metrics-2024-01-01"):
        # klines (sorted first) are flushed before the broken metrics file is read
        import_archive(PanelStore(root), [files], bar=FIVE, flush_rows=1)
    assert PanelStore(root).read().height > 0
    state = panel_manifest.check(root)
    assert state.status == "partial"
    assert "import-archive" in state.problems[0] and "failed" in state.problems[0]
    code = main(["data", "report", "--panel", str(root)])
    err = capsys.readouterr().err
    assert code == 2 and "partial" in err
    # fixed and re-run: the panel is complete again
    archive_files(tmp_path / "fixed")
    import_archive(PanelStore(root), [tmp_path / "fixed"], bar=FIVE)
    assert panel_manifest.check(root).status == "complete"
    assert listed_matches_store(root)


def test_an_import_that_writes_nothing_leaves_no_marker(tmp_path):
    root = tmp_path / "panel"
    (tmp_path / "files").mkdir()
    shutil.copy(
        FIXTURES / "built-wrong-header-metrics.csv",
        tmp_path / "files" / "BTCUSDT-metrics-2024-01-02.csv",
    )
    with pytest.raises(ArchiveError):
        import_archive(PanelStore(root), [tmp_path / "files"], bar=FIVE)
    assert not (root / panel_manifest.MANIFEST).exists()


# --- ingest -----------------------------------------------------------------------------


@pytest.mark.usefixtures("no_sockets")
def test_an_ingest_marks_the_panel_complete_and_an_interrupted_one_partial(tmp_path):
    root = tmp_path / "panel"
    synthetic = SyntheticVenues(to_ms(NOW))
    plan = IngestPlan(symbols=("BTC",), since=NOW - timedelta(days=2), bar=FIVE, flush_rows=1)

    def collectors():
        return sync_collectors(venue_router(["okx"], ["BTC"], synthetic), ["okx"])

    calls = []

    def interrupt(venue: str, advance: int, add_total: int) -> None:
        calls.append(advance)
        if sum(calls) >= 3:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        ingest(PanelStore(root), collectors(), plan, clock=lambda: NOW, progress=interrupt)
    assert PanelStore(root).read().height > 0
    state = panel_manifest.check(root)
    assert state.status == "partial" and "ingest" in state.problems[0]
    assert "KeyboardInterrupt" in state.problems[0]

    report = ingest(PanelStore(root), collectors(), plan, clock=lambda: NOW)
    assert report.errors == {}
    assert panel_manifest.check(root).status == "complete"
    assert marker(root)["writer"] == "ingest" and listed_matches_store(root)


# --- the marker itself ------------------------------------------------------------------


def test_a_killed_writer_is_reported_interrupted_and_taken_over(tmp_path, panel_factory):
    root = tmp_path / "panel"
    PanelStore(root).append(panel_factory(), source="test")
    token = panel_manifest.begin(root, "ingest")
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        capture_output=True,
        text=True,
        check=True,
    )
    data = marker(root)
    data["in_progress"][token]["pid"] = int(dead.stdout)
    (root / panel_manifest.MANIFEST).write_text(json.dumps(data))
    state = panel_manifest.check(root)
    assert state.status == "partial" and "was interrupted" in state.problems[0]
    # the next run drops the dead entry and, when it finishes, the panel is complete
    with panel_manifest.WriteRun(root, "ingest") as run:
        run.started()
    assert panel_manifest.check(root).status == "complete"


def test_concurrent_writers_complete_when_the_last_one_ends(tmp_path, panel_factory):
    root = tmp_path / "panel"
    PanelStore(root).append(panel_factory(), source="test")
    first, second = panel_manifest.WriteRun(root, "ingest"), panel_manifest.WriteRun(root, "x")
    first.started()
    second.started()
    first.end()
    assert panel_manifest.check(root).status == "partial"
    second.end()
    assert panel_manifest.check(root).status == "complete"


def test_rows_appended_by_a_writer_without_the_marker_make_it_modified(tmp_path, panel_factory):
    root = tmp_path / "panel"
    store = PanelStore(root)
    store.append(panel_factory(n_bars=6), source="test")
    panel_manifest.write_complete(root, "simulate")
    store.append(panel_factory(n_bars=12), source="live")
    state = panel_manifest.check(root)
    assert state.status == "modified" and "the marker lists 6" in state.problems[0]


def test_an_unreadable_marker_is_an_error_naming_it(tmp_path, capsys, panel_factory):
    root = tmp_path / "panel"
    PanelStore(root).append(panel_factory(), source="test")
    (root / panel_manifest.MANIFEST).write_text("{not json")
    with pytest.raises(ValueError, match="_manifest.json: not a readable completeness marker"):
        panel_manifest.check(root)
    code = main(["data", "report", "--panel", str(root)])
    err = capsys.readouterr().err
    assert code == 2 and "_manifest.json" in err and len(err.strip().splitlines()) == 1


def test_a_corrupt_panel_file_is_one_line_naming_it(tmp_path, capsys, panel_factory):
    root = tmp_path / "panel"
    PanelStore(root).append(panel_factory(), source="test")
    panel_manifest.write_complete(root, "simulate")
    broken = PanelStore(root).files()[0]
    broken.write_bytes(b"not parquet")
    with pytest.raises(ValueError, match="not a readable Parquet file"):
        panel_manifest.check(root)
    code = main(["data", "report", "--panel", str(root)])
    err = capsys.readouterr().err
    assert code == 2 and str(broken) in err and len(err.strip().splitlines()) == 1
