"""``oihedge dashboard`` in a real headless browser: Debian's chromium driven by
Playwright (never a downloaded browser), the app served by uvicorn on 127.0.0.1.

Each page loads with no console error, the Timeline's and the Backtest's Plotly charts
hold their data's points, and the Live page shows a new bar once the loop has decided it. Screenshots of
each page go to the test's temp folder. Without chromium this fails: ``make test``
installs it (apt package ``chromium``).
"""

from __future__ import annotations

import threading
from datetime import timedelta
from pathlib import Path

import polars as pl
import pytest
from backtest_cascade import N, write_report
from live_support import Dial, make_rig

from oihedge.pipelines.cli.main import main
from oihedge.pipelines.sim.output import write_simulation
from oihedge.pipelines.sim.simulate import SimulationConfig, simulate
from oihedge.serving.dashboard import DashboardSettings
from oihedge.serving.dashboard.screenshots import CHROMIUM, PAGES, serving
from oihedge.serving.feeds.replay import ReplaySource
from oihedge.serving.live.decision_log import read_records


@pytest.fixture(scope="module")
def running(tmp_path_factory):
    """A loop that has decided 140 bars and still holds its state, its next bars, and
    the dashboard over its files at ``base``."""
    folder = tmp_path_factory.mktemp("loop")
    simulated = simulate(SimulationConfig(days=1.0, seed=5))
    write_simulation(simulated, folder / "panel", bar=timedelta(minutes=5))
    bars = list(ReplaySource(simulated.panel))
    dial = Dial(0.02)
    rig = make_rig(folder, predictor=dial)
    rig.loop.run(bars[:60])
    dial.p = 0.9
    rig.loop.run(bars[60:100])
    dial.p = 0.05
    rig.loop.run(bars[100:140])
    rig.loop.log.flush()
    settings = DashboardSettings(
        folder / "state.sqlite",
        rig.log_path,
        kill_switch_file=folder / "KILL",
        refresh_seconds=0.5,
        registry_problem="no MLflow store in this test",
        backtest_dir=write_report(folder / "backtest"),
        market_panel=folder / "panel",
    )
    with serving(settings) as base:
        yield {"rig": rig, "dial": dial, "next": bars[140:], "base": base, "folder": folder}
    rig.close()


@pytest.fixture(scope="module")
def browser():
    if not CHROMIUM.exists():
        pytest.fail(
            f"no chromium at {CHROMIUM}: `make test` installs it"
            " (apt-get install --no-install-recommends chromium)"
        )
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        chromium = p.chromium.launch(
            executable_path=str(CHROMIUM), headless=True, args=["--no-sandbox"]
        )
        yield chromium
        chromium.close()


@pytest.fixture
def page(browser):
    """A fresh page that records console errors and uncaught exceptions."""
    context = browser.new_context(viewport={"width": 1400, "height": 900})
    tab = context.new_page()
    tab.errors = []
    tab.on("console", lambda m: tab.errors.append(m.text) if m.type == "error" else None)
    tab.on("pageerror", lambda e: tab.errors.append(str(e)))
    tab.on("requestfailed", lambda r: tab.errors.append(f"failed: {r.url}"))
    yield tab
    context.close()


def _last_hedges(log: Path) -> dict[str, float]:
    return {r["symbol"]: r["hedge_after_usd"] for r in read_records(log) if r["kind"] == "decision"}


def _shown_hedges(page) -> dict[str, float]:
    return page.eval_on_selector_all(
        "#symbols tbody tr",
        "rows => Object.fromEntries(rows.map(r => [r.dataset.symbol, Number(r.dataset.hedgeUsd)]))",
    )


def test_live_page_refreshes_after_a_new_bar(running, page, tmp_path):
    page.goto(f"{running['base']}/live")
    rig = running["rig"]
    first = page.get_attribute("#last-bar", "data-last-bar")
    assert _shown_hedges(page) == pytest.approx(_last_hedges(rig.log_path), rel=1e-12)
    page.screenshot(path=str(tmp_path / "live.png"), full_page=True)
    running["dial"].p = 0.9  # a scare: the hedge moves
    rig.loop.run(running["next"][:1])
    rig.loop.log.flush()
    new = running["next"][0].t.isoformat()
    page.wait_for_function(
        "t => document.querySelector('#last-bar').dataset.lastBar === t", arg=new, timeout=10_000
    )
    assert page.get_attribute("#last-bar", "data-last-bar") != first
    assert _shown_hedges(page) == pytest.approx(_last_hedges(rig.log_path), rel=1e-12)
    assert "updated" in page.inner_text("#refresh-state")
    page.screenshot(path=str(tmp_path / "live-after-bar.png"), full_page=True)
    assert (tmp_path / "live-after-bar.png").stat().st_size > 10_000
    assert page.errors == []


