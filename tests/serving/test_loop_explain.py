"""The loop's model calls: a bar's symbols scored in one call, and the decision log's
contributions recomputed only when they can have moved (else carried over, stamped with
the bar they explain)."""

from __future__ import annotations

import threading
import time
from datetime import datetime, timedelta

import lightgbm as lgb
import live_support
import numpy as np
import pytest
from live_support import make_rig, read_log, simulated_panel

from oihedge.features.registry import CORE_V1
from oihedge.models.calibrate import ProbabilityCalibrator
from oihedge.models.single_row import SingleRowBooster
from oihedge.serving.feeds.replay import ReplaySource
from oihedge.serving.live.decision_log import read_records
from oihedge.serving.live.model_watch import RowPredictor, row_predictor
from oihedge.serving.live.settings import LoopSettings
from oihedge.serving.policy.params import PolicyParams

N_FEATURES = len(CORE_V1.features)


class Dial(live_support.Dial):
    """The support's dial, counting its explanations; contribution 0 is the probability."""

    def __init__(self, p: float) -> None:
        super().__init__(p)
        self.explained = 0

    def contributions(self, x: np.ndarray) -> np.ndarray:
        self.explained += 1
        return super().contributions(x)


@pytest.fixture(scope="module")
def bars():
    return list(ReplaySource(simulated_panel(1, seed=5)))


def _decisions(path) -> list[dict]:
    """The decision lines, each with its contributions (merged if they followed it)."""
    return [r for r in read_records(path) if r["kind"] == "decision" and r.get("tier")]


def test_contributions_are_carried_only_while_the_decision_has_not_moved(tmp_path, bars):
    dial = Dial(0.10)
    explain = {"explain_min_change": 0.01, "explain_max_age": timedelta(hours=1)}
    rig = make_rig(tmp_path, predictor=dial, explain=explain)
    jumps = {60: 0.105, 90: 0.12}  # bar -> new probability: a 0.005 move, then 0.015
    for i, bar in enumerate(bars[:200]):
        dial.p = jumps.get(i, dial.p)
        rig.loop.run([bar])
    rig.close()
    index = {str(bar.t): i for i, bar in enumerate(bars)}
    records = _decisions(rig.log_path)
    explained = {(r["symbol"], r["ts"]): r for r in records if r["contributions_ts"] == r["ts"]}
    carried = [r for r in records if r["contributions_ts"] != r["ts"]]
    assert len(carried) > 3 * len(explained)
    assert dial.explained == len(explained)
    for r in carried:  # every decision still carries contributions: those of an earlier bar
        source = explained[(r["symbol"], r["contributions_ts"])]
        assert r["contributions"] == source["contributions"]
        assert r["contributions"][0][1] == pytest.approx(source["probability"])
        assert abs(r["probability"] - source["probability"]) < 0.01
        assert (r["tier"], r["target_fraction"]) == (source["tier"], source["target_fraction"])
        assert not r["orders"]
        age = datetime.fromisoformat(r["ts"]) - datetime.fromisoformat(source["ts"])
        assert timedelta(0) < age < timedelta(hours=1)
    at = {}
    for r in records:
        at.setdefault(index[r["ts"]], []).append(r)
    # the 0.015 move is explained anew for every symbol; the 0.005 one is not
    assert len(at[90]) == 3 and all(r["contributions_ts"] == r["ts"] for r in at[90])
    assert all(r["contributions"][0][1] == pytest.approx(0.12) for r in at[90])
    for r in at[60]:  # explained there only if the last explanation had aged out
        if r["contributions_ts"] == r["ts"]:
            before = max(i for (s, ts) in explained if s == r["symbol"] and (i := index[ts]) < 60)
            assert 60 - before >= 12
    # an unchanged probability is explained again once the explanation is an hour old
    for symbol in ("BTC", "ETH", "NEAR"):
        again = [i for (s, ts), _ in explained.items() if s == symbol and (i := index[ts]) > 90]
        assert len(again) >= (200 - 90) // 12 - 1, symbol


class Slow(Dial):
    """Dial whose contributions take time, on whichever thread computes them."""

    def __init__(self, p: float, delay: float) -> None:
        super().__init__(p)
        self.delay = delay
        self.threads: set[str] = set()

    def contributions(self, x: np.ndarray) -> np.ndarray:
        self.threads.add(threading.current_thread().name)
        time.sleep(self.delay)
        return super().contributions(x)


