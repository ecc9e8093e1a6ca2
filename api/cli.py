"""The `serveplane` command: migrate, api, worker, customers, admin, dev."""

from __future__ import annotations

import json
import os
import sys

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


if __name__ == "__main__":
    app()
