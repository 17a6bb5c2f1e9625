"""The golden fixture: a small committed panel and the features it must give.

A failure means a feature's values changed. If that is intended, regenerate with
``tests/features/regen_golden.py --reason ...`` and say why in the commit.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from oihedge.features.online.engine import replay
from oihedge.features.registry import CORE_V1, build_features

GOLDEN = Path(__file__).resolve().parents[1] / "fixtures" / "golden"
REGEN = "regenerate on purpose: .venv/bin/python tests/features/regen_golden.py --reason ..."


@pytest.fixture(scope="module")
def golden() -> tuple[pl.DataFrame, pl.DataFrame, dict]:
    panel = pl.read_parquet(GOLDEN / "panel.parquet")
    expected = pl.read_parquet(GOLDEN / "features.parquet")
    spec = json.loads((GOLDEN / "spec.json").read_text())
    return panel, expected, spec


def test_golden_fixture_is_small(golden: tuple[pl.DataFrame, pl.DataFrame, dict]) -> None:
    panel, expected, _ = golden
    assert panel.select("venue").n_unique() == 2 and panel.select("symbol").n_unique() == 2
    assert 300 <= panel.group_by("venue", "symbol").len()["len"].max() <= 500  # type: ignore[operator]
    assert expected.height == 2 * expected["ts"].n_unique()


def test_spec_unchanged(golden: tuple[pl.DataFrame, pl.DataFrame, dict]) -> None:
    _, _, stored = golden
    built = CORE_V1.resolve("1h")
    assert built.to_dict() == stored["spec"], f"the core spec changed; {REGEN}"
    assert built.hash() == stored["sha256"]


@pytest.mark.parametrize("backend", ["batch", "online"])
def test_features_match_golden(
    golden: tuple[pl.DataFrame, pl.DataFrame, dict], backend: str
) -> None:
    panel, expected, _ = golden
    table = (
        build_features(panel, CORE_V1).table if backend == "batch" else replay(panel, CORE_V1)[0]
    )
    assert table.columns == expected.columns
    assert table.select("ts", "symbol").equals(expected.select("ts", "symbol"))
    changed = []
    for name in expected.columns[2:]:
        a, b = table[name].to_numpy(), expected[name].to_numpy()
        same_nulls = np.array_equal(np.isnan(a), np.isnan(b))
        both = ~np.isnan(a) & ~np.isnan(b)
        scale = np.maximum(np.abs(a[both]), np.abs(b[both]))
        if not same_nulls or (np.abs(a[both] - b[both]) > 1e-12 * scale).any():
            changed.append(name)
    assert not changed, f"features changed against the golden fixture: {changed}; {REGEN}"
