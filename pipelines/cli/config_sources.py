"""The layers of the configuration before validation: the TOML files, the environment and
the command's flags merged into one tree, each key's origin recorded, and a validation
error turned into one line per key naming the key, the value and where it came from.

Secrets are not configuration: an ``OIHEDGE_*`` variable without ``__`` is ignored (API
keys are read from the environment by the broker only).
"""

from __future__ import annotations

import copy
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError

from oihedge.pipelines.cli.config_types import ConfigError

ENV_PREFIX = "OIHEDGE_"
#: URI keys whose ``sqlite:///`` paths are files of this machine
_SQLITE_KEYS = frozenset({"mlflow.tracking_uri", "mlflow.registry_uri", "train.storage"})


def origin_of(origins: Mapping[str, str], dotted: str) -> str:
    """Where ``dotted`` (a key or a whole table) was set: its sources, or ``"defaults"``."""
    found = sorted({o for k, o in origins.items() if k == dotted or k.startswith(f"{dotted}.")})
    return ", ".join(found) or "defaults"


def path_keys(config: type[BaseModel]) -> frozenset[str]:
    """Dotted keys of every path setting (``FolderPath`` fields), read from the schema."""
    keys = set()
    for name, section in config.model_fields.items():
        model = section.annotation
        for field, info in getattr(model, "model_fields", {}).items():
            if info.annotation is Path:
                keys.add(f"{name}.{field}")
    return frozenset(keys)


def rebased(
    user: Mapping[str, Any], folder: Path, paths: frozenset[str], prefix: str = ""
) -> dict[str, Any]:
    """``user`` (a config file's table) with its relative paths (``paths``, dotted keys, and
    ``sqlite:///`` stores) taken from ``folder``, the file's own: a file names the stores
    beside it, whatever folder a command runs in."""
    out: dict[str, Any] = {}
    for key, value in user.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, Mapping):
            out[key] = rebased(value, folder, paths, f"{dotted}.")
        elif dotted in paths and isinstance(value, str) and value.strip():
            out[key] = str(folder / value) if not Path(value).is_absolute() else value
        elif dotted in _SQLITE_KEYS and isinstance(value, str) and value.startswith("sqlite:///"):
            rest = value[len("sqlite:///") :]
            out[key] = value if Path(rest).is_absolute() else f"sqlite:///{folder / rest}"
        else:
            out[key] = value
    return out


def read_toml(path: Path) -> dict[str, Any]:
    """The table of the TOML file ``path``; raises :class:`ConfigError` saying why not."""
    try:
        return tomllib.loads(path.read_text("utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"config file {str(path)!r} does not exist") from None
    except tomllib.TOMLDecodeError as err:
        raise ConfigError(f"config file {str(path)!r} is not valid TOML: {err}") from None
    except UnicodeDecodeError as err:
        raise ConfigError(
            f"config file {str(path)!r} is not UTF-8 text (byte {err.object[err.start]:#04x} "
            f"at offset {err.start}); TOML files must be saved as UTF-8"
        ) from None
    except IsADirectoryError:
        raise ConfigError(f"config file {str(path)!r} is a folder, not a TOML file") from None
    except OSError as err:
        raise ConfigError(f"config file {str(path)!r} cannot be read: {err.strerror}") from None


def env_overrides(env: Mapping[str, str]) -> dict[str, str]:
    """Dotted key -> raw value of every ``OIHEDGE_<SECTION>__<KEY>`` variable of ``env``."""
    out = {}
    for name, value in env.items():
        if name.startswith(ENV_PREFIX) and "__" in name[len(ENV_PREFIX) :]:
            dotted = name[len(ENV_PREFIX) :].lower().replace("__", ".")
            out[dotted] = value
    return out


def parse_scalar(raw: str) -> object:
    """Read an environment value as a TOML literal when it is one, else as a string."""
    try:
        return tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        return raw


def merge(
    tree: dict[str, Any],
    new: Mapping[str, Any],
    origins: dict[str, str],
    *,
    origin: str,
    prefix: str = "",
) -> None:
    """Merge the table ``new`` into ``tree`` (sub-tables key by key), recording ``origin``
    for every key it sets."""
    for key, value in new.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, Mapping) and isinstance(tree.get(key), dict):
            merge(tree[key], value, origins, origin=origin, prefix=f"{dotted}.")
        else:
            tree[key] = copy.deepcopy(value)
            origins[dotted] = origin


def set_dotted(
    tree: dict[str, Any], dotted: str, value: object, origins: dict[str, str], *, origin: str
) -> None:
    """Set the key ``dotted`` of ``tree`` to ``value`` from ``origin``; raises
    :class:`ConfigError` when a table on its path holds a value."""
    node = tree
    parts = dotted.split(".")
    for i, part in enumerate(parts[:-1]):
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            section = ".".join(parts[: i + 1])
            set_by = origin_of(origins, section)
            if set_by == "defaults":  # a key nested under a value: this key is the culprit
                raise ConfigError(
                    f"config key {dotted!r} ({origin}): {section!r} is not a section "
                    f"({section} = {child!r})"
                )
            # a section given a value by the user: name that source, not this key's
            raise ConfigError(
                f"config key {section!r} ({set_by}): {section} = {child!r} is not a section,"
                f" but {dotted!r} ({origin}) sets a key inside it"
            )
        node = child
    node[parts[-1]] = value
    origins[dotted] = origin


def describe(err: ValidationError, tree: Mapping[str, Any], origins: dict[str, str]) -> str:
    """One line per error of ``err``: the key, its value and where it came from."""
    lines = []
    for item in err.errors():
        dotted = ".".join(str(p) for p in item["loc"])
        # a cross-key rule fails on a whole table: name where its changed keys came from
        inner = sorted({o for k, o in origins.items() if k.startswith(f"{dotted}.")})
        origin = origins.get(dotted) or ", ".join(inner) or "defaults"
        if item["type"] == "extra_forbidden":
            lines.append(f"config key {dotted!r} ({origin}) is not a known setting")
            continue
        value = _lookup(tree, dotted)
        message = item["msg"].removeprefix("Value error, ")
        shown = "" if isinstance(value, Mapping) else f" = {value!r}"
        lines.append(f"config key {dotted!r}{shown} ({origin}): {message}")
    return "; ".join(lines)


def _lookup(tree: Mapping[str, Any], dotted: str) -> object:
    node: object = tree
    for part in dotted.split("."):
        if isinstance(node, Mapping) and part in node:
            node = node[part]
        else:
            return None
    return node
