"""The MLflow model registry: the one path from a trained model to the live loop.

This is the only module that talks to the MLflow client about versions and aliases.

- Every trained model becomes a version of ``oihedge-cascade-<universe>``, tagged with
  its feature spec, dataset fingerprint, horizon, label parameters and metrics; alias
  ``challenger`` is set on registration.
- ``champion`` moves only through :func:`promote`, after :func:`gate` compared the
  challenger with the champion on the same held-out window (or with ``force``, which
  records who forced it and why).
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
  what a backtest or an evaluation records as the model it scored.
"""

from __future__ import annotations

import getpass
import json
import math
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Any

import mlflow
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException

CHAMPION = "champion"
CHALLENGER = "challenger"
HISTORY_PREFIX = "champion_history."
#: version tag written by :func:`promote` when the version becomes champion
PROMOTION = "promotion"


class FeatureSpecMismatchError(ValueError):
    """The model's feature spec is not the running feature code's."""


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


@dataclass(frozen=True)
class GateRow:
    metric: str
    challenger: float
    champion: float | None
    margin: float
    higher_is_better: bool
    passed: bool


@dataclass(frozen=True)
class GateVerdict:
    """The gate's answer: ``passed`` when every row passed and nothing refused the
    challenger outright (``refusals``: why, e.g. a hedge policy that never trades)."""

    passed: bool
    rows: tuple[GateRow, ...]
    window: str
    refusals: tuple[str, ...] = ()

    def as_dict(self) -> dict[str, Any]:
        return {
            "passed": self.passed,
            "window": self.window,
            "rows": [asdict(r) for r in self.rows],
            "refusals": list(self.refusals),
        }


#: metric -> higher is better. The hedge metrics are measured by the backtest of the hedge
#: policy each model drives on the held-out window (``serving.backtest_run.
#: panel_gate_metrics``): ``tail_excess`` is the model policy's worst 24 h loss minus that
#: of a static hedge of the same mean size (``static_matched``), the tail loss at equal
#: mean hedge; ``fees_slippage_annual`` its fees and slippage a year, fraction of the
#: portfolio (funding is reported apart: a short receives it as often as it pays it).
GATE_METRICS: dict[str, bool] = {
    "pr_auc": True,
    "brier": False,
    "tail_excess": False,  # a loss difference: lower (more negative) is better
    "fees_slippage_annual": False,
}

#: margin keys of earlier configurations -> the gate metric they now set
FORMER_MARGIN_KEYS: dict[str, str] = {
    "worst_24h_loss": "tail_excess",
    "hedge_cost_annual": "fees_slippage_annual",
}

#: the challenger's hedge readings :func:`gate` checks before comparing: label events in
#: the window, and the model policy's trades and share of time hedged there (and,
#: optionally, ``cascade_time``: the share of time its probability raised the hedge)
ACTIVITY_KEYS: tuple[str, ...] = ("events", "trades", "time_hedged")


def gate_margins(margins: dict[str, float]) -> dict[str, float]:
    """``margins`` with the keys of :data:`FORMER_MARGIN_KEYS` renamed; raises
    ``ValueError`` when a former key and its new name are both given."""
    out: dict[str, float] = {}
    for key, value in margins.items():
        metric = FORMER_MARGIN_KEYS.get(key, key)
        if metric in out:
            raise ValueError(f"gate margin {metric!r} is given twice (as {key!r} too)")
        out[metric] = value
    return out


def never_hedges(metrics: dict[str, float]) -> str | None:
    """Why a model's hedge policy is refused outright, or None: on a window where label
    events occur (``events > 0``) it never left its baseline: ``trades == 0``,
    ``time_hedged == 0``, or ``cascade_time == 0`` (its probability never raised the hedge
    above what the policy holds on volatility alone). Metrics without
    :data:`ACTIVITY_KEYS` are not judged."""
    if any(k not in metrics for k in ACTIVITY_KEYS):
        return None
    events, trades, hedged = (float(metrics[k]) for k in ACTIVITY_KEYS)
    cascade = float(metrics.get("cascade_time", math.nan))
    if events > 0 and (trades == 0 or hedged == 0 or cascade == 0):
        shown = "" if math.isnan(cascade) else f", raised by the probability {cascade:.1%}"
        return (
            f"the model's hedge policy never leaves its baseline on the held-out window "
            f"({int(trades)} trades, {hedged:.1%} of the time hedged{shown}) while "
            f"{int(events)} label events occur there: its probability never reaches the "
            "policy's entry level"
        )
    return None


