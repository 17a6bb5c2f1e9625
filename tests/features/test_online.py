"""The online calculator's contract: ordering rules, bounded state, generated code."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from oihedge.features.online.engine import OnlineFeatures, replay, to_us
from oihedge.features.registry import CORE_V1, FEATURES
from oihedge.features.spec import FeatureSpec

H = timedelta(hours=1)


def bar_row(i: int, venue: str = "okx", symbol: str = "BTC", **values: float) -> dict[str, Any]:
    ts = datetime(2025, 1, 1, tzinfo=UTC) + H * i
    return {"ts": ts, "known_at": ts, "venue": venue, "symbol": symbol, **values}


def test_out_of_order_or_off_grid_bar_is_refused_and_counted() -> None:
    calc = OnlineFeatures(CORE_V1, bar="1h")
    assert calc.push(bar_row(2, oi_usd=1.0))
    assert not calc.push(bar_row(1, oi_usd=5.0))
    assert not calc.push(bar_row(2, oi_usd=5.0))
    off_grid = bar_row(3, oi_usd=5.0)
    off_grid["ts"] += timedelta(minutes=7)
    assert not calc.push(off_grid)
    assert calc.rejected == 3


def test_step_returns_every_symbol_in_spec_order() -> None:
    spec = FeatureSpec("two", 1, ("oi_agg_usd", "funding_mean_bp8h"))
    calc = OnlineFeatures(spec, bar="1h", symbols=["ETH"])
    calc.push(bar_row(1, oi_usd=7.0, funding_rate=1e-4))
    out = calc.step(datetime(2025, 1, 1, 1, tzinfo=UTC))
    assert list(out) == ["BTC", "ETH"]
    assert out["BTC"] == [7.0, pytest.approx(1.0)] and out["ETH"] == [None, None]
    assert calc.feature_names == ("oi_agg_usd", "funding_mean_bp8h")


def test_decision_times_must_be_bar_closes_and_increase() -> None:
    calc = OnlineFeatures(CORE_V1, bar="1h")
    calc.step(datetime(2025, 1, 1, 3, tzinfo=UTC))
    with pytest.raises(ValueError, match="decision times must increase"):
        calc.step(datetime(2025, 1, 1, 3, tzinfo=UTC))
    with pytest.raises(ValueError, match="must be a bar close"):
        calc.step(datetime(2025, 1, 1, 4, 30, tzinfo=UTC))
    with pytest.raises(ValueError, match="timezone-aware"):
        calc.step(datetime(2025, 1, 1, 5))


def test_skipped_decision_times_are_gaps_not_guesses() -> None:
    spec = FeatureSpec("lag", 1, ("depth_oi_spot_x", "depth_spot_chg_24h_pct"))
    rows = [bar_row(i, spot_depth_usd=100.0 + i, oi_usd=50.0) for i in range(1, 60)]
    full, gappy = OnlineFeatures(spec, bar="1h"), OnlineFeatures(spec, bar="1h")
    for row in rows:
        full.push(row)
        gappy.push(row)
        i = int((row["ts"] - rows[0]["ts"]) / H) + 1
        expected = full.step(to_us(row["ts"]))["BTC"]
        if 30 <= i < 33:
            continue  # the loop was down for three bars
        got = gappy.step(to_us(row["ts"]))["BTC"]
        assert got[0] == expected[0]  # the level needs no history
        if 54 <= i < 57:
            assert got[1] is None  # its value 24h earlier was never seen
        else:
            assert got[1] == expected[1]


def test_state_stays_bounded_as_the_stream_grows(make_random_panel: Any) -> None:
    short = replay(make_random_panel(n_bars=24 * 12, seed=1), CORE_V1)[1]
    long = replay(make_random_panel(n_bars=24 * 24, seed=1), CORE_V1)[1]
    assert 0 < long.state_size() <= short.state_size() + 8


def test_generated_code_is_kept_for_reading() -> None:
    calc = OnlineFeatures(CORE_V1, bar="5m")
    assert calc.row_plan.source.startswith("def row(series, ts, row):")
    assert calc.step_plan.source.startswith("def step(now, states):")
    assert len(calc.feature_names) == len(CORE_V1.features)


def test_reductions_of_one_vector_share_its_statistics() -> None:
    """The max and min of one venue vector are folded once per pass, however many
    features reduce it (the per-venue OI change feeds its max, min and spread)."""
    import re

    calc = OnlineFeatures(CORE_V1, bar="5m")
    calc.step_plan.prepare(4)
    seen = 0
    for venue_pass in calc.step_plan.passes:
        source = venue_pass.sources[4]
        firsts = re.findall(r"^    (p(?:n|sum|max|min)_\w+) = (?:0|None)$", source, re.M)
        assert len(firsts) == len(set(firsts)), sorted(f for f in firsts if firsts.count(f) > 1)
        seen += len(firsts)
    assert seen > 0, "no unrolled reduction in any pass"


@pytest.mark.parametrize(
    "family", ["oi_divergence", "funding", "correlation", "volatility", "depth"]
)
def test_any_subset_spec_compiles_and_matches_batch(family: str) -> None:
    """A model's spec is usually a subset: the generated code must stand on its own."""
    from pathlib import Path

    import polars as pl

    from oihedge.features.registry import build_features

    panel = pl.read_parquet(Path(__file__).parents[1] / "fixtures" / "golden" / "panel.parquet")
    names = tuple(n for n, f in FEATURES.items() if f.family == family)
    spec = FeatureSpec(f"only-{family.replace('_', '-')}", 1, names)
    batch = build_features(panel, spec).table
    online = replay(panel, spec)[0]
    assert batch.columns == online.columns
    for name in names:
        a, b = batch[name].to_list(), online[name].to_list()
        assert [x is None for x in a] == [y is None for y in b], name
        assert all(x == y for x, y in zip(a, b, strict=True) if x is not None), name


