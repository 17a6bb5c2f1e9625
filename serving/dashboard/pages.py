"""The dashboard's pages and JSON routes (:class:`Pages`), rendered on the server with
Jinja2; the Timeline's and the Backtest's charts are drawn in the browser by Plotly.js,
served from the ``plotly`` package (no CDN)."""

from __future__ import annotations

import importlib.util
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from fastapi import HTTPException, Query, Request
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, RedirectResponse
from fastapi.templating import Jinja2Templates

from oihedge.serving.dashboard.backtest_charts import backtest_charts
from oihedge.serving.dashboard.backtest_view import BacktestReport, latest_report
from oihedge.serving.dashboard.caches import LogCache, ServedModel
from oihedge.serving.dashboard.data import (
    KEEP,
    DecisionFilter,
    filter_decisions,
    group_errors,
    timeline,
    when,
)
from oihedge.serving.dashboard.market import market_series
from oihedge.serving.dashboard.settings import DashboardSettings
from oihedge.serving.live.status import read_status

HERE = Path(__file__).resolve().parent


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


class Pages:
    """Every route's handler over one :class:`DashboardSettings` (registered by
    :func:`oihedge.serving.dashboard.app.create_app`). Nothing here writes a file."""

    def __init__(self, settings: DashboardSettings) -> None:
        self.settings = settings
        self.templates = Jinja2Templates(directory=HERE / "templates")
        filters = self.templates.env.filters
        filters.update(money=_money, num=_num, age=_age, cell=_cell)
        self.log = LogCache(settings.decision_log)
        self.served = (
            None if settings.registry_name is None else ServedModel(settings.registry_name)
        )
        self.js = plotly_js()

    def render(self, request: Request, template: str, **context: Any) -> HTMLResponse:
        return self.templates.TemplateResponse(
            request,
            template,
            {"settings": self.settings, "page": template.split(".")[0], **context},
        )

    # -- Live -------------------------------------------------------------------------

    def snapshot(self) -> dict[str, Any]:
        """:func:`read_status` as JSON, with the registry's view of the served model."""
        s = self.settings
        record = read_status(
            s.state_db, s.decision_log, kill_switch_file=s.kill_switch_file, bars=s.bars
        ).record()
        if self.served is not None:
            record["model"] |= self.served.view(record["model"].get("version"))
        elif s.registry_problem:
            record["model"]["registry"] = s.registry_problem
        return record

    def _live_context(self) -> dict[str, Any]:
        try:
            status = self.snapshot()
        except FileNotFoundError as err:
            return {"status": None, "error": str(err), "error_groups": []}
        return {"status": status, "error": None, "error_groups": group_errors(status["errors"])}

    def index(self) -> RedirectResponse:
        return RedirectResponse("/live", status_code=307)

    def plotly(self) -> FileResponse:
        return FileResponse(self.js, media_type="text/javascript")

    def api_status(self) -> JSONResponse:
        try:
            return JSONResponse(self.snapshot())
        except FileNotFoundError as err:
            return JSONResponse({"error": str(err)}, status_code=503)

    def live(self, request: Request) -> HTMLResponse:
        return self.render(request, "live.html", **self._live_context())

    def live_panel(self, request: Request) -> HTMLResponse:
        return self.render(request, "live_panel.html", **self._live_context())

    # -- Timeline and Decisions -------------------------------------------------------

    def _series(
        self, symbol: str | None, max_points: int | None
    ) -> tuple[dict[str, Any], list[str], str | None]:
        """The chosen symbols' series (all when ``symbol`` is empty), every symbol of the
        log, and why the market panel could not be read (None when it could)."""
        rows = self.log.rows()
        series = timeline(rows, max_points)
        shown = {s: v for s, v in series.items() if symbol in (None, "", s)}
        problem, panel = None, self.settings.market_panel
        if panel is not None and shown:
            times = [t for t in (when(r.get("ts")) for r in rows) if t is not None]
            try:
                market = market_series(panel, list(shown), min(times), max(times), max_points)
            except (ValueError, OSError) as err:  # a bad or missing file: said on the page
                market, problem = {}, f"market panel {panel}: {err}"
            for name, entry in shown.items():
                entry["market"] = market.get(name)
        return shown, sorted(series), problem

    def api_timeline(self, symbol: str | None = None) -> JSONResponse:
        shown, _, problem = self._series(symbol, None)
        return JSONResponse({"series": shown, "market_problem": problem})

    def timeline(self, request: Request, symbol: str | None = None) -> HTMLResponse:
        shown, symbols, problem = self._series(symbol, self.settings.max_points)
        return self.render(
            request,
            "timeline.html",
            series=shown,
            symbols=symbols,
            symbol=symbol,
            market_problem=problem,
        )

    def decisions(
        self,
        request: Request,
        symbol: str | None = None,
        start: str | None = None,
        end: str | None = None,
        keep: str = Query("all"),
        limit: int = Query(500, ge=1, le=100_000),
        offset: int = Query(0, ge=0),
    ) -> HTMLResponse:
        rows = self.log.rows()
        try:
            chosen = DecisionFilter(
                symbol or None,
                _parse_time(start, "start"),
                _parse_time(end, "end"),
                keep,
                limit,
                offset,
            )
        except ValueError as err:
            raise HTTPException(400, str(err)) from None
        return self.render(
            request,
            "decisions.html",
            rows=filter_decisions(rows, chosen),
            total=len(rows),
            symbols=sorted({str(r.get("symbol")) for r in rows}),
            chosen=chosen,
            query={"symbol": symbol or "", "start": start or "", "end": end or ""},
            keep_choices=KEEP,
        )

    # -- Models and Backtest ----------------------------------------------------------

    def models(self, request: Request) -> HTMLResponse:
        context: dict[str, Any] = {"versions": [], "history": [], "problem": None}
        name = self.settings.registry_name
        if name is None:
            context["problem"] = self.settings.registry_problem or "no registry configured"
        else:
            from oihedge.serving.dashboard.models_view import champion_history, model_versions

            try:
                context["versions"] = model_versions(name)
                context["history"] = champion_history(name)
            except Exception as err:  # noqa: BLE001 - the page says why, the app runs on
                context["problem"] = f"the registry could not be read: {err}"
        return self.render(request, "models.html", name=name, **context)

    def _report(self) -> BacktestReport | None:
        folder = self.settings.backtest_dir
        return None if folder is None else latest_report(folder)

    def backtest(self, request: Request) -> HTMLResponse:
        found = self._report()
        plots = [] if found is None else [p.relative_to(found.folder) for p in found.plots]
        charts, problems = (
            ({}, []) if found is None else backtest_charts(found.folder, self.settings.max_points)
        )
        return self.render(
            request,
            "backtest.html",
            report=found,
            plots=plots,
            charts=charts,
            chart_problems=problems,
        )

    def backtest_file(self, name: str) -> FileResponse:
        found = self._report()
        # only the report's own plots: a name is looked up, never joined to a path
        plots = {} if found is None else {str(p.relative_to(found.folder)): p for p in found.plots}
        if name not in plots:
            raise HTTPException(404, f"no plot {name!r} in the latest backtest report")
        return FileResponse(plots[name], media_type="image/png")
