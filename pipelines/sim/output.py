"""Writing a simulated panel to ``--out``: built beside the target, swapped in when complete.

``oihedge simulate --out DIR`` never writes into ``DIR`` directly. The new panel (its
partitions, ``_quarantine/``, ``_truth/cascades.parquet`` and, last, its completeness
marker :data:`oihedge.pipelines.panel_manifest.MANIFEST`) is built in a hidden folder beside it,
``.<DIR name>.partial-simulate-<pid>-<id>``, and only then swapped in by a rename (an
atomic exchange where the file system supports it). A run killed at any moment leaves
the old panel as it was; what it leaves beside it is named ``partial`` and removed by the
next run to the same ``--out``.

``--overwrite`` replaces only a panel ``simulate`` wrote: a folder holding anything else
(a file or folder that is not part of a panel), or a panel written by another command
(ingested or imported data), is refused with :class:`OutputError`, and nothing is deleted.
"""

from __future__ import annotations

import ctypes
import errno
import os
import shutil
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

from oihedge.pipelines import panel_manifest
from oihedge.pipelines.sim.simulate import SimulationResult
from oihedge.pipelines.store import PARTITION_FILE, QUARANTINE_DIR, AppendReport, PanelStore

WRITER = "simulate"
TRUTH = Path("_truth") / "cascades.parquet"
_PARTIAL = "partial-simulate"
_REPLACED = "replaced-simulate"


class OutputError(ValueError):
    """``--out`` cannot be written; the message names the folder and why."""


@dataclass(frozen=True)
class WrittenPanel:
    """What :func:`write_simulation` wrote (paths inside the folder it was given)."""

    append: AppendReport
    truth: Path


@contextmanager
def replacing(target: Path, *, overwrite: bool) -> Iterator[Path]:
    """Check ``target``, yield an empty folder beside it, swap it in on a clean exit.

    Raises :class:`OutputError` before anything is touched when ``target`` is a file, is
    not empty (without ``overwrite``) or is not a simulated panel. On an exception the
    new folder is deleted and ``target`` is left as it was.
    """
    target = Path(target).resolve()  # "." has no name to build the folder beside it from
    check_target(target, overwrite=overwrite)
    target.parent.mkdir(parents=True, exist_ok=True)
    remove_leftovers(target)
    staging = _beside(target, _PARTIAL)
    staging.mkdir()
    try:
        yield staging
        _swap_in(staging, target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def check_target(target: Path, *, overwrite: bool) -> None:
    """Raise :class:`OutputError` unless ``target`` may receive a new simulated panel."""
    if target.exists() and not target.is_dir():
        raise OutputError(f"--out {target} is a file, not a folder")
    if not target.exists() or not any(target.iterdir()):
        return
    if not overwrite:
        raise OutputError(f"--out {target} is not empty; pass --overwrite to replace it")
    foreign = _foreign_entry(target)
    if foreign is not None:
        raise OutputError(
            f"--out {target} is not a simulated panel ({foreign} is not part of one); "
            "refusing to overwrite it"
        )
    try:
        marker = panel_manifest.read(target)
    except ValueError as err:
        raise OutputError(f"--out {target}: {err}; refusing to overwrite it") from None
    if marker is not None and marker.get("writer") != WRITER:
        raise OutputError(
            f"--out {target} holds a panel written by {marker.get('writer')!r}, not by "
            "simulate; refusing to overwrite it (delete it yourself if you mean to)"
        )
    if marker is None and not (target / TRUTH).exists():
        raise OutputError(
            f"--out {target} holds a panel not written by simulate (no {TRUTH}, no "
            "completeness marker); refusing to overwrite it"
        )


def write_simulation(result: SimulationResult, folder: Path, *, bar: timedelta) -> WrittenPanel:
    """Write ``result`` as a panel into the empty ``folder``; the marker goes last.

    Rows are validated by the store (invalid ones quarantined with their reason)."""
    store = PanelStore(folder)
    report = store.append(result.panel, source=WRITER, bar=bar, arrival_order=True)
    truth = folder / TRUTH
    truth.parent.mkdir(parents=True, exist_ok=True)
    result.events.write_parquet(truth)
    config = result.config
    panel_manifest.write_complete(
        folder,
        WRITER,
        days=config.days,
        seed=config.seed,
        bar_seconds=bar.total_seconds(),
        events=result.events.height,
        quarantined=report.quarantined,
    )
    return WrittenPanel(append=report, truth=truth)


def remove_leftovers(target: Path) -> list[Path]:
    """Delete what killed runs left beside ``target`` (runs still alive are left alone)."""
    removed = []
    for tag in (_PARTIAL, _REPLACED):
        for path in target.parent.glob(f".{target.name}.{tag}-*"):
            pid = path.name.removeprefix(f".{target.name}.{tag}-").split("-", 1)[0]
            if pid.isdigit() and not _alive(int(pid)):
                shutil.rmtree(path, ignore_errors=True)
                removed.append(path)
    return removed


def _foreign_entry(target: Path) -> str | None:
    """The first entry under ``target`` that a simulated panel does not have, or None."""
    for path in sorted(target.rglob("*")):
        rel = path.relative_to(target)
        if not _panel_entry(rel.parts, path.is_dir()):
            return str(rel)
    return None


def _panel_entry(parts: tuple[str, ...], is_dir: bool) -> bool:
    top = parts[0]
    if len(parts) == 1:
        if is_dir:
            return top in (QUARANTINE_DIR, TRUTH.parent.name) or top.startswith("venue=")
        return top in (panel_manifest.MANIFEST, ".manifest.lock") or top.startswith(
            f".{panel_manifest.MANIFEST}.tmp-"
        )
    if top == QUARANTINE_DIR:
        return len(parts) == 2 and not is_dir and parts[1].endswith(".parquet")
    if top == TRUTH.parent.name:
        return len(parts) == 2 and not is_dir and parts[1] == TRUTH.name
    if len(parts) == 2:
        return is_dir and top.startswith("venue=") and parts[1].startswith("symbol=")
    name = parts[2]
    return (
        len(parts) == 3
        and not is_dir
        and (name in (PARTITION_FILE, ".lock") or name.startswith(f".{PARTITION_FILE}.tmp-"))
    )


def _beside(target: Path, tag: str) -> Path:
    return target.with_name(f".{target.name}.{tag}-{os.getpid()}-{uuid.uuid4().hex[:8]}")


def _swap_in(staging: Path, target: Path) -> None:
    """Put ``staging`` at ``target``; the old ``target`` (if any) is deleted afterwards."""
    if not target.exists():
        os.rename(staging, target)
        panel_manifest.fsync_dir(target.parent)
        return
    if _exchange(staging, target):
        old = staging  # the exchange left the old panel under the staging name
    else:
        # no atomic exchange here: two renames; between them the old panel waits,
        # complete, under a name that says what it is
        old = _beside(target, _REPLACED)
        os.rename(target, old)
        try:
            os.rename(staging, target)
        except BaseException:
            os.rename(old, target)
            raise
    panel_manifest.fsync_dir(target.parent)
    shutil.rmtree(old, ignore_errors=True)


def _exchange(a: Path, b: Path) -> bool:
    """Swap two paths atomically (Linux ``renameat2(RENAME_EXCHANGE)``); False if unsupported."""
    try:
        renameat2 = ctypes.CDLL(None, use_errno=True).renameat2
    except (AttributeError, OSError):
        return False
    at_fdcwd, rename_exchange = -100, 2
    if renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange) == 0:
        return True
    code = ctypes.get_errno()
    if code in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP):
        return False
    raise OSError(code, os.strerror(code), str(b))


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
