"""Binance archive import from the published column layouts (fixtures built, see names)."""

from __future__ import annotations

import shutil
import zipfile
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from oihedge.features.screening import validate
from oihedge.pipelines.ingest.archive import ArchiveError, discover, import_archive
from oihedge.pipelines.ingest.venues import VENUES
from oihedge.pipelines.store import PanelStore

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "archive"
FIVE = timedelta(minutes=5)


def place(folder: Path, fixture: str, name: str, zipped: bool = False) -> Path:
    """Copy a built fixture under the file name Binance publishes it with."""
    folder.mkdir(parents=True, exist_ok=True)
    if fixture.endswith(".zip"):
        return Path(shutil.copy(FIXTURES / fixture, folder / name))
    if not zipped:
        return Path(shutil.copy(FIXTURES / fixture, folder / name))
    target = folder / name
    with zipfile.ZipFile(target, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.write(FIXTURES / fixture, arcname=name.removesuffix(".zip") + ".csv")
    return target


@pytest.fixture
def archive_dir(tmp_path: Path) -> Path:
    root = tmp_path / "data.binance.vision" / "futures" / "um"
    place(
        root / "metrics", "built-BTCUSDT-metrics-2024-01-01.zip", "BTCUSDT-metrics-2024-01-01.zip"
    )
    place(
        root / "klines", "built-BTCUSDT-5m-2024-01-01.csv", "BTCUSDT-5m-2024-01-01.zip", zipped=True
    )
    place(
        root / "fundingRate",
        "built-BTCUSDT-fundingRate-2024-01.csv",
        "BTCUSDT-fundingRate-2024-01.csv",
    )
    return root


def test_a_folder_of_zipped_and_plain_files_becomes_a_valid_panel(tmp_path, archive_dir):
    store = PanelStore(tmp_path / "panel")
    report = import_archive(store, [archive_dir], bar=FIVE)
    assert report.files == {"klines": 1, "fundingRate": 1, "metrics": 1}
    assert report.quarantined == 0 and report.skipped == {}
    panel = store.read()
    assert validate(panel, bar=FIVE).n_quarantined == 0
    first = panel.row(0, named=True)
    assert first["ts"] == datetime(2024, 1, 1, tzinfo=UTC)
    assert first["oi_usd"] == pytest.approx(3387900151.776)  # sum_open_interest_value
    assert first["funding_rate"] == pytest.approx(0.00037409)  # 8h interval: unchanged
    candle = panel.filter(panel["ts"] == datetime(2024, 1, 1, 0, 5, tzinfo=UTC)).row(0, named=True)
    assert candle["close"] == 42292.8 and candle["volume_usd"] == pytest.approx(7623277.2)
    assert candle["known_at"] == candle["ts"] + VENUES["binanceusdm"].lag_oi  # OI came last
    assert panel.height == 13 + 2  # 13 snapshots (klines fill 12 of them) + 2 funding bars


def test_hourly_bars_aggregate_candles_and_sample_snapshots(tmp_path, archive_dir):
    store = PanelStore(tmp_path / "panel")
    report = import_archive(store, [archive_dir], bar=timedelta(hours=1))
    panel = store.read()
    hour = panel.filter(panel["ts"] == datetime(2024, 1, 1, 1, tzinfo=UTC)).row(0, named=True)
    assert hour["close"] == 42338.8  # the last 5m close of the hour
    assert hour["high"] == pytest.approx(
        max(float(r.split(",")[2]) for r in _rows("built-BTCUSDT-5m-2024-01-01.csv"))
    )
    snapshot = next(r for r in _rows("built-BTCUSDT-metrics-2024-01-01.csv") if "01:00:00" in r)
    assert hour["oi_usd"] == float(snapshot.split(",")[3])  # the 01:00 snapshot
    assert report.dropped_off_grid == 11  # 00:05 .. 00:55 snapshots


def _rows(fixture: str) -> list[str]:
    return (FIXTURES / fixture).read_text().strip().splitlines()[1:]


def test_old_klines_without_a_header_are_read(tmp_path):
    folder = tmp_path / "old"
    place(folder, "built-BTCUSDT-5m-2021-06-01-noheader.csv", "BTCUSDT-5m-2021-06-01.csv")
    store = PanelStore(tmp_path / "panel")
    import_archive(store, [folder], bar=FIVE)
    assert store.read()["close"].to_list() == [36715.0, 36690.0, 36715.0]


def test_funding_interval_of_the_file_is_normalised_to_8h(tmp_path):
    folder = tmp_path / "f"
    folder.mkdir()
    (folder / "BTCUSDT-fundingRate-2024-02.csv").write_text(
        "calc_time,funding_interval_hours,last_funding_rate\n1706745600000,4,0.0001\n"
    )
    store = PanelStore(tmp_path / "panel")
    import_archive(store, [folder], bar=timedelta(hours=1))
    assert store.read()["funding_rate"].to_list() == pytest.approx([0.0002])


def test_a_truncated_zip_is_named_and_nothing_is_written(tmp_path, archive_dir):
    good = archive_dir / "klines" / "BTCUSDT-5m-2024-01-01.zip"
    bad = archive_dir / "klines" / "BTCUSDT-5m-2024-01-02.zip"
    bad.write_bytes(good.read_bytes()[: len(good.read_bytes()) // 2])
    store = PanelStore(tmp_path / "panel")
    with pytest.raises(
        ArchiveError, match=r"BTCUSDT-5m-2024-01-02\.zip: not a readable zip archive"
    ):
        import_archive(store, [archive_dir], bar=FIVE)
    assert store.read().is_empty()


def test_a_wrong_header_is_named_and_nothing_is_written(tmp_path, archive_dir):
    place(
        archive_dir / "metrics", "built-wrong-header-metrics.csv", "BTCUSDT-metrics-2024-01-02.csv"
    )
    store = PanelStore(tmp_path / "panel")
    with pytest.raises(
        ArchiveError,
        match=r"BTCUSDT-metrics-2024-01-02\.csv: unexpected CSV header 'timestamp,symbol",
    ):
        import_archive(store, [archive_dir], bar=FIVE)
    assert store.read().is_empty()


def test_skip_bad_imports_the_rest_and_lists_the_bad_file(tmp_path, archive_dir):
    place(
        archive_dir / "metrics", "built-wrong-header-metrics.csv", "BTCUSDT-metrics-2024-01-02.csv"
    )
    store = PanelStore(tmp_path / "panel")
    report = import_archive(store, [archive_dir], bar=FIVE, skip_bad=True)
    assert list(report.skipped) == [str(archive_dir / "metrics" / "BTCUSDT-metrics-2024-01-02.csv")]
    assert store.read().height == 15


def test_a_bad_number_names_the_file(tmp_path):
    folder = tmp_path / "n"
    folder.mkdir()
    header = "calc_time,funding_interval_hours,last_funding_rate"
    (folder / "BTCUSDT-fundingRate-2024-03.csv").write_text(f"{header}\n1709251200000,8,abc\n")
    with pytest.raises(ArchiveError, match=r"BTCUSDT-fundingRate-2024-03\.csv: bad value"):
        import_archive(PanelStore(tmp_path / "panel"), [folder], bar=FIVE)


def test_a_negative_oi_in_a_file_is_quarantined_not_dropped(tmp_path):
    folder = tmp_path / "neg"
    folder.mkdir()
    lines = (FIXTURES / "built-BTCUSDT-metrics-2024-01-01.csv").read_text().splitlines()
    fields = lines[2].split(",")
    fields[3] = "-1.0"
    lines[2] = ",".join(fields)
    (folder / "BTCUSDT-metrics-2024-01-01.csv").write_text("\n".join(lines) + "\n")
    store = PanelStore(tmp_path / "panel")
    report = import_archive(store, [folder], bar=FIVE)
    assert report.quarantine_reasons == {"negative_oi_usd": 1}
    assert store.read().height == 12


def test_reimporting_is_idempotent(tmp_path, archive_dir):
    store = PanelStore(tmp_path / "panel")
    import_archive(store, [archive_dir], bar=FIVE)
    once = store.read()
    import_archive(store, [archive_dir], bar=FIVE)
    assert store.read().equals(once)


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("BTCUSD_PERP-metrics-2024-01-01.csv", "not a Binance archive file name"),
        ("BTCUSDC-metrics-2024-01-01.csv", "not USDT-margined"),
        ("notes.csv", "not a Binance archive file name"),
    ],
)
def test_file_names_that_are_not_usdt_archives_are_refused(tmp_path, name, message):
    path = tmp_path / name
    path.write_text("x\n")
    with pytest.raises(ArchiveError, match=message):
        discover([path])


def test_a_missing_path_is_named(tmp_path):
    with pytest.raises(ArchiveError, match="no such file or folder"):
        discover([tmp_path / "nowhere"])
