"""The FastAPI app the plugin mounts at ``/huitouke``: three server-rendered, read-only pages.

- ``/`` — the campaign plans of a business day (``?day=YYYY-MM-DD``, the latest by default);
- ``/results`` — evaluation results: every campaign pooled over its waves at its primary window,
  then one row per wave (``?campaign=…&window=primary|all|N&view=itt|sent|received|all``);
- ``/campaign?name=…`` — one campaign: its windows pooled, the lift of each wave over time, the
  repurchase curve, breakdowns, categories, the multi-wave sequence (``&wave=N&due=YYYY-MM-DD``
  for a single wave).

Pages require an authenticated Airflow user, checked as Airflow's own API does it
(``airflow.api_fastapi.core_api.security``): the JWT of the UI's ``_token`` cookie or of an
``Authorization: Bearer`` header. A browser without one is sent to Airflow's login page.
Airflow does not authenticate plugin apps by itself (a mounted app inherits none of the core API's
dependencies), hence the dependency on every page. One route is open on purpose: the e-mail's
one-click unsubscribe link, ``/unsubscribe`` (:mod:`huitouke.ui.unsubscribe`), which customers use.
"""

from __future__ import annotations

from datetime import date
from typing import Any

from fastapi import APIRouter, Depends, FastAPI, Request
from fastapi.exception_handlers import http_exception_handler
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from sqlalchemy import Engine
from sqlalchemy.exc import SQLAlchemyError
from starlette.exceptions import HTTPException as StarletteHTTPException

from huitouke.evaluate.pool import pooled_by_campaign
from huitouke.pii import get_logger, mask_text
from huitouke.ui import charts, data
from huitouke.ui.aliyun_relay import aliyun_relay_router
from huitouke.ui.templates import environment
from huitouke.ui.unsubscribe import unsubscribe_router

log = get_logger(__name__)

_templates = environment()

_SVG = (
    '<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 24 24" fill="none" stroke="#0b6bcb" '
    'stroke-width="2" stroke-linecap="round" stroke-linejoin="round">{}</svg>'
)
ICONS = {
    # the plans: a calendar page with a tick
    "plans": _SVG.format(
        '<rect x="3" y="4" width="18" height="17" rx="2"/><path d="M8 2v4M16 2v4M3 9h18"/>'
        '<path d="M8.5 15l2.5 2.5 4.5-5"/>'
    ),
    # the results: a rising line over axes
    "results": _SVG.format('<path d="M3 3v18h18"/><path d="M7 15l4-4 3 3 6-6"/><path d="M16 8h4v4"/>'),
}
"""The navigation entries' icons (huitouke.ui.plugin.EXTERNAL_VIEWS): one per entry."""


def _page(template: str, status_code: int = 200, **context: Any) -> HTMLResponse:
    context.setdefault("conn_id", _conn_id_or_unknown())
    html = _templates.get_template(template).render(**context)
    return HTMLResponse(html, status_code=status_code, headers={"Cache-Control": "no-store"})


def _conn_id_or_unknown() -> str:
    try:
        return data.store_conn_id()
    except Exception:  # a broken include/huitouke.yaml is reported by the page itself
        return "?"


def _message(
    title: str,
    message: str,
    *,
    page: str,
    status_code: int = 200,
    command: str = "",
    lines: tuple[str, ...] = (),
    problem: bool = False,
) -> HTMLResponse:
    return _page(
        "message.html",
        status_code,
        title=title,
        page=page,
        message=message,
        command=command,
        lines=lines,
        problem=problem,
    )


class _Unavailable(Exception):
    def __init__(self, response: HTMLResponse) -> None:
        self.response = response


def _store(page: str) -> Engine:
    """The CRM store at the code's schema revision, or a page saying what is wrong."""
    try:
        conn_id = data.store_conn_id()
        engine = data.store_engine()
        data.check_schema(engine, conn_id)
        return engine
    except data.StoreProblem as problem:
        raise _Unavailable(
            _message(
                "The CRM store is not ready 数据库未就绪",
                str(problem),
                page=page,
                status_code=503,
                command=problem.command,
                problem=True,
            )
        ) from None
    except SQLAlchemyError as exc:
        raise _Unavailable(_unreadable(exc, page)) from None
    except Exception as exc:  # a configuration error: the message names the file and the field
        log.warning("huitouke UI: the CRM store cannot be opened: %s", exc)
        raise _Unavailable(
            _message(
                "The CRM store cannot be opened 无法打开数据库",
                mask_text(str(exc)),
                page=page,
                status_code=503,
                problem=True,
            )
        ) from None


