"""The live loop over replayed panels: decision path, guards, restarts, model reloads,
credentials. Each fault-injection test says what the loop did and asserts it."""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import timedelta
from pathlib import Path

import mlflow
import numpy as np
import polars as pl
import pytest
from live_support import (
    HEDGE_VENUE,
    Dial,
    FittedPredictor,
    fit_model,
    make_rig,
    read_log,
    replay_vs_backtest,
    simulated_panel,
)

from oihedge.features.registry import CORE_V1
from oihedge.models import registry
from oihedge.models.artifact import log_cascade_model
from oihedge.models.workflow import feature_spec_card
from oihedge.serving.execution.brokers import PaperBroker
from oihedge.serving.execution.guards import engage_kill_switch
from oihedge.serving.feeds.replay import ReplaySource
from oihedge.serving.live.decision_log import read_records
from oihedge.serving.live.model_watch import ChampionWatch
from oihedge.serving.policy.params import PolicyParams

N_FEATURES = len(CORE_V1.features)


@pytest.fixture(scope="module")
def panel() -> pl.DataFrame:
    return simulated_panel(2, seed=5)


@pytest.fixture(scope="module")
def bars(panel):
    return list(ReplaySource(panel))


@pytest.fixture(scope="module")
def fitted() -> FittedPredictor:
    return fit_model(simulated_panel(6, seed=3))


def decisions(path: Path) -> list[dict]:
    """The decision lines, each with its contributions (merged if they followed it)."""
    return [r for r in read_records(path) if r["kind"] == "decision"]


def test_replay_decides_every_symbol_every_bar_and_logs_why(tmp_path, bars, fitted):
    rig = make_rig(tmp_path, predictor=fitted)
    summary = rig.loop.run(bars)
    quarantined = rig.store.events("quarantine")
    rig.close()
    lines = read_log(rig.log_path)
    # the model is loaded and the broker reconciled before the first decision
    kinds = [r["kind"] for r in lines]
    first = kinds.index("decision")
    assert {"model", "start", "reconcile"} <= set(kinds[:first])
    recs = decisions(rig.log_path)
    assert len(recs) == 3 * len(bars) == summary.decisions + sum(not r.get("tier") for r in recs)
    last = recs[-1]
    for key in (
        "ts",
        "symbol",
        "probability",
        "model_version",
        "contributions",
        "confirmations",
        "tier",
        "target_fraction",
        "target_usd",
        "hedge_before_usd",
        "hedge_after_usd",
        "orders",
        "left_out",
        "reasons",
        "p_entry",
        "p_exit",
        "severity",
        "hold_cost",
        "tail_loss",
    ):
        assert key in last, key
    assert 0 <= last["probability"] <= 1 and len(last["contributions"]) == 5
    assert summary.bars == len(bars)
    ordered = [o for r in recs for o in r["orders"]]
    assert ordered and all(o["client_order_id"].startswith("oh") for o in ordered)
    # the simulator's corrupted rows never reached the features: quarantined with a reason
    assert summary.quarantined == len(quarantined)


class Unexplained(Dial):
    """Dial whose contributions fail on every third call (one symbol of some bars)."""

    def __init__(self, p: float) -> None:
        super().__init__(p)
        self.calls = 0

    def contributions(self, x: np.ndarray) -> np.ndarray:
        self.calls += 1
        if self.calls % 3 == 2:
            raise RuntimeError("no SHAP for this one")
        return super().contributions(x)


def test_a_failed_explanation_leaves_the_other_symbols_explained(tmp_path, bars):
    # every decision explained (the probability never moves: nothing would be recomputed)
    rig = make_rig(tmp_path, predictor=Unexplained(0.3), explain={"explain_min_change": 0.0})
    rig.loop.run(bars[:20])
    rig.close()
    by_bar: dict[str, list[dict]] = {}
    for record in decisions(rig.log_path):
        by_bar.setdefault(record["ts"], []).append(record)
    explained = failed = 0
    for records in by_bar.values():
        for record in records:
            if any(e.startswith("contributions: RuntimeError") for e in record["errors"]):
                failed += 1
                assert record["contributions"] == []
            else:
                explained += 1
                assert record["contributions"][0][0] == CORE_V1.features[0]
    assert failed > 0 and explained > failed
    assert rig.loop.summary.errors["model_contributions"] == failed


