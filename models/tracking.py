"""Point MLflow at the configured tracking and registry store, pick the experiment, clean
up after a killed process, and name the commit of the running code (:func:`git_commit`,
recorded with every train and backtest run).

The default store is a SQLite file under ``mlflow/`` with artifacts beside it, so nothing
needs a server; any other tracking URI (``http://127.0.0.1:5000``,
``postgresql+psycopg2://...``) works the same way.

Every run `oihedge train` opens (the train run, the study's parent run, each trial's run)
carries :func:`owner_tags`: the host, pid and start time of the process that owns it. A
process killed mid-run (SIGKILL, OOM, a closed terminal) leaves its runs RUNNING;
:func:`fail_orphaned_runs`, called when the next train starts, marks FAILED the RUNNING
runs whose owner is gone (:func:`process_gone`: same host, and that pid no longer runs
or now belongs to a process started at another time). Runs owned by a live process (a
concurrent train), by another host (its processes cannot be seen from here) or by nobody
known (runs from before the owner tags) are left as they are.
"""

from __future__ import annotations

import os
import socket
import subprocess
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from pathlib import Path

import mlflow
from mlflow import MlflowClient

_SQLITE = "sqlite:///"
#: run tags naming the process that owns a run: host, pid, process start time
OWNER_TAGS = ("oihedge.owner.host", "oihedge.owner.pid", "oihedge.owner.started")
#: tag written on a run marked FAILED because its owner is gone: who did it and why
ORPHANED_TAG = "oihedge.orphaned"


def configure_tracking(
    tracking_uri: str,
    *,
    registry_uri: str = "",
    experiment: str = "oihedge",
    artifact_root: str | os.PathLike[str] | None = None,
) -> str:
    """Set the tracking/registry URIs, create the experiment if needed; return its id.

    A relative SQLite path is taken from the current directory and its folder is created.
    ``artifact_root`` is where a new experiment keeps its artifacts (a local folder or a
    URI); an existing experiment keeps the location it was created with.
    """
    tracking_uri = absolute_sqlite(tracking_uri)
    mlflow.set_tracking_uri(tracking_uri)
    mlflow.set_registry_uri(absolute_sqlite(registry_uri) if registry_uri else tracking_uri)
    client = MlflowClient()
    found = client.get_experiment_by_name(experiment)
    if found is not None:
        mlflow.set_experiment(experiment_id=found.experiment_id)
        return str(found.experiment_id)
    location = None
    if artifact_root is not None:
        text = str(artifact_root)
        if "://" in text:
            location = text
        else:
            folder = Path(text).resolve()
            folder.mkdir(parents=True, exist_ok=True)
            location = folder.as_uri()
    experiment_id = client.create_experiment(experiment, artifact_location=location)
    mlflow.set_experiment(experiment_id=experiment_id)
    return str(experiment_id)


def sqlite_file(uri: str) -> Path | None:
    """The database file of a ``sqlite:///`` URI, a relative path taken from the current
    folder; None for any other URI."""
    if not uri.startswith(_SQLITE):
        return None
    path = Path(uri[len(_SQLITE) :])
    return path if path.is_absolute() else Path.cwd() / path


def absolute_sqlite(uri: str) -> str:
    """``uri`` with a SQLite file made absolute (:func:`sqlite_file`) and its folder
    created; any other URI as it is."""
    path = sqlite_file(uri)
    if path is None:
        return uri
    path.parent.mkdir(parents=True, exist_ok=True)
    return f"{_SQLITE}{path}"


def _proc_stat(pid: int) -> tuple[str, str] | None:
    """State and start time (clock ticks after boot) of process ``pid`` from ``/proc``;
    None where ``/proc`` cannot tell (no such process, hidden, another OS)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # the command name (field 2) may hold spaces and parentheses: split after its ")"
    fields = stat[stat.rindex(")") + 2 :].split()
    return fields[0], fields[19]


def owner_tags() -> dict[str, str]:
    """The :data:`OWNER_TAGS` of this process (start time empty where unknown)."""
    host, pid, started = OWNER_TAGS
    stat = _proc_stat(os.getpid())
    return {
        host: socket.gethostname(),
        pid: str(os.getpid()),
        started: "" if stat is None else stat[1],
    }


def process_gone(tags: Mapping[str, str]) -> bool:
    """Whether the process named by ``tags`` (:data:`OWNER_TAGS`) has ended for sure: it
    ran on this host and its pid is not running (or is a zombie), or runs a process
    started at another time than the recorded one (the pid was reused). False when that
    cannot be known: no or unreadable owner tags, another host, another user's process."""
    host, pid_tag, started = OWNER_TAGS
    if tags.get(host) != socket.gethostname():
        return False
    try:
        pid = int(tags.get(pid_tag, ""))
    except ValueError:
        return False
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:  # another user's process runs under that pid
        return False
    stat = _proc_stat(pid)
    if stat is None:
        return False
    state, now = stat
    recorded = tags.get(started) or ""
    return state == "Z" or (bool(recorded) and recorded != now)


def fail_orphaned_runs(
    experiment_ids: Iterable[str], *, client: MlflowClient | None = None
) -> list[str]:
    """Mark FAILED the RUNNING runs of ``experiment_ids`` whose owning process is gone
    (:func:`process_gone` of their :data:`OWNER_TAGS`), tagging each with
    :data:`ORPHANED_TAG`; returns their ids."""
    client = client or MlflowClient()
    ids = list(experiment_ids)
    orphans = []
    token = None
    while ids:  # every page first: a page token counts rows of a result this changes
        page = client.search_runs(
            ids, filter_string="attributes.status = 'RUNNING'", page_token=token
        )
        orphans += [run for run in page if process_gone(run.data.tags)]
        token = page.token
        if not token:
            break
    me = owner_tags()
    by = f"{me[OWNER_TAGS[0]]}:{me[OWNER_TAGS[1]]}"
    at = datetime.now(UTC).isoformat(timespec="seconds")
    for run in orphans:
        tags = run.data.tags
        owner = f"{tags[OWNER_TAGS[0]]}:{tags[OWNER_TAGS[1]]}"
        note = f"owner process {owner} is gone; marked FAILED by {by} at {at}"
        client.set_tag(run.info.run_id, ORPHANED_TAG, note)
        client.set_terminated(run.info.run_id, "FAILED")
    return [run.info.run_id for run in orphans]


def git_commit() -> str:
    """The commit of the running code (``unknown`` outside a git checkout)."""
    here = Path(__file__).resolve().parent
    try:
        proc = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            cwd=here,
            capture_output=True,
            text=True,
            check=False,
            timeout=10,
        )
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"
    commit = proc.stdout.strip() if proc.returncode == 0 else "unknown"
    dirty = subprocess.run(
        ["git", "status", "--porcelain", "--untracked-files=no"],
        cwd=here,
        capture_output=True,
        text=True,
        check=False,
    ).stdout.strip()
    return f"{commit}-dirty" if dirty and commit != "unknown" else commit
