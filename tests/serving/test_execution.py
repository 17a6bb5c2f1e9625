"""The executor: state written around every order, guards, the kill switch, and restarts.

The must-show: the process killed between sending an order and recording its fill, then
restarted on the same state file -- no duplicate order, the position right. Shown for the
paper broker (a real ``os._exit`` in a subprocess, and an in-process interrupt) and for
the ccxt broker over replayed HTTP.
"""

from __future__ import annotations

import logging
import subprocess
import sys
import textwrap
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from broker_fakes import FakeBinanceFutures

from oihedge.serving.execution.brokers import Broker, CcxtBroker, PaperBroker
from oihedge.serving.execution.executor import Executor
from oihedge.serving.execution.guards import (
    Caps,
    OrderGuard,
    engage_kill_switch,
    release_kill_switch,
)
from oihedge.serving.execution.orders import InstrumentRules, OrderIntent, OrderResult, Position
from oihedge.serving.execution.rebalancer import plan_orders
from oihedge.serving.execution.state import StateStore
from oihedge.serving.policy.costs import CostModel

REPO = Path(__file__).resolve().parents[2]
T0 = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)
BAR = timedelta(minutes=5)
VENUE = "binanceusdm"
KEY = ("binanceusdm", "BTC")
RULES = {KEY: InstrumentRules(VENUE, "BTC", "BTC/USDT:USDT", 0.001, 0.001, 5.0)}
ENV = {
    "OIHEDGE_BINANCEUSDM_API_KEY": "fake-key-123456",
    "OIHEDGE_BINANCEUSDM_SECRET": "fake-secret-654321",
}
WINDOW = timedelta(minutes=10)


class Crash(Broker):
    """A broker wrapper that dies right after the venue accepted an order."""

    def __init__(self, inner: Broker, exc: type[BaseException] = KeyboardInterrupt) -> None:
        self.inner, self.venue, self.exc = inner, inner.venue, exc

    def place(self, order: OrderIntent) -> OrderResult:
        self.inner.place(order)
        raise self.exc("killed after sending, before recording")

    def order_by_client_id(self, client_order_id, symbol):
        return self.inner.order_by_client_id(client_order_id, symbol)

    def open_orders(self):
        return self.inner.open_orders()

    def positions(self) -> dict[str, Position]:
        return self.inner.positions()

    def cancel(self, client_order_id, symbol):
        return self.inner.cancel(client_order_id, symbol)

    def rules(self, symbol):
        return self.inner.rules(symbol)


def executor(
    path: Path, broker: Broker, *, kill: Path | None = None, caps: Caps | None = None
) -> Executor:
    return Executor(
        StateStore(path),
        {VENUE: broker},
        OrderGuard(caps or Caps(1e6, 1e7, 10)),
        kill_switch_file=kill or path.parent / "KILL",
        resend_window=WINDOW,
        position_tolerance_usd=1.0,
    )


def paper(path: Path) -> PaperBroker:
    return PaperBroker(VENUE, path, costs=CostModel())


def orders_for(
    ex: Executor, target_usd: float, ts: datetime, price: float = 60_000.0
) -> list[OrderIntent]:
    return plan_orders(
        {KEY: target_usd}, ex.positions(), {"BTC": price}, RULES, strategy_id="test", decision_ts=ts
    )


def ccxt(fake: FakeBinanceFutures) -> CcxtBroker:
    config = {"session": fake.session(), "enableRateLimit": False}
    return CcxtBroker(VENUE, live=True, symbols=("BTC",), env=ENV, exchange_config=config)


# -- the normal path ----------------------------------------------------------------------------