def test_bad_payloads_are_quarantined_and_never_reach_the_features(tmp_path, bars):
    rig = make_rig(tmp_path, predictor=Dial(0.1))
    pushed = []
    original = rig.loop.features.push
    rig.loop.features.push = lambda row: pushed.append(row) or original(row)  # type: ignore[method-assign]
    bars = [type(b)(b.t_us, list(b.rows), list(b.quarantined), list(b.errors)) for b in bars]
    bar = bars[300]
    good = dict(bar.rows[0])
    garbage = [
        {**good, "close": float("nan")},
        {**good, "oi_usd": -5.0},
        {**good, "oi_usd": "12e6"},
        {k: v for k, v in good.items() if k != "symbol"},
    ]
    bar.rows = garbage + list(bar.rows)
    rig.loop.run(bars[:301])
    stored = rig.store.events("quarantine")
    assert all(isinstance(json.loads(e.detail["row"]), dict) for e in stored)
    reasons = sorted(e.detail["reason"] for e in stored)
    assert {"non_finite_close", "negative_oi_usd", "wrong_type_oi_usd", "missing_symbol"} <= set(
        reasons
    )
    assert not any(row is g for row in pushed for g in garbage)
    assert 'oihedge_errors_total{kind="quarantined_row"}' in rig.loop.metrics.text()
    rig.close()


def _cut_venues(bars, after: int, keep: tuple[str, ...], side_feeds: bool = False):
    """The bars with every venue but ``keep`` silent from bar ``after`` on; with
    ``side_feeds``, the silent venues still send their liquidation sums and spot depth
    (their streams up, their REST poll down) and an options venue sends its snapshots."""
    out = []
    for i, bar in enumerate(bars):
        if i >= after:
            rows = [r for r in bar.rows if r["venue"] in keep]
            if side_feeds:
                rows += [_side_row(r) for r in bar.rows if r["venue"] not in keep]
                rows += [
                    {**_side_row(r), "venue": "deribit", "opt_oi_usd": 1e10, "liq_long_usd": None}
                    for r in bar.rows
                    if r["venue"] == "okx" and r["symbol"] in ("BTC", "ETH")
                ]
            bar = type(bar)(bar.t_us, rows, [], [])
        out.append(bar)
    return out


def _side_row(row: dict) -> dict:
    """``row``'s key with only side-feed values: liquidation sums and spot depth."""
    keep = {"ts", "venue", "symbol", "known_at"}
    side = {k: (v if k in keep else None) for k, v in row.items()}
    return {**side, "liq_long_usd": 0.0, "liq_short_usd": 0.0, "spot_depth_usd": 2e6}


#: no hysteresis, no smoothing of the probability and no exit condition but the
#: probability: with fresh data a calm reading takes the hedge off at the next bar, so only
#: the stale-data rule can hold it
EAGER_EXIT = {
    "p_halflife": timedelta(0),
    "min_hold": timedelta(0),
    "exit_confirm": timedelta(0),
    "div_entry": 1e9,
    "div_exit": 1e9 - 1,
    "funding_z_entry": 1e9,
    "funding_z_exit": 1e9 - 1,
    "oi_high_pct": 1e9,
    "max_daily_turnover": 1e6,
}


