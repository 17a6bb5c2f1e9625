"""Brokers: one contract for both, the paper broker's fills and costs, the ccxt broker over
replayed HTTP (no network), and credentials kept out of logs, errors and state."""

from __future__ import annotations

import logging
import math
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest
import requests
from broker_fakes import FakeBinanceFutures, PlacementVenue

from oihedge.serving import redact
from oihedge.serving.execution.brokers import (
    Broker,
    BrokerError,
    CcxtBroker,
    OrderRejectedError,
    OutcomeUnknownError,
    PaperBroker,
)
from oihedge.serving.execution.brokers.ccxt_broker import (
    LiveTradingDisabledError,
    MissingCredentialsError,
)
from oihedge.serving.execution.brokers.paper_fills import Quote
from oihedge.serving.execution.executor import Executor
from oihedge.serving.execution.guards import Caps, OrderGuard
from oihedge.serving.execution.orders import OrderIntent, client_order_id
from oihedge.serving.execution.state import StateStore
from oihedge.serving.policy.costs import CostModel

T0 = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)
BAR = timedelta(minutes=5)
KEY = "fakeKEY-7f3a9c1b2e"
SECRET = "fakeSECRET-0d4e8b6a5c"
ENV = {"OIHEDGE_BINANCEUSDM_API_KEY": KEY, "OIHEDGE_BINANCEUSDM_SECRET": SECRET}
COSTS = CostModel()


def intent(
    side: str = "sell",
    amount: float = 0.1,
    *,
    target: float = 6_000.0,
    ts: datetime = T0,
    reduce_only: bool = False,
) -> OrderIntent:
    return OrderIntent(
        venue="binanceusdm",
        symbol="BTC",
        market="BTC/USDT:USDT",
        side=side,  # type: ignore[arg-type]
        amount=amount,
        notional_usd=amount * 60_000.0,
        price_usd=60_000.0,
        reduce_only=reduce_only,
        client_order_id=client_order_id("test", "binanceusdm", "BTC", ts, target),
        decision_ts=ts,
        target_usd=target,
    )


def ccxt_broker(fake: FakeBinanceFutures, env: dict[str, str] = ENV) -> CcxtBroker:
    config = {"session": fake.session(), "enableRateLimit": False}  # no sleeping between replays
    return CcxtBroker("binanceusdm", live=True, symbols=("BTC",), env=env, exchange_config=config)


# -- the contract both brokers honour -------------------------------------------------------


class BrokerContract:
    """Every broker: idempotent place per client id, lookups, positions in base units."""

    def make(self, tmp_path) -> Broker:
        raise NotImplementedError

    def settle(self, broker: Broker) -> None:
        """Let the market move so that placed market orders fill."""

    def test_place_fill_and_position(self, tmp_path):
        broker = self.make(tmp_path)
        order = intent()
        first = broker.place(order)
        assert first.client_order_id == order.client_order_id and not first.already_placed
        self.settle(broker)
        done = broker.order_by_client_id(order.client_order_id, "BTC")
        assert done.status == "filled" and done.filled == pytest.approx(0.1)
        assert done.avg_price == pytest.approx(60_000.0, rel=0.01)
        (pos,) = broker.positions().values()
        assert pos.symbol == "BTC" and pos.base_amount == pytest.approx(-0.1)
        assert broker.open_orders() == []

    def test_placing_the_same_client_id_twice_makes_one_order(self, tmp_path):
        broker = self.make(tmp_path)
        order = intent()
        broker.place(order)
        self.settle(broker)
        again = broker.place(order)
        self.settle(broker)
        assert again.client_order_id == order.client_order_id
        assert broker.positions()["BTC"].base_amount == pytest.approx(-0.1)

    def test_unknown_client_id_is_none(self, tmp_path):
        assert self.make(tmp_path).order_by_client_id("ohdoesnotexist", "BTC") is None

    def test_rules(self, tmp_path):
        rules = self.make(tmp_path).rules("BTC")
        assert rules.market == "BTC/USDT:USDT" and rules.amount_step > 0 and rules.reduce_only


