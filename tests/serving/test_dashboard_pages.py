"""The dashboard's registry views (the Models page; the served model's aliases and gate
verdict on the Live page) and the Backtest page's latest report."""

from __future__ import annotations

import json
import os
import re
import time

import mlflow
import pytest
from fastapi.testclient import TestClient
from live_support import Dial, make_rig, simulated_panel
from mlflow import MlflowClient

from oihedge.models import registry
from oihedge.serving.dashboard import DashboardSettings, create_app
from oihedge.serving.dashboard.backtest_view import latest_report
from oihedge.serving.dashboard.data import group_errors
from oihedge.serving.feeds.replay import ReplaySource
from oihedge.serving.live.model_watch import StaticModel

NAME = "oihedge-cascade-test"

#: the address a browser on the machine uses (a tokenless dashboard answers no other)
LOCAL = "http://127.0.0.1:8050"


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """A registry with three versions: v1 promoted (forced, with a reason), v2 promoted
    after it, v3 registered and never promoted."""
    folder = tmp_path_factory.mktemp("mlflow")
    uri = f"sqlite:///{folder / 'mlflow.db'}"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MLFLOW_TRACKING_URI", uri)
        mp.setenv("MLFLOW_REGISTRY_URI", uri)
        mlflow.set_tracking_uri(uri)
        mlflow.set_registry_uri(uri)
        client = MlflowClient()
        client.create_registered_model(NAME)
        for i in (1, 2, 3):
            (folder / f"m{i}").mkdir()
            client.create_model_version(NAME, (folder / f"m{i}").as_uri())
        registry.promote(NAME, "1", None, force=True, reason="first model", user="ann")
        registry.promote(NAME, "2", None, force=True, reason="retrained", user="bob")
        client.set_registered_model_alias(NAME, "challenger", "3")
        yield folder
        mlflow.set_tracking_uri("")
        mlflow.set_registry_uri("")


def _client(tmp_path, **kwargs) -> TestClient:
    settings = DashboardSettings(tmp_path / "state.sqlite", tmp_path / "decisions.jsonl", **kwargs)
    return TestClient(create_app(settings), base_url=LOCAL)


def test_models_page_lists_versions_aliases_verdicts_and_history(store, tmp_path):
    with _client(tmp_path, registry_name=NAME, mlflow_ui="http://127.0.0.1:5000") as c:
        page = c.get("/models").text
    rows = dict(re.findall(r'<tr data-version="(\d+)" data-may-serve="(\w+)">', page))
    assert rows == {"3": "false", "2": "true", "1": "true"}
    assert "champion" in page and "challenger" in page
    assert "refused: it carries no gate verdict" in page  # v3
    assert page.index("retrained") < page.index("first model")  # history newest first
    assert 'href="http://127.0.0.1:5000/#/models/oihedge-cascade-test/versions/2"' in page


@pytest.fixture(scope="module")
def bars():
    return list(ReplaySource(simulated_panel(0.5, seed=5)))[:12]


@pytest.mark.parametrize(
    ("version", "shown"),
    [
        (
            "2",
            'aliases <span id="model-aliases">champion</span>; gate <span id="model-gate" class="">passed (may serve)',
        ),
        (
            "3",
            'aliases <span id="model-aliases">challenger</span>; gate <span id="model-gate" class="warn">refused: it carries no gate verdict',
        ),
        ("9", 'registry: <span class="warn">version 9 not in the registry'),
    ],
)
def test_live_page_names_the_served_versions_aliases_and_gate(
    store, bars, tmp_path, version, shown
):
    rig = make_rig(tmp_path, model=StaticModel(Dial(0.5), version))
    rig.loop.run(bars)
    rig.close()
    with _client(tmp_path, registry_name=NAME) as c:
        page = c.get("/live").text
    assert f"{NAME} version {version}" in page and shown in page