def test_traced_formula_is_apply_formula() -> None:
    """Cross-asset correlations use the traced formula: same value (or null) as the
    formula called with the scalar ops, flat, short, zero-count and overflowing windows."""
    import random

    from oihedge.features import formulas as f
    from oihedge.features.online.grid import traced
    from oihedge.features.online.state import apply_formula

    corr = traced(f.corr_from_sums, 6, (12.0,))
    rng = random.Random(8)
    cases = [
        (0.0, 0.0, 0.0, 0.0, 0.0, 0.0),
        (20.0, 2.0, 2.0, 0.2, 0.2, 0.2),  # flat
        (5.0, 1.0, 2.0, 0.3, 0.4, 0.9),  # too short
        (20.0, 1e308, 1e308, 1e308, 1e308, 1e308),  # overflow
        (20.0, None, 1.0, 1.0, 1.0, 1.0),
    ]
    for _ in range(2000):
        n = float(rng.randint(0, 40))
        xs = [rng.gauss(0, 1) for _ in range(6)]
        cases.append((n, xs[0], xs[1], xs[2], abs(xs[3]) * n, abs(xs[4]) * n))
    for sums in cases:
        expected = apply_formula(f.corr_from_sums, sums, (12.0,))
        got = corr(*sums)
        assert got == expected or (got is None and expected is None), sums
    assert sum(apply_formula(f.corr_from_sums, c, (12.0,)) is not None for c in cases) > 100


@pytest.mark.parametrize("how", ["sum", "mean", "max", "min", "spread", "std"])
def test_unrolled_reductions_are_the_present_reducers(how: str) -> None:
    """A pass written per venue count reduces venue locals (nulls among them): the same
    value as the reducer on the present values, for every count, ties and signed zeros."""
    import random

    from oihedge.features.online.codegen import _emit_unrolled_reduce
    from oihedge.features.online.state import PRESENT_REDUCERS
    from oihedge.features.online.trace import Source

    rng = random.Random(5)
    pool = [None, None, 0.0, -0.0, 1.5, 1.5, -2.0, 1e300]
    for n in range(7):
        src = Source()
        names = [f"v{j}" for j in range(n)]
        src.emit(0, f"def reduce({', '.join(names)}):")
        src.emit(1, "pass")
        # max and min first: the later statistics reuse the ones already written
        for other in ("max", "min", how):
            _emit_unrolled_reduce(src, set(), other, names, "0", "out")
        views: set[str] = set()
        _emit_unrolled_reduce(src, views, "max", names, "1", "first")
        _emit_unrolled_reduce(src, views, how, names, "1", "out")
        src.emit(1, "return out")
        inline = src.compile("reduce")
        for _ in range(300):
            values = [
                rng.choice(pool) if rng.random() < 0.4 else rng.gauss(0, 10) for _ in range(n)
            ]
            expected = PRESENT_REDUCERS[how]([v for v in values if v is not None])
            got = inline(*values)
            assert got == expected or (got is None and expected is None), values
            if got is not None and expected == 0.0:
                assert str(got) == str(expected), values  # the same signed zero


