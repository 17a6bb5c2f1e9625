"""The generated online code reads as the feature graph: variables named after the
nodes (features/online/names.py), lines a traceback shows, a dump to read it all."""

from __future__ import annotations

import ast
import keyword
import re
import traceback
from datetime import UTC, datetime, timedelta

import pytest

from oihedge.features.graph import Field, Reduce, topo_order
from oihedge.features.online.engine import OnlineFeatures, dump_source
from oihedge.features.online.names import node_names
from oihedge.features.registry import CORE_V1, graph

T0 = datetime(2025, 1, 1, tzinfo=UTC)


def test_every_node_of_the_core_spec_has_a_unique_stable_identifier() -> None:
    roots = graph(CORE_V1.resolve("5m"))
    order = topo_order(roots.values())
    names = node_names(order, roots)
    assert len(names) == len(order) and len(set(names.values())) == len(order)
    for name in names.values():
        assert name.isidentifier() and not keyword.iskeyword(name), name
        assert not re.search(r"_v\d+$", name), name  # the venue locals' suffix
    for feature, node in roots.items():
        assert names[node] == feature  # a feature's root is its name
    again = graph(CORE_V1.resolve("5m"))
    assert list(node_names(topo_order(again.values()), again).values()) == list(names.values())


def test_names_describe_the_node_and_repeats_are_numbered() -> None:
    oi = Field("oi_usd", ("oi_usd",))
    total = Reduce("sum", (oi,))  # type: ignore[arg-type]
    names = node_names([oi, total])
    assert names == {oi: "oi_usd__row", total: "sum__oi_usd"}
    twin = Field("oi_usd", ("oi_usd", "close"))  # another channel, the same description
    assert node_names([oi, twin])[twin] == "oi_usd__row__2"
    # a feature named like a template local cannot shadow it
    assert node_names([oi], {"k": oi})[oi] == "node__k"


def test_a_failure_in_the_generated_code_shows_its_line_in_the_traceback() -> None:
    calc = OnlineFeatures(CORE_V1, bar="5m", symbols=["BTC"])
    row = {"ts": T0 + timedelta(minutes=5), "venue": "okx", "symbol": "BTC", "oi_usd": "lots"}
    with pytest.raises(ValueError) as raised:
        calc.push(row)
    text = "".join(traceback.format_exception(raised.value))
    assert re.search(r'File "<oihedge online core v1 row [0-9a-f]{10}>", line \d+, in row', text)
    assert "oi_usd__row = float(" in text  # the generated line itself


def test_dump_source_is_the_code_that_runs_with_its_file_names() -> None:
    text = dump_source(CORE_V1, bar="1h", venues=2)
    ast.parse(text)  # plain Python
    calc = OnlineFeatures(CORE_V1, bar="1h")
    calc.step_plan.prepare(2)
    compiled = [calc.row_plan.run, calc.step_plan.run]
    compiled += [p.compiled[2] for p in calc.step_plan.passes]
    for fn in compiled:
        assert f"# {fn.__code__.co_filename}\n" in text
    assert calc.row_plan.source in text and calc.step_plan.source in text
    assert "def one_pass(now, st):" in text and "oi_div_xvenue_4h = " in text
    assert not re.search(r"^\s+v\d+ = ", text, flags=re.M)  # no anonymous v0..vN left
    with pytest.raises(ValueError, match="venues must be >= 0, got -1"):
        dump_source(CORE_V1, bar="1h", venues=-1)
    with pytest.raises(ValueError, match="bar must be given"):
        dump_source(CORE_V1)
