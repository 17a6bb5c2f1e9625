"""The dashboard's settings: where the loop's files are and how the pages behave."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class DashboardSettings:
    """Where the loop's files are and how the pages behave.

    ``token``: required on every request when set (:mod:`oihedge.serving.dashboard.auth`);
    ``refresh_seconds``: how often the Live page asks for a new snapshot; ``bars``: how
    many of the last bars the Live page's errors cover; ``mlflow_ui``: the MLflow UI's
    address, linked from the pages when given; ``registry_name``: the registered model
    the Models page lists (MLflow already pointed at its store), or None with
    ``registry_problem`` saying why not; ``backtest_dir``: where the Backtest page looks
    for the latest report; ``market_panel``: a panel store the Timeline reads the price,
    open interest and funding from (:mod:`oihedge.serving.dashboard.market`); ``max_points``:
    at most about this many points per series on a chart
    (:func:`oihedge.serving.dashboard.data.thin`; the JSON API gives every point).
    """

    state_db: Path
    decision_log: Path
    kill_switch_file: Path | None = None
    token: str | None = None
    refresh_seconds: float = 5.0
    bars: int = 12
    mlflow_ui: str | None = None
    registry_name: str | None = None
    registry_problem: str | None = None
    backtest_dir: Path | None = None
    market_panel: Path | None = None
    max_points: int = 3000

    def __post_init__(self) -> None:
        if self.refresh_seconds <= 0:
            raise ValueError(f"refresh_seconds must be > 0, got {self.refresh_seconds!r}")
        if self.max_points < 10:
            raise ValueError(f"max_points must be >= 10, got {self.max_points!r}")
        if self.bars < 1:
            raise ValueError(f"bars must be >= 1, got {self.bars!r}")
        if self.token is not None and not self.token.strip():
            raise ValueError("token must not be blank")
