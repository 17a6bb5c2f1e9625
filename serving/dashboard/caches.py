"""What the pages read again only when it changed: the decision log's records, and the
registry's view of the served model."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path
from typing import Any

from oihedge.serving.dashboard.data import decisions
from oihedge.serving.live.decision_log import read_records


class LogCache:
    """The decision log's records, read again only when the file changed (size, mtime)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._key: tuple[int, int] | None = None
        self._rows: list[dict[str, Any]] = []
        self._lock = threading.Lock()  # the routes run on a thread pool

    def rows(self) -> list[dict[str, Any]]:
        """:func:`decisions` of the log (empty when there is no log yet)."""
        try:
            stat = os.stat(self.path)
        except FileNotFoundError:
            return []
        key = (stat.st_size, stat.st_mtime_ns)
        with self._lock:
            if key != self._key:
                self._rows = decisions(read_records(self.path))
                self._key = key
            return self._rows


class ServedModel:
    """:func:`oihedge.serving.dashboard.models_view.served_model` for the Live page, asked of the
    registry at most once per ``ttl`` seconds for the same version (the page refreshes
    every few seconds)."""

    def __init__(self, name: str, ttl: float = 30.0) -> None:
        self.name = name
        self.ttl = ttl
        self._cached: tuple[str | None, float, dict[str, Any]] | None = None

    def view(self, version: str | None) -> dict[str, Any]:
        now = time.monotonic()
        if self._cached and self._cached[0] == version and now - self._cached[1] < self.ttl:
            return self._cached[2]
        from oihedge.serving.dashboard.models_view import served_model

        try:
            found = served_model(self.name, version)
        except Exception as err:  # noqa: BLE001 - the Live page shows the loop's side anyway
            found = {"name": self.name, "registry": f"not read: {err}"}
        self._cached = (version, now, found)
        return found