def test_paper_bar_by_bar(tmp_path):
    db = tmp_path / "state.sqlite"
    broker = paper(db)
    broker.on_price(T0, "BTC", 60_000.0)
    ex = executor(db, broker)
    with pytest.raises(RuntimeError, match="reconcile\\(\\) must complete before submit"):
        ex.submit([], now=T0)
    ex.reconcile(now=T0)
    (sub,) = ex.submit(orders_for(ex, 6_000.0, T0), now=T0)
    assert sub.outcome == "sent"  # the paper order waits for the next price
    assert ex.store.get_order(sub.client_order_id).state == "sent"
    # while it works, it counts: re-planning the next decision does not double it
    assert ex.positions() == {KEY: -0.1} and ex.hedge_usd() == pytest.approx(6_000.0)
    assert orders_for(ex, 6_000.0, T0 + timedelta(minutes=1)) == []
    broker.on_price(T0 + BAR, "BTC", 60_000.0)
    report = ex.reconcile(now=T0 + BAR)
    assert report.resolved == [sub.client_order_id] and report.position_differences == []
    record = ex.store.get_order(sub.client_order_id)
    assert (record.state, record.filled, record.attempts) == ("filled", 0.1, 1)
    assert ex.positions() == {KEY: -0.1} and ex.hedge_usd() == pytest.approx(6_000.0)
    assert orders_for(ex, 6_000.0, T0 + BAR) == []  # at target: nothing to do
    (sub,) = ex.submit(orders_for(ex, 0.0, T0 + BAR), now=T0 + BAR)
    broker.on_price(T0 + 2 * BAR, "BTC", 60_000.0)
    ex.reconcile(now=T0 + 2 * BAR)
    assert ex.positions() == {} and ex.store.get_order(sub.client_order_id).reduce_only


def test_the_same_decision_twice_sends_one_order(tmp_path):
    fake = FakeBinanceFutures(api_key=ENV["OIHEDGE_BINANCEUSDM_API_KEY"])
    ex = executor(tmp_path / "state.sqlite", ccxt(fake))
    ex.reconcile(now=T0)
    orders = orders_for(ex, 6_000.0, T0)
    first = ex.submit(orders, now=T0)
    second = ex.submit(orders, now=T0)
    assert first[0].outcome == "filled"
    assert second[0].outcome == "duplicate" and second[0].reason == "already recorded as filled"
    assert len(fake.orders_created()) == 1 and fake.positions == {"BTCUSDT": -0.1}
    assert ex.positions() == {KEY: -0.1}  # synced right after the fill


def test_guard_refusals_are_persisted_and_nothing_is_sent(tmp_path):
    fake = FakeBinanceFutures(api_key=ENV["OIHEDGE_BINANCEUSDM_API_KEY"])
    ex = executor(tmp_path / "state.sqlite", ccxt(fake), caps=Caps(5_000.0, 1e7, 10))
    ex.reconcile(now=T0)
    (sub,) = ex.submit(orders_for(ex, 6_000.0, T0), now=T0)
    assert sub.outcome == "refused" and "exceeds max_order_usd $5,000.00" in sub.reason
    assert fake.orders_created() == [] and ex.store.orders() == []
    (event,) = ex.store.events("guard_refusal")
    assert event.client_order_id == sub.client_order_id and event.detail["notional_usd"] == 6_000.0


def test_the_hedge_cap_counts_orders_earlier_in_the_batch(tmp_path):
    fake = FakeBinanceFutures(
        api_key=ENV["OIHEDGE_BINANCEUSDM_API_KEY"], prices={"BTCUSDT": 60_000.0, "ETHUSDT": 3_000.0}
    )
    ex = executor(tmp_path / "state.sqlite", ccxt(fake), caps=Caps(1e6, 10_000.0, 10))
    ex.reconcile(now=T0)
    btc = orders_for(ex, 6_000.0, T0)[0]
    eth = replace(btc, symbol="ETH", market="ETH/USDT:USDT", amount=2.0, client_order_id="ohEth1")
    subs = ex.submit([btc, eth], now=T0)
    assert [s.outcome for s in subs] == ["filled", "refused"]
    assert "hedge after order $12,000.00 exceeds" in subs[1].reason


