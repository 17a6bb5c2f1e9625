"""The kill switch as the executor sees it: its files read when they change, every
engagement and release recorded once in the state store (:mod:`oihedge.serving.execution.guards`
writes and reads the files; :class:`~oihedge.serving.execution.executor.Executor` asks here
before every order and at every bar)."""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from oihedge.serving.execution.guards import KillSwitchFiles, read_kill_switch, release_record_path
from oihedge.serving.execution.state import StateStore

__all__ = ["KillSwitchChange", "KillSwitchWatch"]

log = logging.getLogger(__name__)


def _stat(path: Path) -> tuple[int, ...] | None:
    """What tells a file's versions apart (inode, mtime, size); None: no file."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return None
    return (st.st_ino, st.st_mtime_ns, st.st_size)


@dataclass(frozen=True)
class KillSwitchChange:
    """An engagement or release of the kill switch, as recorded in the state store:
    ``reason`` (the operator's), ``detail`` (their times: ``engaged_at``,
    ``released_at``, as written in the files; None where a bare file gave none)."""

    action: str
    reason: str
    detail: dict[str, Any]


@dataclass
class _SwitchHistory:
    """What the store says about the switch: the last change, as (action, the operator's
    time of it), and the release times recorded."""

    last: tuple[str, str | None] = ("released", None)
    released: set[str] = field(default_factory=set)


class KillSwitchWatch:
    """The switch at ``path`` (``live.kill_switch_file``) against what ``store`` recorded."""

    def __init__(self, store: StateStore, path: Path) -> None:
        self.store = store
        self.path = path
        self._read: _SwitchHistory | None = None
        self._release_file = release_record_path(path)
        self._seen: tuple[tuple[int, ...] | None, ...] = ()
        self._files: KillSwitchFiles | None = None

    def reason(self, now: datetime) -> str | None:
        """The kill switch's reason if engaged (recording any change first), else None."""
        files = self._check(now, [])
        return (files.reason or "kill switch file present") if files.engaged else None

    @property
    def engaged(self) -> bool:
        """Whether the kill switch is engaged as the state records it (its last recorded
        change; after a restart with the switch still engaged there is no new change)."""
        return self._history().last[0] == "engaged"

    def check(self, now: datetime) -> list[KillSwitchChange]:
        """Record in the state store every engagement and release of the kill switch not
        recorded yet, at ``now`` (when it is seen: the loop checks every bar), with its
        reason and the operator's own time of it; returns them, oldest first.

        A kill and a resume both between two checks are both recorded (the release
        record names the engagement it ended); a switch file removed by hand is recorded
        as released with no reason given."""
        changes: list[KillSwitchChange] = []
        self._check(now, changes)
        return changes

    def _check(self, now: datetime, changes: list[KillSwitchChange]) -> KillSwitchFiles:
        # the files are read again only when one changed (a stat each: this runs every bar)
        seen = (_stat(self.path), _stat(self._release_file))
        if self._files is not None and seen == self._seen:
            return self._files
        files = read_kill_switch(self.path)
        self._seen, self._files = seen, files
        history = self._history()
        release = files.release
        released_at = None if release is None else release.get("released_at")
        ended = None if release is None else release.get("engaged_at")
        if released_at is not None and released_at not in history.released:
            if history.last != ("engaged", ended):  # engaged and released between checks
                changes.append(
                    KillSwitchChange(
                        "engaged", str(release.get("engaged_reason") or ""), {"engaged_at": ended}
                    )
                )
            detail = {"released_at": released_at, "engaged_at": ended}
            changes.append(KillSwitchChange("released", str(release.get("reason", "")), detail))
        releasing = files.engaged_at is not None and files.engaged_at == ended
        last = changes[-1].action if changes else history.last[0]
        if files.engaged and not releasing:
            now_last = (last, changes[-1].detail.get("engaged_at")) if changes else history.last
            if now_last != ("engaged", files.engaged_at):
                if last == "engaged":
                    changes.append(KillSwitchChange("released", "kill switch file replaced", {}))
                reason = files.reason or "kill switch file present"
                changes.append(
                    KillSwitchChange("engaged", reason, {"engaged_at": files.engaged_at})
                )
        elif not files.engaged and last == "engaged":
            why = "kill switch file removed, not through `oihedge live resume`: no reason given"
            changes.append(KillSwitchChange("released", why, {}))
        for change in changes:
            self._record(change, now, history)
        return files

    def _history(self) -> _SwitchHistory:
        """The switch's history from the store, read once (only this executor writes it:
        one loop per state)."""
        if self._read is None:
            history = _SwitchHistory()
            for event in self.store.kill_switch_events():
                if event.kind == "engaged":
                    history.last = ("engaged", event.detail.get("engaged_at"))
                elif event.kind == "released":
                    history.last = ("released", event.detail.get("released_at"))
                    if event.detail.get("released_at") is not None:
                        history.released.add(str(event.detail["released_at"]))
            self._read = history
        return self._read

    def _record(self, change: KillSwitchChange, now: datetime, history: _SwitchHistory) -> None:
        self.store.record_kill_switch(
            change.action,
            change.reason,
            now=now,
            detail=change.detail,  # type: ignore[arg-type]
        )
        if change.action == "engaged":
            history.last = ("engaged", change.detail.get("engaged_at"))
            log.critical("kill switch engaged: %s", change.reason)
        else:
            released_at = change.detail.get("released_at")
            history.last = ("released", released_at)
            if released_at is not None:
                history.released.add(str(released_at))
            log.warning("kill switch released: %s", change.reason)