def test_explanations_run_on_a_worker_and_the_log_keeps_the_decision_order(tmp_path, bars):
    model = Slow(0.10, delay=0.002)
    rig = make_rig(tmp_path, predictor=model, explain={"explain_min_change": 0.0})
    rig.loop.explainer.backlog = 4  # a slow worker: the loop waits when 4 bars wait
    summary = rig.loop.run(bars[:30])
    rig.close()
    assert model.threads and all(n.startswith("oihedge-explain") for n in model.threads)
    records = _decisions(rig.log_path)
    assert len(records) == summary.decisions == 3 * 30
    # one line per decision, bar after bar, the symbols in the loop's order
    assert [(r["ts"], r["symbol"]) for r in records] == [
        (str(bar.t), s) for bar in bars[:30] for s in ("BTC", "ETH", "NEAR")
    ]
    assert all(r["contributions_ts"] == r["ts"] and r["contributions"] for r in records)
    assert rig.loop.explainer._worker is None  # the worker stops with the run
    # the run's time includes waiting for the last explanations (90 x 2 ms of SHAP)
    assert summary.seconds >= 90 * 0.002


def test_a_live_loop_writes_a_bars_explained_lines_before_the_next_bar(tmp_path, bars):
    model = Slow(0.10, delay=0.005)
    rig = make_rig(tmp_path, predictor=model, explain={"replay": False})
    rig.loop.start()
    for i, bar in enumerate(bars[:5]):
        rig.loop.process(bar)
        records = _decisions(rig.log_path)  # read before the next bar
        assert len(records) == 3 * (i + 1)
        assert all(r["contributions"] for r in records[-3:])
    rig.loop.explainer.close()
    rig.close()


def test_a_live_loop_does_not_wait_past_the_explain_timeout(tmp_path, bars):
    model = Slow(0.10, delay=0.4)  # SHAP far slower than the timeout
    explain = {"replay": False, "explain_timeout": timedelta(milliseconds=50)}
    rig = make_rig(tmp_path, predictor=model, explain=explain)
    rig.loop.start()
    for bar in bars[:3]:
        started = time.perf_counter()
        rig.loop.process(bar)
        assert time.perf_counter() - started < 0.35  # never the 3 x 0.4 s of SHAP
    started = time.perf_counter()
    rig.loop.explainer.close(0.05)  # a worker still busy is left behind, not waited for
    assert time.perf_counter() - started < 0.35
    rig.close()
    records = _decisions(rig.log_path)
    assert len(records) == 9  # every line written, in order
    late = [r for r in records if "contributions: not computed within 0.05 s" in r["errors"]]
    assert late and all(r["contributions"] == [] for r in late)
    assert rig.loop.summary.errors["model_contributions_timeout"] == len(late)
    # a late explanation is not carried: the symbol's next decision is explained again
    for symbol in ("BTC", "ETH", "NEAR"):
        mine = [r for r in records if r["symbol"] == symbol]
        assert all(r["contributions_ts"] in (None, r["ts"]) for r in mine)


class Gated(Dial):
    """Dial whose contributions (the vector's own values) wait until the test opens
    ``gate`` (10 s at most)."""

    def __init__(self, p: float) -> None:
        super().__init__(p)
        self.gate = threading.Event()

    def contributions(self, x: np.ndarray) -> np.ndarray:
        if not self.gate.wait(10):
            self.gate.set()  # the rest go through: a loop that waits for them ends
            raise RuntimeError("the gate never opened")
        return np.append(np.nan_to_num(x), 0.0)


