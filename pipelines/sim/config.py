"""Typed, validated configuration of the market simulator (re-exported by ``simulate``).

Every knob is a frozen-dataclass field with its unit and meaning in the field's metadata
(``doc``), so ``--help`` and :func:`parameter_table` show the same text as the code.
Objects are checked when built: a bad value raises ``ValueError`` naming the class, the
field and the value, e.g. ``SimulationConfig.days must be a finite number > 0, got -1``.
"""

from __future__ import annotations

import math
from dataclasses import MISSING, dataclass, field, fields
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from oihedge.features.schema import format_duration, parse_duration

_RULES: dict[str, tuple[str, Any]] = {
    "pos": ("a finite number > 0", lambda v: _number(v) and v > 0),
    "nonneg": ("a finite number >= 0", lambda v: _number(v) and v >= 0),
    "unit": ("in [0, 1]", lambda v: _number(v) and 0 <= v <= 1),
    "unit_open": ("in [0, 1)", lambda v: _number(v) and 0 <= v < 1),
    "lev": ("a leverage >= 2", lambda v: _number(v) and v >= 2),
    "dur": ("a duration > 0", lambda v: isinstance(v, timedelta) and v > timedelta(0)),
    "dur0": ("a duration >= 0", lambda v: isinstance(v, timedelta) and v >= timedelta(0)),
    "int1": ("an int >= 1", lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= 1),
}


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _knob(default: Any = MISSING, doc: str = "", rule: str | None = None) -> Any:
    """A config field with its documentation and validation rule in the metadata."""
    return field(default=default, metadata={"doc": doc, "rule": rule})


def _fail(owner: str, name: str, value: Any, rule: str) -> None:
    raise ValueError(f"{owner}.{name} must be {rule}, got {value!r}")


def _check_fields(obj: Any, owner: str) -> None:
    """Convert duration strings ("4h") and apply every field's rule."""
    for f in fields(obj):
        rule = f.metadata.get("rule")
        value = getattr(obj, f.name)
        if rule in ("dur", "dur0") and isinstance(value, str):
            try:
                value = parse_duration(value)
            except ValueError:
                _fail(owner, f.name, value, _RULES[rule][0])
            object.__setattr__(obj, f.name, value)
        if rule is not None and not _RULES[rule][1](value):
            _fail(owner, f.name, value, _RULES[rule][0])


@dataclass(frozen=True)
class VenueSpec:
    """One perp venue: how its traders use leverage and how its feed behaves."""

    name: str = _knob(doc="ccxt exchange id (binanceusdm, bybit, okx, hyperliquid)")
    kind: Literal["cex", "dex"] = _knob(doc="cex or dex")
    leverage_mean: float = _knob(
        doc="mean leverage of new positions in a neutral market (x)", rule="lev"
    )
    oi_share: float = _knob(doc="share of every asset's open interest on this venue", rule="pos")
    leverage_dispersion: float = _knob(0.6, "lognormal sigma of new positions' leverage", "pos")
    max_leverage: float = _knob(100.0, "the venue's leverage cap (x)", "lev")
    appetite_lag: timedelta = _knob(
        timedelta(hours=6), "how late the venue's traders follow the euphoria", "dur"
    )
    appetite_beta: float = _knob(0.6, "log-OI response to one unit of euphoria", "nonneg")
    hype_vol: float = _knob(0.25, "sd of the venue's own appetite swings (log-OI units)", "nonneg")
    funding_interval: timedelta = _knob(timedelta(hours=8), "time between settlements", "dur")
    funding_sensitivity: float = _knob(0.0015, "premium per 8h per unit of (L - S) / OI", "pos")
    funding_cap: float = _knob(0.0075, "cap on |funding| per 8h", "pos")
    oi_noise: float = _knob(0.001, "relative sd of the published OI", "unit")
    funding_noise: float = _knob(2e-5, "sd of the published funding rate, per 8h", "unit")
    price_noise: float = _knob(1e-4, "relative sd of the perp price around index+basis", "unit")
    liq_report_fraction: float = _knob(
        0.5, "share of liquidated notional the public liquidation feed shows", "unit"
    )
    gap_rate_per_day: float = _knob(0.05, "feed outages per day", "nonneg")
    gap_median: timedelta = _knob(timedelta(hours=1), "median outage length", "dur")
    publish_lag: timedelta = _knob(
        timedelta(seconds=20), "delay from bar close to publication", "dur0"
    )
    publish_jitter: timedelta = _knob(
        timedelta(seconds=40), "extra uniform publication delay", "dur0"
    )

    def __post_init__(self) -> None:
        owner = f"VenueSpec({self.name!r})"
        if not (
            isinstance(self.name, str)
            and self.name.isidentifier()
            and self.name == self.name.lower()
        ):
            _fail(owner, "name", self.name, "a lower-case ccxt id")
        if self.kind not in ("cex", "dex"):
            _fail(owner, "kind", self.kind, "'cex' or 'dex'")
        _check_fields(self, owner)
        if self.liq_report_fraction <= 0:
            _fail(owner, "liq_report_fraction", self.liq_report_fraction, "> 0")