@pytest.mark.parametrize(
    ("keep", "side_feeds"),
    [(("okx",), False), ((), False), (("okx",), True)],
    ids=["one-venue-left", "all-venues-down", "side-feeds-alone-are-not-fresh"],
)
def test_stale_venues_are_left_out_and_the_hedge_is_never_reduced(tmp_path, bars, keep, side_feeds):
    symbols = ("BTC", "ETH", "NEAR")
    params = {s: PolicyParams(**EAGER_EXIT) for s in symbols}
    dial = Dial(0.9)
    rig = make_rig(tmp_path, predictor=dial, params=params)
    rig.loop.run(bars[:400])
    held = {r["symbol"]: r["hedge_after_usd"] for r in decisions(rig.log_path)[-3:]}
    assert all(v > 0 for v in held.values())  # hedged on the high probability
    cut = _cut_venues(bars, 400, keep, side_feeds)
    rig.loop.run(cut[400:404])  # past the two-bar staleness, still on the high reading
    dial.p = 0.0  # the model now says calm: with fresh data the hedge would come off
    rig.loop.run(cut[404:])
    after = [r for r in decisions(rig.log_path)[3 * 400 :] if r.get("tier")]
    late = [r for r in after if r["ts"] >= str(cut[404].t)]
    assert late, "the loop kept deciding with venues down"
    for r in late:
        assert r["fresh_venues"] == len(keep) < 2
        assert set(r["left_out"]) == {"binanceusdm", "bybit", "hyperliquid", "okx"} - set(keep)
        assert all(why.startswith("stale") for why in r["left_out"].values())
        assert r["hedge_before_usd"] > 0  # still something to take off
        assert r["hedge_after_usd"] >= r["hedge_before_usd"] - 1e-6  # never reduced
        assert any("stale data" in reason for reason in r["reasons"])
    assert all(o["side"] == "sell" for r in after for o in r["orders"])
    # the control: the same calm reading with every venue fresh takes the whole hedge off
    # at the first bar it is decided -- nothing but the stale rule holds it above
    control = make_rig(tmp_path / "control", predictor=dial, params=params)
    dial.p = 0.9
    control.loop.run(bars[:404])
    dial.p = 0.0
    control.loop.run(bars[404:405])
    first = decisions(control.log_path)[-3:]
    for r in first:
        assert r["hedge_before_usd"] > 0 and r["hedge_after_usd"] < r["hedge_before_usd"] - 1e-6
        assert any(o["side"] == "buy" for o in r["orders"])
    rig.close()
    control.close()


def test_kill_switch_blocks_orders_and_keeps_the_hedge(tmp_path, bars):
    dial = Dial(0.9)
    rig = make_rig(tmp_path, predictor=dial)
    rig.loop.run(bars[:300])
    before = dict(rig.loop.summary.positions)
    engage_kill_switch(tmp_path / "KILL", "test: operator stop")
    dial.p = 0.0
    rig.loop.run(bars[300:])
    outcomes = {o["status"] for r in decisions(rig.log_path)[900:] for o in r["orders"]}
    assert outcomes <= {"blocked"} and "blocked" in outcomes
    assert rig.loop.summary.positions == before  # nothing closed in a panic
    assert rig.store.kill_switch_state() == "engaged"
    rig.close()


def test_kill_and_resume_are_recorded_at_the_bar_they_are_seen_with_no_order_between(
    tmp_path, bars
):
    from oihedge.serving.execution.guards import release_kill_switch

    rig = make_rig(tmp_path, predictor=Dial(0.0))  # calm
    rig.loop.run(bars[:300])
    engage_kill_switch(tmp_path / "KILL", "test: operator stop")
    rig.loop.run(bars[300:302])
    release_kill_switch(tmp_path / "KILL", "test: all clear")
    rig.loop.run(bars[302:304])
    engage_kill_switch(tmp_path / "KILL", "test: second stop")  # and resumed before
    release_kill_switch(tmp_path / "KILL", "test: false alarm")  # the next bar
    rig.loop.run(bars[304:306])
    assert not any(r["orders"] for r in decisions(rig.log_path)[3 * 300 :])  # no order near
    events = [(e.kind, e.at, e.detail["reason"]) for e in rig.store.kill_switch_events()]
    assert events == [
        ("engaged", bars[300].t, "test: operator stop"),
        ("released", bars[302].t, "test: all clear"),
        ("engaged", bars[304].t, "test: second stop"),
        ("released", bars[304].t, "test: false alarm"),
    ]
    lines = [
        (r["action"], r["reason"]) for r in read_log(rig.log_path) if r["kind"] == "kill_switch"
    ]
    assert lines == [(kind, reason) for kind, _at, reason in events]
    rig.close()


class Killed(BaseException):
    """The process dies (not an error the loop may catch)."""