def _moving(i: int) -> float:
    """A probability that hedges and unhedges every 20 bars (the state moves)."""
    return 0.9 if (i // 20) % 2 else 0.02


def test_a_decision_is_persisted_with_every_earlier_line_on_file_without_waiting(tmp_path, bars):
    model = Gated(0.02)
    rig = make_rig(tmp_path / "gated", predictor=model, explain={"explain_min_change": 0.0})
    index = {bar.t: i for i, bar in enumerate(bars)}
    persisted: list[int] = []
    record_decision = rig.store.record_decision

    def checked(ts, symbol, *args, **kwargs):  # noqa: ANN001, ANN002, ANN003, ANN202
        # the guarantee: before the state moves to bar i, every line of bars < i is on file
        on_file = [
            (r["ts"], r["symbol"]) for r in read_records(rig.log_path) if r["kind"] == "decision"
        ]
        i = index[ts]
        earlier = [(str(b.t), s) for b in bars[:i] for s in ("BTC", "ETH", "NEAR")]
        assert [k for k in on_file if k in set(earlier)] == earlier  # all, in order
        persisted.append(i)
        return record_decision(ts, symbol, *args, **kwargs)

    rig.store.record_decision = checked
    rig.loop.start()
    started = time.perf_counter()
    returned = []
    for i, bar in enumerate(bars[:80]):  # SHAP blocked all along
        model.p = _moving(i)
        returned += rig.loop.process(bar)
    assert time.perf_counter() - started < 5  # never waited for the blocked worker
    assert len({i for i in persisted if i > 0}) >= 3  # decisions persisted past bar 0
    model.gate.set()
    rig.loop.run([])  # the end of the run: the last contributions in
    rig.close()
    raw = read_log(rig.log_path)
    follow = [r for r in raw if r["kind"] == "decision" and r.get("contributions_follow")]
    assert follow and all(r["contributions"] == [] for r in follow)
    position = {(r["kind"], r["ts"], r["symbol"]): n for n, r in enumerate(raw) if "symbol" in r}
    for r in follow:  # each completed by one later line
        assert (
            position[("contributions", r["ts"], r["symbol"])]
            > position[("decision", r["ts"], r["symbol"])]
        )
    assert sum(r["kind"] == "contributions" for r in raw) == len(follow)
    records = _decisions(rig.log_path)
    assert len(records) == 3 * 80 and all("contributions_follow" not in r for r in records)
    assert all(r["contributions_ts"] == r["ts"] and r["contributions"] for r in records)
    assert all("contributions_follow" not in r for r in returned)  # whole in memory too

    # merged, the log says what an unblocked run's says
    dial = Gated(0.02)
    dial.gate.set()
    reference = make_rig(tmp_path / "ref", predictor=dial, explain={"explain_min_change": 0.0})
    for i, bar in enumerate(bars[:80]):  # each bar's contributions in before the next
        dial.p = _moving(i)
        reference.loop.run([bar])
    reference.close()
    assert _decisions(reference.log_path) == records


def test_a_live_loop_writes_whole_lines(tmp_path, bars):
    # it waits for each bar's contributions at the bar's end: none are left to follow
    # when the next bar persists a decision
    model = Slow(0.02, delay=0.001)
    rig = make_rig(tmp_path, predictor=model, explain={"replay": False})
    rig.loop.start()
    for i, bar in enumerate(bars[:60]):
        model.p = _moving(i)
        rig.loop.process(bar)
    rig.loop.explainer.close()
    persisted = rig.store.decisions()
    rig.close()
    raw = read_log(rig.log_path)
    assert persisted and not [r for r in raw if r["kind"] == "contributions"]
    assert all(r["contributions"] for r in raw if r["kind"] == "decision" and r.get("tier"))


class FailsOnce(Dial):
    """Dial whose first explanation (BTC's, at the first bar) fails."""

    def contributions(self, x: np.ndarray) -> np.ndarray:
        self.explained += 1
        if self.explained == 1:
            raise RuntimeError("no SHAP yet")
        return super().contributions(x)


@pytest.mark.parametrize("replay", [True, False])
def test_a_failed_explanation_is_never_carried(tmp_path, bars, replay):
    rig = make_rig(tmp_path, predictor=FailsOnce(0.10), explain={"replay": replay})
    rig.loop.run(bars[:6])
    rig.close()
    records = _decisions(rig.log_path)
    btc = [r for r in records if r["symbol"] == "BTC"]
    assert btc[0]["errors"] == ["contributions: RuntimeError: no SHAP yet"]
    assert btc[0]["contributions"] == [] and btc[0]["contributions_ts"] is None
    assert rig.loop.summary.errors["model_contributions"] == 1
    assert all(r["contributions"] for r in records if r["symbol"] != "BTC")
    if replay:
        # explained in one batch after the run: the later BTC decisions carried the
        # pending explanation, which failed -> they have none, and say so by a null bar
        assert all(r["contributions"] == [] and r["contributions_ts"] is None for r in btc)
    else:
        # a live loop knows at the end of each bar: the next BTC decision is explained
        assert btc[1]["contributions_ts"] == btc[1]["ts"] and btc[1]["contributions"]
        assert all(r["contributions_ts"] == btc[1]["ts"] for r in btc[2:])


def test_no_minimum_change_explains_every_decision(tmp_path, bars):
    dial = Dial(0.10)
    rig = make_rig(tmp_path, predictor=dial, explain={"explain_min_change": 0.0})
    rig.loop.run(bars[:80])
    rig.close()
    records = _decisions(rig.log_path)
    assert records and all(r["contributions_ts"] == r["ts"] for r in records)
    assert all(len(r["contributions"]) == 1 for r in records)
    assert dial.explained == len(records)


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("explain_min_change", -0.1, "explain_min_change must be finite and >= 0, got -0.1"),
        ("explain_min_change", float("nan"), "explain_min_change must be finite"),
        ("explain_max_age", timedelta(0), r"explain_max_age must be > 0"),
        ("explain_timeout", timedelta(0), r"explain_timeout must be > 0"),
    ],
)
def test_explain_settings_are_checked(field, value, message):
    with pytest.raises(ValueError, match=message):
        LoopSettings(
            strategy_id="t",
            hedge_venue="okx",
            params={"BTC": PolicyParams()},
            portfolio_usd={"BTC": 1.0},
            **{field: value},
        )


