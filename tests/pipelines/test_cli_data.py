"""``oihedge ingest``, ``oihedge import-archive`` and ``oihedge data report``."""

from __future__ import annotations

import json
import shutil
from datetime import UTC, datetime
from pathlib import Path

import pytest
from ccxt_replay import AsyncSession, no_sockets, sync_session  # noqa: F401 - a fixture
from ccxt_venues import SyntheticVenues, venue_router
from options_support import add_deribit

import oihedge.pipelines.ingest.collectors as collectors_module
from oihedge.pipelines.cli.common import CliError
from oihedge.pipelines.cli.data import parse_since
from oihedge.pipelines.cli.main import main
from oihedge.pipelines.ingest.collectors import Pacing
from oihedge.pipelines.store import PanelStore

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "archive"


def run(args: list[str], capsys) -> tuple[int, str, str]:
    code = main(args)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_data_report_on_the_real_hourly_panel(real_1h_dir, tmp_path, capsys):
    target = tmp_path / "report.json"
    code, out, _ = run(
        ["data", "report", "--panel", str(real_1h_dir), "--json", str(target)], capsys
    )
    assert code == 0
    assert "bar 1h read from the data" in out
    assert "hyperliquid DOGE oi_jump at 2025-10-10" in out
    report = json.loads(target.read_text())
    assert report["bar"] == "1h" and len(report["venues"]) == 30


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["data", "report", "--panel", "{missing}"], "does not exist"),
        (["data", "report", "--panel", "{real}", "--bar", "soon"], "--bar"),
    ],
)
def test_data_report_errors_are_one_line(args, needle, real_1h_dir, tmp_path, capsys):
    args = [a.format(missing=tmp_path / "nope", real=real_1h_dir) for a in args]
    code, _, err = run(args, capsys)
    assert code == 2 and needle in err and len(err.strip().splitlines()) == 1


def test_import_archive_command(tmp_path, capsys):
    folder = tmp_path / "files"
    folder.mkdir()
    shutil.copy(
        FIXTURES / "built-BTCUSDT-metrics-2024-01-01.zip", folder / "BTCUSDT-metrics-2024-01-01.zip"
    )
    shutil.copy(FIXTURES / "built-BTCUSDT-5m-2024-01-01.csv", folder / "BTCUSDT-5m-2024-01-01.csv")
    panel = tmp_path / "panel"
    code, out, err = run(
        ["import-archive", str(folder), "--panel", str(panel), "--bar", "5m", "--json", "-"], capsys
    )
    # with --json -, stdout is the JSON alone and the table is on stderr
    assert code == 0 and "import-archive" in err
    assert isinstance(json.loads(out), dict)
    assert PanelStore(panel).read().height == 13


def test_import_archive_bad_file_is_one_line_naming_it(tmp_path, capsys):
    folder = tmp_path / "files"
    folder.mkdir()
    shutil.copy(
        FIXTURES / "built-wrong-header-metrics.csv", folder / "BTCUSDT-metrics-2024-01-02.csv"
    )
    code, _, err = run(["import-archive", str(folder), "--panel", str(tmp_path / "p")], capsys)
    assert code == 2 and "BTCUSDT-metrics-2024-01-02.csv: unexpected CSV header" in err
    assert len(err.strip().splitlines()) == 1


@pytest.fixture
def replayed_venues(monkeypatch):
    """Every exchange the CLI builds talks to an in-process replay of the four venues."""
    now = datetime.now(UTC)
    router = venue_router(
        ["binanceusdm", "bybit", "okx", "hyperliquid"],
        ["BTC"],
        SyntheticVenues(int(now.timestamp() * 1000)),
    )
    add_deribit(
        router, now
    )  # the option chains ingest snapshots (oihedge.pipelines.ingest.options)
    real = collectors_module.make_exchange

    def replaying(spec, *, asynchronous=False, session=None, pacing=None, config=None, spot=False):
        session = AsyncSession(router) if asynchronous else sync_session(router)
        return real(
            spec,
            asynchronous=asynchronous,
            session=session,
            pacing=pacing or Pacing(virtual=True),
            spot=spot,
        )

    monkeypatch.setattr(collectors_module, "make_exchange", replaying)
    return router


@pytest.mark.usefixtures("no_sockets")
@pytest.mark.parametrize("mode", ["--sequential", "--concurrent"])
def test_ingest_command(replayed_venues, tmp_path, capsys, mode):
    panel = tmp_path / "panel"
    args = [
        "ingest",
        "--symbols",
        "BTC",
        "--since",
        "6h",
        "--bar",
        "1h",
        "--panel",
        str(panel),
        mode,
    ]
    code, out, err = run([*args, "--json", str(tmp_path / "ingest.json")], capsys)
    assert code == 0, err
    assert "rows written" in out and "rate limits imply" in out
    stored = PanelStore(panel).read()
    assert set(stored["venue"]) == {"binanceusdm", "bybit", "okx", "hyperliquid", "deribit"}
    options = stored.filter(venue="deribit")
    assert options["symbol"].to_list() == ["BTC"] and options["opt_rr25_pct"][0] < 0
    assert json.loads((tmp_path / "ingest.json").read_text())["errors"] == {}


@pytest.mark.usefixtures("no_sockets")
def test_ingest_unknown_symbol_is_one_line(replayed_venues, tmp_path, capsys):
    args = [
        "ingest",
        "--venues",
        "okx",
        "--symbols",
        "NOPE",
        "--since",
        "2h",
        "--bar",
        "1h",
        "--sequential",
    ]
    code, _, err = run([*args, "--panel", str(tmp_path / "p")], capsys)
    assert code == 2
    assert (
        "no perpetual 'NOPE/USDT:USDT' for symbol 'NOPE'" in err
        and len(err.strip().splitlines()) == 1
    )


def test_ingest_unknown_venue_is_one_line(tmp_path, capsys):
    code, _, err = run(["ingest", "--venues", "mtgox", "--panel", str(tmp_path)], capsys)
    assert code == 2 and "unknown venue 'mtgox'" in err


def test_since_accepts_dates_datetimes_and_lookbacks():
    now = datetime(2024, 4, 10, 9, tzinfo=UTC)
    assert parse_since("2024-01-01", now) == datetime(2024, 1, 1, tzinfo=UTC)
    assert parse_since("2024-01-01T12:30+02:00", now) == datetime(2024, 1, 1, 10, 30, tzinfo=UTC)
    assert parse_since("7d", now) == datetime(2024, 4, 3, 9, tzinfo=UTC)
    with pytest.raises(CliError, match="lookback like 30d, got 'yesterday'"):
        parse_since("yesterday", now)
    with pytest.raises(CliError, match="in the future"):
        parse_since("2030-01-01", now)
