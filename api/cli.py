"""The `serveplane` command: migrate, api, worker, customers, admin, dev."""

from __future__ import annotations

import json
import os
import sys
from datetime import datetime
from typing import NoReturn

import typer

from db.queue import jobs_queue, webhooks_queue
from db.settings import get_settings

app = typer.Typer(help="serveplane: deploy trained models as online inference services.",
                  no_args_is_help=True)
customers = typer.Typer(help="Manage customers and their tokens.", no_args_is_help=True)
app.add_typer(customers, name="customers")


@app.command()
def migrate() -> None:
    """Apply database migrations (alembic upgrade head)."""
    from db.migrate import upgrade_head

    upgrade_head(get_settings().sync_database_url)
    typer.echo("database is at the latest migration")


@app.command()
def api(
    host: str = typer.Option("127.0.0.1", help="Address to bind."),
    port: int = typer.Option(8000, help="Port to bind."),
    workers: int = typer.Option(1, help="Worker processes."),
) -> None:
    """Run the HTTP API (uvicorn)."""
    import uvicorn

    uvicorn.run(
        "api.app:create_app",
        factory=True,
        host=host,
        port=port,
        workers=workers,
        access_log=False,
        log_level="info",
    )


def worker_argv(concurrency: int | None = None) -> list[str]:
    """The celery command line of a serveplane worker."""
    settings = get_settings()
    return [
        sys.executable, "-m", "celery", "-A", "workers.celery_app:app", "worker",
        "--pool", "threads",
        "--concurrency", str(concurrency or settings.worker_concurrency),
        "--queues", f"{jobs_queue()},{webhooks_queue()}",
        "--loglevel", "INFO",
        "--without-gossip", "--without-mingle", "--without-heartbeat",
    ]


@app.command()
def worker(
    concurrency: int = typer.Option(0, help="Threads (default SERVEPLANE_WORKER_CONCURRENCY)."),
) -> None:
    """Run a Celery worker (with the dispatcher and the runtime driver)."""
    argv = worker_argv(concurrency or None)
    os.execv(argv[0], argv)


@app.command()
def dev(
    host: str = typer.Option("127.0.0.1", help="Address the API binds."),
    port: int = typer.Option(8000, help="Port the API binds."),
) -> None:
    """Run everything here: embedded PostgreSQL and Redis if unset, API, worker, local runtime."""
    from api.dev import run_dev

    raise typer.Exit(run_dev(host, port))


@customers.command("create")
def customers_create(
    name: str = typer.Argument(..., help="Customer name."),
    admin: bool = typer.Option(False, "--admin", help="Issue an admin token."),
) -> None:
    """Create a customer and print its id and token as JSON (the token is shown once)."""
    from db.engine import session_scope
    from db.repositories.customers import create_customer

    with session_scope() as session:
        customer, token = create_customer(session, name, admin=admin)
        customer_id = customer.id
    typer.echo(json.dumps({"customer_id": customer_id, "token": token, "admin": admin}))


# --- admin: failed jobs and webhook deliveries of every customer -------------------------
# Straight to the database through the API's own admin service functions (not over HTTP);
# re-queued jobs are sent to the broker after the commit, or left to the dispatcher.

admin = typer.Typer(help="Operate on every customer's jobs and deliveries.", no_args_is_help=True)
admin_jobs = typer.Typer(help="Failed jobs: list, retry, cancel.", no_args_is_help=True)
admin_deliveries = typer.Typer(help="Webhook deliveries: list, redeliver.", no_args_is_help=True)
app.add_typer(admin, name="admin")
admin.add_typer(admin_jobs, name="jobs")
admin.add_typer(admin_deliveries, name="deliveries")


def _since(value: str | None) -> datetime | None:
    if value is None:
        return None
    try:
        return datetime.fromisoformat(value)
    except ValueError:
        raise typer.BadParameter("not an ISO-8601 datetime", param_hint="--since") from None


def _choice(value: str | None, allowed: tuple[str, ...], hint: str) -> str | None:
    if value is not None and value not in allowed:
        raise typer.BadParameter(f"one of {', '.join(allowed)}", param_hint=hint)
    return value


def _cell(value: object, width: int) -> str:
    text = "-" if value is None else str(value)
    return text if len(text) <= width else text[: width - 1] + "…"


def _table(headers: list[str], rows: list[list[object]], widths: list[int]) -> None:
    table: list[list[object]] = [list(headers), *rows]
    for row in table:
        cells = [_cell(v, w).ljust(w) for v, w in zip(row, widths, strict=True)]
        typer.echo("  ".join(cells).rstrip())


def _fail(message: str) -> NoReturn:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(1)