def test_live_page_groups_the_errors_of_a_loop_without_a_model(bars, tmp_path):
    rig = make_rig(tmp_path, model=StaticModel(None))
    rig.loop.run(bars[:6])
    rig.close()
    with _client(tmp_path) as c:
        page = c.get("/live").text
        status = c.get("/api/status").json()
    errors = [e for e in status["errors"] if e["error"] == "no model"]
    assert len(errors) == 18  # 3 symbols x 6 bars
    row = re.search(r'<tr data-error="no model" data-count="(\d+)">(.*?)</tr>', page, re.S)
    assert row and row.group(1) == "18" and "BTC, ETH, NEAR" in row.group(2)
    # the loop's own record of it (a model_unavailable event) is one of the latest ten
    assert [e["error"] for e in status["errors"]].count("model_unavailable") == 1
    assert page.count("<td>model_unavailable</td>") == 1
    assert page.count("<td>no model</td>") == 9  # the latest ten, one row each
    assert "version none served" in page


def test_group_errors():
    errors = [
        {"ts": "2025-01-01 00:10:00+00:00", "error": "stale", "venue": "okx", "symbol": "BTC"},
        {"ts": "2025-01-01 00:05:00+00:00", "error": "stale", "venue": "bybit", "symbol": None},
        {"ts": "2025-01-01 00:05:00+00:00", "error": "no price", "symbol": "ETH"},
    ]
    assert group_errors(errors) == [
        {
            "error": "stale",
            "count": 2,
            "symbols": ["BTC"],
            "venues": ["bybit", "okx"],
            "first": "2025-01-01 00:05:00+00:00",
            "last": "2025-01-01 00:10:00+00:00",
        },
        {
            "error": "no price",
            "count": 1,
            "symbols": ["ETH"],
            "venues": [],
            "first": "2025-01-01 00:05:00+00:00",
            "last": "2025-01-01 00:05:00+00:00",
        },
    ]


def test_models_page_says_why_the_registry_is_not_there(tmp_path):
    with _client(tmp_path, registry_problem="no MLflow store at /nowhere/mlflow.db") as c:
        page = c.get("/models")
    assert page.status_code == 200 and "no MLflow store at /nowhere/mlflow.db" in page.text


def _report(folder, policies: dict[str, float]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    (folder / "plots").mkdir(parents=True)
    lines = ["policy,return_usd,max_drawdown_pct"]
    lines += [f"{k},{v},{v / 1e6:.6f}" for k, v in policies.items()]
    (folder / "metrics.csv").write_text("\n".join(lines) + "\n")
    (folder / "metrics.json").write_text(json.dumps({"start": "2025-01-01", "table": []}))
    for name in ("equity", "frontier"):
        fig, ax = plt.subplots(figsize=(3, 2))
        ax.plot([0, 1], [0, 1])
        fig.savefig(folder / "plots" / f"{name}.png")
        plt.close(fig)


def test_backtest_page_shows_the_latest_report(tmp_path):
    root = tmp_path / "backtest"
    _report(root / "old", {"hold": 1.0})
    time.sleep(0.01)
    _report(root / "new", {"hold": 1234567.891, "model": 0.5})
    old = root / "old" / "metrics.csv"
    os.utime(old, (old.stat().st_atime, old.stat().st_mtime - 60))
    assert latest_report(root).folder == root / "new"
    with _client(tmp_path, backtest_dir=root) as c:
        page = c.get("/backtest").text
        assert str(root / "new") in page and "1,234,568" in page and "0.5" in page
        assert "<th>start</th><td>2025-01-01</td>" in page  # metrics.json's scalars
        for name in ("plots/equity.png", "plots/frontier.png"):
            assert f'src="/backtest/files/{name}"' in page
            image = c.get(f"/backtest/files/{name}")
            assert image.status_code == 200 and image.content[:4] == b"\x89PNG"
        # a report without the data files the charts read: the page says so and still shows
        # the table and the PNGs
        assert "metrics.csv lacks the column(s)" in page and "no such file" in page.lower()
        assert c.get("/backtest/files/../new/metrics.csv").status_code == 404
        assert c.get("/backtest/files/metrics.csv").status_code == 404
    with _client(tmp_path, backtest_dir=tmp_path / "none") as c:
        assert "no backtest report" in c.get("/backtest").text
