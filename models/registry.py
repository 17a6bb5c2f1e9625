"""The MLflow model registry: the one path from a trained model to the live loop.

This is the only module that talks to the MLflow client about versions and aliases.

- Every trained model becomes a version of ``oihedge-cascade-<universe>``, tagged with
  its feature spec, dataset fingerprint, horizon, label parameters and metrics; alias
  ``challenger`` is set on registration.
- ``champion`` moves only through :func:`promote`, after :func:`oihedge.models.gate.gate`
  compared the challenger with the champion on the same held-out window (or with
  ``force``, which records who forced it and why).
- Every move of ``champion`` is appended to the registered model's history (tags
  ``champion_history.<n>``), which :func:`rollback` walks back and :func:`history` lists.
  A champion alias set outside :func:`promote` is neither gated against nor recorded as
  the previous champion: :func:`gated_champion` is, and :func:`rollback` returns to it.
- The gate's latest verdict (tags ``gate``, ``gate_passed``) and a forced promotion (tags
  ``forced_by``, ``forced_reason``) are recorded on the version itself; when
  :func:`promote` makes it champion it also writes tag ``promotion`` (the history entry,
  the gate's answer and ``as``: the ``<name>/<version>`` it was promoted as, since a
  version copied from another registered model carries that model's tags), before it
  moves the alias. A later refused gate run overwrites ``gate_passed``, not
  ``promotion``: a rollback to that version still serves.
- :func:`load_champion` serves only a champion promoted through :func:`promote`:
  :func:`serving_refusal` refuses a version without a passed gate verdict or a forced
  promotion with its reason (the MLflow UI's alias editor and its "Promote model" button
  set or copy versions without the gate), raising :class:`UngatedModelError`. These are
  tags, so whoever may edit tags in the UI could forge them: they stop a slip, not a
  deliberate bypass. It also
  refuses a model whose feature spec differs from the running feature code, naming the
  difference. It loads the version it checked (``models:/<name>/<version>``), so an alias
  moved in between cannot swap the model.
- :func:`resolve` names the version behind an alias or number (version, run id, source):
  what a backtest or an evaluation records as the model it scored; :func:`load_version`
  loads that version by number, with its model card (what `evaluate`, `promote` and
  `backtest --model` score).

The gate's comparison is :mod:`oihedge.models.gate`; the checks on a version's tags and feature
spec are :mod:`oihedge.models.version_checks` (:func:`serving_refusal`, :func:`check_feature_spec`
and :class:`FeatureSpecMismatchError` are used here and read from here by the live loop's
model watch).
"""

from __future__ import annotations

import getpass
import json
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import mlflow
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException

from oihedge.models.gate import GateVerdict
from oihedge.models.version_checks import (
    PROMOTION,
    FeatureSpecMismatchError,
    check_feature_spec,
    serving_refusal,
)

CHAMPION = "champion"
CHALLENGER = "challenger"
HISTORY_PREFIX = "champion_history."


class RegistryError(RuntimeError):
    """A registry operation cannot be done (no champion, nothing to roll back to, ...)."""


class UngatedModelError(RegistryError):
    """The version carries neither a passed gate verdict nor a forced promotion with its
    reason: it was not promoted through :func:`promote`."""


def model_name(universe: str) -> str:
    """The registered model of a universe."""
    return f"oihedge-cascade-{universe}"


def _client() -> MlflowClient:
    return MlflowClient()


def _tag_value(value: object) -> str:
    text = value if isinstance(value, str) else json.dumps(value, default=str, sort_keys=True)
    if len(text) > 5000:
        raise ValueError(f"tag value is {len(text)} characters, MLflow keeps at most 5000")
    return text


def _logged_model_id(model_uri: str) -> str | None:
    """The id in MLflow 3's logged-model URI ``models:/<model_id>``; None for other URIs
    (``runs:/...``, ``models:/<name>/<version>``, ``models:/<name>@<alias>``)."""
    prefix = "models:/"
    if not model_uri.startswith(prefix):
        return None
    rest = model_uri[len(prefix) :]
    return rest if rest and "/" not in rest and "@" not in rest else None


