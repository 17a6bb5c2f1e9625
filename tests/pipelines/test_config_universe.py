"""Configuration that used to disable hedging without a word (issue #17, item 4): symbol
case, unknown symbols and venues, and the universe's symbols against a panel's."""

from __future__ import annotations

import os
from pathlib import Path

import polars as pl
import pytest

from oihedge.pipelines.cli.common import CliError, universe_symbols
from oihedge.pipelines.cli.config import ConfigError, load_config, readable_duration
from oihedge.pipelines.cli.main import main
from oihedge.pipelines.store import PanelStore


def test_env_weight_keys_keep_the_symbol_case():
    """`OIHEDGE_LIVE__WEIGHTS__BTC=1` arrives as `btc` (variable names are read in lower
    case); it was stored as `btc`, matched no symbol and the loop made 0 decisions."""
    cfg = load_config(
        env={"OIHEDGE_LIVE__WEIGHTS__BTC": "1", "OIHEDGE_BACKTEST__WEIGHTS__ETH": "2"}
    )
    assert cfg.live.weights == {"BTC": 1.0}
    assert cfg.backtest.weights == {"ETH": 2.0}


def test_toml_weights_and_symbols_are_upper_cased(tmp_path: Path):
    path = tmp_path / "c.toml"
    path.write_text(
        '[universe]\nsymbols = ["btc", "Eth"]\n[live]\nweights = { btc = 1, ETH = 1 }\n'
    )
    cfg = load_config(path, env={})
    assert cfg.universe.symbols == ("BTC", "ETH")
    assert cfg.live.weights == {"BTC": 1.0, "ETH": 1.0}


def test_same_symbol_twice_in_weights_is_an_error(tmp_path: Path):
    path = tmp_path / "c.toml"
    path.write_text("[backtest]\nweights = { btc = 1, BTC = 2 }\n")
    with pytest.raises(ConfigError, match="'backtest.weights'.*'BTC' is given twice"):
        load_config(path, env={})


def test_live_replay_settings_trade_the_env_weighted_symbol(monkeypatch):
    """The loop's settings (cli_live._settings) now hold the symbol the variable names."""
    from oihedge.pipelines.cli.live import _settings

    cfg = load_config(env={"OIHEDGE_LIVE__WEIGHTS__BTC": "1"})
    settings = _settings(cfg, ("BTC", "ETH", "NEAR"), replay=True)
    assert list(settings.params) == ["BTC"]
    assert settings.portfolio_usd == {"BTC": cfg.live.portfolio_usd}


@pytest.mark.parametrize(
    ("env", "match"),
    [
        ({"OIHEDGE_LIVE__WEIGHTS__SOL": "1"}, r"'live.weights'.*'SOL' is not in universe"),
        ({"OIHEDGE_UNIVERSE__SYMBOLS": "btc;eth"}, r"'universe.symbols' = 'btc;eth'.*comma"),
        ({"OIHEDGE_UNIVERSE__VENUES": "okx,kraken"}, r"unknown venue 'kraken'; known venues"),
        ({"OIHEDGE_LIVE__HEDGE_VENUE": "nosuchvenue"}, r"'live.hedge_venue'.*known venues"),
        ({"OIHEDGE_TRAIN__STORAGE": "redis://x"}, r"'train.storage' = 'redis://x'"),
        ({"OIHEDGE_MLFLOW__REGISTRY_URI": "foo://x"}, r"'mlflow.registry_uri'.*scheme"),
        ({"OIHEDGE_LIVE__PANEL_DIR": " "}, r"'live.panel_dir'.*empty"),
        ({"OIHEDGE_LABELS__VOL_WINDOW": "90s"}, r"labels.vol_window = 1m30s .* data.bar = 5m"),
    ],
)
def test_settings_that_disabled_hedging_are_errors(env, match):
    with pytest.raises(ConfigError, match=match):
        load_config(env=env)


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("OIHEDGE_TRAIN__STORAGE", "postgresql+psycopg2://oihedge@127.0.0.1:5432/optuna"),
        ("OIHEDGE_TRAIN__STORAGE", "sqlite:////abs/optuna.db"),
        ("OIHEDGE_MLFLOW__TRACKING_URI", "http://127.0.0.1:5000"),
        ("OIHEDGE_MLFLOW__TRACKING_URI", "mlruns"),
        ("OIHEDGE_MLFLOW__REGISTRY_URI", ""),
        ("OIHEDGE_UNIVERSE__SYMBOLS", "BTC,SOL,1000PEPE"),
        ("OIHEDGE_LABELS__HORIZON", "8h"),
    ],
)
def test_good_values_still_load(key, value):
    load_config(env={key: value})


