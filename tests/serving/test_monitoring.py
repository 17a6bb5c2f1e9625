"""serving/monitoring/: the alert rules pass promtool (syntax and unit tests), read only
metrics the loop exports, and carry their runbook; the Grafana dashboard reads the same
metrics through its ``${DS_PROMETHEUS}`` input.

promtool (Debian package ``prometheus``) is required, never skipped: ``make test``
installs it when it is missing.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from serving.metrics import LoopMetrics

MONITORING = Path(__file__).resolve().parents[2] / "serving" / "monitoring"
RULES = MONITORING / "alerts.yml"
RULE_TESTS = MONITORING / "alerts_test.yml"
DASHBOARD = MONITORING / "grafana_dashboard.json"

#: what issue #19 asks the rules to watch, by the alert that does it
REQUIRED_ALERTS = {
    "OihedgeKillSwitchEngaged",  # kill switch engaged
    "OihedgeVenueStale",  # a venue stale for longer than N bars
    "OihedgeNoDecision",  # no decision for N bars
    "OihedgeModelRefused",  # model refused
    "OihedgeModelLoadFailed",  # reload failed
    "OihedgeOrderErrors",  # order errors
    "OihedgeHedgeBelowTarget",  # hedge below target for longer than N bars
}


def promtool() -> str:
    path = shutil.which("promtool")
    if path is None:
        pytest.fail(
            "promtool not found: `make test` installs it (Debian: apt-get install -y "
            "--no-install-recommends prometheus; elsewhere: https://prometheus.io/download)"
        )
    return path


def run_promtool(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [promtool(), *args], cwd=cwd, capture_output=True, text=True, timeout=120, check=False
    )


# -- PromQL: the metric names an expression reads ----------------------------------------

_STRINGS = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`')
_MATCHERS = re.compile(r"\{[^{}]*\}")
_RANGES = re.compile(r"\[[^\]]*\]")
_GROUPING = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)")
# a name not glued to a number, a `$variable` or a dot, and not a function call
_NAME = re.compile(r"(?<![\w.$])([A-Za-z_:][\w:]*)\b(?!\s*\()")
_KEYWORDS = {
    "and",
    "or",
    "unless",
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
    "offset",
    "bool",
    "inf",
    "nan",
}


def metric_names(expr: str) -> set[str]:
    """The metric names ``expr`` selects (label matchers, ranges, grouping labels,
    strings, Grafana ``$variables`` and function names left out)."""
    text = _STRINGS.sub(" ", expr)
    text = _MATCHERS.sub(" ", text)
    text = _RANGES.sub(" ", text)
    text = _GROUPING.sub(" ", text)
    return {m for m in _NAME.findall(text) if m.lower() not in _KEYWORDS}


def exported_names() -> set[str]:
    """Every sample name :class:`LoopMetrics` can export, labelled children or not."""
    suffixes = {
        "counter": ("_total",),
        "histogram": ("_bucket", "_count", "_sum"),
        "gauge": ("",),
        "stateset": ("",),
        "info": ("_info",),
    }
    names = set()
    for family in LoopMetrics().registry.collect():
        names.update(family.name + s for s in suffixes[family.type])
    return names


def label_values(exprs: list[str], label: str) -> set[str]:
    """Values an ``=`` or ``=~`` matcher of ``label`` names (a regex's alternatives)."""
    values = set()
    for expr in exprs:
        for op, value in re.findall(rf'\b{label}\s*(=~|=)\s*"([^"]*)"', expr):
            values.update(value.split("|") if op == "=~" else [value])
    return values


def test_metric_names_reads_selectors_and_leaves_everything_else_out():
    expr = (
        'sum by (status) (increase(oihedge_orders_total{status=~"a|b"}[5m] offset 1h))'
        " / on(symbol) group_left oihedge_hedge_usd > 0.8 * foo:bar_ratio"
        ' and time() - last_ts{symbol=~"$symbol"} > 3 * 300 or rate(x[$__rate_interval])'
    )
    assert metric_names(expr) == {
        "oihedge_orders_total",
        "oihedge_hedge_usd",
        "foo:bar_ratio",
        "last_ts",
        "x",
    }
    assert metric_names("absent(oihedge_bars_total)") == {"oihedge_bars_total"}
    assert metric_names("histogram_quantile(0.99, sum by (le) (rate(h_bucket[1m])))") == {
        "h_bucket"
    }


def test_exported_names_follow_the_registry():
    names = exported_names()
    assert {
        "oihedge_orders_total",
        "oihedge_decision_latency_seconds_bucket",
        "oihedge_tier",
        "oihedge_kill_switch_engaged",
        "oihedge_model_version_info",
    } <= names
    assert "oihedge_orders" not in names  # a counter is read as <name>_total


# -- the alert rules ---------------------------------------------------------------------


def alert_rules() -> list[dict[str, Any]]:
    groups = yaml.safe_load(RULES.read_text(encoding="utf-8"))["groups"]
    return [rule for group in groups for rule in group["rules"]]


def test_rules_pass_promtool_check():
    result = run_promtool("check", "rules", str(RULES), cwd=MONITORING)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(alert_rules())} rules found" in result.stdout