def register(model_uri: str, name: str, tags: dict[str, object]) -> str:
    """Register ``model_uri`` as a new version of ``name``, tag it, alias it challenger.

    Returns the new version number (a string, as MLflow gives it).
    """
    client = _client()
    try:
        client.get_registered_model(name)
    except MlflowException:
        client.create_registered_model(name, description="oihedge cascade classifier")
    # a tracking server refuses a models:/<model_id> source unless the model id is given too
    version = client.create_model_version(
        name,
        model_uri,
        tags={k: _tag_value(v) for k, v in tags.items()},
        model_id=_logged_model_id(model_uri),
    )
    client.set_registered_model_alias(name, CHALLENGER, version.version)
    return str(version.version)


def alias_version(name: str, alias: str) -> str | None:
    """The version behind ``alias`` of ``name``, or None."""
    try:
        return str(_client().get_model_version_by_alias(name, alias).version)
    except MlflowException:
        return None


def gated_champion(name: str) -> str | None:
    """The champion as the gate knows it: the version behind ``champion`` when it may serve
    (:func:`serving_refusal`), else the latest champion of the history that may (the alias
    was moved outside :func:`promote`, e.g. in the MLflow UI); None when there is none.
    What a challenger is gated against, and what a promotion records as ``previous``: an
    alias set behind the gate's back is neither the bar to beat nor a rollback target."""
    client = _client()
    current = alias_version(name, CHAMPION)
    try:
        moves = history(name)
    except MlflowException:
        moves = []
    candidates = ([current] if current else []) + [str(m["version"]) for m in reversed(moves)]
    for version in dict.fromkeys(candidates):
        try:
            tags = dict(client.get_model_version(name, version).tags)
        except MlflowException:  # a deleted version
            continue
        if serving_refusal(name, version, tags) is None:
            return version
    return None


def _append_history(name: str, entry: dict[str, object]) -> None:
    client = _client()
    model = client.get_registered_model(name)
    n = sum(1 for key in model.tags if key.startswith(HISTORY_PREFIX))
    client.set_registered_model_tag(name, f"{HISTORY_PREFIX}{n:05d}", _tag_value(entry))


def history(name: str) -> list[dict[str, Any]]:
    """Every move of ``champion``, oldest first: version, previous, action, at, by, reason."""
    tags = _client().get_registered_model(name).tags
    keys = sorted(k for k in tags if k.startswith(HISTORY_PREFIX))
    return [json.loads(tags[k]) for k in keys]


def promote(
    name: str,
    version: str,
    verdict: GateVerdict | None,
    *,
    force: bool = False,
    reason: str | None = None,
    user: str | None = None,
) -> dict[str, Any]:
    """Move ``champion`` to ``version`` if the gate passed, or if forced with a reason.

    The verdict is written to the version's tags either way. Returns the history entry.
    Raises :class:`RegistryError` when the gate failed and ``force`` is not set.
    """
    client = _client()
    if force and not (reason and reason.strip()):
        raise ValueError("a forced promotion needs a reason (--message)")
    previous = gated_champion(name)  # before this version's own verdict is written
    if verdict is not None:
        client.set_model_version_tag(name, version, "gate", _tag_value(verdict.as_dict()))
        client.set_model_version_tag(name, version, "gate_passed", str(verdict.passed).lower())
    if not force and (verdict is None or not verdict.passed):
        raise RegistryError(f"{name} v{version}: the gate refused the promotion")
    entry: dict[str, object] = {
        "version": version,
        "previous": previous,
        "action": "force" if force else "promote",
        "at": datetime.now(UTC).isoformat(timespec="seconds"),
        "by": user or getpass.getuser(),
        "reason": reason or "",
    }
    if force:
        client.set_model_version_tag(name, version, "forced_by", str(entry["by"]))
        client.set_model_version_tag(name, version, "forced_reason", _tag_value(reason))
    # before the alias moves: a watching loop that sees the new alias sees this tag too
    promotion = {
        **entry,
        "as": f"{name}/{version}",
        "gate_passed": None if verdict is None else verdict.passed,
    }
    client.set_model_version_tag(name, version, PROMOTION, _tag_value(promotion))
    client.set_registered_model_alias(name, CHAMPION, version)
    _append_history(name, entry)
    return entry