def test_kill_switch_blocks_new_orders_and_leaves_the_hedge(tmp_path, caplog):
    caplog.set_level(logging.INFO)
    fake = FakeBinanceFutures(api_key=ENV["OIHEDGE_BINANCEUSDM_API_KEY"])
    kill = tmp_path / "KILL"
    ex = executor(tmp_path / "state.sqlite", ccxt(fake), kill=kill)
    ex.reconcile(now=T0)
    ex.submit(orders_for(ex, 6_000.0, T0), now=T0)
    engage_kill_switch(kill, "operator: venue unstable")
    subs = ex.submit(
        orders_for(ex, 0.0, T0 + BAR) + orders_for(ex, 12_000.0, T0 + BAR), now=T0 + BAR
    )
    assert [s.outcome for s in subs] == ["blocked", "blocked"]
    assert subs[0].reason == "operator: venue unstable"
    assert len(fake.orders_created()) == 1 and fake.positions == {"BTCUSDT": -0.1}  # hedge stays
    assert ex.reconcile(now=T0 + BAR).complete and ex.positions() == {KEY: -0.1}
    release_kill_switch(kill, "venue fine again")
    (sub,) = ex.submit(orders_for(ex, 0.0, T0 + 2 * BAR), now=T0 + 2 * BAR)
    assert sub.outcome == "filled" and fake.positions == {"BTCUSDT": 0.0}
    events = [(e.kind, e.detail["reason"]) for e in ex.store.kill_switch_events()]
    assert events[0] == ("engaged", "operator: venue unstable")
    assert [k for k, _ in events] == ["engaged", "blocked", "blocked", "released"]
    assert "blocked by the kill switch" in caplog.text and "kill switch engaged" in caplog.text


def test_kill_switch_changes_are_recorded_when_seen_with_their_reasons(tmp_path):
    kill = tmp_path / "KILL"
    db = tmp_path / "state.sqlite"
    ex = executor(db, paper(db), kill=kill)
    ex.reconcile(now=T0)
    sec = timedelta(seconds=1)
    engage_kill_switch(kill, "operator: venue unstable", now=T0 + 30 * sec)
    ex.check_kill_switch(now=T0 + BAR)  # no order anywhere near
    release_kill_switch(kill, "venue fine again", now=T0 + BAR + 30 * sec)
    ex.check_kill_switch(now=T0 + 2 * BAR)
    # a kill and a resume both between two checks
    engage_kill_switch(kill, "second stop", now=T0 + 2 * BAR + 10 * sec)
    release_kill_switch(kill, "false alarm", now=T0 + 2 * BAR + 20 * sec)
    ex.check_kill_switch(now=T0 + 3 * BAR)
    assert ex.check_kill_switch(now=T0 + 4 * BAR) == []  # nothing new: nothing twice
    events = [(e.kind, e.at, e.detail["reason"]) for e in ex.store.kill_switch_events()]
    assert events == [
        ("engaged", T0 + BAR, "operator: venue unstable"),
        ("released", T0 + 2 * BAR, "venue fine again"),
        ("engaged", T0 + 3 * BAR, "second stop"),
        ("released", T0 + 3 * BAR, "false alarm"),
    ]
    details = [e.detail for e in ex.store.kill_switch_events()]
    assert details[0]["engaged_at"] == (T0 + 30 * sec).isoformat()
    assert details[1]["released_at"] == (T0 + BAR + 30 * sec).isoformat()
    assert details[3]["engaged_at"] == (T0 + 2 * BAR + 10 * sec).isoformat()
    ex.store.close()
    # a restart reads the history back: nothing recorded again; a file removed by hand
    # is a release with no reason given
    ex = executor(db, paper(db), kill=kill)
    assert ex.check_kill_switch(now=T0 + 5 * BAR) == []
    kill.touch()
    ex.check_kill_switch(now=T0 + 6 * BAR)
    kill.unlink()
    (change,) = ex.check_kill_switch(now=T0 + 7 * BAR)
    assert change.action == "released" and "no reason given" in change.reason
    kinds = [(e.kind, e.at) for e in ex.store.kill_switch_events()][-2:]
    assert kinds == [("engaged", T0 + 6 * BAR), ("released", T0 + 7 * BAR)]