class DyingBroker(PaperBroker):
    """Sends the order (the paper venue has it), then the process dies before the answer
    is recorded in the state store."""

    armed = True

    def place(self, order):  # noqa: ANN001, ANN201
        result = super().place(order)
        if DyingBroker.armed:
            DyingBroker.armed = False
            raise Killed
        return result


def test_killed_between_send_and_record_restarts_without_a_duplicate(tmp_path, bars):
    dial = Dial(0.9)
    reference = make_rig(tmp_path / "ref", predictor=dial)
    reference.loop.run(bars)
    expected = dict(reference.loop.summary.positions)
    reference.close()

    rig = make_rig(tmp_path / "run", predictor=dial, broker_cls=DyingBroker)
    with pytest.raises(Killed):
        rig.loop.run(bars)
    stuck = rig.store.orders(["intent"])
    assert len(stuck) == 1  # written before sending, never answered
    cid = stuck[0].client_order_id
    rig.close()

    restarted = make_rig(tmp_path / "run", predictor=dial)
    summary = restarted.loop.run(bars)
    assert summary.bars + summary.warmup_bars == len(bars)
    ids = [o.client_order_id for o in restarted.broker.all_orders()]
    assert len(ids) == len(set(ids)) and ids.count(cid) == 1  # no duplicate order
    assert restarted.store.get_order(cid).state == "filled"
    assert summary.positions == pytest.approx(expected)  # as if it had never died
    broker_pos = {s: p.base_amount for s, p in restarted.broker.positions().items()}
    assert broker_pos == pytest.approx(expected)
    restarted.close()


class DyingBeforeSendBroker(PaperBroker):
    """The process dies after the order's intent is recorded, before it reaches the venue."""

    armed = True

    def place(self, order):  # noqa: ANN001, ANN201
        if DyingBeforeSendBroker.armed:
            DyingBeforeSendBroker.armed = False
            raise Killed
        return super().place(order)


def test_a_replay_killed_before_sending_resends_the_same_order_on_restart(tmp_path, bars):
    """A replay's restart reconciles at the bar it had reached (its clock), so the unsent
    intent is young and re-sent with its client id: the run ends with the reference's
    orders. (Reconciled at the wall clock, it was 'too old', cancelled, and the next bar
    placed another order: the crash test's rare failure.)"""
    dial = Dial(0.9)
    reference = make_rig(tmp_path / "ref", predictor=dial)
    reference.loop.run(bars)
    expected_ids = [o.client_order_id for o in reference.store.orders()]
    expected = dict(reference.loop.summary.positions)
    reference.close()

    rig = make_rig(tmp_path / "run", predictor=dial, broker_cls=DyingBeforeSendBroker)
    with pytest.raises(Killed):
        rig.loop.run(bars)
    (stuck,) = rig.store.orders(["intent"])
    assert stuck.client_order_id not in {o.client_order_id for o in rig.broker.all_orders()}
    rig.close()

    restarted = make_rig(tmp_path / "run", predictor=dial)
    restarted.loop.run(bars)
    assert restarted.store.get_order(stuck.client_order_id).state == "filled"
    assert [o.client_order_id for o in restarted.store.orders()] == expected_ids
    assert restarted.loop.summary.positions == pytest.approx(expected)
    restarted.close()


@pytest.fixture
def local_mlflow(tmp_path, monkeypatch):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.setenv("MLFLOW_REGISTRY_URI", uri)
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    experiment = mlflow.create_experiment("t", artifact_location=(tmp_path / "art").as_uri())
    yield experiment
    mlflow.set_tracking_uri("")
    mlflow.set_registry_uri("")


def _register(fitted: FittedPredictor, experiment: str, spec_card: dict, name: str) -> str:
    card = {
        "features": list(fitted.features),
        "feature_spec": spec_card,
        "horizon": "4h",
        "dataset": {"hash": "d"},
        "git_commit": "test",
    }
    with mlflow.start_run(experiment_id=experiment):
        info = log_cascade_model(fitted.model, card)
    version = registry.register(info.model_uri, name, {"horizon": "4h"})
    registry.promote(name, version, None, force=True, reason="test")
    return version


