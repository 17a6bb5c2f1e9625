"""The dashboard's FastAPI app: pages rendered on the server (Jinja2), charts drawn in
the browser by Plotly.js served from the ``plotly`` package (no CDN)."""

from __future__ import annotations

import importlib.util
import os
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from fastapi import FastAPI, HTTPException, Query, Request
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, RedirectResponse
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates

from serving.dashboard.auth import install_log_filter, token_middleware
from serving.dashboard.backtest_view import BacktestReport, latest_report
from serving.dashboard.data import (
    KEEP,
    DecisionFilter,
    decisions,
    filter_decisions,
    group_errors,
    timeline,
    when,
)
from serving.dashboard.market import market_series
from serving.decision_log import read_records
from serving.status import read_status

HERE = Path(__file__).resolve().parent
#: the loggers whose lines may carry a request's URL
LOGGERS = ("uvicorn.access", "uvicorn.error", "uvicorn")


@dataclass(frozen=True)
class DashboardSettings:
    """Where the loop's files are and how the pages behave.

    ``token``: required on every request when set (:mod:`serving.dashboard.auth`);
    ``refresh_seconds``: how often the Live page asks for a new snapshot; ``bars``: how
    many of the last bars the Live page's errors cover; ``mlflow_ui``: the MLflow UI's
    address, linked from the pages when given; ``registry_name``: the registered model
    the Models page lists (MLflow already pointed at its store), or None with
    ``registry_problem`` saying why not; ``backtest_dir``: where the Backtest page looks
    for the latest report; ``market_panel``: a panel store the Timeline reads the price,
    open interest and funding from (:mod:`serving.dashboard.market`); ``max_points``:
    at most about this many points per series on a chart (:func:`thin`; the JSON API
    gives every point).
    """

    state_db: Path
    decision_log: Path
    kill_switch_file: Path | None = None
    token: str | None = None
    refresh_seconds: float = 5.0
    bars: int = 12
    mlflow_ui: str | None = None
    registry_name: str | None = None
    registry_problem: str | None = None
    backtest_dir: Path | None = None
    market_panel: Path | None = None
    max_points: int = 3000

    def __post_init__(self) -> None:
        if self.refresh_seconds <= 0:
            raise ValueError(f"refresh_seconds must be > 0, got {self.refresh_seconds!r}")
        if self.max_points < 10:
            raise ValueError(f"max_points must be >= 10, got {self.max_points!r}")
        if self.bars < 1:
            raise ValueError(f"bars must be >= 1, got {self.bars!r}")
        if self.token is not None and not self.token.strip():
            raise ValueError("token must not be blank")


