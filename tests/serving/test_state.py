"""The state store: tables, the order state machine, persistence across a restart."""

from __future__ import annotations

import sqlite3
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from oihedge.serving.execution.orders import OrderIntent, OrderResult, Position
from oihedge.serving.execution.state import DuplicateOrderError, StateStore
from oihedge.serving.execution.state_schema import NEXT_STATES, ORDER_STATES, TERMINAL_STATES
from oihedge.serving.policy.policy import PolicyParams, PolicyState, Signals, decide

NOW = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)
ORDER = OrderIntent(
    venue="binanceusdm",
    symbol="BTC",
    market="BTC/USDT:USDT",
    side="sell",
    amount=0.1,
    notional_usd=6_000.0,
    price_usd=60_000.0,
    reduce_only=False,
    client_order_id="ohabc",
    decision_ts=NOW,
    target_usd=6_000.0,
)


@pytest.fixture
def store(tmp_path):
    with StateStore(tmp_path / "live" / "state.sqlite") as s:
        yield s


def result(status: str, filled: float = 0.0, **kw) -> OrderResult:
    return OrderResult("ohabc", "binanceusdm", "BTC", status, 0.1, filled, **kw)  # type: ignore[arg-type]


def test_the_file_uses_wal_and_has_the_tables(store):
    db = sqlite3.connect(store.path)
    assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    tables = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    assert {
        "decisions",
        "orders",
        "order_transitions",
        "positions",
        "kill_switch_events",
        "events",
    } <= tables


def test_intent_is_recorded_once(store):
    record = store.record_intent(ORDER, now=NOW)
    assert (record.state, record.filled, record.acked, record.attempts) == ("intent", 0.0, False, 0)
    assert record.intent() == ORDER
    with pytest.raises(DuplicateOrderError, match="client order id 'ohabc' is already recorded"):
        store.record_intent(replace(ORDER, amount=0.2), now=NOW)
    assert store.get_order("ohabc").amount == 0.1  # the first one stands
    assert store.get_order("nope") is None


def test_broker_results_move_the_order_along(store):
    store.record_intent(ORDER, now=NOW)
    sent = store.apply_result(result("open", exchange_order_id="42"), now=NOW, attempts_delta=1)
    assert (sent.state, sent.acked, sent.attempts, sent.exchange_order_id) == (
        "sent",
        True,
        1,
        "42",
    )
    part = store.apply_result(result("partially_filled", 0.04, avg_price=60_010.0), now=NOW)
    assert (part.state, part.filled, part.avg_price) == ("partially_filled", 0.04, 60_010.0)
    done = store.apply_result(result("filled", 0.1, avg_price=60_005.0, fee_usd=3.0), now=NOW)
    assert (done.state, done.filled, done.fee_usd, done.exchange_order_id) == (
        "filled",
        0.1,
        3.0,
        "42",
    )
    assert store.transitions("ohabc") == [
        (None, "intent", ""),
        ("intent", "sent", ""),
        ("sent", "partially_filled", ""),
        ("partially_filled", "filled", ""),
    ]


def test_terminal_states_never_change(store):
    store.record_intent(ORDER, now=NOW)
    store.apply_result(result("rejected", reason="margin"), now=NOW)
    assert store.get_order("ohabc").error == "margin"
    with pytest.raises(
        ValueError, match="order 'ohabc': transition 'rejected' -> 'filled' not allowed"
    ):
        store.set_state("ohabc", "filled", now=NOW)
    store.set_state("ohabc", "rejected", now=NOW)  # re-writing the same state is fine


def test_the_state_machine():
    assert set(NEXT_STATES) == set(ORDER_STATES)
    for state in TERMINAL_STATES:
        assert NEXT_STATES[state] == {state}
    assert "intent" not in set().union(*NEXT_STATES.values())  # nothing goes back to intent
    assert "sent" not in NEXT_STATES["partially_filled"]


def test_unknown_states_and_ids_are_refused(store):
    store.record_intent(ORDER, now=NOW)
    with pytest.raises(ValueError, match="state must be one of .* got 'done'"):
        store.set_state("ohabc", "done", now=NOW)
    with pytest.raises(KeyError, match="no order with client order id 'x'"):
        store.set_state("x", "sent", now=NOW)
    with pytest.raises(ValueError, match="timezone-aware"):
        store.record_intent(replace(ORDER, client_order_id="oh2"), now=datetime(2025, 1, 1))


def test_everything_survives_a_restart(tmp_path):
    path = tmp_path / "state.sqlite"
    with StateStore(path) as first:
        first.record_intent(ORDER, now=NOW)
        first.set_positions(
            "binanceusdm", [Position("binanceusdm", "BTC", -0.1, 60_000.0, 59_000.0)], now=NOW
        )
        first.record_event("guard_refusal", {"reason": "cap"}, now=NOW, client_order_id="oh9")
        first.record_kill_switch("engaged", "test", now=NOW)
    with StateStore(path) as second:
        assert second.get_order("ohabc").state == "intent"
        (pos,) = second.positions().values()
        assert (pos.base_amount, pos.hedge_usd, pos.avg_entry_usd) == (-0.1, 6_000.0, 59_000.0)
        (event,) = second.events("guard_refusal")
        assert event.detail == {"reason": "cap"} and event.client_order_id == "oh9"
        assert [e.kind for e in second.kill_switch_events()] == ["engaged"]


def test_positions_are_replaced_per_venue(store):
    store.set_positions("okx", [Position("okx", "ETH", -2.0, 3_000.0)], now=NOW)
    store.set_positions("binanceusdm", [Position("binanceusdm", "BTC", -0.1, 60_000.0)], now=NOW)
    store.set_positions("binanceusdm", [], now=NOW)  # the broker reports it flat
    assert list(store.positions()) == [("okx", "ETH")]
    with pytest.raises(ValueError, match="position of venue 'okx' given for venue 'bybit'"):
        store.set_positions("bybit", [Position("okx", "ETH", 1.0)], now=NOW)


