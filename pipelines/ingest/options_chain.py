"""An option chain snapshot -> the panel's four options numbers, with a reason for each null.

The input is Deribit's ``public/get_book_summary_by_currency`` (``kind=option``) result:
one entry per listed option of a currency, with ``instrument_name``
(``BTC-27DEC24-60000-C``), ``open_interest`` (in coins: one contract is one BTC or ETH),
``mark_iv`` (annualised %, Deribit's mark volatility), ``underlying_price`` (the forward
of that expiry, what Deribit prices the option on) and ``estimated_delivery_price`` (the
index). The summary carries no greeks; each option's delta is Black-76's on its forward,
mark IV and time to expiry (what Deribit's mark greeks are, up to its inverse-option
premium adjustment: a few hundredths of delta on the wings, see ``delta``). An option
without a usable ``mark_iv`` has no delta: its greeks are missing.

What is computed (:func:`summarise`):

- ``opt_oi_usd``: sum over options of ``open_interest`` x the index (the entry's
  ``estimated_delivery_price``, else its forward), USD;
- ``opt_put_call_oi``: put open interest / call open interest (coins); null when no call
  has open interest;
- ``opt_iv_atm_pct`` and ``opt_rr25_pct`` at a constant 30-day maturity. Per expiry: the
  ATM IV is the mark IV interpolated linearly in log-moneyness ``ln(K / F)`` between the
  two strikes around the forward ``F`` (each strike's IV the mean of its call's and
  put's); the 25-delta risk reversal is the IV of the 25-delta call minus the IV of the
  -25-delta put, each interpolated linearly in delta between the two OTM options of that
  type around it (calls with ``K >= F``, puts with ``K <= F``). Negative: puts are dearer
  (demand for downside protection). The 30-day value interpolates linearly in time
  between the two expiries around 30 days (total variance ``IV^2 T`` for the ATM IV);
  without such a pair, the expiry nearest 30 days among those at least
  ``MIN_EXPIRY_DAYS`` away.

A number that cannot be computed is null with a reason in :attr:`ChainSummary.reasons`
(``missing_greeks`` when options of the chosen expiries have no mark IV and the 25-delta
point is not bracketed without them); the others are still given. Entries that cannot be
read (an unknown instrument name, a negative or non-finite amount, an expired option)
are left out and counted per reason in :attr:`ChainSummary.rejected`.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

from oihedge.pipelines.ingest.normalise import MalformedResponseError

#: the constant maturity the IV and the skew are given at
TARGET_DAYS = 30.0
#: nearer expiries are not used alone (their IV is dominated by the next days' events)
MIN_EXPIRY_DAYS = 7.0
#: the delta the skew is measured at
SKEW_DELTA = 0.25
YEAR_DAYS = 365.0
_NAME_RE = re.compile(r"^([A-Z0-9_]+)-(\d{1,2}[A-Z]{3}\d{2})-(\d+(?:d\d+)?)-([CP])$")
_MONTH_NAMES = ["JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC"]
_MONTHS = {m: i + 1 for i, m in enumerate(_MONTH_NAMES)}
#: Deribit's options expire at 08:00 UTC
EXPIRY_HOUR = 8


@dataclass(frozen=True)
class Option:
    """One readable entry of the chain."""

    name: str
    expiry: datetime
    strike: float
    call: bool
    oi: float  # coins
    forward: float
    index: float
    iv_pct: float | None  # None: no usable mark IV (no greeks)


@dataclass
class ChainSummary:
    """The four numbers (None where not computable, with the reason) and what was left out."""

    oi_usd: float | None = None
    put_call_oi: float | None = None
    iv_atm_pct: float | None = None
    rr25_pct: float | None = None
    options: int = 0
    reasons: dict[str, str] = field(default_factory=dict)
    rejected: dict[str, int] = field(default_factory=dict)

    def values(self) -> dict[str, float | None]:
        """Panel column -> value."""
        return {
            "opt_oi_usd": self.oi_usd,
            "opt_put_call_oi": self.put_call_oi,
            "opt_iv_atm_pct": self.iv_atm_pct,
            "opt_rr25_pct": self.rr25_pct,
        }


def parse_expiry(text: str) -> datetime:
    """``27DEC24`` -> 2024-12-27 08:00 UTC; ``ValueError`` on anything else."""
    day, month, year = text[:-5], text[-5:-2], text[-2:]
    if month not in _MONTHS:
        raise ValueError(f"unknown month {month!r} in expiry {text!r}")
    return datetime(2000 + int(year), _MONTHS[month], int(day), EXPIRY_HOUR, tzinfo=UTC)


def _number(entry: Mapping[str, object], key: str) -> float | None:
    value = entry.get(key)
    if value is None:
        return None
    number = float(value)  # type: ignore[arg-type]
    return number if math.isfinite(number) else math.nan


def read_option(entry: object, currency: str, now: datetime) -> Option | str:
    """One chain entry -> an :class:`Option`, or the reason it cannot be used."""
    if not isinstance(entry, Mapping):
        return "not_an_object"
    name = entry.get("instrument_name")
    match = _NAME_RE.match(name) if isinstance(name, str) else None
    if match is None or match.group(1) != currency:
        return "bad_instrument_name"
    try:
        expiry = parse_expiry(match.group(2))
    except ValueError:
        return "bad_instrument_name"
    try:
        oi, forward = _number(entry, "open_interest"), _number(entry, "underlying_price")
        index, iv = _number(entry, "estimated_delivery_price"), _number(entry, "mark_iv")
    except (TypeError, ValueError):
        return "non_numeric_field"
    if expiry <= now:
        return "expired"
    if oi is None or not oi >= 0:
        return "bad_open_interest"
    if forward is None or not forward > 0:
        return "bad_underlying_price"
    return Option(
        name=name,  # type: ignore[arg-type]
        expiry=expiry,
        strike=float(match.group(3).replace("d", ".")),
        call=match.group(4) == "C",
        oi=oi,
        forward=forward,
        index=index if index is not None and index > 0 else forward,
        iv_pct=iv if iv is not None and iv > 0 else None,
    )


def _norm_cdf(x: float) -> float:
    return 0.5 * (1.0 + math.erf(x / math.sqrt(2.0)))


def delta(option: Option, years: float) -> float | None:
    """Black-76 forward delta (call in (0, 1), put in (-1, 0)); None without a mark IV.

    Deribit's inverse options are paid in coin, which shifts its published delta by the
    option's premium in coin (``delta - mark_price``), small beside 0.25 on the wings.
    """
    if option.iv_pct is None or years <= 0:
        return None
    sigma = option.iv_pct / 100.0
    d1 = (math.log(option.forward / option.strike) + 0.5 * sigma * sigma * years) / (
        sigma * math.sqrt(years)
    )
    return _norm_cdf(d1) if option.call else _norm_cdf(d1) - 1.0


def _interpolate(points: Sequence[tuple[float, float]], x: float) -> float | None:
    """Linear interpolation at ``x`` between the two points around it (sorted by x)."""
    ordered = sorted(points)
    for (x0, y0), (x1, y1) in zip(ordered, ordered[1:], strict=False):
        if x0 <= x <= x1:
            return y0 if x1 == x0 else y0 + (y1 - y0) * (x - x0) / (x1 - x0)
    return None


@dataclass(frozen=True)
class _Expiry:
    years: float
    atm_iv: float | None
    rr25: float | None
    missing_greeks: int  # OTM options without a mark IV


def _expiry_numbers(options: list[Option], years: float) -> _Expiry:
    forward = sorted(o.forward for o in options)[len(options) // 2]
    by_strike: dict[float, list[float]] = {}
    for o in options:
        if o.iv_pct is not None:
            by_strike.setdefault(o.strike, []).append(o.iv_pct)
    atm = _interpolate(
        [(math.log(k / forward), sum(v) / len(v)) for k, v in by_strike.items()], 0.0
    )
    calls = [o for o in options if o.call and o.strike >= forward]
    puts = [o for o in options if not o.call and o.strike <= forward]
    missing = sum(o.iv_pct is None for o in calls + puts)
    call_pts = [(d, o.iv_pct) for o in calls if (d := delta(o, years)) is not None]
    put_pts = [(d, o.iv_pct) for o in puts if (d := delta(o, years)) is not None]
    iv_c = _interpolate(call_pts, SKEW_DELTA)  # type: ignore[arg-type]
    iv_p = _interpolate(put_pts, -SKEW_DELTA)  # type: ignore[arg-type]
    rr = None if iv_c is None or iv_p is None else iv_c - iv_p
    return _Expiry(years, atm, rr, missing)


def _pick(expiries: list[_Expiry]) -> tuple[_Expiry, _Expiry | None]:
    """The two expiries around the target maturity, or the one nearest it (>= min days)."""
    target = TARGET_DAYS / YEAR_DAYS
    below = [e for e in expiries if e.years <= target]
    above = [e for e in expiries if e.years > target]
    if below and above and max(below, key=lambda e: e.years).years * YEAR_DAYS >= MIN_EXPIRY_DAYS:
        return max(below, key=lambda e: e.years), min(above, key=lambda e: e.years)
    usable = [e for e in expiries if e.years * YEAR_DAYS >= MIN_EXPIRY_DAYS] or expiries
    return min(usable, key=lambda e: abs(e.years - target)), None


def _at_target(near: _Expiry, far: _Expiry | None, attr: str, variance: bool) -> float | None:
    a = getattr(near, attr)
    if far is None:
        return a
    b = getattr(far, attr)
    if a is None or b is None:
        return None
    t = TARGET_DAYS / YEAR_DAYS
    w = (t - near.years) / (far.years - near.years)
    if not variance:
        return a + (b - a) * w
    total = a * a * near.years + (b * b * far.years - a * a * near.years) * w
    return math.sqrt(total / t) if total > 0 else None


def summarise(result: object, currency: str, now: datetime) -> ChainSummary:
    """The chain ``result`` (the ``result`` list of the book summary) at ``now``.

    Raises :class:`MalformedResponseError` when ``result`` is not a list; entries that
    cannot be read are counted in ``rejected``.
    """
    if not isinstance(result, list):
        raise MalformedResponseError(
            f"deribit {currency} option chain: expected a list of instruments, got "
            f"{type(result).__name__} {str(result)[:60]!r}"
        )
    out = ChainSummary()
    options: list[Option] = []
    for entry in result:
        read = read_option(entry, currency, now)
        if isinstance(read, str):
            out.rejected[read] = out.rejected.get(read, 0) + 1
        else:
            options.append(read)
    out.options = len(options)
    if not options:
        out.reasons = {c: "empty_chain" for c in out.values()}
        return out
    out.oi_usd = sum(o.oi * o.index for o in options)
    calls = sum(o.oi for o in options if o.call)
    puts = sum(o.oi for o in options if not o.call)
    if calls > 0:
        out.put_call_oi = puts / calls
    else:
        out.reasons["opt_put_call_oi"] = "no_call_open_interest"
    _surface(out, options, now)
    return out


def _surface(out: ChainSummary, options: list[Option], now: datetime) -> None:
    """The ATM IV and the 25-delta risk reversal at 30 days, into ``out``."""
    groups: dict[datetime, list[Option]] = {}
    for o in options:
        groups.setdefault(o.expiry, []).append(o)
    year = YEAR_DAYS * 86400.0
    expiries = [_expiry_numbers(g, (e - now).total_seconds() / year) for e, g in groups.items()]
    near, far = _pick(expiries)
    out.iv_atm_pct = _at_target(near, far, "atm_iv", variance=True)
    if out.iv_atm_pct is None:
        out.reasons["opt_iv_atm_pct"] = "no_strikes_around_the_forward_with_mark_iv"
    out.rr25_pct = _at_target(near, far, "rr25", variance=False)
    if out.rr25_pct is None:
        used = [near] + ([far] if far is not None else [])
        missing = sum(e.missing_greeks for e in used)
        out.reasons["opt_rr25_pct"] = (
            f"missing_greeks: {missing} OTM option(s) of the expiries used have no mark IV"
            if missing
            else "25_delta_not_bracketed"
        )
