"""Queue and task names shared by the API (which enqueues) and the workers (which consume)."""

from __future__ import annotations

from db.settings import get_settings

RUN_JOB_TASK = "serveplane.run_job"
DELIVER_WEBHOOK_TASK = "serveplane.deliver_webhook"


def jobs_queue() -> str:
    """The queue of job steps (prefix from SERVEPLANE_QUEUE_PREFIX)."""
    return f"{get_settings().queue_prefix}.jobs"


def webhooks_queue() -> str:
    """The queue of webhook deliveries."""
    return f"{get_settings().queue_prefix}.webhooks"


def task_routes() -> dict[str, dict[str, str]]:
    """Celery routes for every task."""
    return {
        RUN_JOB_TASK: {"queue": jobs_queue()},
        DELIVER_WEBHOOK_TASK: {"queue": webhooks_queue()},
    }