@dataclass(frozen=True)
class AssetSpec:
    """One base asset: its price process, book depth and leverage appetite."""

    symbol: str = _knob(doc="base asset (BTC, ETH, NEAR)")
    start_price: float = _knob(doc="price at the start, USD", rule="pos")
    vol_annual: float = _knob(
        doc="annualised volatility of log returns in calm markets", rule="pos"
    )
    market_beta: float = _knob(0.85, "loading on the common factor (corr = beta_a beta_b)", "unit")
    depth_usd: float = _knob(1e8, "+-1% book depth in calm markets (perp + spot), USD", "pos")
    spot_depth_share: float = _knob(0.5, "share of that depth on spot books", "unit")
    oi_usd: float = _knob(1e10, "one-side OI over all venues in a neutral market, USD", "pos")
    spec_share: float = _knob(0.5, "share of OI held by leveraged speculators", "unit_open")
    long_share: float = _knob(0.75, "share of speculative OI that is long when neutral", "unit")
    leverage_appetite: float = _knob(1.0, "multiplier on the venues' leverage", "pos")
    max_leverage: float = _knob(100.0, "the asset's leverage cap (x)", "lev")
    maintenance_margin: float = _knob(
        0.005, "maintenance margin, fraction of notional", "unit_open"
    )

    def __post_init__(self) -> None:
        owner = f"AssetSpec({self.symbol!r})"
        if not (
            isinstance(self.symbol, str)
            and self.symbol.isalnum()
            and self.symbol == self.symbol.upper()
        ):
            _fail(owner, "symbol", self.symbol, "an upper-case base asset")
        _check_fields(self, owner)


DEFAULT_VENUES: tuple[VenueSpec, ...] = (
    VenueSpec(
        "binanceusdm",
        "cex",
        leverage_mean=11.0,
        oi_share=0.40,
        max_leverage=125.0,
        appetite_lag=timedelta(hours=3),
        appetite_beta=0.55,
        liq_report_fraction=0.35,
        gap_rate_per_day=0.03,
        publish_lag=timedelta(seconds=15),
        publish_jitter=timedelta(seconds=30),
    ),
    VenueSpec(
        "bybit",
        "cex",
        leverage_mean=14.0,
        oi_share=0.25,
        max_leverage=100.0,
        appetite_lag=timedelta(hours=8),
        appetite_beta=0.65,
        liq_report_fraction=0.7,
        gap_rate_per_day=0.04,
        publish_lag=timedelta(seconds=25),
        publish_jitter=timedelta(seconds=40),
    ),
    VenueSpec(
        "okx",
        "cex",
        leverage_mean=9.0,
        oi_share=0.20,
        max_leverage=100.0,
        appetite_lag=timedelta(hours=16),
        appetite_beta=0.45,
        liq_report_fraction=0.6,
        gap_rate_per_day=0.04,
        publish_lag=timedelta(seconds=40),
        publish_jitter=timedelta(seconds=60),
    ),
    VenueSpec(
        "hyperliquid",
        "dex",
        leverage_mean=16.5,
        oi_share=0.15,
        max_leverage=40.0,
        leverage_dispersion=0.7,
        appetite_lag=timedelta(hours=1),
        appetite_beta=0.8,
        hype_vol=0.4,
        funding_interval=timedelta(hours=1),
        funding_sensitivity=0.0021,
        funding_cap=0.032,
        oi_noise=0.012,
        funding_noise=1e-4,
        price_noise=4e-4,
        liq_report_fraction=1.0,
        gap_rate_per_day=0.25,
        gap_median=timedelta(hours=2),
        publish_lag=timedelta(seconds=5),
        publish_jitter=timedelta(seconds=240),
    ),
)

DEFAULT_ASSETS: tuple[AssetSpec, ...] = (
    AssetSpec(
        "BTC",
        start_price=94_000.0,
        vol_annual=0.55,
        market_beta=0.95,
        depth_usd=1.5e8,
        oi_usd=2.0e10,
        leverage_appetite=1.0,
    ),
    AssetSpec(
        "ETH",
        start_price=3_350.0,
        vol_annual=0.72,
        market_beta=0.9,
        depth_usd=9.0e7,
        oi_usd=1.0e10,
        leverage_appetite=0.85,
    ),
    AssetSpec(
        "NEAR",
        start_price=5.2,
        vol_annual=1.05,
        market_beta=0.68,
        depth_usd=5.0e6,
        oi_usd=3.0e8,
        leverage_appetite=0.6,
        max_leverage=50.0,
        maintenance_margin=0.01,
    ),
)


