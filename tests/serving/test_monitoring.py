"""serving/monitoring/: the alert rules pass promtool (syntax and unit tests), read only
metrics the loop exports, and carry their runbook; the Grafana dashboard reads the same
metrics through its ``${DS_PROMETHEUS}`` input.

promtool (Debian package ``prometheus``) is required, never skipped: ``make test``
installs it when it is missing.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from oihedge.serving.live.metrics import LoopMetrics

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


# -- the Grafana dashboard ---------------------------------------------------------------

DS = {"type": "prometheus", "uid": "${DS_PROMETHEUS}"}
#: Grafana's variables, as promtool can read them
GRAFANA_VARS = {
    "$__rate_interval": "5m",
    "$__interval": "1m",
    "$__range": "1h",
    "$symbol": ".*",
    "$venue": ".*",
}


def dashboard() -> dict[str, Any]:
    return json.loads(DASHBOARD.read_text(encoding="utf-8"))


def panels() -> list[dict[str, Any]]:
    """Every panel but the rows (rows' nested panels included)."""
    found = []
    for panel in dashboard()["panels"]:
        found.extend(panel.get("panels", []) if panel["type"] == "row" else [panel])
    return found


def panel_exprs() -> list[str]:
    return [t["expr"] for p in panels() for t in p["targets"]]


def variable_queries() -> list[str]:
    return [v["definition"] for v in dashboard()["templating"]["list"]]


def as_promql(expr: str) -> str:
    for name, value in sorted(GRAFANA_VARS.items(), key=lambda kv: -len(kv[0])):
        expr = expr.replace(name, value)
    assert "$" not in expr, f"a Grafana variable promtool cannot read: {expr}"
    return expr


def test_dashboard_reads_prometheus_through_its_input_only():
    board = dashboard()
    assert board["__inputs"] == [
        {
            "name": "DS_PROMETHEUS",
            "label": "Prometheus",
            "description": board["__inputs"][0]["description"],
            "type": "datasource",
            "pluginId": "prometheus",
            "pluginName": "Prometheus",
        }
    ]
    assert panels()
    for panel in panels():
        assert panel["datasource"] == DS, panel["title"]
        assert panel["targets"], panel["title"]
        for t in panel["targets"]:
            assert t["datasource"] == DS, panel["title"]
    for variable in board["templating"]["list"]:
        assert variable["datasource"] == DS, variable["name"]
    # no datasource named any other way (a uid of the author's own Grafana, say)
    uids = re.findall(r'"uid": "([^"]*)"', DASHBOARD.read_text(encoding="utf-8"))
    assert set(uids) == {"${DS_PROMETHEUS}", "-- Grafana --", board["uid"]}


def test_dashboard_panels_are_laid_out_without_overlap():
    cells: dict[tuple[int, int], str] = {}
    top = dashboard()["panels"]
    ids = [p["id"] for p in top] + [n["id"] for p in top for n in p.get("panels", [])]
    assert len(ids) == len(set(ids)), ids
    for panel in dashboard()["panels"]:
        g = panel["gridPos"]
        assert g["x"] >= 0 and g["w"] > 0 and g["x"] + g["w"] <= 24, panel["title"]
        for x in range(g["x"], g["x"] + g["w"]):
            for y in range(g["y"], g["y"] + g["h"]):
                assert (x, y) not in cells, f"{panel['title']} overlaps {cells[(x, y)]}"
                cells[(x, y)] = panel["title"]


def test_dashboard_reads_only_exported_metrics_and_shows_every_one():
    exported = exported_names()
    used: set[str] = set()
    for expr in panel_exprs():
        names = metric_names(expr)
        assert names, expr
        assert names <= exported, f"{sorted(names - exported)} not exported: {expr}"
        used |= names
    for query in variable_queries():
        match = re.fullmatch(r"label_values\((\w+), *(\w+)\)", query)
        assert match, query
        assert match.group(1) in exported, query
        used.add(match.group(1))
    families = {f.name for f in LoopMetrics().registry.collect()}
    shown = {f for f in families if any(n == f or n.startswith(f + "_") for n in used)}
    assert shown == families, f"metrics without a panel: {sorted(families - shown)}"


def test_dashboard_queries_are_valid_promql(tmp_path):
    """promtool parses every panel query (Grafana's variables given values)."""
    rules = [
        {"record": f"dashboard:panel_{i}", "expr": as_promql(expr)}
        for i, expr in enumerate(panel_exprs())
    ]
    path = tmp_path / "dashboard_rules.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    result = run_promtool("check", "rules", str(path), cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_tier_panel_shows_each_tier_as_its_level(tmp_path):
    """The tier is an enum (one 0/1 series per state); the panel folds it into one level
    per symbol, which its value mappings name."""
    from oihedge.serving.policy.policy import TIERS, VOL_TIER

    (panel,) = [p for p in panels() if p["title"] == "Tier"]
    names = panel["fieldConfig"]["defaults"]["mappings"][0]["options"]
    levels = {v["text"]: float(k) for k, v in names.items()}
    assert set(levels) == {*TIERS, VOL_TIER}
    series, expected = [], []
    for i, held in enumerate(levels):  # one symbol holding each tier
        symbol = f"S{i}"
        for tier in levels:
            labels = f'{{symbol="{symbol}", oihedge_tier="{tier}"}}'
            series.append(
                {"series": f"oihedge_tier{labels}", "values": "1" if tier == held else "0"}
            )
        expected.append({"labels": f'{{symbol="{symbol}"}}', "value": levels[held]})
    tests = {
        "rule_files": [],
        "evaluation_interval": "1m",
        "tests": [
            {
                "interval": "1m",
                "input_series": series,
                "promql_expr_test": [
                    {
                        "expr": as_promql(panel["targets"][0]["expr"]),
                        "eval_time": "0m",
                        "exp_samples": expected,
                    }
                ],
            }
        ],
    }
    (tmp_path / "tier_test.yml").write_text(yaml.safe_dump(tests))
    result = run_promtool("test", "rules", "tier_test.yml", cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr


# -- the loop exports what they read -----------------------------------------------------


def test_a_replay_exports_every_series_the_rules_and_the_dashboard_read(tmp_path):
    """Scraped from /metrics (loopback) during a replay with a hedge on and the kill
    switch engaged: every metric name the rules and the dashboard select has a sample,
    and the series the loop sets per decision and per bar hold the loop's values."""
    import urllib.request

    from live_support import Dial, make_rig, simulated_panel

    from oihedge.serving.execution.guards import engage_kill_switch
    from oihedge.serving.feeds.replay import ReplaySource
    from oihedge.serving.live.decision_log import read_records

    bars = list(ReplaySource(simulated_panel(1, seed=5)))
    metrics = LoopMetrics()
    port = metrics.serve(0)
    rig = make_rig(tmp_path, predictor=Dial(0.9), metrics=metrics)
    rig.loop.run(bars[:150])
    engage_kill_switch(tmp_path / "KILL", "test: stop")
    rig.loop.run(bars[150:153])
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
        text = response.read().decode()
    rig.close()
    samples: dict[str, list[str]] = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name = line.split("{")[0].split(" ")[0]
            samples.setdefault(name, []).append(line)
    wanted = set().union(*(metric_names(r["expr"]) for r in alert_rules()))
    wanted |= set().union(*(metric_names(e) for e in panel_exprs()))
    assert wanted - set(samples) == set()
    assert samples["oihedge_kill_switch_engaged"] == ["oihedge_kill_switch_engaged 1.0"]
    last = {r["symbol"]: r for r in read_records(rig.log_path) if r["kind"] == "decision"}
    for symbol, record in last.items():
        (target,) = [x for x in samples["oihedge_hedge_target_usd"] if f'"{symbol}"' in x]
        assert float(target.split()[-1]) == pytest.approx(record["target_usd"])
        assert record["target_usd"] > 0  # the dial hedged every symbol
        assert f'oihedge_tier{{oihedge_tier="{record["tier"]}",symbol="{symbol}"}} 1.0' in text
    stamp = float(samples["oihedge_last_decision_timestamp_seconds"][0].split()[-1])
    assert stamp > 0
    # a restart with the switch still engaged records no change, and still reads 1
    again = LoopMetrics()
    rig = make_rig(tmp_path, predictor=Dial(0.9), metrics=again)
    rig.loop.run(bars[153:155])
    rig.close()
    assert "oihedge_kill_switch_engaged 1.0" in again.text()
