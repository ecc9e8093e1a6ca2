"""Admin operations on every customer's jobs. Synchronous: run inside a session via run_sync
(API, web page) or inside `session_scope()` (CLI); callers commit, then enqueue."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from celery import Celery
from sqlalchemy.orm import Session

from api.admin.schemas import (
    DeliveryOut,
    DeliveryPage,
    RetryFilter,
    RetryResult,
    SkippedJob,
)
from api.errors import ApiError, Conflict, NotFound
from api.jobs.schemas import JobOut, JobPage
from api.jobs.service import jobs_out
from api.jobs.service import list_jobs as list_jobs_page
from api.pagination import decode_cursor, encode_cursor
from api.queue import _send, make_producer
from api.webhooks.service import attempt_views
from db.domain import failure_info
from db.models import Job, WebhookDelivery
from db.repositories import jobs as jobs_repo
from db.repositories import services as services_repo
from db.repositories import webhooks as webhooks_repo
from db.settings import Settings
from db.states import transition_job, transition_service, utcnow

CANCELLED_BY_ADMIN = "cancelled by an admin"


def as_utc(moment: datetime | None) -> datetime | None:
    """A timezone-aware datetime; a naive one is taken as UTC."""
    if moment is None or moment.tzinfo is not None:
        return moment
    return moment.replace(tzinfo=UTC)


def job_view(session: Session, job: Job) -> JobOut:
    """The admin view of one job: attempts, error, service and customer."""
    return jobs_out(session, [job], with_customer=True)[0]


def list_jobs(
    session: Session,
    *,
    status: str | None = None,
    kind: str | None = None,
    customer_id: int | None = None,
    since: datetime | None = None,
    cursor: str | None = None,
    limit: int = 50,
) -> JobPage:
    """A page of jobs of every customer (or one), oldest first."""
    return list_jobs_page(
        session,
        customer_id=customer_id,
        status=status,
        kind=kind,
        since=as_utc(since),
        cursor=cursor,
        limit=limit,
        with_customer=True,
    )


def get_job(session: Session, uuid: str) -> Job:
    """Any customer's job, or 404."""
    job = jobs_repo.get_job(session, uuid)
    if job is None:
        raise NotFound(f"job {uuid} not found")
    return job


def _locked_job(session: Session, uuid: str) -> Job:
    job = jobs_repo.get_job(session, uuid, lock=True)
    if job is None:
        raise NotFound(f"job {uuid} not found")
    return job


def _requeue(session: Session, job: Job, settings: Settings) -> None:
    """Checks first, then the changes: a refused retry leaves no trace in the transaction."""
    if job.status != "failed":
        raise Conflict(
            f"job {job.uuid} is {job.status}; only failed jobs can be retried",
            code="job_not_failed",
            details={"status": job.status},
        )
    service = services_repo.lock_service(session, job.service_id)
    if service.status in ("deleting", "deleted"):
        raise Conflict(
            f"service {service.uuid} is {service.status}",
            code="service_deleted",
            details={"service_status": service.status},
        )
    active = jobs_repo.active_job(session, service.id)
    if active is not None:
        raise Conflict(
            f"job {active.uuid} ({active.kind}) is still {active.status} for this service",
            code="job_in_progress",
            details={"active_job_id": active.uuid},
        )
    newer = jobs_repo.newer_job(session, job)
    if newer is not None:
        raise Conflict(
            f"job {newer.uuid} ({newer.kind}) ran on this service after job {job.uuid}",
            code="superseded",
            details={"newer_job_id": newer.uuid},
        )
    now = utcnow()
    transition_job(job, "queued")
    # The history stays: `attempts` keeps counting and the job_attempts rows are kept.
    job.max_attempts = job.attempts + settings.job_max_attempts
    job.deadline_at = now + timedelta(seconds=settings.job_deadline_seconds)
    job.next_check_at = now
    job.lease_expires_at = None
    job.cancel_requested = False
    session.flush()