def test_venue_count_passes_match_batch(sim_panel: Any) -> None:
    """The passes written per venue count give exactly the batch table's values (and
    nulls) on the stress panel, with a venue joining late, stale rows and symbols on
    fewer venues: every count a symbol goes through is compiled and compared."""
    import polars as pl

    from oihedge.features.registry import build_features
    from oihedge.features.stream import accept

    bar = accept(sim_panel).bar
    late = sim_panel.filter(
        (pl.col("venue") != pl.col("venue").min()) | (pl.col("ts") > pl.col("ts").min() + bar * 50)
    )
    batch = build_features(late, CORE_V1, bar=bar).table
    online, calc = replay(late, CORE_V1, bar=bar)
    assert batch.columns == online.columns and batch.height == online.height
    compared = 0
    for name in batch.columns[2:]:
        a, b = batch[name].to_list(), online[name].to_list()
        assert [x is None for x in a] == [y is None for y in b], name
        assert all(x == y for x, y in zip(a, b, strict=True) if x is not None), name
        compared += sum(x is not None for x in a)
    assert compared > 1000
    assert {n for p in calc.step_plan.passes for n in p.compiled} >= {0, 1, 2}


def test_inline_pair_update_is_prefix_add_and_traced_corr() -> None:
    """A pair's correlation step, written inline: the same sums and value (or null) as
    ``traced(corr_from_sums)(*GridPrefix.add(pair_sums(x, y)))``, through a window's
    fill-up and roll-over, with missing values and flat stretches."""
    import random

    from oihedge.features import formulas as f
    from oihedge.features.online.grid import pair_sums, pair_update, traced
    from oihedge.features.online.state import GridPrefix

    rng = random.Random(11)
    update, corr = pair_update(13, 6.0), traced(f.corr_from_sums, 6, (6.0,))
    fast, ref = GridPrefix(6, 12), GridPrefix(6, 12)
    seen = 0
    for step in range(3000):
        x = None if rng.random() < 0.15 else rng.gauss(0, 1)
        y = None if rng.random() < 0.15 else (1.0 if step % 200 < 30 else rng.gauss(0, 1))
        got, expected = update(x, y, fast), corr(*ref.add(pair_sums(x, y)))
        assert got == expected or (got is None and expected is None), step
        assert tuple(fast.sums) == tuple(ref.sums) and fast.filled == ref.filled
        seen += got is not None
    assert seen > 1000


def test_corr_others_is_the_mean_of_the_present_pairs() -> None:
    """``corr_others`` folds each symbol's row of the pair table: the mean of its present
    correlations with the other symbols, in symbol order (the batch fold's order)."""
    import random
    from datetime import timedelta as td

    from oihedge.features.graph import CorrOthers, Field
    from oihedge.features.online.codegen import StepPlan
    from oihedge.features.online.grid import cross_runner
    from oihedge.features.online.state import fold_sum
    from oihedge.features.spec import FeatureParams

    class St:
        def __init__(self, symbol: str) -> None:
            self.symbol, self.sv = symbol, [None, None]

    x = Field("close", ("close",))
    node = CorrOthers(x=x, window=td(hours=10))
    params = FeatureSpec("one", 1, ("oi_agg_usd",)).resolve("1h").params
    assert isinstance(params, FeatureParams)
    plan = StepPlan(slots={x: 0, node: 1}, venue_lags=[], grid_factories=[], run=print, source="")
    run = cross_runner(node, plan.slots, params, plan)
    (table,) = plan.pair_tables.values()
    rng = random.Random(2)
    states = [St(s) for s in ("ADA", "BTC", "ETH", "SOL")]
    seen = 0
    for now in range(400):
        for st in states:
            st.sv[0] = None if rng.random() < 0.2 else rng.gauss(0, 1)
        run(now, states)
        pairs = table(now, states)
        for st in states:
            s = st.symbol
            values = [pairs[tuple(sorted((s, o.symbol)))] for o in states if o is not st]
            present = [v for v in values if v is not None]
            expected = fold_sum(present) / len(present) if present else None  # type: ignore[operator]
            assert st.sv[1] == expected, (now, s)
            seen += expected is not None
    assert seen > 1000


def test_a_one_feature_spec_steps_to_a_list_of_one() -> None:
    calc = OnlineFeatures(FeatureSpec("one", 1, ("oi_agg_usd",)), bar="1h")
    calc.push(bar_row(1, oi_usd=7.0))
    assert calc.step(datetime(2025, 1, 1, 1, tzinfo=UTC)) == {"BTC": [7.0]}