# -- killed between sending and recording ------------------------------------------------------


_CHILD = """
import datetime, os, sys
from datetime import UTC
from pathlib import Path
sys.path[:0] = [{repo!r}, {tests!r}]
from oihedge.serving.policy.costs import CostModel
from oihedge.serving.execution.brokers import PaperBroker
from oihedge.serving.execution.executor import Executor
from oihedge.serving.execution.guards import Caps, OrderGuard
from oihedge.serving.execution.orders import InstrumentRules
from oihedge.serving.execution.rebalancer import plan_orders
from oihedge.serving.execution.state import StateStore

class Die(PaperBroker):
    def place(self, order):
        result = super().place(order)
        os._exit(9)  # SIGKILL-like: no cleanup, no finally, no flush

db = Path({db!r})
t0 = datetime.datetime(2025, 3, 1, 12, 0, tzinfo=UTC)
broker = Die("binanceusdm", db, costs=CostModel())
broker.on_price(t0, "BTC", 60_000.0)
ex = Executor(StateStore(db), {{"binanceusdm": broker}}, OrderGuard(Caps(1e6, 1e7, 10)),
              kill_switch_file=db.parent / "KILL", resend_window={window!r})
ex.reconcile(now=t0)
rules = {{("binanceusdm", "BTC"): InstrumentRules("binanceusdm", "BTC", "BTC/USDT:USDT", 0.001)}}
orders = plan_orders({{("binanceusdm", "BTC"): 6000.0}}, ex.positions(), {{"BTC": 60_000.0}}, rules,
                     strategy_id="test", decision_ts=t0)
ex.submit(orders, now=t0)
"""