def test_decisions_are_recorded_with_their_reasons(store):
    params = PolicyParams()
    signals = Signals(
        ts=NOW, portfolio_usd=1_000_000.0, fresh_venues=3, oi_div_xvenue=0.1, vol_ann=0.6
    )
    decision = decide(0.6, signals, PolicyState(), params)
    store.record_decision(
        NOW, "BTC", decision, probability=0.6, now=NOW + timedelta(seconds=1), venue="binanceusdm"
    )
    (row,) = store.decisions("BTC")
    assert row["target_usd"] == decision.target_usd and row["tier"] == decision.tier
    assert row["probability"] == 0.6 and row["venue"] == "binanceusdm"
    assert row["payload"]["reasons"] == list(decision.reasons)
    assert row["payload"]["state"]["last_ts"] == NOW.isoformat()
    assert store.decisions("ETH") == []


def test_dump_contains_every_table(store):
    store.record_intent(ORDER, now=NOW)
    text = store.dump()
    assert "ohabc" in text and "CREATE TABLE" in text


def test_a_replay_store_writes_decisions_in_blocks_and_before_any_order(tmp_path):
    import sqlite3

    from oihedge.serving.execution.state import DECISIONS_PER_WRITE

    path = tmp_path / "state.sqlite"
    store = StateStore(path, durable=False)
    on_file = sqlite3.connect(path)

    def filed() -> int:
        return on_file.execute("SELECT count(*) FROM decisions").fetchone()[0]

    signals = Signals(ts=NOW, portfolio_usd=1e6, fresh_venues=3, oi_div_xvenue=0.1, vol_ann=0.6)
    decision = decide(0.6, signals, PolicyState(), PolicyParams())
    for i in range(DECISIONS_PER_WRITE - 1):
        store.record_decision(
            NOW + timedelta(minutes=5 * i), "BTC", decision, probability=0.6, now=NOW
        )
    assert filed() == 0  # queued
    store.record_intent(ORDER, now=NOW)  # a decision is on file before its orders
    assert filed() == DECISIONS_PER_WRITE - 1
    for _ in range(DECISIONS_PER_WRITE + 3):
        store.record_decision(NOW, "ETH", decision, probability=0.6, now=NOW)
    assert filed() == 2 * DECISIONS_PER_WRITE - 1  # a full block written at once
    assert len(store.decisions("ETH")) == DECISIONS_PER_WRITE + 3  # reading writes the rest
    store.record_decision(NOW, "SOL", decision, probability=0.6, now=NOW)
    store.close()
    with StateStore(path) as reopened:
        rows = reopened.decisions()
    n = DECISIONS_PER_WRITE
    assert [r["symbol"] for r in rows] == ["BTC"] * (n - 1) + ["ETH"] * (n + 3) + ["SOL"]
    assert [r["id"] for r in rows] == sorted(r["id"] for r in rows)
    on_file.close()


def test_a_file_keeps_its_id_and_an_older_file_gets_kill_switch_details(tmp_path):
    import sqlite3

    path = tmp_path / "state.sqlite"
    old = sqlite3.connect(path)  # a kill-switch table from before its detail column
    old.execute(
        "CREATE TABLE kill_switch_events (id INTEGER PRIMARY KEY AUTOINCREMENT, at TEXT NOT"
        " NULL, action TEXT NOT NULL, reason TEXT NOT NULL DEFAULT '', client_order_id TEXT)"
    )
    old.execute(
        "INSERT INTO kill_switch_events (at, action) VALUES (?, 'engaged')", (NOW.isoformat(),)
    )
    old.commit()
    old.close()
    with StateStore(path) as first:
        first.record_kill_switch("released", "ok", now=NOW, detail={"released_at": "t1"})
        state_id = first.state_id
        events = first.kill_switch_events()
    assert [(e.kind, e.detail) for e in events] == [
        ("engaged", {"reason": ""}),
        ("released", {"released_at": "t1", "reason": "ok"}),
    ]
    with StateStore(path) as again:
        assert again.state_id == state_id and len(state_id) == 32


def test_a_decision_with_orders_reaches_the_file_with_its_first_intent(tmp_path):
    import sqlite3

    path = tmp_path / "state.sqlite"
    store = StateStore(path)  # durable: a decision without orders is written at once
    on_file = sqlite3.connect(path)

    def filed() -> tuple[int, int]:
        (d,) = on_file.execute("SELECT count(*) FROM decisions").fetchone()
        (o,) = on_file.execute("SELECT count(*) FROM orders").fetchone()
        return d, o

    signals = Signals(ts=NOW, portfolio_usd=1e6, fresh_venues=3, oi_div_xvenue=0.1, vol_ann=0.6)
    decision = decide(0.6, signals, PolicyState(), PolicyParams())
    store.record_decision(NOW, "ETH", decision, probability=0.6, now=NOW)
    assert filed() == (1, 0)
    store.record_decision(NOW, "BTC", decision, probability=0.6, now=NOW, with_orders=True)
    assert filed() == (1, 0)  # a kill here: neither the decision nor its order
    store.record_intent(ORDER, now=NOW)
    assert filed() == (2, 1)  # one transaction
    with pytest.raises(DuplicateOrderError):  # a failed write keeps the queued row
        store.record_decision(NOW, "SOL", decision, probability=0.6, now=NOW, with_orders=True)
        store.record_intent(ORDER, now=NOW)
    assert filed() == (2, 1)
    store.flush()
    assert filed() == (3, 1)
    store.close()
    on_file.close()