def test_timeline_charts_hold_the_logs_points(running, page, tmp_path):
    page.goto(f"{running['base']}/timeline")
    page.wait_for_selector("#chart-NEAR .main-svg")
    rows = [r for r in read_records(running["rig"].log_path) if r["kind"] == "decision"]
    for symbol in ("BTC", "ETH", "NEAR"):
        chart = f"#chart-{symbol}"
        assert page.locator(f"{chart} .main-svg").count() >= 1
        traces = page.eval_on_selector(
            chart, "d => d.data.map(t => ({name: t.name, n: t.x.length}))"
        )
        n_decisions = sum(r["symbol"] == symbol for r in rows)
        by_name = {t["name"]: t["n"] for t in traces}
        assert by_name["probability"] == by_name["hedge held"] == n_decisions > 100
        assert by_name.get("sell orders", 0) > 0
        assert page.locator(f"{chart} .scatterlayer .trace path.js-line").count() >= 5
        titles = page.eval_on_selector(
            chart,
            "d => Object.keys(d.layout).filter(k => k.startsWith('xaxis') || k.startsWith('yaxis'))"
            ".map(k => d.layout[k].title.text)",
        )
        assert sorted(titles) == sorted(
            [
                "time (UTC)",
                "price (USD)",
                "cascade probability (0-1)",
                "hedge (fraction of max)",
                "open interest (USD)",
                "funding rate (% per interval)",
            ]
        )
        assert by_name["price"] == n_decisions  # one median close per decided bar
        assert {f"OI {v}" for v in ("binanceusdm", "bybit", "hyperliquid", "okx")} <= set(by_name)
        shapes = page.eval_on_selector(chart, "d => d.layout.shapes.length")
        assert shapes >= 1  # the scare's tier band
    page.screenshot(path=str(tmp_path / "timeline.png"), full_page=True)
    assert page.errors == []


def test_decisions_page_filters(running, page, tmp_path):
    page.goto(f"{running['base']}/decisions")
    page.select_option("select[name=symbol]", "ETH")
    page.select_option("select[name=keep]", "orders")
    page.click("button[type=submit]")
    page.wait_for_url("**/decisions?symbol=ETH*keep=orders*")
    rows = page.locator("#decisions tbody tr")
    expected = [
        r
        for r in read_records(running["rig"].log_path)
        if r["kind"] == "decision" and r["symbol"] == "ETH" and r["orders"]
    ]
    assert rows.count() == len(expected) > 0
    assert set(
        page.eval_on_selector_all("#decisions tbody tr", "rs => rs.map(r => r.dataset.symbol)")
    ) == {"ETH"}
    assert page.locator("#decisions tbody tr .contrib span").count() >= 1
    page.screenshot(path=str(tmp_path / "decisions.png"), full_page=True)
    assert page.errors == []


def test_models_and_backtest_pages_load_cleanly(running, page, tmp_path):
    page.goto(f"{running['base']}/models")
    assert page.inner_text("#registry-problem") == "no MLflow store in this test"
    page.screenshot(path=str(tmp_path / "models.png"), full_page=True)
    page.goto(f"{running['base']}/backtest")
    page.wait_for_load_state("load")
    page.wait_for_selector("#chart-hedge-NEAR .main-svg")
    report = running["folder"] / "backtest"
    pngs = sorted((report / "plots").glob("*.png"))
    widths = page.eval_on_selector_all("img.plot", "imgs => imgs.map(i => i.naturalWidth)")
    assert len(widths) == len(pngs) == 7 and min(widths) > 100  # every PNG loaded
    table = pl.read_csv(report / "metrics.csv")
    assert page.locator("#metrics tbody tr").count() == table.height == 13
    assert page.locator(".chart-problem").count() == 0
    _assert_backtest_charts(page, table)
    page.screenshot(path=str(tmp_path / "backtest.png"), full_page=True)
    assert page.errors == []


def _traces(page, chart: str) -> list[dict]:
    return page.eval_on_selector(
        chart,
        "d => d.data.map(t => ({name: t.name, n: t.x.length, yaxis: t.yaxis || 'y',"
        " y: Array.from(t.y)}))",
    )