def test_paper_process_killed_after_sending(tmp_path):
    db = tmp_path / "state.sqlite"
    code = textwrap.dedent(_CHILD).format(
        repo=str(REPO), tests=str(REPO / "tests"), db=str(db), window=WINDOW
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 9, done.stderr
    # restart: a new store, broker and executor on the same file
    broker = paper(db)
    ex = executor(db, broker)
    (order,) = ex.store.orders()
    assert order.state == "intent"  # the crash came before the result was recorded
    report = ex.reconcile(now=T0 + timedelta(minutes=1))
    assert report.resolved == [order.client_order_id] and report.resent == []
    assert ex.store.get_order(order.client_order_id).state == "sent"
    # the loop re-decides the same bar: the working order counts, nothing is planned; and
    # the same order submitted again is a duplicate (same client id), not a second order
    assert orders_for(ex, 6_000.0, T0) == []
    (again,) = ex.submit([order.intent()], now=T0 + timedelta(minutes=1))
    assert again.outcome == "duplicate"
    broker.on_price(T0 + BAR, "BTC", 60_000.0)
    ex.reconcile(now=T0 + BAR)
    assert [o.client_order_id for o in broker.all_orders()] == [order.client_order_id]
    assert ex.store.get_order(order.client_order_id).state == "filled"
    assert ex.positions() == {KEY: -0.1} and broker.positions()["BTC"].base_amount == -0.1


@pytest.mark.parametrize("exc", [KeyboardInterrupt, SystemExit])
def test_paper_interrupted_after_sending(tmp_path, exc):
    db = tmp_path / "state.sqlite"
    broker = paper(db)
    broker.on_price(T0, "BTC", 60_000.0)
    crashing = executor(db, Crash(broker, exc))
    crashing.reconcile(now=T0)
    with pytest.raises(exc):
        crashing.submit(orders_for(crashing, 6_000.0, T0), now=T0)
    broker.on_price(T0 + BAR, "BTC", 60_000.0)  # it fills while the loop is down
    crashing.store.close()  # the process is gone, and its lock with it
    ex = executor(db, paper(db))
    report = ex.reconcile(now=T0 + BAR)
    assert len(report.resolved) == 1 and report.position_differences == []
    assert [o.state for o in ex.store.orders()] == ["filled"]
    assert len(broker.all_orders()) == 1 and ex.positions() == {KEY: -0.1}


def test_ccxt_interrupted_after_sending(tmp_path):
    fake = FakeBinanceFutures(api_key=ENV["OIHEDGE_BINANCEUSDM_API_KEY"])
    db = tmp_path / "state.sqlite"
    crashing = executor(db, Crash(ccxt(fake)))
    crashing.reconcile(now=T0)
    orders = orders_for(crashing, 6_000.0, T0)
    with pytest.raises(KeyboardInterrupt):
        crashing.submit(orders, now=T0)
    assert crashing.store.get_order(orders[0].client_order_id).state == "intent"
    crashing.store.close()  # the process is gone, and its lock with it
    ex = executor(db, ccxt(fake))  # restart: a fresh ccxt instance, the same venue account
    report = ex.reconcile(now=T0 + timedelta(seconds=30))
    assert report.resolved == [orders[0].client_order_id] and report.resent == []
    assert report.position_differences == []  # the stored position plus the found fill
    record = ex.store.get_order(orders[0].client_order_id)
    assert (record.state, record.filled, record.avg_price) == ("filled", 0.1, 60_000.0)
    assert ex.submit(orders_for(ex, 6_000.0, T0), now=T0 + BAR) == []  # at target already
    assert ex.submit(orders, now=T0 + BAR)[0].outcome == "duplicate"
    assert len(fake.orders_created()) == 1 and len(fake.orders) == 1
    assert fake.positions == {"BTCUSDT": -0.1} and ex.positions() == {KEY: -0.1}


def test_killed_before_sending_is_resent_with_the_same_id(tmp_path):
    fake = FakeBinanceFutures(api_key=ENV["OIHEDGE_BINANCEUSDM_API_KEY"])
    db = tmp_path / "state.sqlite"
    first = executor(db, ccxt(fake))
    first.reconcile(now=T0)
    (order,) = orders_for(first, 6_000.0, T0)
    first.store.record_intent(order, now=T0)  # written, then the process died before sending
    first.store.close()  # the process is gone, and its lock with it
    ex = executor(db, ccxt(fake))
    report = ex.reconcile(now=T0 + timedelta(minutes=2))
    assert report.resent == [order.client_order_id] and report.complete
    record = ex.store.get_order(order.client_order_id)
    assert (record.state, record.attempts) == ("filled", 1)
    assert ("intent", "filled", "re-sent on reconciliation") in ex.store.transitions(
        order.client_order_id
    )
    assert [c.params["newClientOrderId"] for c in fake.orders_created()] == [order.client_order_id]
    assert ex.positions() == {KEY: -0.1}
    assert ex.reconcile(now=T0 + BAR).resent == []  # resolved: never sent again


def test_an_old_intent_is_not_resent(tmp_path):
    fake = FakeBinanceFutures(api_key=ENV["OIHEDGE_BINANCEUSDM_API_KEY"])
    db = tmp_path / "state.sqlite"
    ex = executor(db, ccxt(fake))
    (order,) = orders_for(ex, 6_000.0, T0)
    ex.store.record_intent(order, now=T0)
    report = ex.reconcile(now=T0 + WINDOW + timedelta(seconds=1))
    assert report.abandoned == [order.client_order_id] and report.complete
    record = ex.store.get_order(order.client_order_id)
    assert record.state == "cancelled" and fake.orders_created() == []
    assert record.error == "never reached the venue; 0:10:01 old > resend window"


def test_an_acknowledged_order_missing_at_the_broker_is_never_resent(tmp_path):
    fake = FakeBinanceFutures(api_key=ENV["OIHEDGE_BINANCEUSDM_API_KEY"], fill_market=False)
    db = tmp_path / "state.sqlite"
    ex = executor(db, ccxt(fake))
    ex.reconcile(now=T0)
    (sub,) = ex.submit(orders_for(ex, 6_000.0, T0), now=T0)
    assert sub.outcome == "sent"
    del fake.orders[sub.client_order_id]  # the venue purged it
    report = ex.reconcile(now=T0 + BAR)
    assert report.abandoned == [sub.client_order_id] and report.resent == []
    assert len(fake.orders_created()) == 1


def test_kill_switch_holds_resends(tmp_path):
    fake = FakeBinanceFutures(api_key=ENV["OIHEDGE_BINANCEUSDM_API_KEY"])
    db = tmp_path / "state.sqlite"
    ex = executor(db, ccxt(fake))
    (order,) = orders_for(ex, 6_000.0, T0)
    ex.store.record_intent(order, now=T0)
    engage_kill_switch(db.parent / "KILL", "stop")
    report = ex.reconcile(now=T0 + timedelta(minutes=1))
    assert report.unresolved == [order.client_order_id] and not ex.reconciled
    assert fake.orders_created() == []


def test_an_unreachable_broker_leaves_the_reconciliation_incomplete(tmp_path):
    fake = FakeBinanceFutures(api_key=ENV["OIHEDGE_BINANCEUSDM_API_KEY"], fill_market=False)
    db = tmp_path / "state.sqlite"
    ex = executor(db, ccxt(fake))
    ex.reconcile(now=T0)
    (sub,) = ex.submit(orders_for(ex, 6_000.0, T0), now=T0)
    fake.api_key = "rotated"  # every private call now fails
    report = ex.reconcile(now=T0 + BAR)
    assert not report.complete and sub.client_order_id in report.unresolved
    with pytest.raises(RuntimeError, match="reconcile"):
        ex.submit([], now=T0 + BAR)
    assert ex.store.get_order(sub.client_order_id).state == "sent"  # left as it was


def test_position_differences_are_reported_and_the_broker_wins(tmp_path, caplog):
    caplog.set_level(logging.WARNING)
    fake = FakeBinanceFutures(
        api_key=ENV["OIHEDGE_BINANCEUSDM_API_KEY"], prices={"BTCUSDT": 60_000.0, "ETHUSDT": 3_000.0}
    )
    fake.positions = {"BTCUSDT": -0.5}  # opened by hand on the venue
    fake.orders["manual1"] = {
        "status": "NEW",
        "symbol": "ETHUSDT",
        "avgPrice": "0",
        "clientOrderId": "manual1",
        "cumQuote": "0",
        "executedQty": "0",
        "orderId": 1,
        "origQty": "1",
        "reduceOnly": False,
        "side": "BUY",
        "updateTime": 1,
    }
    ex = executor(tmp_path / "state.sqlite", ccxt(fake))
    report = ex.reconcile(now=T0)
    assert report.position_differences == ["binanceusdm/BTC: stored 0, broker -0.5 (broker kept)"]
    assert ex.positions() == {KEY: -0.5}
    (event,) = ex.store.events("position_difference")
    assert event.detail == {"stored": 0.0, "broker": -0.5, "price_usd": 60_000.0}
    assert report.foreign_open_orders == []  # only BTC is traded: ETH orders are not listed
    fake.orders["manual2"] = {
        **fake.orders["manual1"],
        "symbol": "BTCUSDT",
        "clientOrderId": "manual2",
    }
    assert ex.reconcile(now=T0 + BAR).foreign_open_orders == ["manual2"]
    assert "is not ours" in caplog.text
