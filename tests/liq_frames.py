"""The venues' documented liquidation pushes (``fixtures/ws/liquidations_from_docs.json``),
filled in for a test: the frames a venue's websocket sends, for ccxt.pro to parse."""

from __future__ import annotations

import copy
import json
from datetime import datetime
from pathlib import Path
from typing import Any

from oihedge.pipelines.ingest.normalise import to_ms

FRAMES = json.loads(
    (
        Path(__file__).resolve().parent / "fixtures" / "ws" / "liquidations_from_docs.json"
    ).read_text()
)
OKX_CT_VAL = 0.01  # BTC-USDT-SWAP ctVal in the recorded OKX instruments


def liq_frame(venue: str, base: str, ts: datetime, side: str, amount: float, price: float) -> Any:
    """The venue's documented liquidation push for ``base``: a ``side`` ("long"/"short")
    position of ``amount`` base units liquidated at ``price``, timed ``ts``."""
    frame = copy.deepcopy(FRAMES[venue])
    ms = to_ms(ts)
    if venue == "binanceusdm":  # S: the forced order's side (SELL closes a long)
        o = frame["o"]
        o.update(s=f"{base}USDT", S="SELL" if side == "long" else "BUY", T=ms)
        o.update(q=str(amount), l=str(amount), z=str(amount), p=str(price), ap=str(price))
        frame["E"] = ms
    elif venue == "bybit":  # S: the liquidated position's side (Buy = a long)
        frame["topic"] = f"allLiquidation.{base}USDT"
        frame["ts"] = ms
        frame["data"] = [
            {
                "T": ms,
                "s": f"{base}USDT",
                "S": "Buy" if side == "long" else "Sell",
                "v": str(amount),
                "p": str(price),
            }
        ]
    else:  # okx: size in contracts (ctVal base units each), posSide the position's side
        entry = frame["data"][0]
        entry.update(instId=f"{base}-USDT-SWAP", instFamily=f"{base}-USDT", uly=f"{base}-USDT")
        entry["details"][0].update(
            posSide=side,
            side="sell" if side == "long" else "buy",
            sz=f"{amount / OKX_CT_VAL:g}",
            bkPx=str(price),
            ts=str(ms),
        )
    return frame