def gate(
    challenger: dict[str, float],
    champion: dict[str, float] | None,
    margins: dict[str, float],
    *,
    window: str,
) -> GateVerdict:
    """Compare metrics measured on the same held-out ``window``.

    For each metric in ``margins`` (former keys renamed, :func:`gate_margins`) present for
    the challenger: higher-is-better metrics pass when ``challenger >= champion -
    margin``, lower-is-better ones when ``challenger <= champion + margin``. Without a
    champion every row passes (the first model). A metric the champion lacks (e.g. a
    backtest metric added later) passes. Whatever the rows say, a challenger whose hedge
    policy never leaves its baseline while label events occur (:func:`never_hedges`) is
    refused, with the reason in ``refusals``.
    """
    rows = []
    for metric, margin in gate_margins(margins).items():
        if metric not in GATE_METRICS:
            raise ValueError(f"unknown gate metric {metric!r}; known: {sorted(GATE_METRICS)}")
        if margin < 0:
            raise ValueError(f"gate margin for {metric} must be >= 0, got {margin!r}")
        if metric not in challenger:
            continue
        higher = GATE_METRICS[metric]
        ours = float(challenger[metric])
        theirs = None if champion is None or metric not in champion else float(champion[metric])
        if theirs is None:
            ok = ours == ours  # passes unless NaN
        elif higher:
            ok = ours >= theirs - margin
        else:
            ok = ours <= theirs + margin
        rows.append(GateRow(metric, ours, theirs, margin, higher, bool(ok)))
    if not rows:
        raise ValueError("gate has no metric to compare: margins and metrics share none")
    refusal = never_hedges(challenger)
    refusals = () if refusal is None else (refusal,)
    return GateVerdict(all(r.passed for r in rows) and not refusals, tuple(rows), window, refusals)


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


def check_feature_spec(model_spec: dict[str, Any], running_spec: dict[str, Any]) -> None:
    """Raise :class:`FeatureSpecMismatchError` naming the first difference."""
    for key in ("name", "version"):
        if model_spec.get(key) != running_spec.get(key):
            raise FeatureSpecMismatchError(
                f"feature spec {key} differs: model has {model_spec.get(key)!r}, "
                f"running code has {running_spec.get(key)!r}"
            )
    ours, theirs = list(model_spec.get("features", [])), list(running_spec.get("features", []))
    if ours != theirs:
        missing = [f for f in ours if f not in theirs]
        extra = [f for f in theirs if f not in ours]
        if missing or extra:
            raise FeatureSpecMismatchError(
                f"feature lists differ: the model needs {missing} that the running code lacks"
                f" and the code has {extra} the model does not know"
            )
        first = next(i for i, (a, b) in enumerate(zip(ours, theirs, strict=True)) if a != b)
        raise FeatureSpecMismatchError(
            f"feature order differs at position {first}: model {ours[first]!r}, "
            f"running code {theirs[first]!r}"
        )
    if model_spec.get("hash") != running_spec.get("hash"):
        raise FeatureSpecMismatchError(
            f"feature spec hash differs: model {model_spec.get('hash')!r}, "
            f"running code {running_spec.get('hash')!r} (same names, different parameters)"
        )


@dataclass(frozen=True)
class LoadedModel:
    name: str
    version: str
    uri: str
    pyfunc: Any  # mlflow.pyfunc.PyFuncModel
    card: dict[str, Any]

    @property
    def python_model(self) -> Any:
        """The :class:`models.artifact.CascadePyfunc` (its fast per-vector path)."""
        return self.pyfunc.unwrap_python_model()


def serving_refusal(name: str, version: str, tags: dict[str, str]) -> str | None:
    """Why version ``version`` of ``name`` may not serve, from its ``tags``; None when it
    was promoted through :func:`promote`: tag ``promotion`` records a promotion of this
    very ``<name>/<version>`` with a passed gate, or forced with a reason. A version
    without that tag (promoted before it existed) may serve when it carries a passed gate
    verdict (``gate_passed`` ``true`` backed by a passed ``gate``) or a forced promotion
    with its reason (``forced_by`` and a non-blank ``forced_reason``)."""
    if PROMOTION not in tags:
        return _former_tags_refusal(tags)
    try:
        promotion = json.loads(tags[PROMOTION])
    except ValueError:
        promotion = None
    if not isinstance(promotion, dict):
        return f"its {PROMOTION!r} tag is not a promotion record"
    if promotion.get("as") != f"{name}/{version}":
        return (
            f"its promotion was recorded for {promotion.get('as')}, not for {name}/{version} "
            "(a version copied from another registered model)"
        )
    if promotion.get("action") == "promote" and promotion.get("gate_passed") is True:
        return None
    if promotion.get("action") == "force" and str(promotion.get("reason") or "").strip():
        return None
    return f"its {PROMOTION!r} tag records neither a passed gate nor a forced promotion's reason"


def _former_tags_refusal(tags: dict[str, str]) -> str | None:
    if tags.get("forced_by") and (tags.get("forced_reason") or "").strip():
        return None
    passed = tags.get("gate_passed")
    if passed == "true":
        try:
            verdict = json.loads(tags.get("gate", ""))
        except ValueError:
            verdict = None
        if isinstance(verdict, dict) and verdict.get("passed") is True:
            return None
        return "its gate_passed tag is not backed by a passed gate verdict (tag 'gate')"
    if passed == "false":
        return "the gate refused it (gate_passed=false) and it was not forced with a reason"
    if tags.get("forced_by"):
        return "it was forced without a recorded reason (tag 'forced_reason')"
    return (
        "it carries no gate verdict and no forced promotion: its alias was set outside "
        "`oihedge promote` (e.g. in the MLflow UI)"
    )


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
    return LoadedModel(name, version, found.uri, pyfunc, card)


def load_champion(name: str, running_spec: dict[str, Any]) -> LoadedModel:
    """The champion, if promoted through the gate (:func:`serving_refusal`) and checked
    against the running feature spec (see :func:`load_alias`)."""
    return load_alias(name, running_spec, CHAMPION, require_promotion=True)
