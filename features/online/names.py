"""Names for the generated online code: every graph node's variable is named after it.

The online backend writes its passes as Python source (:mod:`oihedge.features.online.rows`,
:mod:`oihedge.features.online.codegen`). Their variables are named here, one per node, so that
the code -- and a traceback through it -- reads as the feature graph: a feature's root is
its feature name (``oi_div_xvenue_4h``); any other node is described by what it does to
its first input, joined by ``__`` (``oi_usd__row``, ``sum__oi_usd__at``,
``pct_change__close__row__4h_ago``). Names are valid identifiers, unique among the nodes
(a repeat gets ``__2``, ``__3`` in dependency order), and stable: the same spec gives the
same names in every process.

A node name never collides with the templates' own locals: those are short names
(``k``, ``now``, ``ga0``, ``rs1``), a few words (``series``) or start with a prefix
reserved below; a feature name that looks like one is prefixed with ``node__``. Venue
locals add ``_v<j>`` to a name, which no node name ends with.
"""

from __future__ import annotations

import keyword
import re
from collections.abc import Mapping, Sequence
from datetime import timedelta

from oihedge.features.graph import (
    At,
    Corr,
    CorrOthers,
    CorrPair,
    CrossMean,
    Field,
    GridLag,
    GridWindow,
    Map,
    Node,
    Reduce,
    Ref,
    RowMap,
    RowWindow,
    VenueLag,
    VenueMap,
)
from oihedge.features.schema import format_duration

#: longest stem kept from an input when describing a node (the name stays readable)
_MAX_STEM = 40
#: the templates' locals: short lowercase names with optional digits, these prefixes
#: (the grid sums ``g_*``, the row windows ``w_*``, the vector statistics ``p<stat>_*``,
#: the bound objects) and a few longer names
_SHORT = re.compile(r"^[a-z]{1,5}\d*$")
_RESERVED_PREFIX = re.compile(r"^(?:_|g_|w_|p(?:n|sum|max|min)_|cross_|fns_|make_|reduce_)")
_TEMPLATE_NAMES = frozenset({"series", "states", "prefixes", "latest", "ERRORS"})


def node_names(order: Sequence[Node], roots: Mapping[str, Node] | None = None) -> dict[Node, str]:
    """A variable name for each node of ``order`` (dependency order: inputs first);
    ``roots`` maps feature names to their root nodes, which take those names."""
    feature_of: dict[Node, str] = {}
    for feature, node in (roots or {}).items():
        feature_of.setdefault(node, feature)
    stems: dict[Node, str] = {}
    names: dict[Node, str] = {}
    taken: set[str] = set()
    for node in order:
        stem = feature_of.get(node) or _describe(node, stems)
        stems[node] = stem
        base = _identifier(stem if node in feature_of else _variable(node, stem))
        name, repeat = base, 2
        while name in taken:
            name, repeat = f"{base}__{repeat}", repeat + 1
        taken.add(name)
        names[node] = name
    return names


def view_name(row_name: str, age: timedelta) -> str:
    """The stem of the values of a row node seen fresh within ``age`` at decision time
    (one local per venue: ``<stem>_v<j>``)."""
    return f"{row_name}__at_{format_duration(age)}"


def venue_local(stem: str, venue: int) -> str:
    """The local holding venue ``venue``'s value of a venue vector named ``stem``."""
    return f"{stem}_v{venue}"


def _variable(node: Node, stem: str) -> str:
    """A field's stem is its column; as a variable it says it is the row's value."""
    return f"{stem}__row" if isinstance(node, Field) else stem


def _fn(node: RowMap | VenueMap | Map) -> str:
    name = getattr(node.fn, "__name__", "")
    return name if name.isidentifier() and not keyword.iskeyword(name) else "fn"


def _describe(node: Node, stems: Mapping[Node, str]) -> str:
    """What ``node`` does, on the stem of its (first) input."""

    def of(x: Node) -> str:
        return stems[x][:_MAX_STEM].rstrip("_")

    if isinstance(node, Field):
        return node.column
    if isinstance(node, Ref):
        return f"{node.column}__row__{format_duration(node.window)}_ago"
    if isinstance(node, RowWindow):
        return f"{of(node.source)}__{node.how}_{format_duration(node.window)}"
    if isinstance(node, RowMap | VenueMap | Map):
        return f"{_fn(node)}__{of(node.args[0])}" if node.args else _fn(node)
    if isinstance(node, At):
        return f"{of(node.row)}__at" + ("_funding" if node.age == "funding" else "")
    if isinstance(node, VenueLag | GridLag):
        return f"{of(node.source)}__lag_{format_duration(node.window)}"
    if isinstance(node, Reduce):
        return f"{node.how}__{of(node.args[0])}"
    if isinstance(node, GridWindow):
        return f"{of(node.source)}__{node.how}_{format_duration(node.window)}"
    if isinstance(node, CrossMean):
        return f"{of(node.source)}__cross_mean"
    if isinstance(node, Corr):
        return f"corr_{format_duration(node.window)}__{of(node.x)}__{of(node.y)}"
    if isinstance(node, CorrOthers):
        return f"{of(node.x)}__corr_others_{format_duration(node.window)}"
    if isinstance(node, CorrPair):
        return f"{of(node.x)}__corr_{node.a}_{node.b}_{format_duration(node.window)}".lower()
    return type(node).__name__.lower()


def _identifier(text: str) -> str:
    """``text`` as a valid identifier that is none of the templates' locals."""
    name = re.sub(r"\W", "_", text)
    if not name or name[0].isdigit() or keyword.iskeyword(name):
        name = f"node__{name}"
    if _RESERVED_PREFIX.match(name) or name in _TEMPLATE_NAMES or _SHORT.match(name):
        name = f"node__{name}"
    return name
