"""A stable fingerprint of a market panel: what a model was trained on, in a few fields.

The hash is a sha256 over the panel's columns in a canonical row order (by venue,
symbol, ts), from their raw values (timestamps as integer microseconds, strings as UTF-8,
floats as IEEE-754 bits with nulls as a fixed NaN). It does not depend on the row order,
on the storage layout or on a library's internal hashing, so it is the same on every
machine and polars version.
"""

from __future__ import annotations

import hashlib
from typing import Any

import numpy as np
import polars as pl

from oihedge.features.schema import ADDED_COLUMNS, PANEL_SCHEMA, check_columns


def panel_fingerprint(panel: pl.DataFrame) -> dict[str, Any]:
    """``hash`` (hex sha256), ``rows``, ``start``/``end`` (ISO), ``venues``, ``symbols``."""
    check_columns(panel, source="panel to fingerprint")
    ordered = panel.sort(["venue", "symbol", "ts"])
    digest = hashlib.sha256()
    for name, dtype in PANEL_SCHEMA.items():
        if name not in ordered.columns:
            continue  # (an added column the frame predates: null, hashed as absent)
        col = ordered[name]
        if name in ADDED_COLUMNS and col.null_count() == col.len():
            # a panel without options data hashes as it did before the columns existed
            continue
        digest.update(name.encode())
        if dtype == pl.String():
            digest.update("\x1f".join(col.fill_null("\x00").to_list()).encode("utf-8"))
        elif isinstance(dtype, pl.Datetime):
            digest.update(col.dt.epoch("us").fill_null(-1).to_numpy().astype("<i8").tobytes())
        else:
            values = col.fill_null(np.nan).to_numpy().astype("<f8")
            digest.update(values.tobytes())
    ts = panel["ts"]
    return {
        "hash": digest.hexdigest(),
        "rows": panel.height,
        "start": None if panel.is_empty() else ts.min().isoformat(),  # type: ignore[union-attr]
        "end": None if panel.is_empty() else ts.max().isoformat(),  # type: ignore[union-attr]
        "venues": sorted(panel["venue"].unique().to_list()),
        "symbols": sorted(panel["symbol"].unique().to_list()),
    }
