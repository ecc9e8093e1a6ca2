"""Webhook events: when a job ends (or a service degrades), record one delivery per receiver.

Deliveries are rows written in the caller's transaction, inside a savepoint so that a webhook
problem can never fail the job; their tasks are sent only after that transaction commits.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta
from typing import Any

import orjson
from sqlalchemy.orm import Session

from db.engine import after_commit
from db.models import InferenceService, Job
from db.repositories import services as services_repo
from db.repositories import webhooks as webhooks_repo
from db.settings import get_settings
from db.states import utcnow
from workers.jobs.engine import job_ended_hooks
from workers.jobs.reconcile import reconcile_hooks
from workers.webhooks.delivery import send_delivery_tasks

log = logging.getLogger(__name__)
MAX_PAYLOAD_BYTES = 20_000
JOB_EVENTS = {"succeeded": "job.succeeded", "failed": "job.failed", "cancelled": "job.cancelled"}
SERVICE_EVENTS = {
    "running": "service.running",
    "failed": "service.failed",
    "deleted": "service.deleted",
    "degraded": "service.degraded",
}


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def job_view(job: Job, service: InferenceService) -> dict[str, Any]:
    """The job as a webhook payload shows it."""
    return {
        "job_id": job.uuid,
        "kind": job.kind,
        "status": job.status,
        "service_id": service.uuid,
        "attempts": job.attempts,
        "error": job.error,
        "created_at": _iso(job.created_at),
        "finished_at": _iso(job.finished_at),
    }


def service_view(session: Session, service: InferenceService) -> dict[str, Any]:
    """The service as a webhook payload shows it, with its traffic split."""
    return {
        "service_id": service.uuid,
        "name": service.name,
        "status": service.status,
        "endpoint_url": service.endpoint_url,
        "failure": service.failure,
        "traffic": [
            {"version": v.number, "percent": v.traffic_percent}
            for v in services_repo.serving_versions(session, service.id)
        ],
    }


def _truncate(value: Any, limit: int) -> Any:
    if isinstance(value, str) and len(value) > limit:
        return value[:limit] + "…"
    if isinstance(value, dict):
        return {k: _truncate(v, limit) for k, v in value.items()}
    if isinstance(value, list):
        return [_truncate(v, limit) for v in value]
    return value


def build_payload(event_type: str, at: datetime, data: dict[str, Any]) -> dict[str, Any]:
    """`{"type", "timestamp", "data"}`, long strings cut until it fits in MAX_PAYLOAD_BYTES."""
    payload: dict[str, Any] = {"type": event_type, "timestamp": at.isoformat(), "data": data}
    for limit in (2000, 500, 100, 20):
        if len(orjson.dumps(payload)) < MAX_PAYLOAD_BYTES:
            break
        payload = _truncate(payload, limit)
    return payload


def emit(
    session: Session,
    customer_id: int,
    event_types: list[str],
    data: dict[str, Any],
    *,
    job_id: int | None = None,
    callback_url: str | None = None,
) -> list[int]:
    """Record deliveries of each event to subscribed endpoints and the callback URL.

    Never raises: a failure is logged and its savepoint rolled back, the caller's work stays.
    """
    settings = get_settings()
    now = utcnow()
    # In flight from the start: the task is sent after commit; if that send is lost, the
    # dispatcher sends it again once this lease has passed.
    lease = now + timedelta(seconds=webhooks_repo.lease_seconds(settings.webhook_timeout))
    created: list[int] = []
    try:
        with session.begin_nested():
            for event_type in event_types:
                payload = build_payload(event_type, now, data)
                receivers: list[tuple[int | None, str]] = [
                    (e.id, e.url)
                    for e in webhooks_repo.subscribed_endpoints(session, customer_id, event_type)
                ]
                if callback_url:
                    receivers.append((None, callback_url))
                for endpoint_id, url in receivers:
                    delivery = webhooks_repo.add_delivery(
                        session,
                        customer_id=customer_id,
                        endpoint_id=endpoint_id,
                        url=url,
                        event_type=event_type,
                        payload=payload,
                        job_id=job_id,
                        next_attempt_at=lease,
                    )
                    created.append(delivery.id)
    except Exception:
        # Webhooks must never fail the job or transition that triggered them.
        log.exception(
            "webhook events %s of customer %s were not recorded", event_types, customer_id
        )
        return []
    if created:
        pairs = [(delivery_id, 0) for delivery_id in created]

        def send() -> None:
            send_delivery_tasks(pairs)

        after_commit(session, send)
    return created


def on_job_ended(session: Session, job: Job, service: InferenceService) -> None:
    """job_ended hook: `job.<status>` and `service.<status>` for the service's new status."""
    event_types = [JOB_EVENTS[job.status]] if job.status in JOB_EVENTS else []
    if service.status in SERVICE_EVENTS:
        event_types.append(SERVICE_EVENTS[service.status])
    if not event_types:
        return
    try:
        data = {"job": job_view(job, service), "service": service_view(session, service)}
    except Exception:
        log.exception("webhook payload of job %s could not be built", job.uuid)
        return
    emit(session, job.customer_id, event_types, data, job_id=job.id, callback_url=job.callback_url)


def emit_service_event(
    session: Session, service: InferenceService, event_type: str, job: Job | None = None
) -> list[int]:
    """Emit a `service.*` event now (e.g. `service.degraded` from the drift reconciler)."""
    if event_type not in webhooks_repo.EVENT_TYPES:
        raise ValueError(f"unknown webhook event type {event_type!r}")
    try:
        data = {
            "job": job_view(job, service) if job is not None else None,
            "service": service_view(session, service),
        }
    except Exception:
        log.exception("webhook payload of %s for %s could not be built", event_type, service.uuid)
        return []
    return emit(
        session,
        service.customer_id,
        [event_type],
        data,
        job_id=job.id if job is not None else None,
        callback_url=job.callback_url if job is not None else None,
    )


def on_reconciled(session: Session, service: InferenceService) -> None:
    """Drift reconciler hook: the service turned degraded, or recovered to running."""
    emit_service_event(session, service, SERVICE_EVENTS[service.status])


def register() -> None:
    """Hook into job endings and drift (idempotent)."""
    if on_job_ended not in job_ended_hooks:
        job_ended_hooks.append(on_job_ended)
    if on_reconciled not in reconcile_hooks:
        reconcile_hooks.append(on_reconciled)


register()