def test_champion_moved_to_a_mismatched_spec_is_refused_and_the_last_good_kept(
    tmp_path, bars, fitted, local_mlflow
):
    name = registry.model_name("looptest")
    running = feature_spec_card(CORE_V1.resolve("5m"))
    v1 = _register(fitted, local_mlflow, running, name)
    watch = ChampionWatch(name, running, check_every=1)
    rig = make_rig(tmp_path, model=watch)
    rig.loop.run(bars[:300])
    p_before = [r["probability"] for r in decisions(rig.log_path)[-3:]]
    bad_spec = {**running, "hash": "0" * 64}  # same names, other parameters
    v2 = _register(fitted, local_mlflow, bad_spec, name)
    assert registry.alias_version(name, "champion") == v2
    rig.loop.run(bars[300:310])
    events = [r for r in read_log(rig.log_path) if r["kind"] == "model"]
    assert events[-1]["event"] == "refused" and events[-1]["version"] == v2
    assert events[-1]["serving"] == v1 and "hash differs" in events[-1]["detail"]
    after = decisions(rig.log_path)[-30:]
    assert {r["model_version"] for r in after} == {v1}  # the last good model still decides
    assert all(r["probability"] is not None for r in after) and p_before[0] is not None
    assert sum(1 for e in events if e["event"] == "refused") == 1  # not retried every bar
    assert rig.store.events("model_refused")
    rig.close()


def test_api_keys_appear_in_no_log_decision_metric_or_state(tmp_path, bars, monkeypatch, caplog):
    key, secret = "fakekey-ABCDEF123456", "fakesecret-987654ZYX"
    monkeypatch.setenv("OIHEDGE_BINANCEUSDM_API_KEY", key)
    monkeypatch.setenv("OIHEDGE_BINANCEUSDM_SECRET", secret)
    rig = make_rig(tmp_path, predictor=Dial(0.9))
    bars = [type(b)(b.t_us, list(b.rows), list(b.quarantined), list(b.errors)) for b in bars]
    bar = bars[200]
    echo = {**bar.rows[0], "symbol": f"error: bad key {key} / {secret}"}
    bar.rows = [echo, *bar.rows]
    caplog.set_level("DEBUG")
    rig.loop.run(bars[:250])
    texts = [
        rig.log_path.read_text(),
        rig.loop.metrics.text(),
        rig.store.dump(),
        "\n".join(r.getMessage() for r in caplog.records),
    ]
    assert rig.store.events("quarantine")  # the echoing payload was stored (masked)
    for text in texts:
        assert key not in text and secret not in text
    rig.close()


def test_metrics_are_served_on_loopback(tmp_path, bars):
    import urllib.request

    rig = make_rig(tmp_path, predictor=Dial(0.5))
    port = rig.loop.metrics.serve(0)
    try:
        rig.loop.run(bars[:50])
        text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    finally:
        rig.loop.metrics.close()
        rig.close()
    for name in (
        "oihedge_decision_latency_seconds_bucket",
        'oihedge_venue_staleness_seconds{symbol="BTC",venue="okx"}',
        'oihedge_probability{symbol="ETH"} 0.5',
        "oihedge_hedge_fraction",
        "oihedge_bars_total 50.0",
    ):
        assert name in text, name
    with pytest.raises(ValueError, match="loopback only"):
        rig.loop.metrics.serve(0, addr="0.0.0.0")


def test_hedge_venue_must_have_a_broker(tmp_path):
    from dataclasses import replace

    rig = make_rig(tmp_path, predictor=Dial(0.5))
    with pytest.raises(ValueError, match="no broker for the hedge venue"):
        type(rig.loop)(
            rig.loop.features,
            rig.loop.model,
            rig.executor,
            replace(rig.loop.settings, hedge_venue="okx"),
        )
    assert HEDGE_VENUE in rig.executor.brokers
    rig.close()


def test_bars_before_the_first_price_make_no_decision(tmp_path, bars):
    rig = make_rig(tmp_path, predictor=Dial(0.5))
    empty = type(bars[0])(bars[0].t_us - int(timedelta(hours=1) / timedelta(microseconds=1)))
    rig.loop.run([empty, *bars[:5]])
    first = decisions(rig.log_path)[:3]
    assert all("no price yet: no decision" in r["errors"] for r in first)
    rig.close()


