"""``[policy]`` and ``[policy.altcoin]``: derived from PolicyParams, the one declaration of
the policy's parameters, and checked by its rules."""

from __future__ import annotations

import ast
import dataclasses
import math
from datetime import timedelta
from pathlib import Path

import pytest

from oihedge.pipelines.cli.config import (
    Config,
    ConfigError,
    PolicyAltcoinConfig,
    PolicyValues,
    load_config,
)
from oihedge.pipelines.cli.config_policy import ALTCOIN_OVERRIDES, policy_keys
from oihedge.serving.policy.params import COST_FIELDS, PolicyParams, check_value

REPO = Path(__file__).resolve().parents[2]
KEYS = {f.name: f for f in policy_keys()}
DEFAULTS = load_config(env={})
#: a number or two for each kind of field around every rule's bounds
NUMBERS = (-1.0, 0.0, 0.01, 0.5, 0.75, 1.0, 1.5, 2.5, 4.0, math.inf, math.nan)
COUNTS = (-1, 0, 2, 3, 4)
DURATIONS = (timedelta(minutes=1), timedelta(hours=4), timedelta(days=400))


def _class_fields(node: ast.ClassDef) -> set[str]:
    return {
        stmt.target.id
        for stmt in node.body
        if isinstance(stmt, ast.AnnAssign) and isinstance(stmt.target, ast.Name)
    }


def test_no_second_declaration_of_the_policy_parameters():
    """No class but PolicyParams declares the policy's fields: a copy would have to be
    kept in step with it (two classes may share a name or two, as live.max_hedge_usd)."""
    names = {f.name for f in dataclasses.fields(PolicyParams)}
    copies = []
    for package in ("pipelines", "serving", "models", "features"):
        for path in (REPO / package).rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, ast.ClassDef) and node.name != "PolicyParams":
                    shared = _class_fields(node) & names
                    if len(shared) > 3:
                        copies.append(f"{path.relative_to(REPO)}: {node.name} {sorted(shared)}")
    assert not copies, copies


def test_the_keys_are_the_fields_of_policy_params():
    names = [f.name for f in dataclasses.fields(PolicyParams) if f.name not in COST_FIELDS]
    assert list(PolicyValues.model_fields) == names == list(PolicyAltcoinConfig.model_fields)
    assert PolicyValues().model_dump() == {n: KEYS[n].default for n in names}
    assert set(PolicyAltcoinConfig().model_dump().values()) == {None}
    assert Config().policy.altcoin.model_dump(exclude_none=True) == ALTCOIN_OVERRIDES


def test_the_config_builds_the_policy_parameters():
    assert PolicyParams(**DEFAULTS.policy_params("BTC")) == PolicyParams()
    alt = PolicyParams(**DEFAULTS.policy_params("NEAR"))
    assert (alt.hedge_ratio_max, alt.exit_confirm) == (0.6, timedelta(hours=2))
    # the trade cost comes from [costs]: one fee + half-spread, and slippage per unit of vol
    costs = load_config(env={"OIHEDGE_COSTS__TAKER_FEE_BPS": "2.5"}).policy_params("BTC")
    assert costs["costs"].taker_fee_bps == 2.5


@pytest.mark.parametrize(
    ("env", "match"),
    [
        (
            {"OIHEDGE_POLICY__DIV_EXIT": "0.5"},
            r"'policy' \(environment\): policy: div_exit must be in \[0, div_entry\), got "
            r"div_exit=0.5, div_entry=0.08",
        ),
        (
            {"OIHEDGE_POLICY__ALTCOIN__DIV_ENTRY": "0.05"},
            r"policy.altcoin \(with \[policy\]\): div_exit must be in \[0, div_entry\), got "
            r"div_exit=0.1, div_entry=0.05",
        ),
        ({"OIHEDGE_POLICY__P_EARLY": "0.3"}, r"p_early"),
        (
            {"OIHEDGE_POLICY__PARTIAL_CAP": "1.0"},
            r"'policy.partial_cap' = 1.0 \(environment\): partial_cap must be < 1 .*got 1.0",
        ),
        ({"OIHEDGE_POLICY__EXIT_CONFIRM": "soon"}, r"'policy.exit_confirm' = 'soon'"),
    ],
)
def test_bad_policy_config_is_named(env, match):
    with pytest.raises(ConfigError, match=match):
        load_config(env=env)


