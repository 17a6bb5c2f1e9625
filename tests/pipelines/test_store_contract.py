"""The panel reader checks every file against the contract (issue #17, defect 5): a file
that is not Parquet, a missing or unexpected column or an unsafe type is an error naming
the file; looser but safe types are cast; nothing is dropped."""

from __future__ import annotations

from pathlib import Path

import polars as pl
import pytest

from oihedge.features.schema import PANEL_SCHEMA, PanelSchemaError
from oihedge.pipelines.store import PanelStore


def _flat(root: Path, frame: pl.DataFrame, name: str = "okx-BTC.parquet") -> Path:
    root.mkdir(parents=True, exist_ok=True)
    frame.write_parquet(root / name)
    return root / name


@pytest.fixture
def panel(panel_factory) -> pl.DataFrame:
    return panel_factory().sort(["venue", "symbol", "ts"])


def _one_series(panel: pl.DataFrame) -> pl.DataFrame:
    first = panel.row(0, named=True)
    return panel.filter(pl.col("venue") == first["venue"], pl.col("symbol") == first["symbol"])


@pytest.mark.parametrize(
    ("loosen", "column"),
    [
        (lambda f: f.with_columns(pl.col("close").round(0).cast(pl.Int64)), "close"),
        (lambda f: f.with_columns(pl.col("ts").dt.cast_time_unit("ns")), "ts"),
        (lambda f: f.with_columns(pl.col("known_at").dt.replace_time_zone(None)), "known_at"),
        (lambda f: f.with_columns(pl.col("venue").cast(pl.Categorical)), "venue"),
        (lambda f: f.select(list(reversed(f.columns))), None),
    ],
    ids=["close-int", "ts-ns", "known-at-naive", "venue-categorical", "columns-reordered"],
)
def test_safe_loose_types_are_cast_and_every_row_read(tmp_path, panel, loosen, column):
    series = _one_series(panel)
    _flat(tmp_path, loosen(series))
    read = PanelStore(tmp_path).read()
    assert read.schema == pl.Schema(PANEL_SCHEMA)
    assert read.height == series.height
    expected = series if column != "close" else series.with_columns(pl.col("close").round(0))
    assert read.equals(expected.sort(["venue", "symbol", "ts"]))


def test_exact_and_loose_files_read_together(tmp_path, panel):
    venues = panel["venue"].unique().sort().to_list()
    exact = panel.filter(pl.col("venue") == venues[0])
    loose = panel.filter(pl.col("venue") != venues[0])
    _flat(tmp_path, exact, "a.parquet")
    _flat(tmp_path, loose.with_columns(pl.col("ts").dt.cast_time_unit("ns")), "b.parquet")
    read = PanelStore(tmp_path).read()
    assert read.equals(panel.sort(["venue", "symbol", "ts"]))


@pytest.mark.parametrize(
    ("spoil", "match"),
    [
        (
            lambda f: f.with_columns(pl.col("oi_usd").cast(pl.String)),
            r"column 'oi_usd' has type String",
        ),
        (lambda f: f.with_columns(pl.col("ts").dt.epoch("ns")), r"column 'ts' has type Int64"),
        (lambda f: f.drop("funding_rate"), r"missing column 'funding_rate'"),
        (lambda f: f.with_columns(pl.lit(1.0).alias("oi")), r"unexpected column 'oi'"),
    ],
    ids=["oi-text", "ts-int", "missing", "extra"],
)
def test_unsafe_files_are_errors_naming_file_and_column(tmp_path, panel, spoil, match):
    path = _flat(tmp_path, spoil(_one_series(panel)))
    store = PanelStore(tmp_path)
    with pytest.raises(PanelSchemaError, match=match) as caught:
        store.read()
    assert str(path) in str(caught.value)
    with pytest.raises(PanelSchemaError, match=match):
        store.scan()  # the schema is checked when the scan is planned, before any row


@pytest.mark.parametrize("content", [b"", b"PAR1 not really", b"ts,venue\n1,okx\n"])
def test_unreadable_files_are_errors_naming_the_file(tmp_path, content):
    tmp_path.joinpath("okx-BTC.parquet").write_bytes(content)
    with pytest.raises(PanelSchemaError, match=r"okx-BTC.parquet: not a readable Parquet file"):
        PanelStore(tmp_path).read()


def test_truncated_partition_is_an_error_when_appending(tmp_path, panel):
    store = PanelStore(tmp_path)
    store.append(panel)
    venue, symbol = panel.row(0)[1], panel.row(0)[2]
    path = store.partition_path(venue, symbol)
    path.write_bytes(path.read_bytes()[:100])
    with pytest.raises(PanelSchemaError, match=r"panel.parquet: not a readable Parquet file"):
        store.append(panel)


def test_unreadable_quarantine_file_is_an_error_naming_it(tmp_path):
    qdir = tmp_path / "_quarantine"
    qdir.mkdir(parents=True)
    (qdir / "x.parquet").write_bytes(b"nope")
    with pytest.raises(PanelSchemaError, match=r"x.parquet: not a readable Parquet file"):
        PanelStore(tmp_path).quarantine()


def test_invalid_rows_of_a_read_panel_are_quarantined_not_dropped(tmp_path, panel):
    """The reader keeps the rows; validation, as before, sets the bad ones apart with a
    reason (features, training and the live loop validate what they read)."""
    from oihedge.features.screening import validate

    bad = _one_series(panel).with_columns(
        pl.when(pl.int_range(pl.len()) == 3).then(-1.0).otherwise(pl.col("oi_usd")).alias("oi_usd")
    )
    _flat(tmp_path, bad.with_columns(pl.col("ts").dt.cast_time_unit("ns")))
    read = PanelStore(tmp_path).read()
    assert read.height == bad.height
    result = validate(read)
    assert result.reasons() == {"negative_oi_usd": 1}
    assert result.valid.height + result.n_quarantined == bad.height