def _unreadable(exc: SQLAlchemyError, page: str) -> HTMLResponse:
    reason = str(getattr(exc, "orig", None) or exc).splitlines()[0][:300]
    log.warning("huitouke UI: the CRM store could not be read: %s", reason)
    return _message(
        "The CRM store could not be read 数据库读取失败",
        f"{type(exc).__name__}: {mask_text(reason)}",
        page=page,
        status_code=503,
        lines=("If the daily run or the demo is rewriting the store, reload in a moment.",),
        problem=True,
    )


def _parse_date(text: str | None) -> date | None:
    try:
        return date.fromisoformat(text) if text else None
    except ValueError:
        return None


def _parse_int(text: str | None) -> int | None:
    try:
        return int(text) if text else None
    except ValueError:
        return None


# --------------------------------------------------------------------------------------- pages


def plans_page(day: str | None = None) -> HTMLResponse:
    engine = _store("plans")
    try:
        days = data.plan_days(engine)
        if not days:
            return _message(
                "Campaign plans 活动计划",
                "No campaign plan is stored yet. 暂无活动计划。",
                page="plans",
                lines=(
                    "The plan_campaigns task of the huitouke_daily DAG stores one per business day: "
                    "run the DAG (or `make demo`), then reload this page.",
                ),
            )
        wanted = _parse_date(day)
        notice = ""
        if day and wanted not in days:
            notice = f"No plan is stored for {day!s:.20}: showing the latest business day."
        shown = wanted if wanted in days else days[0]
        i = days.index(shown)
        rows = data.day_plan(engine, shown)
    except SQLAlchemyError as exc:
        return _unreadable(exc, "plans")
    return _page(
        "plans.html",
        title=f"Campaign plans {shown}",
        page="plans",
        day=shown,
        days=days,
        older=days[i + 1] if i + 1 < len(days) else None,
        newer=days[i - 1] if i > 0 else None,
        rows=rows,
        totals=data.plan_totals(rows),
        notice=notice,
    )


def results_page(
    campaign: str | None = None, window: str | None = None, view: str | None = None
) -> HTMLResponse:
    engine = _store("results")
    window = window if window in ("primary", "all") or (window or "").isdigit() else "primary"
    view = view if view in (*data.VIEWS, "all") else data.ITT
    try:
        campaigns = data.evaluated_campaigns(engine)
        if not campaigns:
            return _message(
                "Campaign results 活动效果",
                "No campaign has been evaluated yet. 暂无评估结果。",
                page="results",
                lines=(
                    "A wave is evaluated once its shortest window has matured: with the shipped "
                    "playbook, three days after its first messages are planned.",
                    "The evaluate_campaigns task of the huitouke_daily DAG stores the results.",
                ),
            )
        campaign = campaign if campaign in campaigns else ""
        primary_itt = data.evaluation_rows(engine, campaign=campaign or None, window="primary", view=data.ITT)
        rows = data.evaluation_rows(
            engine,
            campaign=campaign or None,
            window=None if window == "all" else window,
            view=None if view == "all" else view,
            limit=data.MAX_ROWS + 1,
        )
        windows = data.evaluation_windows(engine)
        pooled = pooled_by_campaign(primary_itt)
        absent = [
            c for c in ([campaign] if campaign else campaigns) if c not in {p["campaign"] for p in pooled}
        ]
        not_pooled = data.not_pooled(engine, absent)
    except SQLAlchemyError as exc:
        return _unreadable(exc, "results")
    return _page(
        "results.html",
        title="Campaign results",
        page="results",
        campaigns=campaigns,
        campaign=campaign,
        windows=windows,
        window=window,
        view=view,
        pooled=pooled,
        not_pooled=not_pooled,
        rows=rows[: data.MAX_ROWS],
        truncated=len(rows) > data.MAX_ROWS,
    )