def _titles(page, chart: str) -> list[str]:
    return page.eval_on_selector(
        chart,
        "d => Object.keys(d.layout).filter(k => /^[xy]axis/.test(k))"
        ".map(k => d.layout[k].title.text).sort()",
    )


def _assert_backtest_charts(page, table: pl.DataFrame) -> None:
    """The Backtest page's Plotly charts hold the report's points: the frontier one per
    policy on each panel, the equity and drawdown every bar of the four matched
    policies with a marker per cascade, the hedge every bar per policy and symbol."""
    frontier = _traces(page, "#chart-frontier")
    points = [t["n"] for t in frontier if t["yaxis"] == "y"]
    assert sum(points) == table.height == sum(t["n"] for t in frontier if t["yaxis"] == "y2")
    worst = {t["name"]: t["y"] for t in frontier if t["yaxis"] == "y"}
    no_hedge = table.filter(pl.col("policy") == "no_hedge")["worst_24h_loss"][0]
    assert worst["no_hedge"] == pytest.approx([100 * no_hedge])
    assert _titles(page, "#chart-frontier") == sorted(
        ["mean hedge ratio (% of long value)"] * 2
        + ["worst 24 h loss (% of portfolio)", "CVaR 95 % of daily returns (% of portfolio)"]
    )
    equity = {(t["name"], t["yaxis"]): t for t in _traces(page, "#chart-equity")}
    for policy in ("no_hedge", "model", "static_matched", "vol_target_matched"):
        assert equity[(policy, "y")]["n"] == equity[(policy, "y2")]["n"] == N
    assert equity[("no_hedge", "y")]["y"][0] == pytest.approx(1_000_000.0)
    assert min(equity[("no_hedge", "y2")]["y"]) == pytest.approx(100 * (82 / 103 - 1))
    for symbol in ("BTC", "NEAR"):
        assert equity[(f"cascade {symbol} (1)", "y")]["n"] == 1
    assert page.eval_on_selector("#chart-equity", "d => d.layout.shapes.length") == 4
    assert _titles(page, "#chart-equity") == sorted(
        ["time (UTC)", "portfolio value (USD)", "drawdown (% below peak)"]
    )
    assert "label events (2 in the window)" in page.inner_text("#cascade-note")
    for symbol in ("BTC", "NEAR"):
        hedge = {t["name"]: t for t in _traces(page, f"#chart-hedge-{symbol}")}
        assert set(hedge) == {"model", "static_matched", "vol_target_matched", "fixed_rule"}
        assert all(t["n"] == N for t in hedge.values())
        assert max(hedge["model"]["y"]) == pytest.approx(1.0)  # the full hedge at the drop
        # the model's tiers (high, full) and the symbol's cascade
        assert page.eval_on_selector(f"#chart-hedge-{symbol}", "d => d.layout.shapes.length") == 3


def test_the_command_writes_a_screenshot_of_every_page(running, tmp_path, monkeypatch, capsys):
    """``oihedge dashboard --screenshots DIR`` (what ``make demo`` keeps in
    demo-out/dashboard/): one PNG per page, paths from the configuration. On a thread of
    its own: Playwright's sync API drives one browser session per thread."""
    folder = running["folder"]
    monkeypatch.setenv("OIHEDGE_LIVE__STATE_DB", str(folder / "state.sqlite"))
    monkeypatch.setenv("OIHEDGE_LIVE__DECISION_LOG", str(folder / "decisions.jsonl"))
    monkeypatch.setenv("OIHEDGE_LIVE__KILL_SWITCH_FILE", str(folder / "KILL"))
    monkeypatch.setenv("OIHEDGE_MLFLOW__TRACKING_URI", f"sqlite:///{tmp_path}/none/mlflow.db")
    monkeypatch.setenv("OIHEDGE_DASHBOARD_TOKEN", "not-needed-on-loopback")
    out = tmp_path / "shots"
    args = ["dashboard", "--screenshots", str(out), "--panel", str(folder / "panel")]
    args += ["--backtest-dir", str(folder / "backtest")]
    codes: list[int] = []
    thread = threading.Thread(target=lambda: codes.append(main(args)))
    thread.start()
    thread.join(timeout=120)
    captured = capsys.readouterr()
    assert codes == [0], captured.err
    assert sorted(p.name for p in out.iterdir()) == sorted(f"{n}.png" for n in PAGES)
    assert all((out / f"{n}.png").stat().st_size > 20_000 for n in PAGES)
    assert captured.out.split() == [str(out / f"{n}.png") for n in PAGES]