@dataclass(frozen=True)
class SimulationConfig:
    """Everything that shapes a simulated market; checked when built.

    Durations are timedeltas (strings such as ``"4h"`` are converted); funding rates are
    per 8 hours; impacts are in % of price per +-1% depth's worth of USD.
    """

    days: float = _knob(30.0, "length of the simulation, days (<= 3660)", "pos")
    seed: int = _knob(7, "random seed; same seed, same market", None)
    bar: timedelta = _knob(timedelta(minutes=5), "bar length (1 minute to 1 day)", "dur")
    start: datetime = _knob(
        datetime(2025, 1, 1, tzinfo=UTC), "open of the first bar (UTC, on the bar grid)", None
    )
    venues: tuple[VenueSpec, ...] = _knob(DEFAULT_VENUES, "the perp venues", None)
    assets: tuple[AssetSpec, ...] = _knob(DEFAULT_ASSETS, "the base assets", None)
    bad_row_rate: float = _knob(2e-4, "share of rows corrupted on purpose (<= 1%)", "unit")
    gap_rate_scale: float = _knob(1.0, "multiplies every venue's outage rate (0: none)", "nonneg")
    options: bool = _knob(
        False,
        "add a Deribit-like options venue for BTC and ETH (oihedge.pipelines.sim.options)",
        None,
    )
    # price process
    tail_df: float = _knob(3.5, "Student-t degrees of freedom of the shocks (> 2)", "pos")
    garch_alpha: float = _knob(0.04, "GARCH weight of the last squared return", "unit_open")
    vol_halflife: timedelta = _knob(timedelta(hours=12), "half-life of volatility shocks", "dur")
    # appetite
    euphoria_halflife: timedelta = _knob(timedelta(days=2), "half-life of the euphoria", "dur")
    euphoria_vol: float = _knob(1.0, "stationary sd of the euphoria's own noise", "pos")
    momentum: float = _knob(0.15, "euphoria gained per one-day-sigma of return", "nonneg")
    fear: float = _knob(
        0.5, "euphoria lost per one-day-sigma fall caused by long liquidations", "nonneg"
    )
    short_appetite: float = _knob(0.7, "how strongly shorts open against the appetite", "nonneg")
    leverage_euphoria: float = _knob(
        0.4, "log-leverage gained per unit of venue appetite", "nonneg"
    )
    leverage_fomo: float = _knob(
        0.5, "extra log-leverage per unit of appetite above its 24h average", "nonneg"
    )
    leverage_vol: float = _knob(0.3, "sd of the hidden leverage appetite (log leverage)", "nonneg")
    leverage_halflife: timedelta = _knob(
        timedelta(days=3), "half-life of the hidden leverage appetite", "dur"
    )
    hype_halflife: timedelta = _knob(timedelta(days=2), "half-life of venue hype", "dur")
    position_halflife: timedelta = _knob(
        timedelta(hours=8), "half-life of a position (closing rate)", "dur"
    )
    opening_noise: float = _knob(0.3, "lognormal sd of each bar's opening flow", "unit")
    funding_close_sensitivity: float = _knob(
        1.0, "extra closing rate (x base) per 0.1%/8h of funding paid", "nonneg"
    )
    lp_halflife: timedelta = _knob(
        timedelta(days=3), "half-life of liquidity providers' inventory swings", "dur"
    )
    lp_vol: float = _knob(0.03, "lognormal sd of liquidity providers' hedged inventory", "unit")
    # funding
    interest_8h: float = _knob(1e-4, "interest part of funding, per 8h", None)
    funding_band_8h: float = _knob(
        5e-4, "funding = premium + clamp(interest - premium, +-band), per 8h", "nonneg"
    )
    premium_noise_8h: float = _knob(1e-4, "sd of each bar's premium noise, per 8h", "nonneg")
    arbitrage_vol: float = _knob(
        0.4, "lognormal sd of the funding sensitivity (basis traders' capital)", "nonneg"
    )
    arbitrage_halflife: timedelta = _knob(
        timedelta(days=3), "half-life of the funding sensitivity's swings", "dur"
    )
    # impact and cascades
    flow_impact: float = _knob(0.05, "% move per depth's worth of net opening flow", "nonneg")
    impact_coef: float = _knob(0.25, "% move per depth's worth of forced orders (small)", "pos")
    impact_exponent: float = _knob(
        0.5, "large forced orders move price ~ (usd/depth) ** exponent", "pos"
    )
    depth_vol_elasticity: float = _knob(0.7, "depth ~ (calm vol / vol) ** elasticity", "nonneg")
    stress_sensitivity: float = _knob(
        0.05, "depth thinning per depth's worth of liquidations", "nonneg"
    )
    stress_halflife: timedelta = _knob(timedelta(hours=1), "depth recovery half-life", "dur")
    max_stress: float = _knob(0.8, "the most depth can thin (fraction)", "unit_open")
    wick_recovery: float = _knob(0.3, "share of a liquidation move recovered in the bar", "unit")
    transient_impact_share: float = _knob(
        0.95,
        "share of the rest (and of the contagion move) that decays afterwards as books refill;"
        " calibrated so the median 72h recovery of cascades matches real flushes (~0.7)",
        "unit",
    )
    transient_halflife: timedelta = _knob(
        timedelta(hours=4), "half-life of the transient part", "dur"
    )
    contagion: float = _knob(
        0.15, "vol-scaled share of an asset's liquidation move felt by the others", "unit"
    )
    max_cascade_rounds: int = _knob(30, "liquidation rounds per bar", "int1")
    liq_bin_width: float = _knob(0.002, "liquidation-price bin width, log price (<= 0.02)", "pos")
    # ground-truth events
    event_bar_liq_frac: float = _knob(0.002, "long liquidations / OI marking a cascade bar", "pos")
    event_min_liq_frac: float = _knob(
        0.04, "long liquidations / OI within 1h to keep an event", "pos"
    )
    event_merge_gap: timedelta = _knob(
        timedelta(hours=1), "cascade bars closer than this are one event", "dur0"
    )

    def __post_init__(self) -> None:
        owner = "SimulationConfig"
        _check_fields(self, owner)
        if self.days > 3660:
            _fail(owner, "days", self.days, "<= 3660")
        if not (isinstance(self.seed, int) and not isinstance(self.seed, bool) and self.seed >= 0):
            _fail(owner, "seed", self.seed, "an int >= 0")
        seconds = self.bar.total_seconds()
        if seconds % 1 or not 60 <= seconds <= 86400:
            _fail(owner, "bar", self.bar, "whole seconds from 1 minute to 1 day")
        if not (
            isinstance(self.start, datetime)
            and self.start.tzinfo is not None
            and self.start.timestamp() % seconds == 0
        ):
            _fail(owner, "start", self.start, "a timezone-aware datetime on the bar grid")
        for name, bound in (("bad_row_rate", 0.01), ("liq_bin_width", 0.02)):
            if getattr(self, name) > bound:
                _fail(owner, name, getattr(self, name), f"<= {bound}")
        if self.tail_df <= 2:
            _fail(owner, "tail_df", self.tail_df, "> 2")
        if not (_number(self.interest_8h) and abs(self.interest_8h) < 0.01):
            _fail(owner, "interest_8h", self.interest_8h, "a rate with |rate| < 0.01")
        persist = 0.5 ** (self.bar / self.vol_halflife)
        if self.garch_alpha >= persist:
            _fail(
                owner,
                "garch_alpha",
                self.garch_alpha,
                f"< the per-bar persistence {persist:.4f} (lengthen vol_halflife)",
            )
        self._check_specs(owner)

    def _check_specs(self, owner: str) -> None:
        for name, kind in (("venues", VenueSpec), ("assets", AssetSpec)):
            value = getattr(self, name)
            if not (isinstance(value, tuple) and value and all(isinstance(x, kind) for x in value)):
                _fail(owner, name, value, f"a non-empty tuple of {kind.__name__}")
        for name, keys in (
            ("venues", [v.name for v in self.venues]),
            ("assets", [a.symbol for a in self.assets]),
        ):
            if len(set(keys)) != len(keys):
                _fail(owner, name, keys, "unique names")
        late = [v.name for v in self.venues if v.publish_lag + v.publish_jitter >= self.bar]
        if late:
            _fail(
                owner,
                "venues",
                late,
                "venues that publish within one bar (publish_lag + publish_jitter < bar)",
            )


def _show(value: Any) -> str:
    if isinstance(value, timedelta):
        return format_duration(value) if value > timedelta(0) else "0s"
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, tuple):
        return ",".join(getattr(x, "name", getattr(x, "symbol", "?")) for x in value)
    return repr(value)


def parameter_table(kind: type = SimulationConfig) -> list[tuple[str, str, str]]:
    """``(name, default, doc)`` for every field of a config class, for ``--help``."""
    rows = []
    for f in fields(kind):
        default = "(required)" if f.default is MISSING else _show(f.default)
        rows.append((f.name, default, str(f.metadata.get("doc", ""))))
    return rows