def campaign_page(name: str | None = None, wave: str | None = None, due: str | None = None) -> HTMLResponse:
    engine = _store("campaign")
    try:
        known = data.evaluated_campaigns(engine)
        if not name or name not in known:
            planned = bool(name) and name in data.planned_campaigns(engine)
            if not name:
                message = "Choose a campaign on the results page."
            elif planned:
                message = (
                    f"{name} has no evaluation yet: none of its waves has a matured window. "
                    "该活动尚无已成熟的评估窗口。"
                )
            else:
                message = f"No campaign {name!r} is stored."
            return _message(
                "Campaign 活动",
                message,
                page="campaign",
                status_code=404 if name and not planned else 200,
                lines=(f"Evaluated campaigns: {', '.join(known) or 'none yet'}.",),
            )
        wave_number, due_on = _parse_int(wave), _parse_date(due)
        single = wave_number is not None and due_on is not None
        detail = data.campaign_detail(
            engine, name, wave=wave_number if single else None, due_on=due_on if single else None
        )
    except SQLAlchemyError as exc:
        return _unreadable(exc, "campaign")
    return _page(
        "campaign.html",
        title=name,
        page="campaign",
        d=detail,
        lift_chart=charts.lift_svg(detail["waves_over_time"]),
        curve_chart=charts.curve_svg(detail["curve"]),
    )


def _guarded(render: Any, *args: Any) -> HTMLResponse:
    try:
        return render(*args)
    except _Unavailable as unavailable:
        return unavailable.response


# ------------------------------------------------------------------------------------------ app


def _login_redirect(request: Request) -> Response | None:
    """Airflow's login page, back to this page afterwards (for a browser asking for HTML)."""
    if request.method != "GET" or "text/html" not in request.headers.get("accept", ""):
        return None
    try:
        from airflow.api_fastapi.app import get_auth_manager

        login = get_auth_manager().get_url_login(next_url=str(request.url))
    except Exception:  # no auth manager in this process: answer 401
        return None
    return RedirectResponse(login, status_code=303) if login else None


def create_app(*, authenticate: bool = True) -> FastAPI:
    """The app; ``authenticate=False`` only for tests of the pages themselves."""
    app = FastAPI(
        title="huitouke campaign results",
        description="回头客: campaign plans and evaluation results, read-only (aggregates only).",
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
    )
    dependencies = []
    if authenticate:
        from airflow.api_fastapi.core_api.security import requires_authenticated

        dependencies.append(Depends(requires_authenticated()))
    pages = APIRouter(dependencies=dependencies, default_response_class=HTMLResponse)

    @pages.get("/")
    def plans(day: str | None = None) -> HTMLResponse:
        return _guarded(plans_page, day)

    @pages.get("/results")
    def results(
        campaign: str | None = None, window: str | None = None, view: str | None = None
    ) -> HTMLResponse:
        return _guarded(results_page, campaign, window, view)

    @pages.get("/campaign")
    def campaign(name: str | None = None, wave: str | None = None, due: str | None = None) -> HTMLResponse:
        return _guarded(campaign_page, name, wave, due)

    app.include_router(pages)
    app.include_router(unsubscribe_router())  # customers click it: no Airflow login (ui/unsubscribe.py)
    app.include_router(aliyun_relay_router())  # Aliyun pushes to it: no Airflow login (ui/aliyun_relay.py)

    def icon(name: str) -> Response:  # a nav icon: no data, no login needed
        return Response(ICONS[name], media_type="image/svg+xml", headers={"Cache-Control": "max-age=86400"})

    app.add_api_route("/icon-plans.svg", lambda: icon("plans"), include_in_schema=False)
    app.add_api_route("/icon-results.svg", lambda: icon("results"), include_in_schema=False)
    app.add_api_route("/icon.svg", lambda: icon("results"), include_in_schema=False)  # older nav entries

    @app.exception_handler(StarletteHTTPException)
    async def unauthenticated(request: Request, exc: StarletteHTTPException) -> Response:
        if exc.status_code in (401, 403) and (redirect := _login_redirect(request)):
            return redirect
        return await http_exception_handler(request, exc)

    return app


app = create_app()
