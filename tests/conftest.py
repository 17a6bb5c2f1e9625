"""Shared fixtures: small hand-made panels and the path to the real data in ../shared."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import polars as pl
import pytest

from pg_support import PostgresCluster, PostgresUnavailableError
from tests_support import make_panel

REPO = Path(__file__).resolve().parents[1]
REAL_1H = REPO.parent / "shared" / "data" / "real-1h"


@pytest.fixture
def panel_factory() -> Callable[..., pl.DataFrame]:
    return make_panel


@pytest.fixture
def real_1h_dir() -> Path:
    if not REAL_1H.exists():
        pytest.fail(f"the real data folder {REAL_1H} is missing (shared/ must sit beside the repo)")
    return REAL_1H


@pytest.fixture
def live_env(tmp_path, monkeypatch) -> Path:
    """The live loop's files (state, decision log, kill switch) and the MLflow store in
    ``tmp_path``, through the environment, as an operator's config would point them."""
    monkeypatch.setenv("OIHEDGE_LIVE__STATE_DB", str(tmp_path / "state.sqlite"))
    monkeypatch.setenv("OIHEDGE_LIVE__DECISION_LOG", str(tmp_path / "decisions.jsonl"))
    monkeypatch.setenv("OIHEDGE_LIVE__KILL_SWITCH_FILE", str(tmp_path / "KILL"))
    monkeypatch.setenv("OIHEDGE_MLFLOW__TRACKING_URI", f"sqlite:///{tmp_path}/mlflow.db")
    return tmp_path


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresCluster]:
    """A throwaway PostgreSQL cluster on 127.0.0.1 for the session (tests create databases
    in it with ``create_database``); stopped and deleted at the end, even after a failure.

    Fails, never skips, when PostgreSQL cannot run here: CI is expected to have it.
    """
    try:
        cluster = PostgresCluster.start()
    except PostgresUnavailableError as err:
        pytest.fail(f"PostgreSQL tests need a local PostgreSQL 15 server: {err}")
    try:
        yield cluster
    finally:
        cluster.stop()
