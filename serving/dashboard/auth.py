"""The dashboard's token rule, and keeping the token out of every log line.

A dashboard bound to a loopback address needs no token. Bound to any other address it
needs one, checked on every request: the ``Authorization: Bearer`` or ``X-Oihedge-Token``
header, the ``token`` query parameter, then the cookie. A page opened with ``?token=``
sets the cookie and is redirected to the same address without it, so the token leaves
the address bar and the browser history; the uvicorn access log is filtered
(:class:`TokenLogFilter`) so a logged URL never carries it.
"""

from __future__ import annotations

import hmac
import ipaddress
import logging
import re
from collections.abc import Awaitable, Callable
from urllib.parse import parse_qsl, urlencode

from starlette.requests import Request
from starlette.responses import PlainTextResponse, RedirectResponse, Response

#: the environment variable the CLI reads the token from
TOKEN_ENV = "OIHEDGE_DASHBOARD_TOKEN"
#: the cookie a page opened with ``?token=`` sets
COOKIE = "oihedge_dashboard_token"
_TOKEN_IN_TEXT = re.compile(r"(?i)([?&]token=)[^&\s\"']*")


def is_loopback(host: str) -> bool:
    """True for ``localhost`` and loopback addresses (127.0.0.0/8, ::1)."""
    if host.strip().lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def strip_token(text: str) -> str:
    """``text`` with the value of every ``token=`` query parameter replaced by ``***``."""
    return _TOKEN_IN_TEXT.sub(r"\1***", text)


class TokenLogFilter(logging.Filter):
    """Rewrites a log record's message arguments (uvicorn's access log passes the
    request's path with its query string as one) so that no ``token=`` value is logged."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple):
            record.args = tuple(strip_token(a) if isinstance(a, str) else a for a in record.args)
        if isinstance(record.msg, str):
            record.msg = strip_token(record.msg)
        return True


def install_log_filter(*logger_names: str) -> None:
    """Add one :class:`TokenLogFilter` to each named logger (idempotent)."""
    for name in logger_names:
        logger = logging.getLogger(name)
        if not any(isinstance(f, TokenLogFilter) for f in logger.filters):
            logger.addFilter(TokenLogFilter())


def _presented(request: Request) -> tuple[str | None, bool]:
    """The token the request carries and whether it came in the query string."""
    header = request.headers.get("authorization", "")
    if header.lower().startswith("bearer "):
        return header[7:].strip(), False
    if "x-oihedge-token" in request.headers:
        return request.headers["x-oihedge-token"], False
    if "token" in request.query_params:
        return request.query_params["token"], True
    return request.cookies.get(COOKIE), False


def token_middleware(
    token: str,
) -> Callable[[Request, Callable[[Request], Awaitable[Response]]], Awaitable[Response]]:
    """An HTTP middleware refusing a request without ``token`` (401) or with another
    one (403)."""
    expected = token.encode()

    async def check(
        request: Request, call_next: Callable[[Request], Awaitable[Response]]
    ) -> Response:
        given, in_query = _presented(request)
        if given is None:
            return PlainTextResponse("a token is required", status_code=401)
        if not hmac.compare_digest(given.encode(), expected):
            return PlainTextResponse("wrong token", status_code=403)
        if in_query and request.method == "GET":
            rest = [(k, v) for k, v in parse_qsl(request.url.query) if k != "token"]
            target = request.url.path + (f"?{urlencode(rest)}" if rest else "")
            response = RedirectResponse(target, status_code=303)
            response.set_cookie(COOKIE, token, httponly=True, samesite="strict")
            return response
        return await call_next(request)

    return check
