"""Celery tasks and worker lifecycle: thin wrappers over the job engine."""

from __future__ import annotations

import logging
from typing import Any

from celery.signals import worker_ready, worker_shutdown

from db.engine import session_scope
from db.queue import DELIVER_WEBHOOK_TASK, RUN_JOB_TASK
from db.repositories import idempotency
from db.settings import get_settings
from workers.celery_app import app
from workers.dispatcher import Dispatcher
from workers.jobs.engine import advance_job
from workers.jobs.reconcile import reconcile_services
from workers.jobs.sweep import remove_retired_versions
from workers.runtime import get_runtime
from workers.runtime.local_watch import adopt_local_processes, supervise_local_versions
from workers.webhooks import events as webhook_events  # noqa: F401 - registers the hooks
from workers.webhooks.delivery import deliver, dispatch_due_deliveries

log = logging.getLogger(__name__)
_dispatcher: Dispatcher | None = None


@app.task(name=RUN_JOB_TASK)
def run_job(job_id: int) -> None:
    """Advance one job by one step (idempotent)."""
    advance_job(job_id)


@app.task(name=DELIVER_WEBHOOK_TASK)
def deliver_webhook(delivery_id: int, attempts: int | None = None) -> None:
    """Make a webhook delivery's next attempt (`attempts`: the count it was sent for)."""
    deliver(delivery_id, attempts)


def purge_idempotency_keys() -> int:
    """Drop expired Idempotency-Key records."""
    with session_scope() as session:
        return idempotency.purge_expired(session)


def chores() -> list[tuple[float, Any]]:
    """Periodic work the elected dispatcher runs: (interval seconds, function)."""
    settings = get_settings()
    return [
        (1.0, remove_retired_versions),
        (settings.reconcile_interval, reconcile_services),
        (300.0, purge_idempotency_keys),
        (0.5, dispatch_due_deliveries),
        (1.0, supervise_local_versions),
    ]


@worker_ready.connect
def _adopt_local_processes(**_: Any) -> None:
    adopt_local_processes()


@worker_ready.connect
def _start_dispatcher(**_: Any) -> None:
    global _dispatcher
    get_runtime()  # load the client (and its config) before the first job needs it
    _dispatcher = Dispatcher(app, chores())
    _dispatcher.start()


@worker_shutdown.connect
def _stop_dispatcher(**_: Any) -> None:
    if _dispatcher is not None:
        _dispatcher.stop()