def test_every_traced_formula_is_apply_formula() -> None:
    """Every formula of the catalogue, traced with the null trace (no ``is not None``
    test on a result that cannot be None, none on a bool, the last operation writing the
    target): the same value (or null) as the formula called with the scalar ops, on
    nulls, zeros, negatives, tiny, huge and overflowing inputs; and, its inputs left
    unguarded (``check=[]``), still null for a null input."""
    import random

    from oihedge.features import formulas as f
    from oihedge.features.graph import Map, RowMap, VenueMap, topo_order
    from oihedge.features.online.grid import traced
    from oihedge.features.online.state import apply_formula
    from oihedge.features.online.trace import Source
    from oihedge.features.registry import graph

    spec = CORE_V1.resolve(timedelta(minutes=5))
    nodes = topo_order(graph(spec).values())
    formulas = {
        (n.fn, len(n.args), tuple(n.consts))
        for n in nodes
        if isinstance(n, Map | RowMap | VenueMap)
    }
    assert len(formulas) >= 5
    for window in (f.window_sum, f.window_mean):  # a final where: one branch per side
        formulas |= {(window, 2, (0.0,)), (window, 2, (3.0,))}
    formulas |= {(f.window_std, 3, (3.0,)), (f.window_z, 4, (3.0,))}
    formulas |= {(f.corr_from_sums, 6, (3.0,))}
    rng = random.Random(11)
    pool = [None, 0.0, -0.0, 1.0, -1.0, 1e-320, 1e308, -1e308, 2.5, 100.0]
    for fn, arity, consts in formulas:
        fast = traced(fn, arity, consts)
        src = Source()
        names = [f"a{i}" for i in range(arity)]
        src.emit(0, f"def formula({', '.join(names)}):")
        src.formula(1, "out", fn, names, consts, check=[])
        src.emit(1, "return out")
        unguarded = src.compile("formula")
        src = Source()  # the inputs declared never None (as a row window's sums are)
        src.emit(0, f"def formula({', '.join(names)}):")
        src.formula(1, "out", fn, names, consts, check=[], present=names)
        src.emit(1, "return out")
        declared = src.compile("formula")
        for _ in range(3000):
            args = [
                rng.choice(pool) if rng.random() < 0.3 else rng.gauss(0, 10) ** rng.choice((1, 3))
                for _ in range(arity)
            ]
            expected = apply_formula(fn, args, consts)
            got = fast(*args)
            assert got == expected or (got is None and expected is None), (fn, args)
            loose = unguarded(*args)
            assert loose == expected or (loose is None and expected is None), (fn, args)
            if None not in args:
                sure = declared(*args)
                assert sure == expected or (sure is None and expected is None), (fn, args)


def test_one_symbol_matches_batch(sim_panel: Any) -> None:
    """One symbol alone (a pair table without pairs, a cross-asset mean over one value):
    exactly the batch table, nulls included."""
    import polars as pl

    from oihedge.features.registry import build_features

    panel = sim_panel.filter(pl.col("symbol") == pl.col("symbol").min())
    batch = build_features(panel, CORE_V1).table
    online = replay(panel, CORE_V1)[0]
    assert batch.columns == online.columns and batch.height == online.height
    for name in batch.columns[2:]:
        a, b = batch[name].to_list(), online[name].to_list()
        assert [x is None for x in a] == [y is None for y in b], name
        assert all(x == y for x, y in zip(a, b, strict=True) if x is not None), name


def test_cross_mean_is_fold_sum_over_count() -> None:
    """The cross-asset mean folds the present values in symbol order, as ``fold_sum``."""
    import random
    from types import SimpleNamespace

    from oihedge.features.graph import CrossMean, topo_order
    from oihedge.features.online.grid import cross_runner
    from oihedge.features.online.state import fold_sum
    from oihedge.features.registry import graph

    calc = OnlineFeatures(CORE_V1, bar="5m")
    nodes = topo_order(graph(calc.spec).values())
    node = next(n for n in nodes if isinstance(n, CrossMean))
    slots = calc.step_plan.slots
    run = cross_runner(node, slots, calc.params, calc.step_plan)
    rng = random.Random(4)
    pool = [None, 0.1, 0.2, 0.3, -0.0, 1e308, 1e308]
    for _ in range(500):
        values = [rng.choice(pool) for _ in range(rng.randint(0, 5))]
        states = [SimpleNamespace(sv=[None] * len(slots)) for _ in values]
        for st, v in zip(states, values, strict=True):
            st.sv[slots[node.source]] = v
        run(0, states)
        present = [v for v in values if v is not None]
        expected = fold_sum(present) / len(present) if present else None  # type: ignore[operator]
        for st in states:
            got = st.sv[slots[node]]
            assert got == expected or (got is None and expected is None), values
