"""The feature graph: the small vocabulary every feature is written in, once.

A feature is a tree of nodes. The batch backend (:mod:`oihedge.features.batch.engine`) turns each
node into polars expressions over the whole panel; the online backend
(:mod:`oihedge.features.online.engine`) turns each into a few scalar operations on
bounded state. Both evaluate the same nodes with the same formulas
(:mod:`oihedge.features.formulas`), in the same order of floating-point operations, so
the two computations agree to the last bit (the parity test allows 1e-9).

Three levels, all per symbol:

* **row** nodes live on the accepted rows of one (venue, symbol) series, on one *channel*:
  the rows where the channel's columns are all non-null (the OI channel is the rows
  with ``oi_usd``). Windows are over that series' rows by ``ts``: :class:`Ref` (the value
  ``window`` earlier), :class:`RowWindow` (sum or mean over ``(ts - window, ts]``).
* **venue** nodes are vectors over the venues of a symbol at decision time ``t``:
  :class:`At` takes each venue's latest visible channel row, if fresh enough.
* **scalar** nodes are one number per (t, symbol): :class:`Reduce` across venues,
  :class:`Map`, windows on the decision grid (:class:`GridLag`, :class:`GridWindow`) and
  cross-asset nodes (:class:`CrossMean`, :class:`Corr`, :class:`CorrOthers`,
  :class:`CorrPair`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import timedelta
from typing import Literal

from oihedge.features.formulas import Formula
from oihedge.features.schema import PANEL_COLUMNS, parse_duration
from oihedge.features.spec import ResolvedParams

AgeKind = Literal["staleness", "funding"]
ReduceKind = Literal["sum", "mean", "max", "min", "spread", "std", "ratio", "wmean"]
WindowKind = Literal["sum", "mean"]
GridKind = Literal["mean", "std", "z"]


def _window(value: timedelta | str) -> timedelta:
    return parse_duration(value)


def _channel(columns: Iterable[str]) -> tuple[str, ...]:
    out = tuple(sorted(set(columns)))
    for column in out:
        if column not in PANEL_COLUMNS or column in ("ts", "venue", "symbol", "known_at"):
            raise ValueError(f"channel column must be a panel value column, got {column!r}")
    return out


# -- row level -------------------------------------------------------------------------


@dataclass(frozen=True)
class Field:
    """A panel column on the rows of ``channel`` (which must contain it)."""

    column: str
    channel: tuple[str, ...]

    @property
    def inputs(self) -> tuple[Node, ...]:
        return ()


@dataclass(frozen=True)
class Ref:
    """``column`` at the latest row at or before ``ts - window``, no older than
    ``ts - window - tolerance``; on the channel ``(column,)``. Null when there is none."""

    column: str
    window: timedelta
    tolerance: timedelta

    @property
    def channel(self) -> tuple[str, ...]:
        return (self.column,)

    @property
    def inputs(self) -> tuple[Node, ...]:
        return ()


@dataclass(frozen=True)
class RowWindow:
    """Sum or mean of ``source`` over the series' rows with ts in ``(ts - window, ts]``."""

    source: RowNode
    window: timedelta
    how: WindowKind

    @property
    def channel(self) -> tuple[str, ...]:
        return self.source.channel

    @property
    def inputs(self) -> tuple[Node, ...]:
        return (self.source,)


@dataclass(frozen=True)
class RowMap:
    """An elementwise formula of row nodes of one channel."""

    fn: Formula
    args: tuple[RowNode, ...]
    consts: tuple[float, ...] = ()

    def __post_init__(self) -> None:
        channels = {a.channel for a in self.args}
        if len(channels) != 1:
            raise ValueError(f"RowMap inputs must share one channel, got {sorted(channels)}")

    @property
    def channel(self) -> tuple[str, ...]:
        return self.args[0].channel

    @property
    def inputs(self) -> tuple[Node, ...]:
        return self.args


# -- venue level -----------------------------------------------------------------------


