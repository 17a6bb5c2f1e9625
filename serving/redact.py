"""Keep credentials out of logs, error messages and stored state.

The secrets are the values of environment variables named ``OIHEDGE_<VENUE>_API_KEY``,
``OIHEDGE_<VENUE>_SECRET`` and ``OIHEDGE_<VENUE>_PASSWORD`` (the only place keys come
from), plus any value registered with :func:`register_secrets` (the ccxt broker registers
the credentials it was built with, wherever it read them). :func:`redact` masks them in a
string; :class:`SecretRedactor` is a logging filter that masks them in a record's message,
arguments, exception and stack text;
:func:`install_redaction` applies it to *every* record created by any logger (ccxt logs
request headers, API key included, at DEBUG), whatever handlers are added later.
"""

from __future__ import annotations

import logging
import os
import re
import traceback
from collections.abc import Iterable, Mapping

__all__ = [
    "MASK",
    "SecretRedactor",
    "install_redaction",
    "redact",
    "register_secrets",
    "secret_values",
]

MASK = "***"
SECRET_VAR = re.compile(r"OIHEDGE_[A-Z0-9]+_(API_KEY|SECRET|PASSWORD)")
#: shorter values are not masked: they would mask ordinary text and protect nothing
MIN_SECRET_LEN = 6


_registered: set[str] = set()


def register_secrets(values: Iterable[str]) -> None:
    """Mask these values too, from now on (values shorter than 6 characters are ignored)."""
    _registered.update(v for v in values if len(v) >= MIN_SECRET_LEN)


def secret_values(env: Mapping[str, str] | None = None) -> tuple[str, ...]:
    """Registered secrets and the credential variables' values in ``env`` (default
    ``os.environ``), longest first (so a secret containing another is masked whole)."""
    source = os.environ if env is None else env
    values = {v for k, v in source.items() if SECRET_VAR.fullmatch(k) and len(v) >= MIN_SECRET_LEN}
    return tuple(sorted(values | _registered, key=len, reverse=True))


def redact(text: str, secrets: Iterable[str] | None = None) -> str:
    """``text`` with every secret (default: :func:`secret_values`) replaced by ``***``."""
    for value in secret_values() if secrets is None else secrets:
        if value:
            text = text.replace(value, MASK)
    return text


class SecretRedactor(logging.Filter):
    """A logging filter that masks credentials in a record; never drops a record.

    ``env``: where to read the secrets (default ``os.environ``, read on every record so
    keys set after start-up are covered too).
    """

    def __init__(self, env: Mapping[str, str] | None = None) -> None:
        super().__init__()
        self._env = env

    def filter(self, record: logging.LogRecord) -> bool:
        secrets = secret_values(self._env)
        if not secrets:
            return True
        try:
            message = record.getMessage()
        except Exception:  # a bad format string: keep both parts, masked
            message = f"{record.msg} {record.args!r}"
        record.msg = redact(message, secrets)
        record.args = None
        if record.exc_info:
            text = "".join(traceback.format_exception(*record.exc_info)).rstrip("\n")
            record.exc_text = redact(text, secrets)
            record.exc_info = None  # handlers re-rendering the traceback could leak it
        elif record.exc_text:
            record.exc_text = redact(record.exc_text, secrets)
        if record.stack_info:
            record.stack_info = redact(record.stack_info, secrets)
        for key, value in list(vars(record).items()):
            if isinstance(value, str) and key not in ("msg", "exc_text", "stack_info"):
                setattr(record, key, redact(value, secrets))
        return True


_installed: SecretRedactor | None = None


def install_redaction(env: Mapping[str, str] | None = None) -> SecretRedactor:
    """Mask credentials in every log record from now on (idempotent).

    Wraps the log-record factory, so the masking happens when a record is created, before
    any handler or filter sees it; the filter is also added to the root logger's handlers
    (they see ``extra=`` fields, which are attached after the factory ran).
    """
    global _installed
    if _installed is not None:
        return _installed
    redactor = SecretRedactor(env)
    previous = logging.getLogRecordFactory()

    def factory(*args: object, **kwargs: object) -> logging.LogRecord:
        record = previous(*args, **kwargs)
        redactor.filter(record)
        return record

    logging.setLogRecordFactory(factory)
    for handler in logging.getLogger().handlers:
        handler.addFilter(redactor)
    _installed = redactor
    return redactor