def rollback(name: str, *, user: str | None = None, reason: str = "") -> dict[str, Any]:
    """Move ``champion`` back to the version that held it before the current one; from an
    alias moved outside :func:`promote` (the MLflow UI), back to :func:`gated_champion`
    (the version the live loop kept serving)."""
    current = alias_version(name, CHAMPION)
    if current is None:
        raise RegistryError(f"{name} has no champion to roll back")
    gated = gated_champion(name)
    if gated is not None and gated != current:
        previous: object = gated  # the alias was moved outside promote: undo that
    else:
        previous = _predecessor(history(name), current)
    if previous is None:
        raise RegistryError(f"{name} v{current} has no previous champion to roll back to")
    previous = str(previous)
    _client().set_registered_model_alias(name, CHAMPION, previous)
    entry = {
        "version": previous,
        "previous": current,
        "action": "rollback",
        "at": datetime.now(UTC).isoformat(timespec="seconds"),
        "by": user or getpass.getuser(),
        "reason": reason,
    }
    _append_history(name, entry)
    return entry


def _predecessor(moves: list[dict[str, Any]], current: str) -> object:
    """The champion before ``current``: named by the promotion that made ``current``
    champion. A rollback entry is skipped, so a second rollback goes further back rather
    than forth again."""
    for entry in reversed(moves):
        if entry["version"] == current and entry["action"] != "rollback":
            return entry.get("previous")
    return None


def versions(name: str) -> list[dict[str, Any]]:
    """Every version of ``name``: number, aliases, created, tags (newest first)."""
    client = _client()
    found = client.search_model_versions(f"name = '{name}'")
    out = []
    for hit in sorted(found, key=lambda m: int(m.version), reverse=True):
        # search results carry no aliases: read each version itself
        mv = client.get_model_version(name, hit.version)
        out.append(
            {
                "version": str(mv.version),
                "aliases": list(mv.aliases),
                "created": datetime.fromtimestamp(mv.creation_timestamp / 1000, UTC),
                "tags": dict(mv.tags),
                "source": mv.source,
            }
        )
    return out


@dataclass(frozen=True)
class LoadedModel:
    """A loaded version: its ``pyfunc`` and model ``card``; ``run_id`` and ``source`` as
    registered (:class:`VersionInfo`), when the loader read them."""

    name: str
    version: str
    uri: str
    pyfunc: Any  # mlflow.pyfunc.PyFuncModel
    card: dict[str, Any]
    run_id: str | None = None
    source: str | None = None

    @property
    def python_model(self) -> Any:
        """The :class:`oihedge.models.artifact.CascadePyfunc` (its fast per-vector path)."""
        return self.pyfunc.unwrap_python_model()

    def as_dict(self) -> dict[str, Any]:
        """``name``, ``version``, ``run_id``, ``source``, ``uri``, as
        :meth:`VersionInfo.as_dict`."""
        return {
            "name": self.name,
            "version": self.version,
            "run_id": self.run_id,
            "source": self.source,
            "uri": self.uri,
        }


