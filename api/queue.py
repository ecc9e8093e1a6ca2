"""Enqueue jobs after their transaction committed. A lost enqueue is re-sent by the dispatcher."""

from __future__ import annotations

import logging

from celery import Celery
from starlette.concurrency import run_in_threadpool

from db.queue import RUN_JOB_TASK, task_routes
from db.settings import get_settings

log = logging.getLogger(__name__)


def make_producer() -> Celery:
    """A Celery app used only to send tasks (the API never imports the workers)."""
    app = Celery("serveplane-api", broker=get_settings().redis_url)
    app.conf.update(
        task_serializer="json",
        accept_content=["json"],
        broker_connection_retry=False,
        broker_connection_max_retries=0,
        broker_transport_options={"visibility_timeout": 3600, "max_retries": 0},
        task_routes=task_routes(),
    )
    return app


def _send(producer: Celery, job_id: int, job_uuid: str) -> bool:
    try:
        producer.send_task(RUN_JOB_TASK, args=[job_id], task_id=job_uuid, retry=False)
    except Exception as exc:  # the broker is down: the dispatcher will send it later
        log.warning("enqueue of %s deferred to the dispatcher: %s", job_uuid, type(exc).__name__)
        return False
    return True


async def enqueue_job(producer: Celery, job_id: int, job_uuid: str) -> bool:
    """Send the job's task; False when the broker is unreachable (the job stays queued)."""
    return await run_in_threadpool(_send, producer, job_id, job_uuid)
