"""The dashboard's FastAPI app: the routes of :class:`oihedge.serving.dashboard.pages.Pages`,
the token rule when a token is set, the static files."""

from __future__ import annotations

from fastapi import FastAPI
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles
from starlette.middleware.trustedhost import TrustedHostMiddleware

from oihedge.serving.dashboard.auth import install_log_filter, token_middleware
from oihedge.serving.dashboard.pages import HERE, Pages
from oihedge.serving.dashboard.settings import DashboardSettings

__all__ = ["LOGGERS", "DashboardSettings", "create_app"]

#: the loggers whose lines may carry a request's URL
LOGGERS = ("uvicorn.access", "uvicorn.error", "uvicorn")
#: the Host headers a dashboard without a token answers (any port)
LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "[::1]")


def create_app(settings: DashboardSettings) -> FastAPI:
    """The app: ``/live``, ``/timeline``, ``/decisions``, ``/models``, ``/backtest``
    (HTML) and ``/api/status``, ``/api/timeline`` (JSON), all GET and read-only. With a
    token every request must carry it; without one, only requests addressed to a
    loopback name (:data:`LOOPBACK_HOSTS`) are answered."""
    app = FastAPI(title="oihedge dashboard", docs_url=None, redoc_url=None, openapi_url=None)
    if settings.token is not None:
        app.middleware("http")(token_middleware(settings.token))
    else:  # loopback, no token: a page elsewhere cannot reach it by DNS rebinding either
        app.add_middleware(TrustedHostMiddleware, allowed_hosts=list(LOOPBACK_HOSTS))
    install_log_filter(*LOGGERS)
    app.mount("/static", StaticFiles(directory=HERE / "static"), name="static")
    pages = Pages(settings)
    html = {"response_class": HTMLResponse}
    for path, endpoint, extra in (
        ("/", pages.index, {}),
        ("/vendor/plotly.min.js", pages.plotly, {}),
        ("/api/status", pages.api_status, {}),
        ("/api/timeline", pages.api_timeline, {}),
        ("/live", pages.live, html),
        ("/live/panel", pages.live_panel, html),
        ("/timeline", pages.timeline, html),
        ("/decisions", pages.decisions, html),
        ("/models", pages.models, html),
        ("/backtest", pages.backtest, html),
        ("/backtest/files/{name:path}", pages.backtest_file, {}),
    ):
        app.add_api_route(path, endpoint, methods=["GET"], **extra)
    return app
