"""The model commands end to end: simulate -> train -> promote -> list -> evaluate -> rollback."""

from __future__ import annotations

import json

import mlflow
import pytest

from oihedge.pipelines.cli.main import main


@pytest.fixture
def workspace(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("OIHEDGE_MLFLOW__TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow' / 'm.db'}")
    monkeypatch.setenv("OIHEDGE_MLFLOW__ARTIFACT_ROOT", str(tmp_path / "mlflow" / "artifacts"))
    monkeypatch.setenv("OIHEDGE_TRAIN__STORAGE", f"sqlite:///{tmp_path / 'optuna.db'}")
    monkeypatch.setenv("OIHEDGE_TRAIN__N_SPLITS", "2")
    monkeypatch.setenv("OIHEDGE_TRAIN__HOLDOUT_FRACTION", "0.3")
    monkeypatch.setenv("OIHEDGE_UNIVERSE__NAME", "clitest")
    yield tmp_path
    mlflow.set_tracking_uri("")
    mlflow.set_registry_uri("")


def _run(args, capsys):
    code = main(args)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_train_promote_list_evaluate_rollback(workspace, capsys):
    assert _run(["simulate", "--days", "30", "--seed", "7", "--out", "panel"], capsys)[0] == 0
    code, out, err = _run(
        ["train", "--panel", "panel", "--trials", "2", "--json", "t1.json"], capsys
    )
    assert code == 0, err
    assert "registered oihedge-cascade-clitest v1 as challenger" in out
    first = json.loads((workspace / "t1.json").read_text())
    assert [m["scorer"] for m in first["metrics"]][:2] == ["model", "fixed_rule"]
    # the severity fitted with the model, and its probability against the entry level
    check = first["entry_check"]
    assert check["window"] == first["window"] and check["bars"] > 0
    if check["warning"]:
        assert check["share_at_entry"] == 0 and check["warning"] in out
    else:
        assert check["share_at_entry"] > 0 and "of the held-out bars on" in out
    assert first["severity"] is None or first["severity"]["k"] > 0

    code, out, err = _run(["promote", "--panel", "panel", "--json", "p1.json"], capsys)
    assert code == 0, err
    assert "champion: oihedge-cascade-clitest v1 (was none)" in out

    # a second model on the same panel: the gate compares both on the same window
    code, _, err = _run(["train", "--panel", "panel", "--trials", "2", "--study", "second"], capsys)
    assert code == 0, err
    code, out, err = _run(["promote", "--panel", "panel", "--json", "p2.json"], capsys)
    verdict = json.loads((workspace / "p2.json").read_text())
    metrics = {r["metric"] for r in verdict["gate"]["rows"]}
    # the hedge metrics: tail loss at equal mean hedge, and fees + slippage (issue #16)
    assert {"pr_auc", "brier", "tail_excess", "fees_slippage_annual"} <= metrics
    assert isinstance(verdict["gate"]["refusals"], list)
    assert all(r["champion"] is not None for r in verdict["gate"]["rows"])
    if verdict["promoted"]:
        assert code == 0 and "champion: oihedge-cascade-clitest v2 (was 1)" in out
    else:
        assert code == 2 and "gate refused" in err
        code, out, err = _run(["promote", "--panel", "panel", "--force"], capsys)
        assert code == 2 and "--force needs --message" in err
        code, out, err = _run(["promote", "--panel", "panel", "--force", "-m", "test"], capsys)
        assert code == 0, err

    code, out, _ = _run(["models", "list", "--json", "list.json"], capsys)
    assert code == 0
    listed = json.loads((workspace / "list.json").read_text())
    assert [v["version"] for v in listed["versions"]] == ["2", "1"]
    assert set(listed["versions"][0]["aliases"]) == {"challenger", "champion"}

    code, out, err = _run(["evaluate", "--panel", "panel", "--json", "e.json"], capsys)
    assert code == 0, err
    evaluated = json.loads((workspace / "e.json").read_text())
    assert evaluated["metrics"][0]["scorer"] == "model (champion)"

    code, out, err = _run(["rollback", "-m", "back"], capsys)
    assert code == 0, err
    assert "champion: oihedge-cascade-clitest v1 (rolled back from v2)" in out
    code, _, err = _run(["rollback"], capsys)
    assert code == 2 and "no previous champion" in err


def test_train_without_panel_is_one_line(workspace, capsys):
    code, _, err = _run(["train", "--panel", "nowhere"], capsys)
    assert code == 2
    assert "no panel files found" in err and len(err.strip().splitlines()) == 1


def test_train_on_a_calm_panel_says_why(workspace, capsys):
    assert _run(["simulate", "--days", "3", "--seed", "3", "--out", "calm"], capsys)[0] == 0
    code, _, err = _run(["train", "--panel", "calm", "--trials", "1"], capsys)
    assert code == 2
    assert "positive (cascade) rows" in err and "use a longer panel" in err