class TestPaperBrokerContract(BrokerContract):
    def make(self, tmp_path) -> PaperBroker:
        broker = PaperBroker("binanceusdm", tmp_path / "paper.sqlite", costs=COSTS)
        broker.on_price(T0, "BTC", 60_000.0)
        return broker

    def settle(self, broker: Broker) -> None:
        assert isinstance(broker, PaperBroker)
        last = max(
            [
                T0,
                *[
                    datetime.fromisoformat(r[0])
                    for r in broker._db.execute("SELECT last_ts FROM paper_positions")
                ],
            ]
        )
        broker.on_price(last + BAR, "BTC", 60_000.0)


class TestCcxtBrokerContract(BrokerContract):
    def make(self, tmp_path) -> CcxtBroker:
        return ccxt_broker(FakeBinanceFutures(api_key=KEY))


# -- paper broker ---------------------------------------------------------------------------


@pytest.fixture
def paper(tmp_path) -> PaperBroker:
    broker = PaperBroker(
        "binanceusdm", tmp_path / "state.sqlite", costs=COSTS, initial_cash_usd=10_000.0
    )
    broker.on_price(T0, "BTC", 60_000.0)
    return broker


def test_paper_fills_at_the_next_price_with_the_cost_model(paper):
    order = intent()
    assert paper.place(order).status == "open"
    assert paper.on_price(T0, "BTC", 60_000.0) == []  # same bar: not yet
    (fill,) = paper.on_price(T0 + BAR, "BTC", 61_000.0, vol_ann=0.5, volume_24h_usd=1e9)
    expected = COSTS.trade_cost(-0.1 * 61_000.0, 61_000.0, vol_ann=0.5, volume_24h_usd=1e9)
    assert fill.status == "filled" and fill.filled == 0.1
    assert fill.avg_price == pytest.approx(expected.fill_price, rel=1e-12)
    assert fill.fee_usd == pytest.approx(expected.fee_usd, rel=1e-12)
    account = paper.account()
    assert account.fees_usd == pytest.approx(expected.fee_usd)
    assert account.slippage_usd == pytest.approx(expected.slippage_usd)
    assert account.cash_usd == pytest.approx(10_000.0 - expected.fee_usd)
    pos = paper.positions()["BTC"]
    assert pos.base_amount == -0.1 and pos.avg_entry_usd == pytest.approx(expected.fill_price)


def test_paper_stress_makes_slippage_worse(tmp_path):
    fills = []
    for stress in (False, True):
        broker = PaperBroker("binanceusdm", tmp_path / f"{stress}.sqlite", costs=COSTS)
        broker.on_price(T0, "BTC", 60_000.0)
        broker.place(intent())
        fills.append(broker.on_price(T0 + BAR, "BTC", 60_000.0, stress=stress)[0].avg_price)
    assert fills[1] < fills[0] < 60_000.0  # a sell fills lower, much lower in a cascade


def test_paper_accrues_funding_on_the_short(paper):
    paper.place(intent())
    paper.on_price(T0 + BAR, "BTC", 60_000.0)
    before = paper.account()
    paper.on_price(T0 + BAR + timedelta(hours=8), "BTC", 60_000.0, funding_rate_8h=0.0001)
    after = paper.account()
    expected = COSTS.funding_cost(0.1 * 60_000.0, 0.0001, timedelta(hours=8))
    assert expected == pytest.approx(-0.6)  # the short receives positive funding
    assert after.funding_usd - before.funding_usd == pytest.approx(expected)
    assert after.cash_usd - before.cash_usd == pytest.approx(0.6)


def test_paper_round_trip_pnl(paper):
    paper.place(intent())
    paper.on_price(T0 + BAR, "BTC", 60_000.0)
    paper.place(intent("buy", target=0.0, ts=T0 + BAR, reduce_only=True))
    (close,) = paper.on_price(T0 + 2 * BAR, "BTC", 54_000.0)
    account = paper.account()
    entry_fill = COSTS.trade_cost(-6_000.0, 60_000.0, vol_ann=None, volume_24h_usd=None).fill_price
    realised = 0.1 * (entry_fill - close.avg_price)
    assert account.realised_pnl_usd == pytest.approx(realised)
    assert 550.0 < realised < 600.0  # the short gained 10 %, less slippage both ways
    assert paper.positions() == {}


