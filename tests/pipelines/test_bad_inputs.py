"""Bad input, one table: every case must exit 2 with exactly one line on stderr (no
traceback) that names the input (file, config key or option) and what is wrong with it.

The CLI runs in-process (:func:`oihedge.pipelines.cli.main.main`), as in ``test_cli.py``; one small
simulated panel (3 days) and one of 2 days are built once per module.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import mlflow
import polars as pl
import pytest

from oihedge.pipelines.cli.main import main

Setup = Callable[[Path, Path], None]  # (the case's folder, the good 3-day panel)


@dataclass(frozen=True)
class Case:
    """One bad input: the command line, its environment and what the line must say.

    ``args`` and ``env`` values may use ``{P3}`` (a good 3-day panel), ``{P2}`` (2 days),
    ``{H1}`` (the 3 days at 1-hour bars), ``{BAD}`` (the case's own folder, filled by ``setup``) and ``{TMP}``.
    """

    id: str
    args: tuple[str, ...]
    says: tuple[str, ...]
    env: dict[str, str] = field(default_factory=dict)
    setup: Setup | None = None
    xfail: str | None = None
    champion: bool = False  # needs a registered champion (the `champion` fixture)


# -- bad panel files -------------------------------------------------------------------


def _partition(p3: Path) -> pl.DataFrame:
    return pl.read_parquet(p3 / "venue=okx" / "symbol=BTC" / "panel.parquet")


def _flat(bad: Path) -> Path:
    bad.mkdir(parents=True, exist_ok=True)
    return bad / "okx-BTC.parquet"


def _text_file(bad: Path, p3: Path) -> None:
    _flat(bad).write_text("ts,venue,symbol,close\n2025-01-01,okx,BTC,1\n")


def _zero_bytes(bad: Path, p3: Path) -> None:
    _flat(bad).write_bytes(b"")


def _truncated(bad: Path, p3: Path) -> None:
    data = (p3 / "venue=okx" / "symbol=BTC" / "panel.parquet").read_bytes()
    _flat(bad).write_bytes(data[: len(data) // 2])


def _oi_as_text(bad: Path, p3: Path) -> None:
    _partition(p3).with_columns(pl.col("oi_usd").cast(pl.String)).write_parquet(_flat(bad))


def _ts_as_integer_ns(bad: Path, p3: Path) -> None:
    frame = _partition(p3).with_columns(pl.col("ts").dt.epoch("ns"))
    frame.write_parquet(_flat(bad))


def _without(column: str) -> Setup:
    def setup(bad: Path, p3: Path) -> None:
        _partition(p3).drop(column).write_parquet(_flat(bad))

    return setup


def _extra_column(bad: Path, p3: Path) -> None:
    frame = _partition(p3).with_columns(pl.col("oi_usd").alias("oi_usdt"))
    frame.write_parquet(_flat(bad))


def _hourly(p3: Path, out: Path) -> None:
    """The 3-day panel at 1-hour bars, as flat files (the layout of the real sample)."""
    out.mkdir(parents=True, exist_ok=True)
    panel = pl.concat(pl.read_parquet(f) for f in sorted(p3.glob("venue=*/symbol=*/*.parquet")))
    hourly = panel.filter(pl.col("ts").dt.minute() == 0)
    for (venue, symbol), part in hourly.group_by(["venue", "symbol"]):
        part.write_parquet(out / f"{venue}-{symbol}.parquet")


def _without_near(bad: Path, p3: Path) -> None:
    """The 3-day panel without its NEAR partitions."""
    for path in p3.glob("venue=*/symbol=*/*.parquet"):
        if "symbol=NEAR" not in str(path):
            target = bad / path.relative_to(p3)
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(path.read_bytes())


def _copy(p3: Path, bad: Path) -> None:
    for path in p3.rglob("*.parquet"):
        target = bad / path.relative_to(p3)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(path.read_bytes())


def _bad_quarantine_file(bad: Path, p3: Path) -> None:
    _copy(p3, bad)
    next((bad / "_quarantine").glob("*.parquet")).write_bytes(b"not parquet")


def _truncated_partition(bad: Path, p3: Path) -> None:
    _copy(p3, bad)
    path = bad / "venue=bybit" / "symbol=ETH" / "panel.parquet"
    path.write_bytes(path.read_bytes()[:-20])


def _a_file(bad: Path, p3: Path) -> None:
    bad.mkdir(parents=True, exist_ok=True)
    (bad / "file.txt").write_text("a file, not a folder\n")


def _empty_dir(bad: Path, p3: Path) -> None:
    bad.mkdir(parents=True, exist_ok=True)


_FILE_CASES: list[tuple[str, Setup, tuple[str, ...]]] = [
    ("text-named-parquet", _text_file, ("okx-BTC.parquet", "not a readable Parquet file")),
    ("zero-byte-parquet", _zero_bytes, ("okx-BTC.parquet", "not a readable Parquet file")),
    ("truncated-parquet", _truncated, ("okx-BTC.parquet", "not a readable Parquet file")),
    ("oi-usd-as-text", _oi_as_text, ("okx-BTC.parquet", "'oi_usd'", "String")),
    ("ts-as-integer-ns", _ts_as_integer_ns, ("okx-BTC.parquet", "'ts'", "Int64")),
    ("missing-known-at", _without("known_at"), ("okx-BTC.parquet", "missing column 'known_at'")),
    ("missing-liq-short", _without("liq_short_usd"), ("okx-BTC.parquet", "'liq_short_usd'")),
    ("extra-column", _extra_column, ("okx-BTC.parquet", "unexpected column 'oi_usdt'")),
]
_READERS: list[tuple[str, tuple[str, ...]]] = [
    ("data-report", ("data", "report", "--panel", "{BAD}")),
    ("features", ("features", "--panel", "{BAD}", "--out", "{TMP}/f.parquet")),
    ("live-replay", ("live", "--replay", "{BAD}", "--max-bars", "5")),
]

PANEL_FILE_CASES = [
    Case(f"{reader}:{kind}", args, says, setup=setup)
    for kind, setup, says in _FILE_CASES
    for reader, args in _READERS
]

# -- panel folders ---------------------------------------------------------------------

FOLDER_CASES = [
    Case(
        "data-report:missing-panel-dir",
        ("data", "report", "--panel", "{TMP}/nowhere"),
        ("--panel", "nowhere", "does not exist"),
    ),
    Case(
        "features:missing-panel-dir",
        ("features", "--panel", "{TMP}/nowhere", "--out", "{TMP}/f.parquet"),
        ("nowhere", "does not exist"),
    ),
    Case(
        "live-replay:missing-panel-dir",
        ("live", "--replay", "{TMP}/nowhere"),
        ("--replay", "nowhere"),
    ),
    Case(
        "data-report:empty-panel-dir",
        ("data", "report", "--panel", "{BAD}"),
        ("--panel", "no panel"),
        setup=_empty_dir,
    ),
    Case(
        "features:empty-panel-dir",
        ("features", "--panel", "{BAD}", "--out", "{TMP}/f.parquet"),
        ("no panel files", "bad"),
        setup=_empty_dir,
    ),
    Case(
        "data-report:empty-panel-dir-variable",
        ("data", "report"),
        ("data.panel_dir", "empty"),
        env={"OIHEDGE_DATA__PANEL_DIR": ""},
    ),
    Case(
        "data-report:unreadable-quarantine-file",
        ("data", "report", "--panel", "{BAD}"),
        ("_quarantine", "not a readable Parquet file"),
        setup=_bad_quarantine_file,
    ),
    Case(
        "features:truncated-partition",
        ("features", "--panel", "{BAD}", "--out", "{TMP}/f.parquet"),
        ("venue=bybit/symbol=ETH/panel.parquet", "not a readable Parquet file"),
        setup=_truncated_partition,
    ),
    Case(
        "features:range-after-the-panel",
        ("features", "--panel", "{P3}", "--start", "2031-01-01", "--out", "{TMP}/f.parquet"),
        ("--panel {P3}", "no rows between --start 2031-01-01", "it holds rows from"),
    ),
    Case(
        "features:out-under-a-file",
        ("features", "--panel", "{P3}", "--out", "{BAD}/file.txt/f.parquet"),
        ("--out", "file.txt", "cannot write it"),
        setup=_a_file,
    ),
    Case(
        "data-report:json-under-a-file",
        ("data", "report", "--panel", "{P3}", "--json", "{BAD}/file.txt/report.json"),
        ("--json", "file.txt is a file, not a folder"),
        setup=_a_file,
    ),
    Case(
        "backtest:walk-forward-on-2-days",
        ("backtest", "--panel", "{P2}", "--out", "{TMP}/bt"),
        ("panel", "too short"),
    ),
]

# -- configuration that silently disabled hedging (issue #17, item 4) -------------------

HEDGING_CASES = [
    Case(
        "config:unknown-weight-symbol",
        ("live", "--replay", "{P3}", "--max-bars", "5"),
        ("live.weights", "'NOPE'", "BTC, ETH, NEAR"),
        env={"OIHEDGE_LIVE__WEIGHTS__NOPE": "1"},
    ),
    Case(
        "backtest:weight-symbol-not-in-panel",
        ("backtest", "--panel", "{P3}", "--out", "{TMP}/bt"),
        ("'NOPE'", "not in the panel"),
        env={"OIHEDGE_BACKTEST__WEIGHTS__NOPE": "1"},
    ),
    Case(
        "config:weight-key-not-a-symbol",
        ("config", "show"),
        ("live.weights", "'b.t.c'", "not a symbol"),
        env={"OIHEDGE_LIVE__WEIGHTS": "{{ 'b.t.c' = 1 }}"},
    ),
    Case(
        "live-replay:weighted-symbol-not-in-panel",
        ("live", "--replay", "{BAD}", "--max-bars", "1"),
        ("live.weights", "NEAR", "in the panel"),
        env={"OIHEDGE_LIVE__WEIGHTS__NEAR": "1"},
        setup=_without_near,
    ),
    Case(
        "config:unknown-hedge-venue",
        ("live", "--replay", "{P3}", "--max-bars", "5"),
        ("live.hedge_venue", "nosuchvenue", "binanceusdm"),
        env={"OIHEDGE_LIVE__HEDGE_VENUE": "nosuchvenue"},
    ),
    Case(
        "config:unknown-universe-venue",
        ("live", "--replay", "{P3}", "--max-bars", "5"),
        ("universe.venues", "nosuchvenue", "binanceusdm"),
        env={"OIHEDGE_UNIVERSE__VENUES": "binanceusdm,nosuchvenue"},
    ),
    Case(
        "config:symbols-with-semicolons",
        ("live", "--replay", "{P3}", "--max-bars", "5"),
        ("universe.symbols", "btc;eth", "comma-separated"),
        env={"OIHEDGE_UNIVERSE__SYMBOLS": "btc;eth"},
    ),
    Case(
        "config:empty-symbols",
        ("config", "show"),
        ("universe.symbols", "at least 1"),
        env={"OIHEDGE_UNIVERSE__SYMBOLS": ""},
    ),
]

# -- configuration: files, keys, types, durations, URLs --------------------------------


def _file(name: str, content: bytes) -> Setup:
    def setup(bad: Path, p3: Path) -> None:
        bad.mkdir(parents=True, exist_ok=True)
        (bad / name).write_bytes(content)

    return setup


CONFIG_CASES = [
    Case(
        "config:non-utf8-file",
        ("config", "show", "--config", "{BAD}/latin1.toml"),
        ("latin1.toml", "UTF-8"),
        setup=_file("latin1.toml", '[data]\npanel_dir = "daten/über"\n'.encode("latin-1")),
    ),
    Case(
        "config:bad-toml-syntax",
        ("config", "show", "--config", "{BAD}/broken.toml"),
        ("broken.toml", "not valid TOML"),
        setup=_file("broken.toml", b"[data\nbar = 5m\n"),
    ),
    Case(
        "config:missing-file",
        ("config", "show", "--config", "{TMP}/absent.toml"),
        ("absent.toml", "does not exist"),
    ),
    Case(
        "config:unknown-key-in-file",
        ("config", "show", "--config", "{BAD}/typo.toml"),
        ("data.panel", "not a known setting"),
        setup=_file("typo.toml", b'[data]\npanel = "x"\n'),
    ),
    Case(
        "config:unknown-section-variable",
        ("config", "show"),
        ("labelz", "not a known setting"),
        env={"OIHEDGE_LABELZ__HORIZON": "4h"},
    ),
    Case(
        "config:wrong-type",
        ("config", "show"),
        ("train.n_trials", "abc", "integer"),
        env={"OIHEDGE_TRAIN__N_TRIALS": "abc"},
    ),
    Case(
        "config:negative-duration",
        ("config", "show"),
        ("labels.horizon", "-4h", "duration"),
        env={"OIHEDGE_LABELS__HORIZON": "-4h"},
    ),
    Case(
        "config:zero-duration",
        ("config", "show"),
        ("live.warmup", "0d", "> 0"),
        env={"OIHEDGE_LIVE__WARMUP": "0d"},
    ),
    Case(
        "config:horizon-not-whole-bars",
        ("train", "--panel", "{P3}", "--trials", "1"),
        ("labels.horizon = 7m", "data.bar = 5m"),
        env={"OIHEDGE_LABELS__HORIZON": "7m"},
    ),
    Case(
        "config:horizon-not-whole-bars-backtest",
        ("backtest", "--panel", "{P3}", "--out", "{TMP}/bt"),
        ("labels.horizon = 4h30m", "data.bar = 1h"),
        env={"OIHEDGE_LABELS__HORIZON": "270m", "OIHEDGE_DATA__BAR": "1h"},
    ),
    Case(
        "train:horizon-not-whole-panel-bars",
        ("train", "--panel", "{H1}", "--trials", "1"),
        ("labels.horizon = 4h30m", "1h"),
        env={"OIHEDGE_LABELS__HORIZON": "270m"},
    ),
    Case(
        "backtest:horizon-not-whole-panel-bars",
        ("backtest", "--panel", "{H1}", "--out", "{TMP}/bt"),
        ("labels.horizon = 4h30m", "1h"),
        env={"OIHEDGE_LABELS__HORIZON": "270m"},
    ),
    Case(
        "config:symbols-not-a-list",
        ("config", "show", "--config", "{BAD}/int.toml"),
        ("universe.symbols", "int.toml"),
        setup=_file("int.toml", b"[universe]\nsymbols = 5\n"),
    ),
    Case(
        "config:unknown-feed-kind",
        ("config", "show"),
        ("live.feeds.okx", "ftp", "websocket"),
        env={"OIHEDGE_LIVE__FEEDS__OKX": "ftp"},
    ),
    Case(
        "config:negative-weight",
        ("config", "show"),
        ("backtest.weights.BTC", "greater than 0"),
        env={"OIHEDGE_BACKTEST__WEIGHTS__BTC": "-1"},
    ),
    Case(
        "config:section-as-value",
        ("config", "show"),
        ("data.bar.x", "not a section"),
        env={"OIHEDGE_DATA__BAR__X": "1"},
    ),
    Case(
        "train:storage-not-a-database-url",
        ("train", "--panel", "{P3}", "--storage", "foo://bar"),
        ("train.storage", "foo://bar", "sqlite:///"),
    ),
    Case(
        "train:storage-variable-not-a-url",
        ("train", "--panel", "{P3}", "--trials", "1"),
        ("train.storage", "notaurl", "sqlite:///"),
        env={"OIHEDGE_TRAIN__STORAGE": "notaurl"},
    ),
    Case(
        "models-list:tracking-uri-scheme",
        ("models", "list"),
        ("mlflow.tracking_uri", "foo://x", "sqlite"),
        env={"OIHEDGE_MLFLOW__TRACKING_URI": "foo://x"},
    ),
]

# -- command-line options --------------------------------------------------------------

OPTION_CASES = [
    Case(
        "features:bad-start",
        ("features", "--panel", "{P3}", "--start", "yesterday", "--out", "{TMP}/f.parquet"),
        ("--start", "yesterday"),
    ),
    Case(
        "features:end-before-start",
        (
            "features",
            "--panel",
            "{P3}",
            "--start",
            "2025-02-01",
            "--end",
            "2025-01-01",
            "--out",
            "{TMP}/f.parquet",
        ),
        ("--end", "after --start"),
    ),
    Case(
        "features:bad-bar",
        ("features", "--panel", "{P3}", "--bar", "7x", "--out", "{TMP}/f.parquet"),
        ("--bar", "7x"),
    ),
    Case(
        "data-report:bad-bar",
        ("data", "report", "--panel", "{P3}", "--bar", "soon"),
        ("--bar", "soon"),
    ),
    Case(
        "data-report:unknown-option",
        ("data", "report", "--panell", "{P3}"),
        ("--panell", "No such option"),
    ),
    Case(
        "evaluate:bad-start",
        ("evaluate", "--start", "2025-13-45"),
        ("--start", "2025-13-45"),
    ),
    Case(
        "backtest:bad-weights",
        ("backtest", "--panel", "{P3}", "--weights", "BTC=abc"),
        ("--weights", "BTC=abc"),
    ),
    Case(
        "simulate:negative-days",
        ("simulate", "--days", "-1", "--out", "{TMP}/sim"),
        ("--days", "-1"),
    ),
    Case(
        "features:unknown-spec",
        ("features", "--panel", "{P3}", "--spec", "nosuchspec", "--out", "{TMP}/f.parquet"),
        ("nosuchspec",),
    ),
    Case(
        "live:live-with-replay",
        ("live", "--replay", "{P3}", "--live"),
        ("--replay", "--live"),
    ),
]

# -- a registered model on a panel outside its held-out window ---------------------------

MODEL_CASES = [
    Case(
        "evaluate:panel-outside-held-out-window",
        ("evaluate", "--panel", "{P3}"),
        ("2031-01-01", "0 holdout rows", "--panel {P3}"),
        champion=True,
    ),
    Case(
        "backtest:model-on-panel-outside-held-out-window",
        ("backtest", "--panel", "{P3}", "--model", "champion", "--out", "{TMP}/bt"),
        ("2031-01-01", "--panel {P3}"),
        champion=True,
    ),
]

# -- live trading offline --------------------------------------------------------------

LIVE_CASES = [
    Case(
        "live:live-orders-offline",
        ("live", "--live", "--max-bars", "1"),
        ("binanceusdm", "NetworkError"),
        env={
            "OIHEDGE_BINANCEUSDM_API_KEY": "fake-key",
            "OIHEDGE_BINANCEUSDM_SECRET": "fake-secret",
            "OIHEDGE_UNIVERSE__VENUES": "binanceusdm",
            "OIHEDGE_UNIVERSE__SYMBOLS": "BTC",
            "HTTPS_PROXY": "http://127.0.0.1:9",
            "HTTP_PROXY": "http://127.0.0.1:9",
            "NO_PROXY": "",
        },
    ),
]

CASES = [
    *PANEL_FILE_CASES,
    *FOLDER_CASES,
    *HEDGING_CASES,
    *CONFIG_CASES,
    *OPTION_CASES,
    *MODEL_CASES,
    *LIVE_CASES,
]


@pytest.fixture(scope="module")
def panels(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("panels")
    made = {}
    for name, days in (("P3", "3"), ("P2", "2")):
        code = main(["simulate", "--days", days, "--seed", "3", "--out", str(root / name)])
        assert code == 0
        made[name] = root / name
    _hourly(made["P3"], root / "H1")
    made["H1"] = root / "H1"
    return made


@pytest.fixture(scope="module")
def tracking_uri(tmp_path_factory: pytest.TempPathFactory) -> str:
    """An MLflow store made once (MLflow logs its first-use table creation on stderr)."""
    uri = f"sqlite:///{tmp_path_factory.mktemp('mlflow') / 'm.db'}"
    mlflow.MlflowClient(uri).search_experiments()
    return uri


class _Constant(mlflow.pyfunc.PythonModel):
    """A stand-in classifier: the same probability everywhere."""

    def predict(self, context, model_input, params=None):  # noqa: ANN001, ARG002
        import pandas as pd

        return pd.DataFrame({"p_cascade": [0.01] * len(model_input)})


@pytest.fixture(scope="module")
def champion(tracking_uri: str, tmp_path_factory: pytest.TempPathFactory) -> str:
    """A registered champion of the default universe whose card holds a held-out window
    that starts 2031-01-01, after every panel of these tests."""
    from datetime import timedelta

    from oihedge.features.registry import get_spec
    from oihedge.models.label_params import LabelConfig
    from oihedge.models.registry import model_name
    from oihedge.models.workflow import _label_params, feature_spec_card
    from oihedge.pipelines.cli.config import load_config

    cfg = load_config(env={})
    spec = get_spec("core").resolve(timedelta(minutes=5))
    card = {
        "features": list(spec.features),
        "feature_spec": feature_spec_card(spec),
        "horizon": "4h",
        "label_params": _label_params(
            LabelConfig.from_mapping(cfg.labels.model_dump(), cfg.universe.altcoins)
        ),
        "holdout": {"start": "2031-01-01T00:00:00+00:00", "end": "2031-02-01T00:00:00+00:00"},
        "severity": None,
    }
    mlflow.set_tracking_uri(tracking_uri)
    mlflow.set_registry_uri(tracking_uri)
    name = model_name(cfg.universe.name)
    client = mlflow.MlflowClient(tracking_uri, tracking_uri)
    artifacts = tmp_path_factory.mktemp("artifacts")
    experiment = client.create_experiment("bad-inputs", artifact_location=artifacts.as_uri())
    with mlflow.start_run(experiment_id=experiment):
        info = mlflow.pyfunc.log_model(
            name="model", python_model=_Constant(), metadata={"oihedge": card}
        )
    client.create_registered_model(name)
    version = client.create_model_version(name, info.model_uri, model_id=info.model_id)
    client.set_registered_model_alias(name, "champion", version.version)
    mlflow.set_tracking_uri("")
    mlflow.set_registry_uri("")
    return name


@pytest.fixture
def workspace(tmp_path: Path, tracking_uri: str, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A clean folder as the working directory, with no OIHEDGE_* variable set."""
    for name in list(os.environ):
        if name.startswith("OIHEDGE_"):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("OIHEDGE_MLFLOW__TRACKING_URI", tracking_uri)
    monkeypatch.setenv("OIHEDGE_MLFLOW__ARTIFACT_ROOT", str(tmp_path / "artifacts"))
    monkeypatch.setenv("OIHEDGE_TRAIN__STORAGE", f"sqlite:///{tmp_path / 'optuna.db'}")
    yield tmp_path
    mlflow.set_tracking_uri("")
    mlflow.set_registry_uri("")


def _params() -> list[object]:
    params = []
    for case in CASES:
        marks = []
        if case.xfail:
            marks.append(pytest.mark.xfail(reason=case.xfail, strict=True))
        params.append(pytest.param(case, id=case.id, marks=marks))
    return params


def test_there_are_enough_cases() -> None:
    assert len(CASES) >= 40
    assert len({c.id for c in CASES}) == len(CASES)


@pytest.mark.parametrize("case", _params())
def test_bad_input_is_one_line_and_exit_2(
    case: Case,
    panels: dict[str, Path],
    workspace: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    request: pytest.FixtureRequest,
) -> None:
    if case.champion:
        request.getfixturevalue("champion")
        capsys.readouterr()  # what MLflow said while the fixture logged the model
    bad = workspace / "bad"
    if case.setup is not None:
        case.setup(bad, panels["P3"])
    names = {**panels, "BAD": bad, "TMP": workspace}
    for key, value in case.env.items():
        monkeypatch.setenv(key, value.format(**names))
    args = [a.format(**names) for a in case.args]
    code = main(args)
    captured = capsys.readouterr()
    lines = captured.err.splitlines()
    assert code == 2, f"exit {code}; stderr:\n{captured.err[-3000:]}"
    assert len(lines) == 1, f"{len(lines)} lines on stderr:\n{captured.err[-3000:]}"
    line = lines[0]
    assert "Traceback" not in line
    for part in case.says:
        assert part.format(**names) in line, f"{part!r} not in {line!r}"


def _boom() -> str:
    raise TypeError("boom")


def test_a_defect_is_one_line_and_exit_1(workspace, monkeypatch, capsys) -> None:
    """Not bad input but a defect: still one line (naming the command and the error),
    exit 1, and how to see the traceback."""
    monkeypatch.setattr("oihedge.pipelines.cli.main.default_config_text", _boom)
    code = main(["config", "show", "--defaults"])
    lines = capsys.readouterr().err.splitlines()
    assert code == 1
    assert lines == [
        "oihedge config show: internal error: TypeError: boom (OIHEDGE_DEBUG=1 shows the traceback)"
    ]


def test_debug_lets_the_traceback_through(workspace, monkeypatch) -> None:
    monkeypatch.setattr("oihedge.pipelines.cli.main.default_config_text", _boom)
    monkeypatch.setenv("OIHEDGE_DEBUG", "1")
    with pytest.raises(TypeError, match="boom"):
        main(["config", "show", "--defaults"])
