"""Where bars come from: the Source protocol (_base), replay, REST polling and websocket candles."""