def test_paper_reduce_only(paper):
    paper.place(intent("buy", reduce_only=True))
    (rejected,) = paper.on_price(T0 + BAR, "BTC", 60_000.0)
    assert rejected.status == "rejected" and "nothing to reduce" in rejected.reason
    paper.place(intent(ts=T0 + BAR))  # short 0.1
    paper.place(intent("buy", 0.5, target=0.0, ts=T0 + 2 * BAR, reduce_only=True))
    fills = paper.on_price(T0 + 2 * BAR, "BTC", 60_000.0)
    assert [f.status for f in fills] == ["filled", "filled"]
    assert fills[1].filled == pytest.approx(0.1)  # cut to the position, never flipped long
    assert paper.positions() == {}


def _two_symbols(tmp_path, name: str) -> PaperBroker:
    broker = PaperBroker("binanceusdm", tmp_path / name, costs=COSTS, initial_cash_usd=1e4)
    broker.on_prices([Quote(T0, "BTC", 60_000.0), Quote(T0, "ETH", 3_000.0)])
    broker.place(intent())
    broker.place(replace(intent(), symbol="ETH", market="ETH/USDT:USDT", client_order_id="ohe"))
    return broker


def test_paper_on_prices_is_on_price_per_quote_in_one_transaction(tmp_path):
    quotes = [
        Quote(T0 + BAR, "BTC", 61_000.0, vol_ann=0.5, funding_rate_8h=0.0001),
        Quote(T0 + BAR, "ETH", 2_900.0, vol_ann=0.7, funding_rate_8h=0.0002),
    ]
    one_by_one = _two_symbols(tmp_path, "a.sqlite")
    fills_a = [
        f
        for q in quotes
        for f in one_by_one.on_price(
            q.ts, q.symbol, q.price, vol_ann=q.vol_ann, funding_rate_8h=q.funding_rate_8h
        )
    ]
    batched = _two_symbols(tmp_path, "b.sqlite")
    fills_b = batched.on_prices(quotes)
    assert [(f.client_order_id, f.avg_price, f.fee_usd) for f in fills_b] == [
        (f.client_order_id, f.avg_price, f.fee_usd) for f in fills_a
    ]
    assert len(fills_b) == 2 and batched.account() == one_by_one.account()
    assert batched.positions() == one_by_one.positions()


def test_paper_on_prices_held_position_new_symbol_and_repeats_match_on_price(tmp_path):
    # funding on a held short, a symbol never priced before, one symbol twice in a batch
    batches = [
        [Quote(T0 + BAR, "BTC", 61_000.0, funding_rate_8h=0.0001)],
        [
            Quote(T0 + 2 * BAR, "BTC", 62_000.0, vol_ann=0.5, funding_rate_8h=-0.0003),
            Quote(T0 + 2 * BAR, "SOL", 150.0, funding_rate_8h=0.0001),
            Quote(T0 + 2 * BAR, "ETH", 2_950.0, funding_rate_8h=0.0002),
        ],
        [
            Quote(T0 + 3 * BAR, "ETH", 2_960.0, funding_rate_8h=0.0002),
            Quote(T0 + 4 * BAR, "ETH", 2_970.0, funding_rate_8h=0.0002),
        ],
    ]
    one_by_one = _two_symbols(tmp_path, "d.sqlite")
    batched = _two_symbols(tmp_path, "e.sqlite")
    for i, quotes in enumerate(batches):
        for q in quotes:
            one_by_one.on_price(
                q.ts, q.symbol, q.price, vol_ann=q.vol_ann, funding_rate_8h=q.funding_rate_8h
            )
        batched.on_prices(quotes)
        assert batched.account() == one_by_one.account(), i
        assert batched.positions() == one_by_one.positions(), i
        if i == 0:  # a second order, filled by the next batch
            for broker in (one_by_one, batched):
                broker.place(replace(intent(), client_order_id="oh2"))
    assert batched.account().funding_usd != 0.0
    assert [o.status for o in batched.all_orders()] == ["filled", "filled", "filled"]
    assert batched.all_orders() == one_by_one.all_orders()


