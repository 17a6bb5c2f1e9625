"""The Backtest page: the latest report `oihedge backtest --out FOLDER` left in a folder
(``metrics.csv``, ``metrics.json``, ``plots/*.png``; oihedge.serving.backtest.outputs)."""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class BacktestReport:
    """One backtest's report files: ``folder``, its ``written`` time (UTC, the metrics
    file's mtime), the metrics ``table`` (header and rows as text), the ``summary`` of
    metrics.json (the scalar keys) and the ``plots`` (paths of the PNGs)."""

    folder: Path
    written: datetime
    header: list[str]
    rows: list[list[str]]
    summary: dict[str, Any]
    plots: list[Path]


def latest_report(root: Path) -> BacktestReport | None:
    """The newest report under ``root``: ``root`` itself or a folder below it (two levels
    at most) holding a ``metrics.csv``; None when there is none."""
    if not root.is_dir():
        return None
    found = [
        p
        for pattern in ("metrics.csv", "*/metrics.csv", "*/*/metrics.csv")
        for p in root.glob(pattern)
    ]
    if not found:
        return None
    metrics = max(found, key=lambda p: p.stat().st_mtime_ns)
    folder = metrics.parent
    with metrics.open(newline="", encoding="utf-8") as handle:
        table = list(csv.reader(handle))
    summary: dict[str, Any] = {}
    report = folder / "metrics.json"
    if report.is_file():
        loaded = json.loads(report.read_text("utf-8"))
        if isinstance(loaded, dict):
            summary = {k: v for k, v in loaded.items() if isinstance(v, (str, int, float, bool))}
    plots = sorted(folder.glob("*.png")) + sorted(folder.glob("plots/*.png"))
    written = datetime.fromtimestamp(metrics.stat().st_mtime, UTC)
    return BacktestReport(folder, written, table[0] if table else [], table[1:], summary, plots)