@dataclass(frozen=True)
class VersionInfo:
    """A registered version: ``name``, ``version``, the ``run_id`` that logged it, its
    ``source`` URI and its ``tags``."""

    name: str
    version: str
    run_id: str | None
    source: str
    tags: dict[str, str]

    @property
    def uri(self) -> str:
        """``models:/<name>/<version>``: this version, whatever its aliases do later."""
        return f"models:/{self.name}/{self.version}"

    def as_dict(self) -> dict[str, Any]:
        """``name``, ``version``, ``run_id``, ``source``, ``uri`` (no tags)."""
        return {
            "name": self.name,
            "version": self.version,
            "run_id": self.run_id,
            "source": self.source,
            "uri": self.uri,
        }


def resolve(name: str, ref: str) -> VersionInfo:
    """The version of ``name`` that ``ref`` names: a version number or an alias.

    Raises :class:`RegistryError` when there is no such version or alias.
    """
    client = _client()
    try:
        if ref.isdigit():
            mv = client.get_model_version(name, ref)
        else:
            mv = client.get_model_version_by_alias(name, ref)
    except MlflowException as err:
        what = f"version {ref}" if ref.isdigit() else f"alias {ref!r}"
        raise RegistryError(f"{name} has no {what}: {err.message}") from None
    return VersionInfo(name, str(mv.version), mv.run_id or None, mv.source, dict(mv.tags))


def load_version(name: str, ref: str) -> LoadedModel:
    """Load the version of ``name`` that ``ref`` names (a version number or an alias),
    with its oihedge model card.

    ``ref`` is resolved once (:func:`resolve`) and that version is loaded by number, so an
    alias moved meanwhile cannot swap the model. Raises :class:`RegistryError` when there
    is no such version or alias, when MLflow cannot load it, or when it carries no model
    card (not an oihedge model).
    """
    found = resolve(name, ref)
    uri = found.uri  # the version resolved, whatever the alias does meanwhile
    try:
        pyfunc = mlflow.pyfunc.load_model(uri)
    except Exception as err:  # noqa: BLE001 - MLflow raises many kinds; say which URI
        raise RegistryError(f"cannot load {uri} ({ref}): {err}") from err
    card = (pyfunc.metadata.metadata or {}).get("oihedge")
    if not card:
        raise RegistryError(f"{uri} is not an oihedge model (no model card in its metadata)")
    return LoadedModel(name, found.version, uri, pyfunc, card, found.run_id, found.source)


def load_alias(
    name: str,
    running_spec: dict[str, Any],
    alias: str = CHAMPION,
    *,
    require_promotion: bool = False,
) -> LoadedModel:
    """Load the version behind ``<name>@<alias>`` and check its feature spec against
    ``running_spec``.

    The version is resolved once and loaded by number, so the model loaded is the one
    checked. With ``require_promotion`` the version must also pass
    :func:`serving_refusal`. Raises :class:`RegistryError` when the alias is not set,
    :class:`UngatedModelError` when the version was not promoted through the gate and
    :class:`FeatureSpecMismatchError` when the specs differ.
    """
    try:
        found = resolve(name, alias)
    except RegistryError:
        raise RegistryError(f"{name} has no {alias!r} alias: promote a model first") from None
    version = found.version
    if require_promotion:
        refusal = serving_refusal(name, version, found.tags)
        if refusal is not None:
            raise UngatedModelError(f"{name} v{version} is {alias} but {refusal}")
    pyfunc = mlflow.pyfunc.load_model(found.uri)
    card = pyfunc.metadata.metadata.get("oihedge") if pyfunc.metadata.metadata else None
    if not card or "feature_spec" not in card:
        raise FeatureSpecMismatchError(f"{name} v{version} carries no feature spec in its metadata")
    check_feature_spec(card["feature_spec"], running_spec)
    return LoadedModel(name, version, found.uri, pyfunc, card, found.run_id, found.source)


def load_champion(name: str, running_spec: dict[str, Any]) -> LoadedModel:
    """The champion, if promoted through the gate (:func:`serving_refusal`) and checked
    against the running feature spec (see :func:`load_alias`)."""
    return load_alias(name, running_spec, CHAMPION, require_promotion=True)