def test_paper_on_prices_random_bars_keep_the_account_to_the_bit(tmp_path):
    # three shorts paying or earning funding every bar, orders filling between charges:
    # the batched account must add the same amounts in the same order as one by one
    import random

    rng = random.Random(11)
    brokers = [
        PaperBroker("binanceusdm", tmp_path / name, costs=COSTS, initial_cash_usd=1e4)
        for name in ("f.sqlite", "g.sqlite")
    ]
    symbols = ("BTC", "ETH", "SOL")
    prices = {"BTC": 60_000.0, "ETH": 3_000.0, "SOL": 150.0}
    for i in range(60):
        ts = T0 + i * BAR
        quotes = []
        for symbol in symbols:
            prices[symbol] *= 1.0 + rng.gauss(0.0, 0.003)
            rate = rng.uniform(-0.0004, 0.0004)
            quotes.append(Quote(ts, symbol, prices[symbol], vol_ann=0.6, funding_rate_8h=rate))
        one_by_one, batched = brokers
        for q in quotes:
            one_by_one.on_price(
                q.ts, q.symbol, q.price, vol_ann=q.vol_ann, funding_rate_8h=q.funding_rate_8h
            )
        batched.on_prices(quotes)
        assert batched.account() == one_by_one.account(), i
        if i % 4 == 0:  # a sell of one symbol, filled at the next bar
            symbol = symbols[(i // 4) % 3]
            order = replace(
                intent(amount=round(rng.uniform(0.5, 3.0), 3)),
                symbol=symbol,
                market=f"{symbol}/USDT:USDT",
                client_order_id=f"oh{i}",
            )
            for broker in brokers:
                broker.place(order)
    assert batched.positions() == one_by_one.positions()
    assert batched.account().funding_usd != 0.0


def test_paper_on_prices_writes_nothing_when_one_quote_is_bad(tmp_path):
    broker = _two_symbols(tmp_path, "c.sqlite")
    account = broker.account()
    with pytest.raises(ValueError, match="ETH is before"):
        broker.on_prices([Quote(T0 + BAR, "BTC", 61_000.0), Quote(T0 - BAR, "ETH", 3_000.0)])
    assert [o.status for o in broker.open_orders()] == ["open", "open"]  # BTC not filled
    assert broker.account() == account


def test_paper_resumes_after_a_restart(tmp_path):
    path = tmp_path / "state.sqlite"
    first = PaperBroker("binanceusdm", path, costs=COSTS, initial_cash_usd=500.0)
    first.on_price(T0, "BTC", 60_000.0)
    first.place(intent())
    first.close()
    second = PaperBroker("binanceusdm", path, costs=COSTS, initial_cash_usd=999.0)
    assert [o.status for o in second.open_orders()] == ["open"]
    second.on_price(T0 + BAR, "BTC", 60_000.0)
    assert second.positions()["BTC"].base_amount == -0.1
    assert second.account().cash_usd < 500.0  # the first start's cash, less the fee


def test_paper_cancel_and_errors(paper):
    order = intent()
    paper.place(order)
    assert paper.cancel(order.client_order_id, "BTC").status == "cancelled"
    assert paper.on_price(T0 + BAR, "BTC", 60_000.0) == []
    with pytest.raises(BrokerError, match="no order 'ohx'"):
        paper.cancel("ohx", "BTC")
    with pytest.raises(ValueError, match=r"ts 2025-03-01T11:55:00\+00:00 for BTC is before"):
        paper.on_price(T0 - BAR, "BTC", 1.0)
    with pytest.raises(ValueError, match="price for BTC must be a finite number > 0, got nan"):
        paper.on_price(T0 + 2 * BAR, "BTC", math.nan)
    with pytest.raises(OrderRejectedError, match="venue 'okx' sent to paper broker 'binanceusdm'"):
        paper.place(replace(order, venue="okx"))


# -- ccxt broker over replayed HTTP ----------------------------------------------------------


def test_ccxt_broker_needs_live_and_both_keys():
    with pytest.raises(LiveTradingDisabledError, match="needs live=True"):
        CcxtBroker("binanceusdm", live=False, symbols=("BTC",), env=ENV)
    only_key = {"OIHEDGE_BINANCEUSDM_API_KEY": KEY}
    with pytest.raises(
        MissingCredentialsError, match="needs OIHEDGE_BINANCEUSDM_SECRET set"
    ) as err:
        CcxtBroker("binanceusdm", live=True, symbols=("BTC",), env=only_key)
    assert KEY not in str(err.value)
    with pytest.raises(
        MissingCredentialsError, match="OKX_API_KEY, OIHEDGE_OKX_SECRET, OIHEDGE_OKX_PASSWORD"
    ):
        CcxtBroker("okx", live=True, symbols=("BTC",), env={})
    with pytest.raises(ValueError, match="venue must be a ccxt exchange id, got 'nope'"):
        CcxtBroker("nope", live=True, symbols=("BTC",), env=ENV)
    with pytest.raises(
        ValueError, match=r"credentials come from the environment only, got \['apiKey'\]"
    ):
        CcxtBroker(
            "binanceusdm", live=True, symbols=("BTC",), env=ENV, exchange_config={"apiKey": "x"}
        )


def test_ccxt_order_carries_client_id_and_reduce_only():
    fake = FakeBinanceFutures(api_key=KEY)
    broker = ccxt_broker(fake)
    opened = broker.place(intent())
    closing = intent("buy", target=0.0, ts=T0 + BAR, reduce_only=True)
    closed = broker.place(closing)
    first, second = fake.orders_created()
    assert first.params["newClientOrderId"] == opened.client_order_id
    assert "reduceOnly" not in first.params
    assert second.params["newClientOrderId"] == closing.client_order_id
    assert second.params["reduceOnly"] == "true"
    assert (second.params["side"], second.params["type"], second.params["quantity"]) == (
        "BUY",
        "MARKET",
        "0.1",
    )
    assert second.headers["X-MBX-APIKEY"] == KEY
    assert closed.status == "filled" and broker.positions() == {}


def test_ccxt_duplicate_client_id_on_retry_is_already_placed():
    fake = FakeBinanceFutures(api_key=KEY, fill_market=False)  # the order rests (still open)
    broker = ccxt_broker(fake)
    order = intent()
    assert broker.place(order).status == "open"
    # a retry whose first look-up misses it (a lagging read replica): the send is answered
    # -4116 ClientOrderId is duplicated, and the second look-up finds the order
    fake.hide_next_lookups = 1
    retry = broker.place(order)
    assert retry.already_placed and retry.status == "open" and retry.reason == "already placed"
    assert len(fake.orders_created(order.client_order_id)) == 2
    assert len(fake.orders) == 1  # one order at the venue
    lookups = [c for c in fake.calls if c.method == "GET" and c.path == "/fapi/v1/order"]
    assert lookups[-1].params["origClientOrderId"] == order.client_order_id
    assert [o.client_order_id for o in broker.open_orders()] == [order.client_order_id]
    fake.fill_resting()
    again = broker.place(order)  # filled: Binance would take the id again; the look-up stops it
    assert again.already_placed and again.status == "filled"
    assert len(fake.orders_created(order.client_order_id)) == 2


def test_ccxt_cancel():
    fake = FakeBinanceFutures(api_key=KEY, fill_market=False)
    broker = ccxt_broker(fake)
    order = intent()
    broker.place(order)
    cancelled = broker.cancel(order.client_order_id, "BTC")
    assert cancelled.status == "cancelled" and cancelled.filled == 0.0
    assert (
        broker.open_orders() == []
        and broker.cancel(order.client_order_id, "BTC").status == "cancelled"
    )
    with pytest.raises(BrokerError, match="no order 'ohmissing' to cancel"):
        broker.cancel("ohmissing", "BTC")


def test_ccxt_lost_response_is_found_by_client_id():
    fake = FakeBinanceFutures(api_key=KEY, lose_next_responses=1)
    result = ccxt_broker(fake).place(intent())  # accepted, then the response timed out
    assert (
        result.already_placed and result.status == "filled" and result.filled == pytest.approx(0.1)
    )
    assert len(fake.orders_created()) == 1


def test_ccxt_refusal_and_unknown_outcome():
    fake = FakeBinanceFutures(api_key=KEY)
    broker = ccxt_broker(fake)
    with pytest.raises(OrderRejectedError, match="refused .*InvalidOrder.*-2022"):
        broker.place(intent("buy", reduce_only=True))  # nothing to reduce

    venue = fake.handle

    def flaky(call):  # the first look-up answers, then the connection drops for good
        if call.method == "POST" or len(fake.calls) > calls_before + 1:
            fake.calls.append(call)
            raise requests.exceptions.ConnectionError("replayed: connection reset")
        return venue(call)

    calls_before = len(fake.calls)
    fake.handle = flaky  # type: ignore[method-assign]
    with pytest.raises(OutcomeUnknownError, match="NetworkError.*lookup by client id failed too"):
        broker.place(intent(ts=T0 + BAR))
    with pytest.raises(OutcomeUnknownError, match="lookup of oh.* failed: NetworkError"):
        broker.place(intent(ts=T0 + 2 * BAR))


def test_ccxt_rules_and_signed_positions():
    fake = FakeBinanceFutures(api_key=KEY)
    broker = ccxt_broker(fake)
    rules = broker.rules("BTC")
    assert (rules.amount_step, rules.min_amount, rules.min_notional_usd) == (0.001, 0.001, 5.0)
    broker.place(intent(amount=0.25, target=15_000.0))
    (pos,) = broker.positions().values()
    assert (pos.base_amount, pos.price_usd, pos.hedge_usd) == (-0.25, 60_000.0, 15_000.0)
    assert "fakeKEY" not in repr(broker) and repr(broker).startswith(
        "CcxtBroker(venue='binanceusdm'"
    )


@pytest.mark.parametrize(
    ("venue", "field", "contracts"),
    [("okx", "clOrdId", "5"), ("bybit", "orderLinkId", "0.05")],  # OKX: 0.01 BTC a contract
)
def test_ccxt_client_id_reaches_the_venue_field(venue, field, contracts):
    fake = PlacementVenue(venue)
    env = {
        f"OIHEDGE_{venue.upper()}_{k}": f"fake-{k.lower()}-123"
        for k in ("API_KEY", "SECRET", "PASSWORD")
    }
    config = {"session": fake.session(), "enableRateLimit": False}
    broker = CcxtBroker(venue, live=True, symbols=("BTC",), env=env, exchange_config=config)
    cid = client_order_id("test", venue, "BTC", T0, 0.0)
    order = replace(
        intent("buy", 0.05, target=0.0, reduce_only=True), venue=venue, client_order_id=cid
    )
    result = broker.place(order)
    (sent,) = fake.orders()
    assert sent[field] == cid and sent["reduceOnly"] is True
    assert sent.get("sz", sent.get("qty")) == contracts
    assert result.client_order_id == cid and result.status == "open"
    assert broker.rules("BTC").amount_step == pytest.approx(0.001)


# -- credentials never leak -----------------------------------------------------------------


@pytest.fixture
def redaction(monkeypatch):
    for name, value in ENV.items():
        monkeypatch.setenv(name, value)
    previous = logging.getLogRecordFactory()
    monkeypatch.setattr(redact, "_installed", None)
    redact.install_redaction()
    yield
    logging.setLogRecordFactory(previous)


def test_keys_appear_nowhere(tmp_path, caplog, redaction):
    caplog.set_level(logging.DEBUG)  # ccxt logs request headers, API key included, at DEBUG
    fake = FakeBinanceFutures(api_key=KEY)
    config = {"session": fake.session(), "enableRateLimit": False}
    broker = CcxtBroker("binanceusdm", live=True, symbols=("BTC",), exchange_config=config)
    store = StateStore(tmp_path / "state.sqlite")
    executor = Executor(
        store,
        {"binanceusdm": broker},
        OrderGuard(Caps(1e6, 1e7, 10)),
        kill_switch_file=tmp_path / "KILL",
        resend_window=timedelta(minutes=10),
    )
    executor.reconcile(now=T0)
    errors = []
    executor.submit([intent()], now=T0)  # a replayed order
    executor.submit([intent("buy", target=0.0, ts=T0 + BAR, reduce_only=True)], now=T0)
    executor.submit(
        [intent("buy", target=0.0, ts=T0 + 2 * BAR, reduce_only=True)], now=T0
    )  # flat: rejected
    try:
        broker.place(intent("buy", reduce_only=True, ts=T0 + 3 * BAR))
    except BrokerError as err:
        errors.append(err)
    fake.api_key = "rotated"  # the venue now refuses our key, echoing it: an error path
    try:
        broker.positions()
    except BrokerError as err:
        errors.append(err)
    (failed,) = executor.submit([intent(ts=T0 + 4 * BAR)], now=T0)
    assert failed.outcome == "unknown" and "AuthenticationError" in failed.reason
    logging.getLogger("test").error("config was %s / %s", KEY, SECRET)
    assert len(errors) == 2 and "AuthenticationError" in str(errors[1])
    assert any("X-MBX-APIKEY" in r.getMessage() for r in caplog.records)  # the header was logged...
    texts = [
        caplog.text,
        *(r.getMessage() for r in caplog.records),
        *(repr(chained) for e in errors for chained in _chain(e)),
        store.dump(),
        repr(broker),
        repr(broker.exchange),
        repr(executor.__dict__),
        str(store.orders()),
    ]
    assert redact.MASK in caplog.text  # ...masked
    for text in texts:
        assert KEY not in text and SECRET not in text
    assert [o.state for o in store.orders()] == ["filled", "filled", "rejected", "unknown"]
    assert "(key ***)" in store.dump()  # the echoed key was stored masked


def _chain(err: BaseException | None) -> list[BaseException]:
    """An exception with every cause and context behind it (what a tracker may report)."""
    out = []
    while err is not None and err not in out:
        out.append(err)
        err = err.__cause__ or err.__context__
    return out


def test_keys_given_explicitly_are_masked_too(caplog, redaction):
    caplog.set_level(logging.DEBUG, logger="ccxt")
    key, secret = "other-key-5551212", "other-secret-99"
    env = {"OIHEDGE_BINANCEUSDM_API_KEY": key, "OIHEDGE_BINANCEUSDM_SECRET": secret}
    ccxt_broker(FakeBinanceFutures(api_key=key), env).place(intent())  # not in os.environ
    assert "X-MBX-APIKEY" in caplog.text and key not in caplog.text


def test_redact_masks_only_credential_variables(monkeypatch):
    monkeypatch.setattr(redact, "_registered", set())
    env = {
        "OIHEDGE_OKX_PASSWORD": "pass-phrase-1",
        "OIHEDGE_DATA__PANEL_DIR": "/srv/panel",
        "OIHEDGE_X_SECRET": "abc",
    }
    assert redact.secret_values(env) == ("pass-phrase-1",)  # too short to mask: "abc"
    assert (
        redact.redact("a pass-phrase-1 b /srv/panel", redact.secret_values(env))
        == "a *** b /srv/panel"
    )
    record = logging.LogRecord("x", logging.ERROR, __file__, 1, "key=%s", ("pass-phrase-1",), None)
    redact.SecretRedactor(env).filter(record)
    assert record.getMessage() == "key=***"


def test_paper_bars_see_orders_written_by_another_connection_and_by_itself(tmp_path):
    # a bar that only moves prices reads nothing back (the broker mirrors its rows): a
    # commit by another connection to the file, or any other write of its own, must
    # still be seen at the next bar
    path = tmp_path / "state.sqlite"
    broker = PaperBroker("binanceusdm", path, costs=COSTS)
    broker.on_prices([Quote(T0, "BTC", 60_000.0)])
    broker.on_prices([Quote(T0 + BAR, "BTC", 60_100.0)])
    other = PaperBroker("binanceusdm", path, costs=COSTS)
    other.place(intent())
    fills = broker.on_prices([Quote(T0 + 2 * BAR, "BTC", 60_200.0)])
    assert [f.client_order_id for f in fills] == [intent().client_order_id]
    assert broker.positions()["BTC"].base_amount == -0.1
    broker.on_prices([Quote(T0 + 3 * BAR, "BTC", 60_300.0)])
    broker.place(replace(intent(), client_order_id="oh2"))
    fills = broker.on_prices([Quote(T0 + 4 * BAR, "BTC", 60_400.0)])
    assert [f.client_order_id for f in fills] == ["oh2"]
    assert broker.positions()["BTC"].base_amount == pytest.approx(-0.2)
    assert other.positions()["BTC"].price_usd == 60_400.0  # the last price is on file
    with pytest.raises(ValueError, match="is before"):  # the mirror's last time holds
        broker.on_prices([Quote(T0 + 3 * BAR, "BTC", 60_000.0)])


def test_a_replay_broker_writes_price_only_bars_behind_and_ends_the_same(tmp_path):
    # not durable (a replay): bars that only move prices stay in memory and are written
    # in blocks; the account, positions and orders must be those of a broker that
    # commits every bar, to the bit, at every read and after a restart
    import random
    import sqlite3

    from oihedge.serving.execution.brokers.paper import WRITE_BEHIND_BARS

    rng = random.Random(5)
    live = PaperBroker("binanceusdm", tmp_path / "a.sqlite", costs=COSTS, initial_cash_usd=1e4)
    replay = PaperBroker(
        "binanceusdm", tmp_path / "b.sqlite", costs=COSTS, initial_cash_usd=1e4, durable=False
    )
    on_file = sqlite3.connect(tmp_path / "b.sqlite")
    symbols = ("BTC", "ETH", "SOL")
    prices = {"BTC": 60_000.0, "ETH": 3_000.0, "SOL": 150.0}
    stale = 0
    for i in range(3 * WRITE_BEHIND_BARS):
        quotes = []
        for symbol in symbols:
            prices[symbol] *= 1.0 + rng.gauss(0.0, 0.003)
            rate = rng.uniform(-0.0004, 0.0004)
            quotes.append(Quote(T0 + i * BAR, symbol, prices[symbol], funding_rate_8h=rate))
        assert replay.on_prices(quotes) == live.on_prices(quotes)
        filed = on_file.execute("SELECT max(last_ts) FROM paper_positions").fetchone()[0]
        stale += filed != (T0 + i * BAR).isoformat()
        if i % 29 == 0:  # a sell, filled at the next bar (through the file)
            symbol = symbols[(i // 29) % 3]
            order = replace(
                intent(amount=round(rng.uniform(0.5, 3.0), 3)),
                symbol=symbol,
                market=f"{symbol}/USDT:USDT",
                client_order_id=f"oh{i}",
            )
            for broker in (live, replay):
                broker.place(order)
        if i % 50 == 0:
            assert replay.account() == live.account(), i
    assert stale > 2 * WRITE_BEHIND_BARS  # the file did lag behind the bars
    assert replay.positions() == live.positions()
    assert replay.all_orders() == live.all_orders()
    assert replay.account() == live.account() and live.account().funding_usd != 0.0
    replay.on_prices([Quote(T0 + 1000 * BAR, "BTC", 61_000.0, funding_rate_8h=0.0001)])
    live.on_prices([Quote(T0 + 1000 * BAR, "BTC", 61_000.0, funding_rate_8h=0.0001)])
    replay.close()
    reopened = PaperBroker("binanceusdm", tmp_path / "b.sqlite", costs=COSTS, durable=False)
    assert reopened.account() == live.account()
    assert reopened.positions() == live.positions()
    with pytest.raises(ValueError, match="is before"):  # the last time reached the file
        reopened.on_prices([Quote(T0 + 999 * BAR, "BTC", 61_000.0)])
    on_file.close()
