from __future__ import annotations

import tomllib
from datetime import timedelta
from pathlib import Path

import pytest

from oihedge.pipelines.cli.config import Config, ConfigError, default_config_text, load_config


def test_defaults_file_matches_model_defaults():
    """The documented TOML and the typed model must say the same thing."""
    assert load_config(env={}) == Config()
    assert tomllib.loads(default_config_text())["data"]["bar"] == "5m"


def test_defaults_are_typed():
    cfg = load_config(env={})
    assert cfg.data.bar == timedelta(minutes=5)
    assert cfg.labels.horizon == timedelta(hours=4)
    assert cfg.universe.venues == ("binanceusdm", "bybit", "okx", "hyperliquid")
    assert cfg.mlflow.tracking_uri.startswith("sqlite:///mlflow/")
    assert cfg.labels.altcoin.oi_drop_pct > cfg.labels.oi_drop_pct


def test_file_then_env_then_flags(tmp_path: Path):
    path = tmp_path / "c.toml"
    path.write_text('[data]\nbar = "1h"\npanel_dir = "from-file"\n[labels]\nhorizon = "8h"\n')
    env = {
        "OIHEDGE_DATA__PANEL_DIR": "from-env",
        "OIHEDGE_UNIVERSE__SYMBOLS": "BTC, SOL",
        "OIHEDGE_LABELS__ALTCOIN__OI_DROP_PCT": "12.5",
        "OIHEDGE_BINANCEUSDM_API_KEY": "x",
    }
    cfg = load_config(path, env=env, overrides={"labels.horizon": "2h", "data.bar": None})
    assert cfg.data.bar == timedelta(hours=1)  # file; the None flag is "not given"
    assert cfg.data.panel_dir == Path("from-env")  # env beats file
    assert cfg.labels.horizon == timedelta(hours=2)  # flag beats file
    assert cfg.universe.symbols == ("BTC", "SOL")
    assert cfg.labels.altcoin.oi_drop_pct == 12.5


def test_config_is_frozen():
    cfg = load_config(env={})
    with pytest.raises(Exception, match="frozen"):
        cfg.data.bar = timedelta(hours=1)  # type: ignore[misc]


@pytest.mark.parametrize(
    ("env", "match"),
    [
        (
            {"OIHEDGE_DATA__BAR": "-5m"},
            r"config key 'data.bar' = '-5m' \(environment\): duration must",
        ),
        (
            {"OIHEDGE_LABELS__OI_DROP_PCT": "150"},
            r"'labels.oi_drop_pct' = 150 \(environment\).*less than 100",
        ),
        (
            {"OIHEDGE_DATA__PANEL_DIRR": "x"},
            r"'data.panel_dirr' \(environment\) is not a known setting",
        ),
        ({"OIHEDGE_UNIVERSE__NAME": "Bad Name"}, r"'universe.name' = 'Bad Name'"),
        ({"OIHEDGE_SIMULATE__SEED": "abc"}, r"'simulate.seed' = 'abc'"),
    ],
)
def test_bad_values_name_key_and_value(env, match):
    with pytest.raises(ConfigError, match=match):
        load_config(env=env)


def test_bad_file_is_named(tmp_path: Path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "missing.toml", env={})
    broken = tmp_path / "broken.toml"
    broken.write_text("[data\n")
    with pytest.raises(ConfigError, match="broken.toml' is not valid TOML"):
        load_config(broken, env={})
    wrong = tmp_path / "wrong.toml"
    wrong.write_text("[labels]\nhorizon = 4\n")
    with pytest.raises(ConfigError, match=r"'labels.horizon' = 4 \(.*wrong.toml\)"):
        load_config(wrong, env={})


def test_live_feeds_choose_websocket_or_rest_per_known_venue():
    cfg = load_config(env={})
    assert cfg.live.feeds == {} and cfg.live.stream_max_silence.total_seconds() == 60
    cfg = load_config(env={"OIHEDGE_LIVE__FEEDS__OKX": "rest"})
    assert cfg.live.feeds == {"okx": "rest"}
    with pytest.raises(ConfigError, match="'live.feeds.okx' = 'ws'.*'websocket' or 'rest'"):
        load_config(env={"OIHEDGE_LIVE__FEEDS__OKX": "ws"})
    with pytest.raises(ConfigError, match="feeds names an unknown venue 'kraken'"):
        load_config(env={"OIHEDGE_LIVE__FEEDS__KRAKEN": "rest"})


def test_live_explain_settings_reach_the_loop_settings():
    from oihedge.pipelines.cli.live import _settings

    cfg = load_config(env={})
    settings = _settings(cfg, ("BTC", "ETH"), replay=True)
    assert settings.explain_min_change == 0.02
    assert settings.explain_max_age == timedelta(hours=2)
    assert settings.explain_timeout == timedelta(seconds=2)
    cfg = load_config(
        env={
            "OIHEDGE_LIVE__EXPLAIN_MIN_CHANGE": "0",
            "OIHEDGE_LIVE__EXPLAIN_MAX_AGE": "15m",
            "OIHEDGE_LIVE__EXPLAIN_TIMEOUT": "10s",
        }
    )
    settings = _settings(cfg, ("BTC", "ETH"), replay=True)
    assert settings.explain_min_change == 0 and settings.explain_max_age == timedelta(minutes=15)
    assert settings.explain_timeout == timedelta(seconds=10)
    with pytest.raises(ConfigError, match="'live.explain_min_change' = -1"):
        load_config(env={"OIHEDGE_LIVE__EXPLAIN_MIN_CHANGE": "-1"})


def test_relative_paths_in_a_config_file_are_taken_from_its_folder(tmp_path: Path, monkeypatch):
    home = tmp_path / "project"
    home.mkdir()
    path = home / "oihedge.toml"
    path.write_text(
        '[data]\npanel_dir = "data/panel"\n'
        '[mlflow]\ntracking_uri = "sqlite:///mlflow/m.db"\nartifact_root = "/abs/artifacts"\n'
        '[train]\nstorage = "sqlite:///mlflow/optuna.db"\n'
        '[live]\nstate_db = "live/state.sqlite"\n'
    )
    cfg = load_config(path, env={"OIHEDGE_LIVE__DECISION_LOG": "rel/decisions.jsonl"})
    assert cfg.data.panel_dir == home / "data" / "panel"
    assert cfg.mlflow.tracking_uri == f"sqlite:///{home}/mlflow/m.db"
    assert cfg.train.storage == f"sqlite:///{home}/mlflow/optuna.db"
    assert cfg.live.state_db == home / "live" / "state.sqlite"
    assert cfg.mlflow.artifact_root == Path("/abs/artifacts")  # absolute: as written
    # the environment and the defaults are read from the current folder, as before
    assert cfg.live.decision_log == Path("rel/decisions.jsonl")
    assert cfg.backtest.out_dir == Path("out/backtest")
    # the same file read through a relative path names the same folders
    monkeypatch.chdir(tmp_path)
    relative = load_config(Path("project/oihedge.toml"), env={})
    assert relative.data.panel_dir == home / "data" / "panel"
