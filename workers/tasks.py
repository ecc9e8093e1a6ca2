"""Celery tasks and worker lifecycle: thin wrappers over the job engine."""

from __future__ import annotations

import logging
from typing import Any

from celery.signals import worker_ready, worker_shutdown

from db.queue import RUN_JOB_TASK
from workers.celery_app import app
from workers.dispatcher import Dispatcher
from workers.jobs.engine import advance_job
from workers.jobs.sweep import remove_retired_versions

log = logging.getLogger(__name__)
_dispatcher: Dispatcher | None = None


@app.task(name=RUN_JOB_TASK)
def run_job(job_id: int) -> None:
    """Advance one job by one step (idempotent)."""
    advance_job(job_id)


def chores() -> list[tuple[float, Any]]:
    """Periodic work the elected dispatcher runs: (interval seconds, function)."""
    return [(1.0, remove_retired_versions)]


@worker_ready.connect
def _start_dispatcher(**_: Any) -> None:
    global _dispatcher
    _dispatcher = Dispatcher(app, chores())
    _dispatcher.start()


@worker_shutdown.connect
def _stop_dispatcher(**_: Any) -> None:
    if _dispatcher is not None:
        _dispatcher.stop()
