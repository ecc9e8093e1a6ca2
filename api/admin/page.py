"""The admin web page (/admin): server-rendered HTML, plain forms, no JavaScript.

A browser cannot send a bearer header from a link, so /admin/login takes the admin token once
and keeps it in an HttpOnly, SameSite=Strict cookie scoped to /admin. Every request checks it
with the same token lookup as the API (a revoked token ends the session within the API's
few-second token cache). Every form carries a CSRF token derived from the session's token
(HMAC), so it is bound to that session.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import jinja2
from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from sqlalchemy.orm import Session

from api.admin import service
from api.admin.schemas import DELIVERY_STATUSES, JOB_KINDS, JOB_STATUSES
from api.deps import Principal, SessionDep, principal_for_token
from api.errors import ApiError
from api.jobs.schemas import JobOut
from api.jobs.service import jobs_out
from api.pagination import decode_cursor, encode_cursor
from api.queue import enqueue_job
from api.validation import PathId
from db.settings import get_settings

router = APIRouter(prefix="/admin", include_in_schema=False)

SESSION_COOKIE = "sp_admin"
FLASH_COOKIE = "sp_admin_flash"
SESSION_SECONDS = 8 * 3600
PAGE_SIZE = 50


def _when(value: datetime | None) -> str:
    return value.strftime("%Y-%m-%d %H:%M:%S UTC") if value else "—"


def _host(url: str) -> str:
    return urlsplit(url).hostname or url


_env = jinja2.Environment(
    loader=jinja2.FileSystemLoader(str(Path(__file__).parent / "templates")),
    autoescape=True,
    undefined=jinja2.StrictUndefined,
)
_env.filters["when"] = _when
_env.filters["host"] = _host


def render(template: str, status_code: int = 200, **context: Any) -> HTMLResponse:
    """A template rendered with autoescape on."""
    html = _env.get_template(template).render(**context)
    return HTMLResponse(html, status_code=status_code, headers={"Cache-Control": "no-store"})


def csrf_token(session_token: str) -> str:
    """The CSRF token of a session: only the holder of the session's token can compute it."""
    return hmac.new(session_token.encode(), b"serveplane-admin-csrf", hashlib.sha256).hexdigest()


def _set_cookie(request: Request, response: Response, name: str, value: str, max_age: int) -> None:
    response.set_cookie(
        name,
        value,
        max_age=max_age,
        path="/admin",
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
    )


def _redirect(url: str) -> RedirectResponse:
    return RedirectResponse(url, status_code=303)


def _flash(request: Request, response: Response, level: str, text: str, job_id: str = "") -> None:
    payload = json.dumps({"level": level, "text": text, "job_id": job_id})
    value = base64.urlsafe_b64encode(payload.encode()).decode()
    _set_cookie(request, response, FLASH_COOKIE, value, 60)


def _take_flash(request: Request) -> dict[str, str] | None:
    raw = request.cookies.get(FLASH_COOKIE)
    if not raw:
        return None
    try:
        data = json.loads(base64.urlsafe_b64decode(raw.encode()))
        return {k: str(data.get(k, "")) for k in ("level", "text", "job_id")}
    except ValueError:
        return None


def _safe_next(value: str | None) -> str:
    """Only same-site /admin paths are followed after a form post."""
    if value and value.startswith("/admin") and "//" not in value and "\\" not in value:
        return value
    return "/admin"


async def _principal(request: Request) -> tuple[Principal, str] | Response:
    """The admin behind the session cookie, or the response that ends the request."""
    token = request.cookies.get(SESSION_COOKIE)
    if not token:
        return _redirect("/admin/login")
    principal = await principal_for_token(request.app.state.sessionmaker, f"Bearer {token}")
    if principal is None:
        response = _redirect("/admin/login")
        response.delete_cookie(SESSION_COOKIE, path="/admin")
        return response
    if not principal.is_admin:
        return render("forbidden.html", 403, name=principal.name)
    return principal, token


async def _form(request: Request, token: str) -> dict[str, str] | Response:
    """The posted form, after the CSRF and Origin checks."""
    origin = request.headers.get("origin")
    if origin and origin != "null" and urlsplit(origin).netloc != request.url.netloc:
        return render("forbidden.html", 403, name="", reason="cross-site form post refused")
    fields = _parse_form(await request.body())
    if not hmac.compare_digest(fields.get("csrf", ""), csrf_token(token)):
        return render("forbidden.html", 403, name="", reason="the form expired; reload the page")
    return fields


def _parse_form(body: bytes) -> dict[str, str]:
    parsed = parse_qs(body.decode("utf-8", errors="replace"), keep_blank_values=True)
    return {k: v[0] for k, v in parsed.items()}


def _page(
    request: Request, template: str, principal: Principal, token: str, **ctx: Any
) -> Response:
    response = render(
        template,
        admin=principal.name,
        csrf=csrf_token(token),
        flash=_take_flash(request),
        here=str(request.url.path) + (f"?{request.url.query}" if request.url.query else ""),
        **ctx,
    )
    if request.cookies.get(FLASH_COOKIE):
        response.delete_cookie(FLASH_COOKIE, path="/admin")
    return response


@router.get("/login")
async def login_form(request: Request) -> Response:
    """The login form."""
    return render("login.html", error=None)


@router.post("/login")
async def login(request: Request) -> Response:
    """Check the token; an admin token opens a session cookie."""
    token = _parse_form(await request.body()).get("token", "").strip()
    principal = await principal_for_token(request.app.state.sessionmaker, f"Bearer {token}")
    if principal is None:
        return render("login.html", 401, error="unknown or revoked token")
    if not principal.is_admin:
        return render("forbidden.html", 403, name=principal.name)
    response = _redirect("/admin")
    _set_cookie(request, response, SESSION_COOKIE, token, SESSION_SECONDS)
    return response