class DivergenceModel:
    """A deterministic model of the features (p rises with cross-venue OI divergence),
    scored the same way per vector (live) and per table (backtest)."""

    column = "oi_div_xvenue_4h"

    def __init__(self) -> None:
        self.i = CORE_V1.features.index(self.column)

    @staticmethod
    def _p(div: float) -> float:
        return 0.0 if not np.isfinite(div) else float(min(1.0, max(0.0, div / 6.0)))

    def predict_vector(self, x: np.ndarray) -> tuple[float, float]:
        p = self._p(float(x[self.i]))
        return p, p

    def contributions(self, x: np.ndarray) -> np.ndarray:
        return np.zeros(N_FEATURES + 1)

    def predict_table(self, table: pl.DataFrame) -> pl.DataFrame:
        p = [self._p(np.nan if v is None else v) for v in table[self.column].to_list()]
        return table.select("ts", "symbol").with_columns(pl.Series("p", p, dtype=pl.Float64))


@pytest.mark.parametrize("model", ["divergence", "lightgbm"])
def test_replay_ends_with_the_backtest_positions_same_policy_same_model(tmp_path, fitted, model):
    # rows known at their bar close: the backtest's timing (a bar's price known at t);
    # the full 30 days are checked by tests/benchmarks/bench_live.py
    panel = simulated_panel(3, seed=11, lag=False)
    predictor = DivergenceModel() if model == "divergence" else fitted
    parity = replay_vs_backtest(panel, predictor, tmp_path)
    assert len(parity.backtest_trades) >= 4  # the comparison means something
    assert parity.mismatches() == []
    assert [(t, s) for t, s, _ in parity.live_trades] == [
        (t, s) for t, s, _ in parity.backtest_trades
    ]
    for symbol, position in parity.live.items():
        assert position == pytest.approx(parity.backtest[symbol], rel=1e-7, abs=1e-8)
        price = parity.final_price[symbol]
        hedge = parity.backtest_hedge_usd[symbol]
        assert -position * price == pytest.approx(hedge, rel=1e-7, abs=1e-3)
    assert any(p < 0 for p in parity.live.values())  # a hedge is on at the end
    # the check can fail: a live run that missed one trade is reported
    broken = replace(parity, live_trades=parity.live_trades[1:])
    assert broken.mismatches()


def _cli_config(tmp_path: Path) -> Path:
    live = tmp_path / "live"
    config = tmp_path / "config.toml"
    config.write_text(
        f"""
[mlflow]
tracking_uri = "sqlite:///{tmp_path / "mlflow.db"}"
artifact_root = "{tmp_path / "artifacts"}"
[live]
state_db = "{live / "state.sqlite"}"
kill_switch_file = "{live / "KILL"}"
decision_log = "{live / "decisions.jsonl"}"
"""
    )
    return config


def test_cli_kill_resume_and_replay(tmp_path, panel):
    from oihedge.pipelines.cli.main import main
    from oihedge.pipelines.store import PanelStore

    config = _cli_config(tmp_path)
    kill = tmp_path / "live" / "KILL"
    assert main(["live", "kill", "--reason", "test stop", "--config", str(config)]) == 0
    assert json.loads(kill.read_text())["reason"] == "test stop"
    assert main(["live", "resume", "--reason", "ok", "--config", str(config)]) == 0
    assert not kill.exists()
    store = PanelStore(tmp_path / "panel")
    store.append(panel.head(2000))
    out = tmp_path / "summary.json"
    code = main(
        [
            "live",
            "--replay",
            str(tmp_path / "panel"),
            "--max-bars",
            "20",
            "--json",
            str(out),
            "--config",
            str(config),
        ]
    )
    assert code == 0
    summary = json.loads(out.read_text())
    assert summary["bars"] == 20 and summary["decisions"] == 60
    # no champion registered: the loop ran without a model and said so
    assert summary["model_events"][0]["event"] == "unavailable"
    assert (tmp_path / "live" / "decisions.jsonl").exists()
    assert (
        main(["live", "--replay", str(tmp_path / "panel"), "--live", "--config", str(config)]) == 2
    )


