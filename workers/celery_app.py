"""The Celery application: Redis broker, JSON only, late acks, prefetch 1."""

from __future__ import annotations

from celery import Celery

from db.queue import jobs_queue, task_routes
from db.settings import get_settings


def make_celery() -> Celery:
    """Build the app from settings."""
    settings = get_settings()
    app = Celery("serveplane", broker=settings.redis_url, include=["workers.tasks"])
    app.conf.update(
        task_serializer="json",
        accept_content=["json"],
        result_serializer="json",
        task_ignore_result=True,
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        broker_connection_retry_on_startup=True,
        # Longer than any countdown used (webhook retries are scheduled from PostgreSQL).
        broker_transport_options={"visibility_timeout": 3600},
        task_routes=task_routes(),
        task_default_queue=jobs_queue(),
        worker_hijack_root_logger=False,
        worker_send_task_events=False,
    )
    return app


app = make_celery()