@dataclass(frozen=True)
class At:
    """Per venue: ``row`` at the venue's latest visible channel row, if fresh.

    Fresh means ``t - row.ts <= max age`` where the age is ``max_staleness`` or, for
    ``age="funding"``, ``funding_max_age`` (settled funding is carried forward).
    """

    row: RowNode
    age: AgeKind = "staleness"

    @property
    def inputs(self) -> tuple[Node, ...]:
        return (self.row,)


@dataclass(frozen=True)
class VenueLag:
    """Per venue: ``source`` at decision time ``t - window``."""

    source: VenueNode
    window: timedelta

    @property
    def inputs(self) -> tuple[Node, ...]:
        return (self.source,)


@dataclass(frozen=True)
class VenueMap:
    """Per venue: a formula of venue nodes (and scalar nodes, broadcast to every venue)."""

    fn: Formula
    args: tuple[VenueNode | ScalarNode, ...]
    consts: tuple[float, ...] = ()

    @property
    def inputs(self) -> tuple[Node, ...]:
        return self.args


# -- scalar level ----------------------------------------------------------------------


@dataclass(frozen=True)
class Reduce:
    """Across venues, in sorted venue order, over the venues where the inputs are non-null.

    ``sum``, ``mean``, ``max``, ``min``; ``spread`` (max - min) and ``std`` (population)
    need two venues; ``ratio`` is ``sum(a) / sum(b)`` and ``wmean`` is
    ``sum(x * w) / sum(w)`` over venues where both inputs are present.
    """

    how: ReduceKind
    args: tuple[VenueNode, ...]

    def __post_init__(self) -> None:
        arity = 2 if self.how in ("ratio", "wmean") else 1
        if len(self.args) != arity:
            raise ValueError(f"Reduce {self.how!r} takes {arity} input(s), got {len(self.args)}")

    @property
    def inputs(self) -> tuple[Node, ...]:
        return self.args


@dataclass(frozen=True)
class Map:
    """A formula of scalar nodes."""

    fn: Formula
    args: tuple[ScalarNode, ...]
    consts: tuple[float, ...] = ()

    @property
    def inputs(self) -> tuple[Node, ...]:
        return self.args


@dataclass(frozen=True)
class GridLag:
    """``source`` at decision time ``t - window``."""

    source: ScalarNode
    window: timedelta

    @property
    def inputs(self) -> tuple[Node, ...]:
        return (self.source,)


@dataclass(frozen=True)
class GridWindow:
    """Mean, std (sample) or z-score of ``source`` over decision times in ``(t - window, t]``."""

    source: ScalarNode
    window: timedelta
    how: GridKind

    @property
    def inputs(self) -> tuple[Node, ...]:
        return (self.source,)


@dataclass(frozen=True)
class CrossMean:
    """Equal-weight mean of ``source`` over the symbols where it is non-null (the portfolio)."""

    source: ScalarNode

    @property
    def inputs(self) -> tuple[Node, ...]:
        return (self.source,)


@dataclass(frozen=True)
class Corr:
    """Rolling correlation of ``x`` and ``y`` (same symbol) over ``(t - window, t]``."""

    x: ScalarNode
    y: ScalarNode
    window: timedelta

    @property
    def inputs(self) -> tuple[Node, ...]:
        return (self.x, self.y)


@dataclass(frozen=True)
class CorrOthers:
    """Mean over the other symbols (sorted) of the rolling correlation of ``x`` with theirs."""

    x: ScalarNode
    window: timedelta

    @property
    def inputs(self) -> tuple[Node, ...]:
        return (self.x,)


@dataclass(frozen=True)
class CorrPair:
    """Rolling correlation of ``x`` between symbols ``a`` and ``b``; the same on every row."""

    x: ScalarNode
    a: str
    b: str
    window: timedelta

    @property
    def inputs(self) -> tuple[Node, ...]:
        return (self.x,)


RowNode = Field | Ref | RowWindow | RowMap
VenueNode = At | VenueLag | VenueMap
ScalarNode = Reduce | Map | GridLag | GridWindow | CrossMean | Corr | CorrOthers | CorrPair
Node = RowNode | VenueNode | ScalarNode
ROW_TYPES = (Field, Ref, RowWindow, RowMap)
VENUE_TYPES = (At, VenueLag, VenueMap)
CROSS_TYPES = (CrossMean, CorrOthers, CorrPair)


