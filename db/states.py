"""The status state machine: the only place a service or job status changes."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy.orm import Session

from db.models import InferenceService, Job, ServiceEvent

SERVICE_TRANSITIONS: dict[str, frozenset[str]] = {
    "pending": frozenset({"deploying", "failed", "deleting"}),
    "deploying": frozenset({"running", "failed", "deleting"}),
    "running": frozenset({"scaling", "updating", "degraded", "deleting"}),
    "scaling": frozenset({"running", "failed", "degraded", "deleting"}),
    "updating": frozenset({"running", "failed", "degraded", "deleting"}),
    "degraded": frozenset({"running", "deploying", "scaling", "updating", "failed", "deleting"}),
    "failed": frozenset({"deploying", "scaling", "updating", "running", "deleting"}),
    "deleting": frozenset({"deleted", "failed"}),
    "deleted": frozenset(),
}

JOB_TRANSITIONS: dict[str, frozenset[str]] = {
    "queued": frozenset({"running", "failed", "cancelled"}),
    "running": frozenset({"succeeded", "failed", "cancelled"}),
    "failed": frozenset({"queued"}),
    "succeeded": frozenset(),
    "cancelled": frozenset(),
}


class IllegalTransition(Exception):
    """A status change the state machine does not allow."""

    def __init__(self, entity: str, from_status: str, to_status: str) -> None:
        super().__init__(f"{entity} cannot move from {from_status!r} to {to_status!r}")
        self.entity = entity
        self.from_status = from_status
        self.to_status = to_status


def utcnow() -> datetime:
    """Timezone-aware now."""
    return datetime.now(UTC)


def transition_service(
    session: Session,
    service: InferenceService,
    to_status: str,
    reason: str,
    *,
    job_id: int | None = None,
    failure: dict[str, Any] | None = None,
) -> ServiceEvent:
    """Move a service to `to_status`, record the event; raise IllegalTransition if not allowed."""
    from_status = service.status
    if to_status not in SERVICE_TRANSITIONS[from_status]:
        raise IllegalTransition("service", from_status, to_status)
    service.status = to_status
    if to_status in ("failed", "degraded"):
        service.failure = failure
    elif to_status in ("running", "deploying", "deleted"):
        service.failure = None
    if to_status == "deleted":
        service.deleted_at = utcnow()
    event = ServiceEvent(
        service_id=service.id,
        kind="status",
        from_status=from_status,
        to_status=to_status,
        reason=reason,
        details={"failure": failure} if failure else None,
        job_id=job_id,
    )
    session.add(event)
    session.flush()
    return event


def record_traffic_event(
    session: Session,
    service: InferenceService,
    split: dict[int, int],
    reason: str,
    *,
    job_id: int | None = None,
) -> ServiceEvent:
    """Record a change of the traffic split ({version number: percent})."""
    event = ServiceEvent(
        service_id=service.id,
        kind="traffic",
        from_status=service.status,
        to_status=service.status,
        reason=reason,
        details={"traffic": {str(k): v for k, v in sorted(split.items())}},
        job_id=job_id,
    )
    session.add(event)
    session.flush()
    return event


def transition_job(job: Job, to_status: str) -> None:
    """Move a job to `to_status` with its timestamps; raise IllegalTransition if not allowed."""
    if to_status not in JOB_TRANSITIONS[job.status]:
        raise IllegalTransition("job", job.status, to_status)
    now = utcnow()
    job.status = to_status
    if to_status == "running":
        job.started_at = now
    elif to_status in ("succeeded", "failed", "cancelled"):
        job.finished_at = now
        job.next_check_at = None
        job.lease_expires_at = None
    elif to_status == "queued":
        job.finished_at = None
        job.error = None
        job.phase = "apply"
        job.check_count = 0