@admin_jobs.command("list")
def admin_jobs_list(
    status: str | None = typer.Option(None, help="queued|running|succeeded|failed|cancelled"),
    kind: str | None = typer.Option(None, help="deploy|scale|update|promote|rollback|delete"),
    customer_id: int | None = typer.Option(None, help="Only this customer's jobs."),
    since: str | None = typer.Option(None, help="ISO-8601: jobs created at or after it."),
    cursor: str | None = typer.Option(None, help="next_cursor of the previous page."),
    limit: int = typer.Option(100, min=1, max=500),
    as_json: bool = typer.Option(False, "--json", help="Print the page as JSON."),
) -> None:
    """Jobs of every customer (oldest first) with their failure reason and attempts."""
    from api.admin import service
    from api.admin.schemas import JOB_KINDS, JOB_STATUSES
    from api.errors import ApiError
    from db.engine import session_scope

    status = _choice(status, JOB_STATUSES, "--status")
    kind = _choice(kind, JOB_KINDS, "--kind")
    try:
        with session_scope() as session:
            page = service.list_jobs(
                session, status=status, kind=kind, customer_id=customer_id,
                since=_since(since), cursor=cursor, limit=limit,
            )
    except ApiError as exc:
        _fail(exc.message)
    if as_json:
        typer.echo(page.model_dump_json(indent=2))
        return
    rows: list[list[object]] = []
    for job in page.items:
        error = job.error or {}
        reason = f"{error.get('reason')}: {error.get('message')}" if error else None
        created = job.created_at.strftime("%Y-%m-%d %H:%M:%S")
        rows.append([job.job_id, job.kind, job.status, job.service_id, job.customer_id,
                     f"{job.attempt_count}/{job.max_attempts}", created, reason])
    headers = ["JOB", "KIND", "STATUS", "SERVICE", "CUSTOMER", "ATTEMPTS", "CREATED", "REASON"]
    _table(headers, rows, [22, 8, 9, 22, 8, 8, 19, 70])
    if page.next_cursor:
        typer.echo(f"more: --cursor {page.next_cursor}")


@admin_jobs.command("retry")
def admin_jobs_retry(
    job_ids: list[str] = typer.Argument(..., help="Job ids (job-…)."),
    as_json: bool = typer.Option(False, "--json", help="Print the result as JSON."),
) -> None:
    """Run failed jobs again as a new attempt (history kept); exit 1 if any was not retried."""
    from api.admin import service
    from api.admin.schemas import RetryFilter
    from db.engine import session_scope

    spec = RetryFilter(job_ids=job_ids, limit=min(max(len(job_ids), 1), 1000))
    with session_scope() as session:
        result, jobs = service.retry_matching(session, spec, get_settings())
        to_send = [(job.id, job.uuid) for job in jobs]
    sent = service.send_jobs(to_send)
    if as_json:
        typer.echo(json.dumps({**result.model_dump(mode="json"), "sent": sent.sent,
                               "deferred": sent.deferred}, indent=2))
    else:
        for uuid in result.retried:
            typer.echo(f"retried {uuid}")
        for skipped in result.skipped:
            typer.echo(f"skipped {skipped.job_id}: {skipped.reason} ({skipped.code})")
        if sent.deferred:
            typer.echo(f"the broker is unreachable: the dispatcher will pick up "
                       f"{len(sent.deferred)} job(s) once a worker runs")
    if result.skipped:
        raise typer.Exit(1)


@admin_jobs.command("cancel")
def admin_jobs_cancel(job_id: str = typer.Argument(..., help="Job id (job-…).")) -> None:
    """Cancel a queued job, or ask a running one to stop at its next step."""
    from api.admin import service
    from api.errors import ApiError
    from db.engine import session_scope

    try:
        with session_scope() as session:
            job = service.cancel_job(session, job_id)
            status = job.status
    except ApiError as exc:
        _fail(exc.message)
    typer.echo(f"cancelled {job_id}" if status == "cancelled"
               else f"{job_id} will stop at its next step")


@admin_deliveries.command("list")
def admin_deliveries_list(
    status: str | None = typer.Option(None, help="pending|succeeded|failed"),
    customer_id: int | None = typer.Option(None, help="Only this customer's deliveries."),
    limit: int = typer.Option(50, min=1, max=500),
    as_json: bool = typer.Option(False, "--json", help="Print the page as JSON."),
) -> None:
    """Webhook deliveries of every customer, newest first."""
    from api.admin import service
    from api.admin.schemas import DELIVERY_STATUSES
    from db.engine import session_scope

    status = _choice(status, DELIVERY_STATUSES, "--status")
    with session_scope() as session:
        page = service.list_deliveries(session, status=status, customer_id=customer_id,
                                       limit=limit)
    if as_json:
        typer.echo(page.model_dump_json(indent=2))
        return
    rows: list[list[object]] = [
        [d.delivery_id, d.status, d.event_type, d.customer_id, d.attempt_count,
         d.last_status_code, d.url, d.last_error]
        for d in page.items
    ]
    headers = ["DELIVERY", "STATUS", "EVENT", "CUSTOMER", "ATTEMPTS", "CODE", "URL", "ERROR"]
    _table(headers, rows, [28, 9, 18, 8, 8, 4, 40, 50])


@admin_deliveries.command("redeliver")
def admin_deliveries_redeliver(
    delivery_id: str = typer.Argument(..., help="Delivery id (msg_…)."),
) -> None:
    """Queue a failed or succeeded delivery again with the same webhook-id (history kept)."""
    from api.admin import service
    from api.errors import ApiError
    from db.engine import session_scope

    try:
        with session_scope() as session:
            service.redeliver(session, delivery_id)
    except ApiError as exc:
        _fail(exc.message)
    typer.echo(f"queued {delivery_id} again; a worker's webhook dispatcher sends it")


if __name__ == "__main__":
    app()