# -- one scoring call per bar ---------------------------------------------------------


@pytest.fixture(scope="module")
def small_model() -> tuple[lgb.Booster, ProbabilityCalibrator, np.ndarray]:
    rng = np.random.default_rng(4)
    X = rng.normal(size=(2000, 6))
    X[rng.random(X.shape) < 0.05] = np.nan
    y = (np.nan_to_num(X[:, 0]) + 0.5 * rng.normal(size=2000) > 1.0).astype(int)
    booster = lgb.train(
        {"objective": "binary", "verbose": -1, "num_threads": 1, "num_leaves": 7},
        lgb.Dataset(X, y),
        20,
    )
    calibrator = ProbabilityCalibrator("platt").fit(booster.predict(X), y)
    return booster, calibrator, X[:50]


def test_predict_vectors_is_predict_vector_per_row(small_model):
    booster, calibrator, X = small_model
    predictor = RowPredictor(booster, calibrator)
    p, raw = predictor.predict_vectors(X)
    singles = [predictor.predict_vector(x) for x in X]
    assert p.tolist() == [s[0] for s in singles]  # bit for bit
    assert raw.tolist() == [s[1] for s in singles]
    np.testing.assert_allclose(raw, booster.predict(X), rtol=0, atol=1e-12)
    np.testing.assert_allclose(p, calibrator.predict(booster.predict(X)), rtol=0, atol=1e-12)
    with pytest.raises(ValueError, match=r"rows of 6 features, got shape \(6,\)"):
        predictor.predict_vectors(X[0])


def test_a_loaded_pyfunc_is_scored_through_its_own_fast_path(small_model):
    booster, calibrator, X = small_model

    class Pyfunc:  # what oihedge.models.artifact.CascadePyfunc exposes after load_context
        def __init__(self) -> None:
            self.booster, self.calibrator = booster, calibrator
            self.rows = SingleRowBooster(booster)

    pyfunc = Pyfunc()
    predictor = row_predictor(pyfunc)
    assert isinstance(predictor, RowPredictor) and predictor.rows is pyfunc.rows
    assert row_predictor(predictor) is predictor
    assert predictor.predict_vectors(X[:3])[0].tolist() == [
        predictor.predict_vector(x)[0] for x in X[:3]
    ]


class Batch(Dial):
    """Scores a bar in one call, which fails; one by one, ETH's vector fails."""

    def predict_vectors(self, X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        raise RuntimeError("batch down")

    def predict_vector(self, x: np.ndarray) -> tuple[float, float]:
        if self.fail_next.pop(0):
            raise RuntimeError("bad vector")
        return self.p, self.p


def test_a_failing_batch_is_scored_symbol_by_symbol(tmp_path, bars):
    model = Batch(0.2)
    model.fail_next = [False, True, False] * len(bars)  # BTC, ETH, NEAR in turn
    rig = make_rig(tmp_path, predictor=model)
    rig.loop.run(bars[:40])
    rig.close()
    records = [r for r in read_records(rig.log_path) if r["kind"] == "decision"]
    assert records
    for r in records:
        if r["symbol"] == "ETH":
            assert r["probability"] is None
            assert r["errors"] == ["model: RuntimeError: bad vector"]
        else:
            assert r["probability"] == 0.2 and not r["errors"]
    assert rig.loop.summary.errors["model"] == len(records) // 3