def _cases() -> list[tuple[str, object]]:
    values = {float: NUMBERS, int: COUNTS, timedelta: DURATIONS}
    return [(name, v) for name, f in KEYS.items() for v in values[type(f.default)]]


@pytest.mark.parametrize("table", ["policy", "policy.altcoin"])
@pytest.mark.parametrize(("name", "value"), _cases())
def test_the_config_refuses_what_policy_params_refuses(table, name, value):
    """A value is accepted in the configuration exactly when PolicyParams accepts it with
    the table's other values, and refused with PolicyParams' message: naming the key when
    the value is out of its own range, the table when it breaks a rule between keys."""
    symbol = "NEAR" if table == "policy.altcoin" else "BTC"
    where = "policy.altcoin (with [policy])" if table == "policy.altcoin" else "policy"
    expected = {**DEFAULTS.policy_params(symbol), name: value}
    try:
        check_value(name, value)
    except ValueError as err:
        line = f"config key '{table}.{name}' = {value!r} (command line): {err}"
    else:
        try:
            PolicyParams(**expected)
        except ValueError as err:
            line = f"config key 'policy' (command line): {where}: {err}"
        else:
            built = load_config(env={}, overrides={f"{table}.{name}": value})
            assert PolicyParams(**built.policy_params(symbol)) == PolicyParams(**expected)
            return
    with pytest.raises(ConfigError) as got:
        load_config(env={}, overrides={f"{table}.{name}": value})
    assert str(got.value) == line


@pytest.mark.parametrize(
    ("overrides", "match"),
    [
        (
            {"policy.altcoin.partial_cap": -0.5},
            r"^config key 'policy.altcoin.partial_cap' = -0.5 \(command line\): "
            r"partial_cap must be >= 0, got -0.5$",
        ),
        (
            {"policy.loss_budget": math.nan},
            r"^config key 'policy.loss_budget' = nan \(command line\): "
            r"loss_budget must be a number, got nan$",
        ),
        (
            {"policy.stress_k": math.inf},
            r"^config key 'policy.stress_k' = inf \(command line\): stress_k must be finite",
        ),
        (
            {"policy.beta_max": 0.8},
            r"^config key 'policy' \(command line\): policy: betas must satisfy 0 < beta_min "
            r"<= beta_default <= beta_max, got 0.5, 1.0, 0.8$",
        ),
        (
            {"policy.altcoin.baseline_fraction": 0.8},
            r"^config key 'policy' \(command line\): policy.altcoin \(with \[policy\]\): "
            r"baseline_fraction must be in \[0, partial_cap=0.75\], got 0.8$",
        ),
        (
            {"policy.full_min_confirmations": 2.5},
            r"^config key 'policy.full_min_confirmations' = 2.5 \(command line\): .*integer",
        ),
    ],
)
def test_a_bad_key_is_one_line_naming_it(overrides, match):
    with pytest.raises(ConfigError, match=match):
        load_config(env={}, overrides=overrides)


def test_an_altcoin_key_not_set_follows_the_majors():
    cfg = load_config(env={"OIHEDGE_POLICY__BETA_MAX": "2.0", "OIHEDGE_POLICY__MIN_HOLD": "6h"})
    assert cfg.policy_params("NEAR")["beta_max"] == 2.0  # not overridden: the majors'
    assert cfg.policy_params("NEAR")["min_hold"] == timedelta(hours=8)  # overridden
    assert cfg.policy_params("BTC")["min_hold"] == timedelta(hours=6)
    alt = load_config(env={"OIHEDGE_POLICY__ALTCOIN__BETA_MAX": "1.2"})
    assert (alt.policy_params("BTC")["beta_max"], alt.policy_params("NEAR")["beta_max"]) == (
        1.5,
        1.2,
    )