def level(node: Node) -> Literal["row", "venue", "scalar"]:
    """Which of the three levels ``node`` lives on."""
    if isinstance(node, ROW_TYPES):
        return "row"
    if isinstance(node, VENUE_TYPES):
        return "venue"
    return "scalar"


# -- constructors (what the family modules write) ----------------------------------------


def field(column: str, channel: Iterable[str] | None = None) -> Field:
    """``column`` on its own channel, or on ``channel`` (e.g. high on ``(high, low)``)."""
    chan = _channel(channel if channel is not None else (column,))
    if column not in chan:
        raise ValueError(f"channel {chan!r} must contain the column, got {column!r}")
    return Field(column, chan)


def ref(column: str, window: timedelta | str, tolerance: timedelta | str | None) -> Ref:
    """``column`` ``window`` earlier; ``tolerance=None`` means exactly ``window`` earlier."""
    _channel((column,))
    tol = timedelta(0) if tolerance is None else _window(tolerance)
    return Ref(column, _window(window), tol)


def row_window(source: RowNode, window: timedelta | str, how: WindowKind) -> RowWindow:
    if how not in ("sum", "mean"):
        raise ValueError(f"row window must be 'sum' or 'mean', got {how!r}")
    return RowWindow(source, _window(window), how)


def row_map(fn: Formula, *args: RowNode, consts: tuple[float, ...] = ()) -> RowMap:
    return RowMap(fn, tuple(args), tuple(consts))


def at(row: RowNode, age: AgeKind = "staleness") -> At:
    if age not in ("staleness", "funding"):
        raise ValueError(f"age must be 'staleness' or 'funding', got {age!r}")
    return At(row, age)


def venue_lag(source: VenueNode, window: timedelta | str) -> VenueLag:
    return VenueLag(source, _window(window))


def venue_map(
    fn: Formula, *args: VenueNode | ScalarNode, consts: tuple[float, ...] = ()
) -> VenueMap:
    if not any(level(a) == "venue" for a in args):
        raise ValueError("venue_map needs at least one venue-level input, got none")
    return VenueMap(fn, tuple(args), tuple(consts))


def reduce(how: ReduceKind, *args: VenueNode) -> Reduce:
    return Reduce(how, tuple(args))


def smap(fn: Formula, *args: ScalarNode, consts: tuple[float, ...] = ()) -> Map:
    return Map(fn, tuple(args), tuple(consts))


def grid_lag(source: ScalarNode, window: timedelta | str) -> GridLag:
    return GridLag(source, _window(window))


def grid_window(source: ScalarNode, window: timedelta | str, how: GridKind) -> GridWindow:
    if how not in ("mean", "std", "z"):
        raise ValueError(f"grid window must be 'mean', 'std' or 'z', got {how!r}")
    return GridWindow(source, _window(window), how)


# -- graph utilities -------------------------------------------------------------------


def topo_order(roots: Iterable[Node]) -> list[Node]:
    """Every node reachable from ``roots``, inputs before the nodes that use them, once."""
    order: list[Node] = []
    seen: set[Node] = set()

    def visit(node: Node) -> None:
        if node in seen:
            return
        for child in node.inputs:
            visit(child)
        seen.add(node)
        order.append(node)

    for root in roots:
        visit(root)
    return order


def depth_levels(order: list[Node]) -> dict[Node, int]:
    """Longest path from a leaf: nodes of equal depth can be computed together."""
    depth: dict[Node, int] = {}
    for node in order:
        depth[node] = 1 + max((depth[c] for c in node.inputs), default=-1)
    return depth


# -- features --------------------------------------------------------------------------

Family = Literal["oi_divergence", "funding", "correlation", "volatility", "depth", "options"]


@dataclass(frozen=True)
class Feature:
    """One feature: its name (``{family}_{what}_{window}[_{unit}]``), meaning and graph.

    ``build`` makes the feature's graph for resolved parameters (the bar fixes constants
    such as bars per day); equal sub-graphs of different features are computed once.
    """

    name: str
    family: Family
    window: str | None
    unit: str
    description: str
    build: Callable[[ResolvedParams], ScalarNode]