def test_readable_duration():
    from datetime import timedelta

    assert readable_duration(timedelta(minutes=270)) == "4h30m"
    assert readable_duration(timedelta(days=1, seconds=5)) == "1d5s"
    assert readable_duration(timedelta(hours=4)) == "4h"


def test_default_universe_on_the_real_panel_warns(real_1h_dir, capsys):
    """The default universe (BTC, ETH, NEAR) on the real panel (BTC, ETH, SOL, DOGE, HYPE)
    uses BTC and ETH: said on stderr, with what is left out and what is missing."""
    have = PanelStore(real_1h_dir).scan().select("symbol").unique().collect()["symbol"]
    used = universe_symbols(load_config(env={}), have.to_list(), command="backtest")
    assert used == ("BTC", "ETH")
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1
    assert "backtest uses BTC, ETH (universe.symbols = BTC, ETH, NEAR)" in err
    assert "the panel also holds DOGE, HYPE, SOL, left out by universe.symbols" in err
    assert "not in the panel: NEAR" in err


def test_universe_that_fits_the_panel_is_silent(capsys):
    cfg = load_config(env={"OIHEDGE_UNIVERSE__SYMBOLS": "BTC,ETH"})
    assert universe_symbols(cfg, ["ETH", "BTC"], command="live") == ("BTC", "ETH")
    assert capsys.readouterr().err == ""


def test_weights_choose_the_symbols(capsys):
    cfg = load_config(env={})
    used = universe_symbols(cfg, ["BTC", "ETH", "SOL"], command="backtest", weights={"SOL": 1})
    assert used == ("SOL",)
    assert "left out by backtest.weights" in capsys.readouterr().err
    with pytest.raises(CliError, match=r"none of live.weights \(NEAR\) is in the panel"):
        universe_symbols(
            cfg, ["BTC", "ETH"], command="live", weights={"NEAR": 1}, weights_key="live.weights"
        )


def test_no_universe_symbol_in_the_panel_is_an_error():
    cfg = load_config(env={"OIHEDGE_UNIVERSE__SYMBOLS": "XRP"})
    with pytest.raises(CliError, match=r"live: none of universe.symbols \(XRP\).*holds BTC, ETH"):
        universe_symbols(cfg, ["BTC", "ETH"], command="live")


# -- the commands call it -----------------------------------------------------------------


@pytest.fixture(scope="module")
def panel(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("p") / "p3"
    assert main(["simulate", "--days", "3", "--seed", "3", "--out", str(root)]) == 0
    return root


@pytest.mark.parametrize(
    "args",
    [
        pytest.param(
            ["backtest", "--panel", "{panel}", "--out", "bt"],
            id="backtest",
        ),
        pytest.param(
            ["live", "--replay", "{panel}", "--max-bars", "1"],
            id="live-replay",
        ),
    ],
)
def test_commands_say_which_symbols_they_leave_out(args, panel, tmp_path, monkeypatch, capsys):
    for name in list(os.environ):
        if name.startswith("OIHEDGE_"):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("OIHEDGE_UNIVERSE__SYMBOLS", "BTC,ETH")
    monkeypatch.setenv("OIHEDGE_MLFLOW__TRACKING_URI", f"sqlite:///{tmp_path / 'm.db'}")
    main([a.format(panel=panel) for a in args])
    err = capsys.readouterr().err
    assert "the panel also holds NEAR, left out by universe.symbols" in err


def test_panel_symbols_helper_input_is_a_frame_column():
    """universe_symbols takes any iterable of names, e.g. a polars column."""
    cfg = load_config(env={"OIHEDGE_UNIVERSE__SYMBOLS": "BTC"})
    assert universe_symbols(cfg, pl.Series(["BTC", "BTC"]), command="x") == ("BTC",)


def test_label_windows_against_the_panel_bar():
    from datetime import timedelta

    from oihedge.pipelines.cli.common import check_bar_windows

    cfg = load_config(env={"OIHEDGE_LABELS__HORIZON": "270m"})
    check_bar_windows(cfg, timedelta(minutes=5), source="--panel sim")
    with pytest.raises(
        CliError,
        match=r"^labels.horizon = 4h30m is not a whole number of the 1h bars of --panel real",
    ):
        check_bar_windows(cfg, timedelta(hours=1), source="--panel real")
