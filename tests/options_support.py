"""Deribit option-chain payloads for the replay tests, moved to any date.

The built chains (``tests/fixtures/ccxt/deribit/``, see the README there) were made for
2024-03-22 10:00 UTC; :func:`chain_at` moves every expiry (and the timestamps) by the
same whole number of days so that a test running "now" sees the same chain: the same
days to expiry, forwards, IVs and open interest.
"""

from __future__ import annotations

import copy
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from ccxt_replay import Reply, Req, Router

DERIBIT = Path(__file__).resolve().parent / "fixtures" / "ccxt" / "deribit"
CHAIN_URL = "https://www.deribit.com/api/v2/public/get_book_summary_by_currency"
CHAIN_PATH = "/api/v2/public/get_book_summary_by_currency"
#: the instant the built chains describe
CHAIN_TIME = datetime(2024, 3, 22, 10, 0, tzinfo=UTC)
_MONTHS = ["JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC"]


def chain(currency: str) -> dict[str, Any]:
    return json.loads((DERIBIT / f"built-book-summary-option-{currency}.json").read_text())


def _expiry_code(day: datetime) -> str:
    return f"{day.day}{_MONTHS[day.month - 1]}{day.year % 100:02d}"


def chain_at(currency: str, when: datetime) -> dict[str, Any]:
    """The built chain of ``currency`` as if fetched at ``when`` (shifted by whole days)."""
    from oihedge.pipelines.ingest.options_chain import parse_expiry

    days = (when - CHAIN_TIME) // timedelta(days=1)
    shift = timedelta(days=days)
    out = copy.deepcopy(chain(currency))
    for entry in out["result"]:
        parts = entry["instrument_name"].split("-")
        parts[1] = _expiry_code(parse_expiry(parts[1]) + shift)
        entry["instrument_name"] = "-".join(parts)
        entry["creation_timestamp"] += int(shift.total_seconds() * 1000)
    return out


def add_deribit(router: Router, when: datetime | None = None) -> None:
    """Answer option-chain requests for BTC and ETH (at ``when``, default: the built time);
    another currency gets Deribit's invalid-params error."""

    def answer(req: Req) -> Reply:
        currency = req.params.get("currency", "")
        if currency not in ("BTC", "ETH") or req.params.get("kind") != "option":
            body = {"jsonrpc": "2.0", "error": {"message": "Invalid params", "code": -32602}}
            return Reply(status=400, body=body)
        return Reply(body=chain_at(currency, when) if when else chain(currency))

    router.add("GET", CHAIN_URL, answer)
