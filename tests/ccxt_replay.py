"""Replay venue HTTP traffic under ccxt, in-process: no socket is ever opened.

ccxt's own request building, error mapping and parsing run unchanged; only the transport
is replaced:

- sync: a ``requests`` transport adapter mounted on the session ccxt uses
  (:func:`sync_session`);
- async: an aiohttp-shaped session object passed to ``ccxt.async_support``
  (:class:`AsyncSession`).

A :class:`Router` maps (method, host, path) to a handler that sees the query parameters
(or the JSON body of a POST) and returns a :class:`Reply`. :class:`Router.fail_next` and
:class:`Router.fail_after` inject faults (HTTP 429, timeouts, malformed bodies) in front
of the real handler. The venues' payloads come from :mod:`ccxt_venues`.
"""

from __future__ import annotations

import asyncio
import json
from collections import defaultdict, deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import pytest
import requests
from requests.adapters import BaseAdapter
from requests.structures import CaseInsensitiveDict


@dataclass
class Reply:
    """An HTTP answer, or ``timeout=True`` for a request that never answers."""

    status: int = 200
    body: Any = None
    headers: dict[str, str] = field(default_factory=lambda: {"Content-Type": "application/json"})
    timeout: bool = False

    def text(self) -> str:
        if isinstance(self.body, str):
            return self.body
        return json.dumps(self.body)


@dataclass(frozen=True)
class Req:
    """A request as the router sees it."""

    method: str
    host: str
    path: str
    params: dict[str, str]
    body: Any

    def __str__(self) -> str:
        return f"{self.method} {self.host}{self.path} {self.params or ''} {self.body or ''}"


Handler = Callable[[Req], Reply]


class Router:
    """Routes requests to handlers; records every request; injects queued faults."""

    def __init__(self) -> None:
        self.routes: dict[tuple[str, str, str], Handler] = {}
        self.log: list[Req] = []
        self.faults: dict[tuple[str, str], deque[Reply]] = defaultdict(deque)
        self.delayed: dict[tuple[str, str], tuple[int, Reply, int]] = {}
        self.seen: dict[tuple[str, str], int] = defaultdict(int)
        self.cache: dict[str, Reply] | None = None

    def add(self, method: str, url: str, handler: Handler | Reply | Any) -> None:
        parts = urlsplit(url)
        if not callable(handler):
            reply = handler if isinstance(handler, Reply) else Reply(body=handler)
            self.routes[(method, parts.netloc, parts.path)] = lambda _req: reply
        else:
            self.routes[(method, parts.netloc, parts.path)] = handler

    def fail_next(self, path: str, reply: Reply, times: int = 1, method: str = "GET") -> None:
        """Answer the next ``times`` requests to ``path`` with ``reply``."""
        for _ in range(times):
            self.faults[(method, path)].append(reply)

    def fail_after(
        self, path: str, after: int, reply: Reply, times: int = 1, method: str = "GET"
    ) -> None:
        """Answer ``times`` requests to ``path`` with ``reply`` once ``after`` have passed."""
        self.delayed[(method, path)] = (after, reply, times)

    def dispatch(self, method: str, url: str, body: bytes | str | None) -> Reply:
        parts = urlsplit(url)
        text = body.decode() if isinstance(body, bytes) else body
        payload = json.loads(text) if text else None
        req = Req(method, parts.netloc, parts.path, dict(parse_qsl(parts.query)), payload)
        self.log.append(req)
        self.seen[(method, parts.path)] += 1
        delayed = self.delayed.get((method, parts.path))
        if delayed and self.seen[(method, parts.path)] > delayed[0]:
            after, reply, times = delayed
            self.delayed[(method, parts.path)] = (after, reply, times - 1)
            if times <= 1:
                del self.delayed[(method, parts.path)]
            return reply
        queued = self.faults.get((method, parts.path))
        if queued:
            return queued.popleft()
        key = f"{method} {url} {text or ''}"
        if self.cache is not None and key in self.cache:
            return self.cache[key]
        handler = self.routes.get((method, parts.netloc, parts.path))
        if handler is None:
            raise AssertionError(f"no replay route for {req}")
        reply = handler(req)
        if self.cache is not None and reply.status == 200:
            self.cache[key] = reply
        return reply

    def requests_to(self, path_part: str) -> list[Req]:
        return [r for r in self.log if path_part in r.path or path_part in json.dumps(r.body)]


# -- transports ---------------------------------------------------------------------------