def retry_job(session: Session, uuid: str, settings: Settings) -> Job:
    """Queue a failed job again as a new attempt; 409 when it cannot be retried."""
    job = _locked_job(session, uuid)
    _requeue(session, job, settings)
    return job


def _matching_jobs(session: Session, spec: RetryFilter) -> tuple[list[Job], list[SkippedJob], bool]:
    """The jobs a bulk retry looks at, plus the ids refused before looking (unknown, filtered)."""
    since = as_utc(spec.since)
    if spec.job_ids is None:
        rows = jobs_repo.list_jobs(
            session,
            status=spec.status,
            kind=spec.kind,
            customer_id=spec.customer_id,
            since=since,
            limit=spec.limit + 1,
        )
        return list(rows[: spec.limit]), [], len(rows) > spec.limit
    jobs: list[Job] = []
    skipped: list[SkippedJob] = []
    unique = list(dict.fromkeys(spec.job_ids))
    for uuid in unique[: spec.limit]:
        job = jobs_repo.get_job(session, uuid)
        if job is None:
            skipped.append(SkippedJob(job_id=uuid, code="not_found", reason="no such job"))
        elif (
            (spec.kind and job.kind != spec.kind)
            or (spec.customer_id and job.customer_id != spec.customer_id)
            or (since and job.created_at < since)
        ):
            skipped.append(
                SkippedJob(job_id=uuid, code="filtered_out", reason="does not match the filter")
            )
        else:
            jobs.append(job)
    return jobs, skipped, len(unique) > spec.limit


def retry_matching(
    session: Session, spec: RetryFilter, settings: Settings
) -> tuple[RetryResult, list[Job]]:
    """Retry every matching failed job that can be; the others are listed with the reason."""
    jobs, skipped, truncated = _matching_jobs(session, spec)
    retried: list[Job] = []
    for candidate in jobs:
        try:
            job = _locked_job(session, candidate.uuid)
            _requeue(session, job, settings)
        except ApiError as exc:
            skipped.append(SkippedJob(job_id=candidate.uuid, code=exc.code, reason=exc.message))
            continue
        retried.append(job)
    result = RetryResult(retried=[j.uuid for j in retried], skipped=skipped, truncated=truncated)
    return result, retried


def cancel_job(session: Session, uuid: str) -> Job:
    """Cancel a queued job now, or ask a running one to stop at its next step; 409 when ended."""
    job = _locked_job(session, uuid)
    if job.status in ("succeeded", "failed", "cancelled"):
        raise Conflict(
            f"job {uuid} is {job.status}; only queued or running jobs can be cancelled",
            code="job_finished",
            details={"status": job.status},
        )
    if job.kind == "delete":
        raise Conflict(
            f"job {uuid} deletes its service and cannot be cancelled", code="not_cancellable"
        )
    if job.status == "running":
        job.cancel_requested = True
        job.next_check_at = utcnow()  # the engine sees the request at once, not after a backoff
        session.flush()
        return job
    _cancel_queued(session, job)
    return job


def _cancel_queued(session: Session, job: Job) -> None:
    """A queued job never touched the runtime: end it and settle what it had prepared."""
    service = services_repo.lock_service(session, job.service_id)
    failure = failure_info("Cancelled", CANCELLED_BY_ADMIN)
    transition_job(job, "cancelled")
    job.error = failure
    if job.version_id is not None:
        version = services_repo.get_version(session, job.version_id)
        if version is not None and version.status == "pending" and version.traffic_percent == 0:
            version.status = "failed"
            version.failure = failure
    if job.kind == "deploy" and service.status == "pending":
        transition_service(
            session,
            service,
            "failed",
            f"deploy job {job.uuid} {CANCELLED_BY_ADMIN}",
            job_id=job.id,
            failure=failure,
        )
    session.flush()


@dataclass
class Sent:
    """What the CLI's enqueue after commit did."""

    sent: list[str] = field(default_factory=list)
    deferred: list[str] = field(default_factory=list)


