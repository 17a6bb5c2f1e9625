"""``oihedge.serving.dashboard``: every route against the files of a short replay, and the token
rule (FastAPI's TestClient; the browser test is in test_dashboard_browser.py)."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import shutil
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from datetime import datetime, timedelta
from http.cookiejar import CookieJar
from pathlib import Path

import polars as pl
import pytest
import uvicorn
from fastapi.testclient import TestClient
from live_support import Dial, make_rig
from markupsafe import escape

from oihedge.pipelines.cli.main import main
from oihedge.pipelines.sim.output import TRUTH, write_simulation
from oihedge.pipelines.sim.simulate import SimulationConfig, simulate
from oihedge.pipelines.store import PanelStore
from oihedge.serving.dashboard import DashboardSettings, create_app, strip_token
from oihedge.serving.dashboard.data import (
    DecisionFilter,
    decisions,
    filter_decisions,
    thin,
    tier_bands,
)
from oihedge.serving.feeds.replay import ReplaySource
from oihedge.serving.live.decision_log import read_records

TOKEN = "s3cret-Token_42"

#: the address a browser on the machine uses (a tokenless dashboard answers no other)
LOCAL = "http://127.0.0.1:8050"


def replay(folder: Path, bars: list, phases: tuple[tuple[int, float], ...]):
    """A rig run over ``bars`` in phases of (bars, probability): calm, a scare, calm."""
    dial = Dial(0.0)
    rig = make_rig(folder, predictor=dial)
    at = 0
    for count, p in phases:
        dial.p = p
        rig.loop.run(bars[at : at + count])
        at += count
    rig.loop.log.flush()
    return rig, dial, at


@pytest.fixture(scope="module")
def loop_files(tmp_path_factory):
    """A stopped replay's state file and decision log (calm, a scare, calm), and the
    panel it replayed, written as `oihedge simulate` writes it (in ``panel/``)."""
    folder = tmp_path_factory.mktemp("replay")
    simulated = simulate(SimulationConfig(days=1.0, seed=5))
    write_simulation(simulated, folder / "panel", bar=timedelta(minutes=5))
    bars = list(ReplaySource(simulated.panel))
    rig, _, _ = replay(folder, bars, ((60, 0.02), (40, 0.9), (40, 0.05)))
    rig.close()
    return folder


@pytest.fixture(scope="module")
def client(loop_files):
    settings = DashboardSettings(
        loop_files / "state.sqlite",
        loop_files / "decisions.jsonl",
        kill_switch_file=loop_files / "KILL",
        refresh_seconds=1.0,
        market_panel=loop_files / "panel",
    )
    with TestClient(create_app(settings), base_url=LOCAL) as c:
        yield c


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _last_decisions(log: Path) -> dict[str, dict]:
    return {r["symbol"]: r for r in read_records(log) if r["kind"] == "decision"}


def test_live_page_shows_each_symbols_hedge_from_the_log(client, loop_files):
    log = loop_files / "decisions.jsonl"
    before = (_digest(loop_files / "state.sqlite"), _digest(log))
    page = client.get("/live")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    last = _last_decisions(log)
    assert len(last) == 3
    rows = re.findall(
        r'<tr data-symbol="(\w+)" data-hedge-usd="([^"]+)" data-target-usd', page.text
    )
    assert sorted(s for s, _ in rows) == sorted(last)
    for symbol, hedge in rows:
        assert float(hedge) == pytest.approx(last[symbol]["hedge_after_usd"], rel=1e-12)
        shown = f"${last[symbol]['hedge_after_usd']:,.0f}"
        assert shown in page.text
    assert 'data-last-bar="' + next(iter(last.values()))["ts"].replace(" ", "T") in page.text
    assert "never engaged" in page.text and "test-1" in page.text
    assert re.search(r'id="bar-age" [^>]*>[\d,]+\.\d d</span> ago', page.text)  # a 2025 bar
    assert client.get("/live/panel").text.count("<tr data-symbol=") == 3
    # nothing written to either file
    assert (_digest(loop_files / "state.sqlite"), _digest(log)) == before


def test_api_status_matches_the_log(client, loop_files):
    record = client.get("/api/status").json()
    last = _last_decisions(loop_files / "decisions.jsonl")
    assert {s["symbol"]: s["hedge_usd"] for s in record["symbols"]} == {
        s: r["hedge_after_usd"] for s, r in last.items()
    }
    assert record["model"]["version"] == "test-1"
    assert record["kill_switch"]["file_present"] is False


def test_timeline_series_follow_the_log(client, loop_files):
    answer = client.get("/api/timeline").json()
    assert answer["market_problem"] is None
    series = answer["series"]
    rows = [r for r in read_records(loop_files / "decisions.jsonl") if r["kind"] == "decision"]
    assert sorted(series) == ["BTC", "ETH", "NEAR"]
    for symbol, s in series.items():
        mine = [r for r in rows if r["symbol"] == symbol]
        assert len(s["ts"]) == len(mine) == len(s["probability"])
        assert s["probability"] == [r["probability"] for r in mine]
        assert s["hedge_fraction"][-1] == pytest.approx(
            mine[-1]["hedge_after_usd"] / mine[-1]["max_usd"]
        )
        # the mark each decision used, when the log carries it (else from the panel)
        prices = [r.get("price") for r in mine]
        assert s["price"] == (None if all(p is None for p in prices) else prices)
        assert len(s["orders"]) == sum(len(r["orders"]) for r in mine) > 0
        assert s["bands"] and all(b["tier"] != "baseline" for b in s["bands"])
        assert s["ts"][0] == mine[0]["ts"].replace("+00:00", "")
    page = client.get("/timeline?symbol=ETH")
    assert page.status_code == 200 and 'id="chart-ETH"' in page.text
    assert 'id="chart-BTC"' not in page.text and "/vendor/plotly.min.js" in page.text
    js = client.get("/vendor/plotly.min.js")
    assert js.status_code == 200 and len(js.content) > 1_000_000 and b"plotly" in js.content[:500]


def test_timeline_market_series_come_from_the_panel(client, loop_files):
    series = client.get("/api/timeline?symbol=ETH").json()["series"]
    assert list(series) == ["ETH"]
    market = series["ETH"]["market"]
    eth = PanelStore(loop_files / "panel").read(symbols=["ETH"])
    # the median close across venues at the log's last bar
    last = series["ETH"]["ts"][-1]
    at = eth.filter(pl.col("ts").dt.strftime("%Y-%m-%d %H:%M:%S") == last)
    assert market["price"]["ts"][-1] == last
    assert market["price"]["usd"][-1] == pytest.approx(at["close"].median())
    assert market["price"]["ts"][0] == series["ETH"]["ts"][0]  # the log's window only
    assert sorted(market["oi"]) == ["binanceusdm", "bybit", "hyperliquid", "okx"]
    assert len(market["oi"]["okx"]["ts"]) == len(market["oi"]["okx"]["value"]) > 100
    assert market["funding"] and market["cascades"] == []  # this day had no cascade


def test_timeline_shades_the_simulators_cascades(loop_files, tmp_path):
    panel = tmp_path / "panel"
    shutil.copytree(loop_files / "panel", panel)
    rows = [r for r in read_records(loop_files / "decisions.jsonl") if r["kind"] == "decision"]
    start, end = datetime.fromisoformat(rows[200]["ts"]), datetime.fromisoformat(rows[230]["ts"])
    truth = pl.read_parquet(panel / TRUTH)
    cascade = {c: None for c in truth.columns} | {
        "symbol": "NEAR",
        "start": start,
        "end": end,
        "trough_ts": end,
        "price_drop_pct": -12.5,
    }
    pl.DataFrame([cascade], schema=truth.schema).write_parquet(panel / TRUTH)
    settings = DashboardSettings(
        loop_files / "state.sqlite", loop_files / "decisions.jsonl", market_panel=panel
    )
    with TestClient(create_app(settings), base_url=LOCAL) as c:
        series = c.get("/api/timeline").json()["series"]
        assert series["NEAR"]["market"]["cascades"] == [
            {
                "start": start.strftime("%Y-%m-%d %H:%M:%S"),
                "end": end.strftime("%Y-%m-%d %H:%M:%S"),
                "price_drop_pct": -12.5,
            }
        ]
        assert series["BTC"]["market"]["cascades"] == []
    # a panel file that breaks the contract: the page says so and still draws the log
    (panel / "venue=okx" / "symbol=BTC" / "panel.parquet").write_bytes(b"not parquet")
    with TestClient(create_app(settings), base_url=LOCAL) as c:
        page = c.get("/timeline")
        assert page.status_code == 200 and 'id="chart-BTC"' in page.text
        assert 'id="market-problem"' in page.text and "venue=okx" in page.text
        answer = c.get("/api/timeline").json()
        assert (
            answer["series"]["BTC"]["market"] is None
            and "panel.parquet" in answer["market_problem"]
        )


def test_decisions_filters(client, loop_files):
    rows = decisions(read_records(loop_files / "decisions.jsonl"))
    every = client.get("/decisions?limit=100000").text
    assert every.count("<tr data-symbol=") == len(rows)
    with_orders = client.get("/decisions?keep=orders&symbol=BTC&limit=100000").text
    expected = [r for r in rows if r["symbol"] == "BTC" and r["orders"]]
    assert with_orders.count("<tr data-symbol=") == len(expected) > 0
    assert with_orders.count('data-symbol="BTC"') >= len(expected)
    changes = client.get("/decisions?keep=tier_changes&limit=100000").text
    n_changes = sum(r["tier_changed"] for r in rows)
    assert changes.count("<tr data-symbol=") == n_changes >= 6  # each symbol: up and down
    # the time range is inclusive; top contributions are shown
    t0, t1 = rows[30]["ts"], rows[59]["ts"]
    ranged = client.get("/decisions", params={"start": t0, "end": t1, "limit": 100000}).text
    inside = [r for r in rows if t0 <= r["ts"] <= t1]
    assert ranged.count("<tr data-symbol=") == len(inside)
    name, value = rows[-1]["contributions"][0]
    assert f"{name} {value:+.3f}" in every
    # pages of 50, newest first: the "older" link leads to the next 50
    first = client.get("/decisions?symbol=NEAR&limit=50").text
    link = re.search(r'<a id="older" href="([^"]+)"', first).group(1).replace("&amp;", "&")
    assert "offset=50" in link and "symbol=NEAR" in link and 'id="newer"' not in first
    second = client.get(link).text
    near = [r for r in reversed(rows) if r["symbol"] == "NEAR"]
    shown = re.findall(r'<tr data-symbol="NEAR" data-ts="([^"]+)"', first + second)
    assert shown == [r["ts"] for r in near[:100]] and 'id="newer"' in second
    # the policy's reasons, the first one as the summary
    assert f"<summary>{escape(near[0]['reasons'][0])}</summary>" in first
    assert client.get("/decisions?keep=nonsense").status_code == 400
    assert client.get("/decisions?start=yesterday").status_code == 400


def test_decision_filter_and_bands_units():
    rows = decisions(
        [
            {"kind": "decision", "ts": f"2025-01-01 00:0{i}:00+00:00", "symbol": "BTC", "tier": t}
            for i, t in enumerate(["baseline", "early", "early", "high", "baseline"])
        ]
    )
    assert [r["tier_changed"] for r in rows] == [True, True, False, True, True]
    kept = filter_decisions(rows, DecisionFilter(keep="tier_changes", limit=2))
    assert [r["tier"] for r in kept] == ["baseline", "high"]  # newest first
    ts = [r["ts"] for r in rows]
    assert tier_bands(ts, [r["tier"] for r in rows]) == [
        {"tier": "early", "start": ts[1], "end": ts[3]},
        {"tier": "high", "start": ts[3], "end": ts[4]},
    ]
    with pytest.raises(ValueError, match="keep must be one of"):
        DecisionFilter(keep="everything")
    with pytest.raises(ValueError, match="limit must be >= 1, got 0"):
        DecisionFilter(limit=0)


def test_thin_keeps_scares_tier_changes_orders_and_the_last_decision():
    rows = [{"probability": 0.01, "tier_changed": False, "orders": [], "i": i} for i in range(1000)]
    rows[537]["probability"] = 0.8
    rows[700]["tier_changed"] = True
    rows[801]["orders"] = [{"side": "sell"}]
    kept = [r["i"] for r in thin(rows, 100)]
    assert kept == sorted(kept) and 100 <= len(kept) <= 104
    assert {537, 700, 801, 999} <= set(kept)
    assert thin(rows[:50], 100) == rows[:50]
    with pytest.raises(ValueError, match="max_points must be >= 1, got 0"):
        thin(rows, 0)


def test_timeline_page_thins_long_series_but_not_the_orders(loop_files):
    settings = DashboardSettings(
        loop_files / "state.sqlite",
        loop_files / "decisions.jsonl",
        market_panel=loop_files / "panel",
        max_points=40,
    )
    with TestClient(create_app(settings), base_url=LOCAL) as c:
        page = c.get("/timeline").text
        full = c.get("/api/timeline").json()["series"]  # the API gives every point
    drawn = json.loads(re.search(r'id="timeline-data">(.*?)</script>', page, re.S).group(1))
    for symbol, s in drawn.items():
        assert len(full[symbol]["ts"]) == 140
        # 140 decisions in 35 runs of 4, the last one and a few tier changes and orders
        assert 35 <= len(s["ts"]) <= 45 and s["ts"][-1] == full[symbol]["ts"][-1]
        assert s["orders"] == full[symbol]["orders"] and s["bands"] == full[symbol]["bands"]
        assert len(s["market"]["price"]["ts"]) == 36  # every 4th bar and the last
        assert len(full[symbol]["market"]["price"]["ts"]) == 140


def test_pages_before_the_loop_ran(tmp_path):
    settings = DashboardSettings(tmp_path / "state.sqlite", tmp_path / "decisions.jsonl")
    with TestClient(create_app(settings), base_url=LOCAL) as c:
        assert "no state file at" in c.get("/live").text
        assert c.get("/api/status").status_code == 503
        assert "no decisions in" in c.get("/timeline").text
        assert c.get("/decisions").status_code == 200
    assert not (tmp_path / "state.sqlite").exists()  # read-only: nothing created


# -- the token rule ------------------------------------------------------------------


@pytest.fixture(scope="module")
def guarded(loop_files):
    settings = DashboardSettings(
        loop_files / "state.sqlite", loop_files / "decisions.jsonl", token=TOKEN
    )
    return create_app(settings)


def test_every_route_needs_the_token(guarded):
    with TestClient(guarded, base_url=LOCAL) as c:
        for path in (
            "/live",
            "/live/panel",
            "/api/status",
            "/timeline",
            "/decisions",
            "/api/timeline",
            "/vendor/plotly.min.js",
            "/static/dashboard.js",
        ):
            assert c.get(path).status_code == 401, path
            assert c.get(path, headers={"Authorization": "Bearer nope"}).status_code == 403
            assert c.get(path, headers={"Authorization": f"Bearer {TOKEN}"}).status_code == 200
            assert c.get(path, headers={"X-Oihedge-Token": TOKEN}).status_code == 200
        assert c.get(f"/live?token={TOKEN}x").status_code == 403


def test_a_token_in_the_address_becomes_a_cookie_and_leaves_the_address(guarded):
    with TestClient(guarded, base_url=LOCAL) as c:
        first = c.get(f"/decisions?symbol=BTC&token={TOKEN}", follow_redirects=False)
        assert first.status_code == 303
        assert first.headers["location"] == "/decisions?symbol=BTC"
        assert TOKEN not in first.headers["location"]
        assert c.get("/api/status").status_code == 200  # the cookie carries it now
        c.cookies.clear()
        assert c.get("/api/status").status_code == 401


def test_without_a_token_only_loopback_names_are_answered(client):
    """A page on another site cannot read a tokenless dashboard by pointing its own name
    at 127.0.0.1 (DNS rebinding): the Host header must be a loopback name."""
    for host in ("127.0.0.1:8050", "localhost:8050", "[::1]:8050", "localhost"):
        assert client.get("/api/status", headers={"host": host}).status_code == 200, host
    for host in ("evil.example:8050", "192.168.1.20:8050", "127.0.0.1.evil.example"):
        assert client.get("/api/status", headers={"host": host}).status_code == 400, host


def test_strip_token():
    assert strip_token(f"GET /live?a=1&token={TOKEN}&b=2") == "GET /live?a=1&token=***&b=2"
    assert strip_token(f"/live?token={TOKEN}") == "/live?token=***"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(f"{record.name} {record.getMessage()}")


def test_the_token_never_reaches_the_access_log(guarded, caplog, capfd):
    """uvicorn's access log, as it runs under ``oihedge dashboard``, logs the request
    line without the token: in the records and in what its handlers print."""
    port = _free_port()
    server = uvicorn.Server(uvicorn.Config(guarded, host="127.0.0.1", port=port, log_level="info"))
    records = Records()  # uvicorn's loggers do not propagate: listen on them directly
    for name in ("uvicorn.access", "uvicorn.error"):
        logging.getLogger(name).addHandler(records)
    thread = threading.Thread(target=server.run, daemon=True)
    caplog.set_level(logging.INFO)
    thread.start()
    try:
        deadline = time.monotonic() + 10
        while not server.started and time.monotonic() < deadline:
            time.sleep(0.02)
        browser = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(CookieJar()))
        base = f"http://127.0.0.1:{port}"
        with browser.open(f"{base}/live?token={TOKEN}") as page:  # 303, then the page
            assert page.status == 200 and page.url == f"{base}/live"
        with browser.open(f"{base}/api/status") as status:  # the cookie
            assert status.status == 200
        with pytest.raises(urllib.error.HTTPError, match="403"):
            browser.open(f"{base}/api/status?token=wrong")
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        for name in ("uvicorn.access", "uvicorn.error"):
            logging.getLogger(name).removeHandler(records)
    access = [line for line in records.lines if line.startswith("uvicorn.access")]
    assert len(access) == 4 and '"GET /live?token=*** HTTP/1.1" 303' in access[0]
    assert all(TOKEN not in line for line in records.lines)
    printed = capfd.readouterr()
    assert "GET /api/status?token=*** HTTP/1.1" in printed.out + printed.err
    assert TOKEN not in printed.out + printed.err
    assert TOKEN not in caplog.text


def test_cli_refuses_a_non_loopback_bind_without_a_token(capsys, monkeypatch):
    monkeypatch.delenv("OIHEDGE_DASHBOARD_TOKEN", raising=False)
    assert main(["dashboard", "--host", "0.0.0.0", "--port", "8050"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "not a loopback address" in err
    assert "OIHEDGE_DASHBOARD_TOKEN" in err


def test_the_command_serves_the_configured_files_and_logs_no_token(loop_files, tmp_path):
    """``oihedge dashboard`` as an operator runs it: the paths from the configuration
    (here its OIHEDGE_* variables), a non-loopback bind with the token from the
    environment; the token is not in anything the process prints."""
    port = _free_port()
    env = {
        **os.environ,
        "OIHEDGE_LIVE__STATE_DB": str(loop_files / "state.sqlite"),
        "OIHEDGE_LIVE__DECISION_LOG": str(loop_files / "decisions.jsonl"),
        "OIHEDGE_LIVE__KILL_SWITCH_FILE": str(loop_files / "KILL"),
        "OIHEDGE_MLFLOW__TRACKING_URI": f"sqlite:///{tmp_path}/none/mlflow.db",
        "OIHEDGE_DASHBOARD_TOKEN": TOKEN,
    }
    output = tmp_path / "dashboard.log"
    with output.open("wb") as sink:
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "oihedge.pipelines.cli.main",
                "dashboard",
                "--host",
                "0.0.0.0",
                "--port",
                str(port),
                "--backtest-dir",
                str(tmp_path / "reports"),
                "--panel",
                str(loop_files / "panel"),
            ],
            env=env,
            stdout=sink,
            stderr=subprocess.STDOUT,
            cwd=Path(__file__).parents[2],
        )
        try:
            browser = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(CookieJar()))
            base = f"http://127.0.0.1:{port}"
            deadline = time.monotonic() + 30
            while True:
                try:
                    page = browser.open(f"{base}/live?token={TOKEN}", timeout=5)
                    break
                except (urllib.error.URLError, ConnectionError):
                    assert process.poll() is None, output.read_text()
                    assert time.monotonic() < deadline, "the dashboard did not start"
                    time.sleep(0.2)
            text = page.read().decode()
            assert page.url == f"{base}/live" and text.count("<tr data-symbol=") == 3
            models = browser.open(f"{base}/models").read().decode()
            assert "no MLflow store at" in models  # the registry is not there: said, no crash
            timeline = json.loads(browser.open(f"{base}/api/timeline?symbol=BTC").read())
            assert timeline["series"]["BTC"]["market"]["price"]["usd"]
            with pytest.raises(urllib.error.HTTPError, match="401"):
                urllib.request.urlopen(f"{base}/api/status")
        finally:
            process.terminate()
            process.wait(timeout=10)
    printed = output.read_text()
    assert '"GET /live?token=*** HTTP/1.1" 303' in printed
    assert TOKEN not in printed
