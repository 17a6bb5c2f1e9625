"""``oihedge simulate`` then ``oihedge features --spec core@v2`` through click's CliRunner:
the options features come out for BTC and ETH, null for NEAR, and the spec is recorded."""

from __future__ import annotations

import json

import polars as pl
import pyarrow.parquet as pq
from click.testing import CliRunner

from oihedge.features.registry import CORE_V1, CORE_V2, FEATURES, build_features
from oihedge.pipelines.cli.features import HASH_KEY
from oihedge.pipelines.cli.main import app
from oihedge.pipelines.store import PanelStore


def test_features_on_core_v2_from_a_simulated_panel_with_options(tmp_path) -> None:
    runner = CliRunner()
    panel = tmp_path / "sim"
    done = runner.invoke(app, ["simulate", "--days", "9", "--seed", "3", "--out", str(panel)])
    assert done.exit_code == 0, done.output
    out = tmp_path / "f.parquet"
    built = runner.invoke(
        app, ["features", "--panel", str(panel), "--spec", "core@v2", "--out", str(out)]
    )
    assert built.exit_code == 0, built.output
    table = pl.read_parquet(out)
    assert table.columns == ["ts", "symbol", *CORE_V2.features]
    meta = pq.read_metadata(out).metadata
    assert meta[HASH_KEY.encode()].decode() == CORE_V2.resolve("5m").hash()
    options = [n for n in CORE_V2.features if FEATURES[n].family == "options"]
    late = table.filter(pl.col("ts") >= table["ts"].max() - pl.duration(days=1))
    for symbol, want_values in (("BTC", True), ("ETH", True), ("NEAR", False)):
        rows = late.filter(pl.col("symbol") == symbol).select(options)
        nulls = rows.null_count().row(0)
        if want_values:  # after 8 days every options feature, the 7-day z included, is set
            assert max(nulls) == 0, dict(zip(options, nulls, strict=True))
        else:
            assert set(nulls) == {rows.height}
    # the version-1 features, built without the options venue's rows, are the same: those
    # rows reach no other feature
    perp = PanelStore(panel).read().filter(pl.col("venue") != "deribit")
    v1 = build_features(perp, CORE_V1).table
    assert v1.equals(table.select("ts", "symbol", *CORE_V1.features))
    assert json.loads(meta[b"oihedge.feature_spec"])["version"] == 2