@router.post("/logout")
async def logout(request: Request) -> Response:
    """End the session."""
    auth = await _principal(request)
    if isinstance(auth, Response):
        return auth
    form = await _form(request, auth[1])
    if isinstance(form, Response):
        return form
    response = _redirect("/admin/login")
    response.delete_cookie(SESSION_COOKIE, path="/admin")
    return response


def _choice(value: str | None, allowed: tuple[str, ...], default: str | None) -> str | None:
    if value == "any":
        return None
    return value if value in allowed else default


@router.get("")
async def index(request: Request, session: SessionDep) -> Response:
    """Failed jobs (or any status) of every customer, newest first, and recent deliveries."""
    auth = await _principal(request)
    if isinstance(auth, Response):
        return auth
    principal, token = auth
    query = request.query_params
    status = _choice(query.get("status"), JOB_STATUSES, "failed")
    kind = _choice(query.get("kind"), JOB_KINDS, None)
    customer = query.get("customer_id", "")
    # ASCII digits only (int() refuses "²"), and few enough to fit a BIGINT.
    customer_id = (
        int(customer) if customer.isascii() and customer.isdigit() and len(customer) < 19 else None
    )
    delivery_status = _choice(query.get("delivery_status"), DELIVERY_STATUSES, None)
    try:
        before = decode_cursor(query.get("before"))
    except ApiError:
        before = None

    def load(s: Session) -> dict[str, Any]:
        rows = service.recent_jobs(
            s,
            status=status,
            kind=kind,
            customer_id=customer_id,
            before_id=before,
            limit=PAGE_SIZE + 1,
        )
        page = rows[:PAGE_SIZE]
        older = None
        if len(rows) > PAGE_SIZE:
            older = urlencode(
                {
                    "status": status or "any",
                    "kind": kind or "",
                    "customer_id": customer,
                    "before": encode_cursor(page[-1].id),
                }
            )
        return {
            "jobs": jobs_out(s, page, with_customer=True),
            "older": older,
            "deliveries": service.recent_deliveries(
                s, status=delivery_status, customer_id=customer_id, limit=PAGE_SIZE
            ),
        }

    data = await session.run_sync(load)
    return _page(
        request,
        "index.html",
        principal,
        token,
        status=status or "any",
        kind=kind or "",
        customer_id=customer,
        delivery_status=delivery_status or "any",
        statuses=JOB_STATUSES,
        kinds=JOB_KINDS,
        delivery_statuses=DELIVERY_STATUSES,
        **data,
    )


@router.get("/jobs/{job_id}")
async def job_detail(job_id: PathId, request: Request, session: SessionDep) -> Response:
    """One job with its attempts and the actions it allows."""
    auth = await _principal(request)
    if isinstance(auth, Response):
        return auth
    principal, token = auth
    try:
        job: JobOut = await session.run_sync(
            lambda s: service.job_view(s, service.get_job(s, job_id))
        )
    except ApiError as exc:
        return render("not_found.html", exc.status_code, message=exc.message)
    return _page(request, "job.html", principal, token, job=job)


async def _act(request: Request, session: SessionDep, action: str, job_id: str) -> Response:
    """Retry or cancel from a form; the outcome comes back as a flash message."""
    auth = await _principal(request)
    if isinstance(auth, Response):
        return auth
    form = await _form(request, auth[1])
    if isinstance(form, Response):
        return form
    response = _redirect(_safe_next(form.get("next")))
    settings = get_settings()
    try:
        if action == "retry":
            job = await session.run_sync(service.retry_job, job_id, settings)
            text = f"Job {job_id} queued again as attempt {job.attempts + 1}."
        else:
            job = await session.run_sync(service.cancel_job, job_id)
            text = (
                f"Job {job_id} cancelled."
                if job.status == "cancelled"
                else f"Job {job_id} will stop at its next step."
            )
        await session.commit()
    except ApiError as exc:
        await session.rollback()
        _flash(request, response, "error", f"{action.capitalize()} refused: {exc.message}", job_id)
        return response
    if action == "retry":
        await enqueue_job(request.app.state.producer, job.id, job.uuid)
    _flash(request, response, "ok", text, job_id)
    return response


@router.post("/jobs/{job_id}/retry")
async def retry(job_id: PathId, request: Request, session: SessionDep) -> Response:
    """The Retry button."""
    return await _act(request, session, "retry", job_id)


@router.post("/jobs/{job_id}/cancel")
async def cancel(job_id: PathId, request: Request, session: SessionDep) -> Response:
    """The Cancel button."""
    return await _act(request, session, "cancel", job_id)


@router.post("/deliveries/{delivery_id}/redeliver")
async def redeliver(delivery_id: PathId, request: Request, session: SessionDep) -> Response:
    """The Redeliver button: the same message (same webhook-id) is queued again."""
    auth = await _principal(request)
    if isinstance(auth, Response):
        return auth
    form = await _form(request, auth[1])
    if isinstance(form, Response):
        return form
    response = _redirect(_safe_next(form.get("next")))
    try:
        delivery = await session.run_sync(service.redeliver, delivery_id)
        await session.commit()
    except ApiError as exc:
        await session.rollback()
        _flash(request, response, "error", f"Redeliver refused: {exc.message}")
        return response
    # The webhook dispatcher sends due pending deliveries; nothing to enqueue here.
    _flash(request, response, "ok", f"Delivery {delivery.uuid} queued again.")
    return response