class ReplayAdapter(BaseAdapter):
    """A ``requests`` transport that answers from a :class:`Router`."""

    def __init__(self, router: Router) -> None:
        super().__init__()
        self.router = router

    def send(self, request, stream=False, timeout=None, verify=True, cert=None, proxies=None):  # noqa: ANN001
        reply = self.router.dispatch(request.method, request.url, request.body)
        if reply.timeout:
            raise requests.exceptions.ReadTimeout(f"replayed timeout: {request.url}")
        response = requests.Response()
        response.status_code = reply.status
        response._content = reply.text().encode()
        response.headers = CaseInsensitiveDict(reply.headers)
        response.url = request.url
        response.request = request
        response.reason = "OK" if reply.status < 400 else "Error"
        response.encoding = "utf-8"
        return response

    def close(self) -> None:
        pass


def sync_session(router: Router) -> requests.Session:
    """A ``requests.Session`` whose every request goes to ``router``."""
    session = requests.Session()
    session.trust_env = False
    adapter = ReplayAdapter(router)
    session.mount("https://", adapter)
    session.mount("http://", adapter)
    return session


class _AsyncResponse:
    def __init__(self, reply: Reply) -> None:
        self.status = reply.status
        self.reason = "OK" if reply.status < 400 else "Error"
        self.headers = dict(reply.headers)
        self._text = reply.text()
        self.content = self._text.encode()

    async def text(self, errors: str = "strict") -> str:
        return self._text


class _AsyncRequest:
    def __init__(self, router: Router, method: str, url: Any, data: Any) -> None:
        self.router, self.method, self.url, self.data = router, method, str(url), data

    async def __aenter__(self) -> _AsyncResponse:
        reply = self.router.dispatch(self.method, self.url, self.data)
        await asyncio.sleep(0)
        if reply.timeout:
            raise TimeoutError(f"replayed timeout: {self.url}")
        return _AsyncResponse(reply)

    async def __aexit__(self, *exc: object) -> None:
        return None


class AsyncSession:
    """The part of ``aiohttp.ClientSession`` that ccxt's async ``fetch`` uses."""

    closed = False

    def __init__(self, router: Router) -> None:
        self.router = router
        self.headers: dict[str, str] = {}

    def _request(self, method: str) -> Callable[..., _AsyncRequest]:
        def make(url: Any, data: Any = None, **_: Any) -> _AsyncRequest:
            return _AsyncRequest(self.router, method, url, data)

        return make

    def __getattr__(self, name: str) -> Callable[..., _AsyncRequest]:
        if name in ("get", "post", "put", "delete"):
            return self._request(name.upper())
        raise AttributeError(name)

    async def close(self) -> None:
        self.closed = True


@pytest.fixture
def no_sockets(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fail any test that tries to open a network connection."""
    import socket

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError(f"a test tried to open a socket: {args!r}")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)


# -- collectors wired to a router ------------------------------------------------------


def no_wait(_seconds: float) -> None:
    """A sleep that returns at once (backoff waits are recorded, not slept)."""


async def no_wait_async(_seconds: float) -> None:
    await asyncio.sleep(0)


def sync_collectors(
    router: Router, venues: Iterable[str], *, virtual: bool = True, **kwargs: Any
) -> dict[str, Any]:
    """Sync collectors whose ccxt exchanges talk to ``router``; backoff does not sleep."""
    from oihedge.pipelines.ingest.collectors import Collector, Pacing, make_exchange
    from oihedge.pipelines.ingest.venues import VENUES

    out = {}
    for venue in venues:
        spec, pacing = VENUES[venue], Pacing(virtual=virtual)
        exchange = make_exchange(spec, session=sync_session(router), pacing=pacing)
        spot = None
        if spec.spot_ccxt_id:
            spot = make_exchange(spec, session=sync_session(router), pacing=pacing, spot=True)
        out[venue] = Collector(
            spec,
            exchange,
            spot,
            sleep=kwargs.get("sleep", no_wait),
            seed=1,
            retry=kwargs.get("retry"),
        )
    return out


def async_collectors(
    router: Router, venues: Iterable[str], *, virtual: bool = True, **kwargs: Any
) -> dict[str, Any]:
    """Async collectors (``ccxt.async_support``) whose sessions answer from ``router``."""
    from oihedge.pipelines.ingest.collectors import AsyncCollector, Pacing, make_exchange
    from oihedge.pipelines.ingest.venues import VENUES

    out = {}
    for venue in venues:
        spec, pacing = VENUES[venue], Pacing(virtual=virtual)
        session = AsyncSession(router)
        exchange = make_exchange(spec, asynchronous=True, session=session, pacing=pacing)
        spot = None
        if spec.spot_ccxt_id:
            spot = make_exchange(spec, asynchronous=True, session=session, pacing=pacing, spot=True)
        out[venue] = AsyncCollector(
            spec,
            exchange,
            spot,
            sleep=kwargs.get("sleep", no_wait_async),
            seed=1,
            retry=kwargs.get("retry"),
        )
    return out
