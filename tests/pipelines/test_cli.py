from __future__ import annotations

import json
import subprocess
import sys

import pytest

from oihedge.pipelines.cli.main import main


def run(args: list[str], capsys) -> tuple[int, str, str]:
    code = main(args)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.mark.parametrize("command", [[], ["simulate"], ["config"], ["config", "show"]])
def test_help_everywhere(command, capsys):
    code, out, _ = run([*command, "--help"], capsys)
    assert code == 0
    assert "Usage" in out


def test_bad_argument_is_one_line_exit_2(capsys):
    code, _, err = run(["simulate", "--days", "abc"], capsys)
    assert code == 2
    assert len(err.strip().splitlines()) == 1
    assert "--days" in err and "abc" in err


def test_unknown_command_exit_2(capsys):
    code, _, err = run(["frobnicate"], capsys)
    assert code == 2
    assert "frobnicate" in err and len(err.strip().splitlines()) == 1


def test_bad_config_value_exit_2(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("OIHEDGE_DATA__BAR", "soon")
    code, _, err = run(["config", "show"], capsys)
    assert code == 2
    assert "data.bar" in err and "soon" in err
    assert len(err.strip().splitlines()) == 1


def test_config_show_prints_effective_config(tmp_path, capsys, monkeypatch):
    cfg = tmp_path / "c.toml"
    cfg.write_text('[universe]\nsymbols = ["BTC"]\n')
    code, out, _ = run(["config", "show", "--config", str(cfg)], capsys)
    assert code == 0
    assert json.loads(out)["universe"]["symbols"] == ["BTC"]


def test_console_script_installed():
    proc = subprocess.run(
        [sys.executable, "-m", "oihedge.pipelines.cli.main", "--help"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 0 and "simulate" in proc.stdout


def test_version(capsys):
    code, out, _ = run(["--version"], capsys)
    assert code == 0 and out.strip() == "oihedge, version 0.1.0"


def test_json_to_stdout_leaves_the_tables_on_stderr(tmp_path, capsys):
    panel = tmp_path / "p"
    assert run(["simulate", "--days", "2", "--seed", "3", "--out", str(panel)], capsys)[0] == 0
    code, out, err = run(["data", "report", "--panel", str(panel), "--json", "-"], capsys)
    assert code == 0
    assert json.loads(out)["panel"] == str(panel)  # stdout is the JSON alone
    assert "data report: " in err and "quarantined rows" in err  # the tables: on stderr
    # the next command prints its tables on stdout again
    code, out, _ = run(["data", "report", "--panel", str(panel)], capsys)
    assert code == 0 and "data report" in out


def test_a_value_where_a_section_belongs_names_its_own_source(tmp_path, capsys, monkeypatch):
    bad = tmp_path / "c.toml"
    bad.write_text("data = 5\n")
    monkeypatch.setenv("OIHEDGE_DATA__PANEL_DIR", str(tmp_path))
    code, _, err = run(["config", "show", "--config", str(bad)], capsys)
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert f"config key 'data' ({bad}): data = 5 is not a section" in err
    assert "but 'data.panel_dir' (environment) sets a key inside it" in err


def test_reading_the_registry_from_another_folder_creates_no_empty_store(
    tmp_path, capsys, monkeypatch
):
    for name in ("OIHEDGE_MLFLOW__TRACKING_URI", "OIHEDGE_MLFLOW__REGISTRY_URI"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(tmp_path)
    for command in (["models", "list"], ["rollback", "-m", "x"], ["evaluate"]):
        code, _, err = run(command, capsys)
        assert code == 2 and len(err.strip().splitlines()) == 1, err
        assert f"no MLflow store at {tmp_path}/mlflow/mlflow.db" in err
    assert not (tmp_path / "mlflow").exists()