def test_promtool_check_refuses_a_broken_rule(tmp_path):
    broken = RULES.read_text(encoding="utf-8").replace(
        "oihedge_kill_switch_engaged == 1", "oihedge_kill_switch_engaged == (1"
    )
    assert broken != RULES.read_text(encoding="utf-8")
    (tmp_path / "alerts.yml").write_text(broken, encoding="utf-8")
    result = run_promtool("check", "rules", str(tmp_path / "alerts.yml"), cwd=tmp_path)
    assert result.returncode != 0
    assert "OihedgeKillSwitchEngaged" in result.stdout + result.stderr


def test_rule_unit_tests_pass():
    result = run_promtool("test", "rules", RULE_TESTS.name, cwd=MONITORING)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_rule_unit_tests_fail_on_a_looser_threshold(tmp_path):
    """The unit tests pin the thresholds: 5 bars instead of 3 for a stale venue fails."""
    looser = RULES.read_text(encoding="utf-8").replace(
        "oihedge_venue_staleness_seconds > 3 * 300", "oihedge_venue_staleness_seconds > 5 * 300"
    )
    assert looser != RULES.read_text(encoding="utf-8")
    (tmp_path / "alerts.yml").write_text(looser, encoding="utf-8")
    shutil.copy(RULE_TESTS, tmp_path / RULE_TESTS.name)
    result = run_promtool("test", "rules", RULE_TESTS.name, cwd=tmp_path)
    assert result.returncode != 0
    assert "OihedgeVenueStale" in result.stdout + result.stderr


def test_every_required_alert_is_there_and_unit_tested():
    names = [rule["alert"] for rule in alert_rules()]
    assert len(names) == len(set(names))
    assert set(names) >= REQUIRED_ALERTS
    tested = RULE_TESTS.read_text(encoding="utf-8")
    untested = [name for name in names if f'alertname="{name}"' not in tested]
    assert not untested, f"alerts without a promtool unit test: {untested}"


def test_every_alert_carries_severity_summary_and_runbook():
    for rule in alert_rules():
        name = rule["alert"]
        assert rule["labels"]["severity"] in {"critical", "warning"}, name
        notes = rule["annotations"]
        assert set(notes) == {"summary", "description"}, name
        assert "Check:" in notes["description"], f"{name}: no step saying what to check"
        assert "Resume:" in notes["description"], f"{name}: no step saying how to resume"


def test_rules_read_only_exported_metrics():
    exported = exported_names()
    for rule in alert_rules():
        used = metric_names(rule["expr"])
        assert used, rule["alert"]
        assert used <= exported, f"{rule['alert']}: {sorted(used - exported)} not exported"


def test_the_statuses_and_kinds_alerted_on_are_exported_from_the_start():
    """increase() misses a counter's first sample: a labelled counter an alert reads must
    exist at 0 before its first increment."""
    exprs = [rule["expr"] for rule in alert_rules()]
    text = LoopMetrics().text()
    statuses, kinds = label_values(exprs, "status"), label_values(exprs, "kind")
    assert statuses and kinds
    for status in statuses:
        assert f'oihedge_orders_total{{status="{status}"}} 0.0' in text, status
    for kind in kinds:
        assert f'oihedge_errors_total{{kind="{kind}"}} 0.0' in text, kind