def send_jobs(jobs: Sequence[tuple[int, str]], producer: Celery | None = None) -> Sent:
    """Send run_job tasks for committed jobs; the unsent ones wait for the dispatcher."""
    result = Sent()
    if not jobs:
        return result
    own = producer is None
    producer = producer or make_producer()
    try:
        for job_id, uuid in jobs:
            (result.sent if _send(producer, job_id, uuid) else result.deferred).append(uuid)
    finally:
        if own:
            producer.close()
    return result


def recent_jobs(
    session: Session,
    *,
    status: str | None,
    kind: str | None,
    customer_id: int | None,
    before_id: int | None,
    limit: int,
) -> Sequence[Job]:
    """Jobs for the admin page, newest first, below a cursor id."""
    return jobs_repo.list_jobs(
        session,
        status=status,
        kind=kind,
        customer_id=customer_id,
        after_id=before_id,
        limit=limit,
        newest_first=True,
    )


def deliveries_out(
    session: Session, rows: Sequence[tuple[WebhookDelivery, str | None]]
) -> list[DeliveryOut]:
    """Views of deliveries with their attempts (one query for all the attempts)."""
    attempts = webhooks_repo.attempts_of(session, [d.id for d, _ in rows])
    return [
        DeliveryOut(
            delivery_id=d.uuid,
            customer_id=d.customer_id,
            url=d.url,
            event_type=d.event_type,
            job_id=job_uuid,
            status=d.status,
            attempt_count=d.attempts,
            next_attempt_at=d.next_attempt_at,
            last_status_code=d.last_status_code,
            last_error=d.last_error,
            created_at=d.created_at,
            updated_at=d.updated_at,
            attempts=attempt_views(attempts.get(d.id, [])),
        )
        for d, job_uuid in rows
    ]


def list_deliveries(
    session: Session,
    *,
    status: str | None = None,
    customer_id: int | None = None,
    cursor: str | None = None,
    limit: int = 50,
) -> DeliveryPage:
    """A page of every customer's (or one customer's) deliveries, newest first."""
    rows = webhooks_repo.list_all_deliveries(
        session,
        status=status,
        customer_id=customer_id,
        before_id=decode_cursor(cursor),
        limit=limit + 1,
    )
    page = rows[:limit]
    next_cursor = encode_cursor(page[-1][0].id) if len(rows) > limit else None
    return DeliveryPage(items=deliveries_out(session, page), next_cursor=next_cursor)


def recent_deliveries(
    session: Session, *, status: str | None, customer_id: int | None, limit: int
) -> list[DeliveryOut]:
    """The newest deliveries for the admin page."""
    return list_deliveries(session, status=status, customer_id=customer_id, limit=limit).items


def redeliver(session: Session, uuid: str) -> WebhookDelivery:
    """Queue a failed or succeeded delivery again with the same webhook-id; history kept."""
    delivery = webhooks_repo.lock_delivery_by_uuid(session, uuid)
    if delivery is None:
        raise NotFound(f"delivery {uuid} not found")
    if delivery.status not in ("failed", "succeeded"):
        raise Conflict(
            f"delivery {uuid} is {delivery.status}; it is already queued",
            code="delivery_pending",
            details={"status": delivery.status},
        )
    if delivery.endpoint_id is not None:
        endpoint = webhooks_repo.get_endpoint_by_id(session, delivery.endpoint_id)
        if endpoint is None or endpoint.deleted_at is not None or not endpoint.enabled:
            state = (
                "disabled" if endpoint is not None and endpoint.deleted_at is None else "deleted"
            )
            raise Conflict(
                f"the webhook endpoint of delivery {uuid} is {state}",
                code="endpoint_unavailable",
                details={"endpoint": state},
            )
    webhooks_repo.requeue_delivery(session, delivery)
    return delivery


def delivery_view(session: Session, delivery: WebhookDelivery) -> DeliveryOut:
    """The admin view of one delivery."""
    job = jobs_repo.get_job_by_id(session, delivery.job_id) if delivery.job_id else None
    return deliveries_out(session, [(delivery, job.uuid if job else None)])[0]