def test_champion_watch_checks_at_most_once_per_interval():
    from oihedge.serving.live.model_watch import ChampionWatch

    lookups: list[str] = []
    now = [0.0]

    def version_of(name: str) -> str | None:
        lookups.append(name)
        return None

    watch = ChampionWatch(
        "m", {}, check_every=1, min_interval_s=30.0, version_of=version_of, clock=lambda: now[0]
    )
    for _ in range(100):  # a fast replay: 100 bars within the same second
        watch.poll()
    assert len(lookups) == 1
    now[0] = 31.0
    watch.poll()
    assert len(lookups) == 2
    with pytest.raises(ValueError, match="min_interval_s must be >= 0"):
        ChampionWatch("m", {}, min_interval_s=-1.0)


class _Pyfunc:
    """What :class:`oihedge.models.registry.LoadedModel` wraps: ``unwrap_python_model``."""

    def __init__(self, predictor) -> None:
        self.predictor = predictor

    def unwrap_python_model(self):
        return self.predictor


def _last_priced(path: Path) -> dict[str, dict]:
    """The last decision record with a pricing, per symbol."""
    out = {}
    for r in decisions(path):
        if r.get("p_entry") is not None:
            out[r["symbol"]] = r
    return out


def test_the_policy_prices_with_the_served_model_s_severity(tmp_path, bars):
    from oihedge.serving.live.model_watch import StaticModel

    runs = {}
    for k in (3.0, 6.0):
        rig = make_rig(tmp_path / f"k{k:g}", model=StaticModel(Dial(0.01), "v", severity_k=k))
        rig.loop.run(bars[:400])
        rig.close()
        runs[k] = _last_priced(rig.log_path)
    defaults = PolicyParams()
    for symbol, six in runs[6.0].items():
        three = runs[3.0][symbol]
        assert six["severity_k"] == 6.0 and three["severity_k"] == 3.0
        # severity = k x vol x sqrt(4h / 1y): twice the drop, half the entry level
        assert six["severity"] == pytest.approx(2 * three["severity"], rel=1e-12)
        assert six["p_entry"] == pytest.approx(three["p_entry"] / 2, rel=1e-12)
        assert three["severity"] > defaults.stress_move_min  # the vol term, not the floor
        assert six["hold_cost"] == pytest.approx(three["hold_cost"], rel=1e-12)
        assert six["p_exit"] == pytest.approx(defaults.exit_share * six["p_entry"], rel=1e-12)
        assert six["tail_loss"] is None or six["tail_loss"] > 0


def test_a_new_champion_brings_its_own_severity(tmp_path, bars):
    from oihedge.models.registry import LoadedModel

    cards = {"1": {"severity": {"k": 3.0}}, "2": {"severity": {"k": 6.0}}, "3": {"severity": None}}
    champion = ["1"]

    def loader(name, running):
        v = champion[0]
        return LoadedModel(name, v, f"models:/{name}/{v}", _Pyfunc(Dial(0.01)), cards[v])

    watch = ChampionWatch("m", {}, loader=loader, version_of=lambda n: champion[0])
    rig = make_rig(tmp_path, model=watch)
    rig.loop.run(bars[:300])
    first = _last_priced(rig.log_path)
    champion[0] = "2"
    rig.loop.run(bars[300:302])
    second = _last_priced(rig.log_path)
    champion[0] = "3"
    rig.loop.run(bars[302:304])
    third = _last_priced(rig.log_path)
    rig.close()
    for symbol, rec in second.items():
        assert first[symbol]["severity_k"] == 3.0 and first[symbol]["model_version"] == "1"
        assert rec["severity_k"] == 6.0 and rec["model_version"] == "2"
        assert rec["p_entry"] < first[symbol]["p_entry"]
        # no severity in the card: the policy's own stress_k
        assert third[symbol]["severity_k"] is None and third[symbol]["model_version"] == "3"
    loaded = [r for r in read_log(rig.log_path) if r["kind"] == "model"]
    assert [e["version"] for e in loaded] == ["1", "2", "3"]
