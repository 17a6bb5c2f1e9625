"""The value types of the configuration's sections: what a key may hold beyond its Python
type, each check written once and named in the error (see :mod:`oihedge.pipelines.cli.config`).

Symbols are upper-cased (an environment key arrives lower-cased:
``OIHEDGE_LIVE__WEIGHTS__BTC`` is ``btc``) and must look like base assets; venues must be
in the venue table; URLs must have a scheme their library serves; paths must not be empty.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import timedelta
from pathlib import Path
from typing import Annotated

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field

from oihedge.features.schema import parse_duration


class ConfigError(ValueError):
    """A configuration key has a bad value, or a config file cannot be read."""


class Section(BaseModel):
    """A table of the configuration: frozen, and an unknown key is an error."""

    model_config = ConfigDict(extra="forbid", frozen=True)


def _split_list(value: object) -> object:
    if isinstance(value, str):
        return [item.strip() for item in value.split(",") if item.strip()]
    return value


_SYMBOL = re.compile(r"^[A-Z0-9][A-Z0-9_]*$")
_SYMBOL_FORMAT = "base assets such as BTC, ETH (letters, digits and _)"


def _symbol(value: object) -> str:
    """A base asset, upper-cased (``btc`` and ``BTC`` are one symbol: environment keys
    arrive lower-cased, the panel's symbols are upper-case)."""
    text = str(value).strip().upper() if isinstance(value, str) else value
    if not isinstance(text, str) or not _SYMBOL.match(text):
        raise ValueError(f"{value!r} is not a symbol: expected {_SYMBOL_FORMAT}")
    return text


def _symbol_list(value: object) -> object:
    items = _split_list(value)
    if not isinstance(items, (list, tuple)):
        return items
    bad = [item for item in items if not (isinstance(item, str) and _SYMBOL.match(item.upper()))]
    if bad:
        raise ValueError(
            f"expected a comma-separated list of {_SYMBOL_FORMAT}, e.g. 'BTC,ETH,SOL'; "
            f"{bad[0]!r} is not one"
        )
    return [item.strip().upper() for item in items]


def _symbol_keys(value: object) -> object:
    """A symbol -> value table with its symbols upper-cased (``weights = { btc = 1 }`` or
    ``OIHEDGE_LIVE__WEIGHTS__BTC=1``, which arrives as ``btc``, mean ``BTC``)."""
    if not isinstance(value, Mapping):
        return value
    out: dict[str, object] = {}
    for key, item in value.items():
        symbol = _symbol(key)
        if symbol in out:
            raise ValueError(f"symbol {symbol!r} is given twice (as {key!r})")
        out[symbol] = item
    return out


def _known_venue(value: object) -> object:
    from oihedge.pipelines.ingest.venues import VENUES

    if isinstance(value, str) and value not in VENUES:
        raise ValueError(f"unknown venue {value!r}; known venues: {', '.join(VENUES)}")
    return value


def _known_venues(value: object) -> object:
    items = _split_list(value)
    if isinstance(items, (list, tuple)):
        for item in items:
            _known_venue(item)
    return items


def _path(value: object) -> object:
    """A path that is not empty: an empty value would silently mean the current folder."""
    if isinstance(value, str) and not value.strip():
        raise ValueError("path is empty (it would mean the current folder); give a folder")
    return value


#: SQLAlchemy dialects Optuna's RDB storage can use
_STORAGE_DIALECTS = ("sqlite", "postgresql", "mysql", "mariadb", "oracle", "mssql")
#: MLflow tracking / registry URI schemes (a plain path is a local file store)
_MLFLOW_SCHEMES = (
    "file",
    "sqlite",
    "postgresql",
    "mysql",
    "mssql",
    "http",
    "https",
    "databricks",
    "databricks-uc",
    "uc",
)
_URL = re.compile(r"^([A-Za-z][A-Za-z0-9.-]*)(\+[A-Za-z0-9_]+)?://")


def _storage_url(value: object) -> object:
    match = _URL.match(value) if isinstance(value, str) else None
    if isinstance(value, str) and (match is None or match.group(1) not in _STORAGE_DIALECTS):
        raise ValueError(
            "must be an Optuna storage URL of one of the databases "
            f"{', '.join(_STORAGE_DIALECTS)}, e.g. 'sqlite:///mlflow/optuna.db' or "
            "'postgresql+psycopg2://user@host:5432/optuna'"
        )
    return value


def _mlflow_uri(value: object) -> object:
    if not isinstance(value, str) or "://" not in value:
        return value  # a local path (the file store), or empty (registry_uri: the same)
    match = _URL.match(value)
    if match is None or match.group(1) not in _MLFLOW_SCHEMES:
        raise ValueError(
            f"unsupported MLflow URI scheme; use one of {', '.join(_MLFLOW_SCHEMES)} "
            "(e.g. 'sqlite:///mlflow/mlflow.db', 'http://127.0.0.1:5000') or a local path"
        )
    return value


Duration = Annotated[timedelta, BeforeValidator(parse_duration)]
SymbolList = Annotated[tuple[str, ...], BeforeValidator(_symbol_list)]
VenueList = Annotated[tuple[str, ...], BeforeValidator(_known_venues)]
Venue = Annotated[str, BeforeValidator(_known_venue)]
FolderPath = Annotated[Path, BeforeValidator(_path)]
StorageUrl = Annotated[str, BeforeValidator(_storage_url)]
MlflowUri = Annotated[str, BeforeValidator(_mlflow_uri)]
Prob = Annotated[float, Field(gt=0, le=1)]
NonNegative = Annotated[float, Field(ge=0, allow_inf_nan=False)]
Positive = Annotated[float, Field(gt=0, allow_inf_nan=False)]
#: symbol -> weight, the symbols upper-cased
SymbolWeights = Annotated[dict[str, Positive], BeforeValidator(_symbol_keys)]
