"""The completeness marker of a stored panel: ``_manifest.json``, written last.

A command that writes a panel writes this file once its write is complete: which command
wrote it, when, and every panel file with its row count. A reader then tells a complete
panel from one whose writer died half way (:func:`check`):

- ``complete``: the marker says so, and every file it lists is there with its rows;
- ``partial``: a write began and did not finish or failed (the marker says ``complete:
  false``, naming the run), or a listed file is missing or holds fewer rows;
- ``modified``: complete, plus rows or files the marker does not list (appended or copied
  in later by something that does not keep the marker, e.g. the live loop);
- ``unmarked``: no marker, e.g. a panel this project did not write (``shared/data/real-1h``)
  or one written before markers existed. Readable as before; only reported.

Whole-panel writers (``oihedge simulate``) build the panel in a folder beside the target
and write the marker before swapping it in. Incremental writers (``ingest``,
``import-archive``) use a :class:`WriteRun`: before their first row the marker turns
``complete: false``, naming the run; after their last it is complete again. A run that is
killed, or stops on an error, leaves the panel marked partial until a later run of a
writer finishes (the incremental writers resume where the stored data ends, so that run
completes it). A venue error that ``ingest`` reports and gets past ends the run normally.
Concurrent writers are tracked one entry each, under a file lock.
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import polars as pl

MANIFEST = "_manifest.json"
_LOCK = ".manifest.lock"
FORMAT = 1

Status = Literal["complete", "partial", "modified", "unmarked"]


@dataclass(frozen=True)
class Completeness:
    """What :func:`check` found: the status, why, and who wrote the panel."""

    status: Status
    problems: tuple[str, ...] = ()
    writer: str | None = None
    written_at: str | None = None
    files: int = 0
    rows: int | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def note(self) -> str:
        """One line for a report."""
        if self.status == "unmarked":
            return (
                "no completeness marker (not written by oihedge, or written before markers "
                "existed): completeness unknown"
            )
        head = f"{self.status}: written by {self.writer or '?'} at {self.written_at or '?'}"
        if self.rows is not None:
            head += f", {self.files} file(s), {self.rows:,} row(s)"
        return head + ("; " + "; ".join(self.problems) if self.problems else "")

    def to_dict(self) -> dict[str, Any]:
        return {
            "status": self.status,
            "problems": list(self.problems),
            "writer": self.writer,
            "written_at": self.written_at,
            "files": self.files,
            "rows": self.rows,
            "note": self.note,
        }


def panel_files(root: Path) -> list[Path]:
    """The panel's data files: ``*.parquet`` outside folders starting with ``_`` or ``.``
    (the rule :class:`oihedge.pipelines.store.PanelStore` reads by)."""
    if not root.exists():
        return []
    found = []
    for path in sorted(root.rglob("*.parquet")):
        rel = path.relative_to(root)
        if not any(part.startswith(("_", ".")) for part in rel.parts):
            found.append(path)
    return found


def _rows(path: Path) -> int:
    """Row count from the Parquet footer (no data read); ValueError naming an unreadable
    file."""
    try:
        return int(pl.scan_parquet(path).select(pl.len()).collect().item())
    except (pl.exceptions.PolarsError, OSError) as err:
        first = (str(err).strip().splitlines() or [type(err).__name__])[0]
        raise ValueError(f"{path}: not a readable Parquet file ({first})") from None


def file_rows(root: Path) -> dict[str, int]:
    """``{relative path: rows}`` of every panel file under ``root``."""
    return {str(p.relative_to(root)): _rows(p) for p in panel_files(root)}


def read(root: Path) -> dict[str, Any] | None:
    """The marker under ``root`` as written, or None when there is none.

    Raises ValueError for a marker that is not JSON (it names the file)."""
    path = Path(root) / MANIFEST
    if not path.exists():
        return None
    try:
        data = json.loads(path.read_text("utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ValueError(f"{path}: not a readable completeness marker ({err})") from None
    if not isinstance(data, dict):
        raise ValueError(f"{path}: not a readable completeness marker (not an object)")
    return data


def write_complete(root: Path, writer: str, **extra: Any) -> dict[str, Any]:
    """Mark the panel under ``root`` complete, listing every panel file and its rows.

    ``extra`` (JSON-able) is stored beside, e.g. the simulation's seed. Returns the marker.
    """
    root = Path(root)
    files = file_rows(root)
    data = {
        "format": FORMAT,
        "complete": True,
        "writer": writer,
        "written_at": _now(),
        "files": files,
        "rows": sum(files.values()),
        "in_progress": {},
        **({"extra": extra} if extra else {}),
    }
    _atomic_json(root / MANIFEST, data)
    return data


def begin(root: Path, writer: str) -> str:
    """Mark the panel under ``root`` as being written by ``writer``; returns the run's token.

    Entries left by runs that failed, or by runs of this host whose process is gone
    (killed), are dropped: this run takes over their work (incremental writers resume
    where the stored data ends), and :func:`finish` marks the panel complete when done.
    """
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    token = uuid.uuid4().hex[:12]
    with _locked(root):
        data = read(root) or {"format": FORMAT, "files": {}, "rows": 0}
        entries = (data.get("in_progress") or {}).items()
        running = {k: v for k, v in entries if not (v.get("failed") or _dead(v))}
        running[token] = {
            "writer": writer,
            "started_at": _now(),
            "host": socket.gethostname(),
            "pid": os.getpid(),
        }
        data.update(complete=False, in_progress=running)
        _atomic_json(root / MANIFEST, data)
    return token


def finish(root: Path, token: str, *, failed: str | None = None) -> None:
    """End the run ``token`` began; the last writer to finish marks the panel complete.

    With ``failed`` (why), the run's entry stays, saying so: the panel is partial until a
    later run finishes.
    """
    root = Path(root)
    with _locked(root):
        data = read(root) or {}
        running = dict(data.get("in_progress") or {})
        entry = running.pop(token, {"writer": "?"})
        if failed is not None:
            running[token] = {**entry, "failed": " ".join(failed.split())[:300], "ended_at": _now()}
        if running:
            data.update(complete=False, in_progress=running)
            _atomic_json(root / MANIFEST, data)
        else:
            write_complete(root, str(entry.get("writer", "?")))


class WriteRun:
    """One incremental write (``ingest``, ``import-archive``) of the panel under ``root``.

    The panel is marked as being written at the first :meth:`started` (so a run that
    writes nothing leaves nothing behind) and complete or failed by :meth:`end`; as a
    context manager, :meth:`end` is called on exit, with the exception if there is one.
    """

    def __init__(self, root: str | os.PathLike[str], writer: str) -> None:
        self.root = Path(root)
        self.writer = writer
        self.token: str | None = None

    def started(self) -> None:
        """Call before each write; the first call marks the panel as being written."""
        if self.token is None:
            self.token = begin(self.root, self.writer)

    def end(self, failed: str | None = None) -> None:
        """Mark the run finished (``failed``: why it did not)."""
        if self.token is not None:
            finish(self.root, self.token, failed=failed)
            self.token = None

    def __enter__(self) -> WriteRun:
        return self

    def __exit__(self, kind: type[BaseException] | None, err: BaseException | None, _: Any) -> None:
        """Complete on a clean exit; on an exception (Ctrl-C included) the run failed."""
        if kind is None:
            self.end()
        else:
            self.end(failed=f"{kind.__name__}: {err}" if str(err) else kind.__name__)


def check(root: Path) -> Completeness:
    """Compare the panel under ``root`` with its marker (see the module docstring)."""
    root = Path(root)
    data = read(root)
    if data is None:
        return Completeness("unmarked")
    listed: dict[str, int] = {str(k): int(v) for k, v in (data.get("files") or {}).items()}
    writer, written_at = data.get("writer"), data.get("written_at")
    problems = []
    for entry in (data.get("in_progress") or {}).values():
        problems.append(_unfinished(entry))
    if not data.get("complete") and not problems:
        problems.append("the marker says the write did not complete")
    present = file_rows(root)
    changed = []
    for name, rows in sorted(listed.items()):
        if name not in present:
            problems.append(f"missing file {name} ({rows:,} rows)")
        elif present[name] < rows:
            problems.append(f"{name} holds {present[name]:,} rows, the marker lists {rows:,}")
        elif present[name] > rows:
            changed.append(f"{name} holds {present[name]:,} rows, the marker lists {rows:,}")
    extra = sorted(set(present) - set(listed))
    if extra:
        shown = ", ".join(extra[:3]) + (f" and {len(extra) - 3} more" if len(extra) > 3 else "")
        changed.append(f"file(s) not written with the panel: {shown}")
    status: Status = "partial" if problems else "modified" if changed else "complete"
    problems.extend(changed)
    return Completeness(
        status,
        tuple(problems),
        writer=writer,
        written_at=written_at,
        files=len(present),
        rows=sum(present.values()),
    )


def _unfinished(entry: dict[str, Any]) -> str:
    """Why an entry of ``in_progress`` makes the panel partial, in words."""
    head = f"a write by {entry.get('writer', '?')} started at {entry.get('started_at', '?')}"
    if entry.get("failed"):
        return f"{head} failed ({entry['failed']}); re-run it to resume"
    if _dead(entry):
        return f"{head} was interrupted (pid {entry.get('pid', '?')} is gone); re-run it to resume"
    return (
        f"{head} has not finished (pid {entry.get('pid', '?')} on {entry.get('host', '?')}: "
        "still running, or interrupted on that host)"
    )


def _dead(entry: dict[str, Any]) -> bool:
    """True when ``entry`` was made on this host by a process that no longer exists."""
    if entry.get("host") != socket.gethostname():
        return False
    try:
        os.kill(int(entry.get("pid", -1)), 0)
    except ProcessLookupError:
        return True
    except (PermissionError, ValueError, OverflowError):
        return False
    return False


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def _atomic_json(path: Path, data: dict[str, Any]) -> None:
    """Write beside ``path``, fsync, rename over it, fsync the folder."""
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}")
    try:
        with open(tmp, "w", encoding="utf-8") as handle:
            json.dump(data, handle, indent=2, sort_keys=True)
            handle.write("\n")
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    fsync_dir(path.parent)


def fsync_dir(path: Path) -> None:
    """Make the renames inside folder ``path`` durable."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextmanager
def _locked(root: Path) -> Iterator[None]:
    with open(root / _LOCK, "a+") as handle:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)