class _LogCache:
    """The decision log's records, read again only when the file changed (size, mtime)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._key: tuple[int, int] | None = None
        self._rows: list[dict[str, Any]] = []
        self._lock = threading.Lock()  # the routes run on a thread pool

    def rows(self) -> list[dict[str, Any]]:
        """:func:`decisions` of the log (empty when there is no log yet)."""
        try:
            stat = os.stat(self.path)
        except FileNotFoundError:
            return []
        key = (stat.st_size, stat.st_mtime_ns)
        with self._lock:
            if key != self._key:
                self._rows = decisions(read_records(self.path))
                self._key = key
            return self._rows


class _Served:
    """:func:`served_model` for the Live page, asked of the registry at most once per
    ``ttl`` seconds for the same version (the page refreshes every few seconds)."""

    def __init__(self, name: str, ttl: float = 30.0) -> None:
        self.name = name
        self.ttl = ttl
        self._cached: tuple[str | None, float, dict[str, Any]] | None = None

    def view(self, version: str | None) -> dict[str, Any]:
        now = time.monotonic()
        if self._cached and self._cached[0] == version and now - self._cached[1] < self.ttl:
            return self._cached[2]
        from serving.dashboard.models_view import served_model

        try:
            found = served_model(self.name, version)
        except Exception as err:  # noqa: BLE001 - the Live page shows the loop's side anyway
            found = {"name": self.name, "registry": f"not read: {err}"}
        self._cached = (version, now, found)
        return found


def plotly_js() -> Path:
    """The ``plotly`` package's own copy of Plotly.js (``package_data/plotly.min.js``),
    found without importing the package."""
    spec = importlib.util.find_spec("plotly")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("the plotly package is not installed: pip install plotly")
    path = Path(next(iter(spec.submodule_search_locations))) / "package_data" / "plotly.min.js"
    if not path.is_file():
        raise FileNotFoundError(f"no plotly.min.js in the plotly package at {path}")
    return path


def _money(value: float | None) -> str:
    return "-" if value is None else f"${value:,.0f}"


def _num(value: float | None, spec: str = ".4f") -> str:
    return "-" if value is None else format(value, spec)


def _age(seconds: float | None) -> str:
    """A duration in the unit that reads best: ``42 s``, ``12.5 min``, ``3.2 h``, ``9.1 d``."""
    if seconds is None:
        return "-"
    for unit, size, limit in (("s", 1, 120), ("min", 60, 120 * 60), ("h", 3600, 48 * 3600)):
        if abs(seconds) < limit:
            return f"{seconds / size:,.{0 if unit == 's' else 1}f} {unit}"
    return f"{seconds / 86400:,.1f} d"


def _cell(text: str) -> str:
    """A metrics-table cell: a number rounded for reading (thousands separated from
    1,000 up, else 4 significant digits), any other text as it is."""
    try:
        value = float(text)
    except ValueError:
        return text
    return f"{value:,.0f}" if abs(value) >= 1000 else f"{value:.4g}"


def _parse_time(text: str | None, name: str) -> datetime | None:
    if not text:
        return None
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise HTTPException(400, f"{name} must be an ISO 8601 time, got {text!r}") from None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def create_app(settings: DashboardSettings) -> FastAPI:
    """The app: ``/live``, ``/timeline``, ``/decisions``, ``/models``, ``/backtest``
    (HTML) and ``/api/status``, ``/api/timeline`` (JSON), all read-only."""
    app = FastAPI(title="oihedge dashboard", docs_url=None, redoc_url=None, openapi_url=None)
    if settings.token is not None:
        app.middleware("http")(token_middleware(settings.token))
    install_log_filter(*LOGGERS)
    templates = Jinja2Templates(directory=HERE / "templates")
    templates.env.filters["money"] = _money
    templates.env.filters["num"] = _num
    templates.env.filters["age"] = _age
    templates.env.filters["cell"] = _cell
    app.mount("/static", StaticFiles(directory=HERE / "static"), name="static")
    log = _LogCache(settings.decision_log)
    js = plotly_js()

    served = None if settings.registry_name is None else _Served(settings.registry_name)

    def snapshot() -> dict[str, Any]:
        record = read_status(
            settings.state_db,
            settings.decision_log,
            kill_switch_file=settings.kill_switch_file,
            bars=settings.bars,
        ).record()
        if served is not None:
            record["model"] |= served.view(record["model"].get("version"))
        elif settings.registry_problem:
            record["model"]["registry"] = settings.registry_problem
        return record

    def page(request: Request, template: str, **context: Any) -> HTMLResponse:
        return templates.TemplateResponse(
            request, template, {"settings": settings, "page": template.split(".")[0], **context}
        )

    @app.get("/", include_in_schema=False)
    def index() -> RedirectResponse:
        return RedirectResponse("/live", status_code=307)

    @app.get("/vendor/plotly.min.js", include_in_schema=False)
    def plotly() -> FileResponse:
        return FileResponse(js, media_type="text/javascript")

    @app.get("/api/status")
    def api_status() -> JSONResponse:
        try:
            return JSONResponse(snapshot())
        except FileNotFoundError as err:
            return JSONResponse({"error": str(err)}, status_code=503)

    def live_context() -> dict[str, Any]:
        try:
            status = snapshot()
        except FileNotFoundError as err:
            return {"status": None, "error": str(err), "error_groups": []}
        return {"status": status, "error": None, "error_groups": group_errors(status["errors"])}

    @app.get("/live", response_class=HTMLResponse)
    def live(request: Request) -> HTMLResponse:
        return page(request, "live.html", **live_context())

    @app.get("/live/panel", response_class=HTMLResponse)
    def live_panel(request: Request) -> HTMLResponse:
        return page(request, "live_panel.html", **live_context())

    def timeline_series(
        symbol: str | None, max_points: int | None
    ) -> tuple[dict[str, Any], list[str], str | None]:
        """The chosen symbols' series (all when ``symbol`` is empty), every symbol of the
        log, and why the market panel could not be read (None when it could)."""
        rows = log.rows()
        series = timeline(rows, max_points)
        shown = {s: v for s, v in series.items() if symbol in (None, "", s)}
        problem = None
        if settings.market_panel is not None and shown:
            times = [t for t in (when(r.get("ts")) for r in rows) if t is not None]
            try:
                market = market_series(
                    settings.market_panel, list(shown), min(times), max(times), max_points
                )
            except (ValueError, OSError) as err:  # a bad or missing file: said on the page
                market, problem = {}, f"market panel {settings.market_panel}: {err}"
            for name, entry in shown.items():
                entry["market"] = market.get(name)
        return shown, sorted(series), problem

    @app.get("/api/timeline")
    def api_timeline(symbol: str | None = None) -> JSONResponse:
        shown, _, problem = timeline_series(symbol, None)
        return JSONResponse({"series": shown, "market_problem": problem})

    @app.get("/timeline", response_class=HTMLResponse)
    def timeline_page(request: Request, symbol: str | None = None) -> HTMLResponse:
        shown, symbols, problem = timeline_series(symbol, settings.max_points)
        return page(
            request,
            "timeline.html",
            series=shown,
            symbols=symbols,
            symbol=symbol,
            market_problem=problem,
        )

    @app.get("/decisions", response_class=HTMLResponse)
    def decisions_page(
        request: Request,
        symbol: str | None = None,
        start: str | None = None,
        end: str | None = None,
        keep: str = Query("all"),
        limit: int = Query(500, ge=1, le=100_000),
    ) -> HTMLResponse:
        rows = log.rows()
        try:
            chosen = DecisionFilter(
                symbol or None,
                _parse_time(start, "start"),
                _parse_time(end, "end"),
                keep,
                limit,
            )
        except ValueError as err:
            raise HTTPException(400, str(err)) from None
        return page(
            request,
            "decisions.html",
            rows=filter_decisions(rows, chosen),
            total=len(rows),
            symbols=sorted({str(r.get("symbol")) for r in rows}),
            chosen=chosen,
            query={"symbol": symbol or "", "start": start or "", "end": end or ""},
            keep_choices=KEEP,
        )

    @app.get("/models", response_class=HTMLResponse)
    def models_page(request: Request) -> HTMLResponse:
        context: dict[str, Any] = {"versions": [], "history": [], "problem": None}
        name = settings.registry_name
        if name is None:
            context["problem"] = settings.registry_problem or "no registry configured"
        else:
            from serving.dashboard.models_view import champion_history, model_versions

            try:
                context["versions"] = model_versions(name)
                context["history"] = champion_history(name)
            except Exception as err:  # noqa: BLE001 - the page says why, the app runs on
                context["problem"] = f"the registry could not be read: {err}"
        return page(request, "models.html", name=name, **context)

    def report() -> BacktestReport | None:
        return None if settings.backtest_dir is None else latest_report(settings.backtest_dir)

    @app.get("/backtest", response_class=HTMLResponse)
    def backtest_page(request: Request) -> HTMLResponse:
        found = report()
        plots = [] if found is None else [p.relative_to(found.folder) for p in found.plots]
        return page(request, "backtest.html", report=found, plots=plots)

    @app.get("/backtest/files/{name:path}", include_in_schema=False)
    def backtest_file(name: str) -> FileResponse:
        found = report()
        # only the report's own plots: a name is looked up, never joined to a path
        plots = {} if found is None else {str(p.relative_to(found.folder)): p for p in found.plots}
        if name not in plots:
            raise HTTPException(404, f"no plot {name!r} in the latest backtest report")
        return FileResponse(plots[name], media_type="image/png")

    return app
