"""Jobs and their attempts."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import or_, select, update
from sqlalchemy.orm import Session

from db.domain import new_job_uuid
from db.models import InferenceService, Job, JobAttempt
from db.states import utcnow

ACTIVE = ("queued", "running")


def create_job(
    session: Session,
    *,
    kind: str,
    service: InferenceService,
    max_attempts: int,
    deadline_seconds: int,
    version_id: int | None = None,
    payload: dict[str, Any] | None = None,
    callback_url: str | None = None,
) -> Job:
    """Insert a queued job."""
    job = Job(
        uuid=new_job_uuid(),
        kind=kind,
        status="queued",
        service_id=service.id,
        customer_id=service.customer_id,
        version_id=version_id,
        payload=payload or {},
        max_attempts=max_attempts,
        callback_url=callback_url,
        deadline_at=utcnow() + timedelta(seconds=deadline_seconds),
        next_check_at=utcnow(),
    )
    session.add(job)
    session.flush()
    return job


def get_job(session: Session, uuid: str, *, customer_id: int | None = None) -> Job | None:
    """A job by public id, scoped to a customer when given."""
    query = select(Job).where(Job.uuid == uuid)
    if customer_id is not None:
        query = query.where(Job.customer_id == customer_id)
    return session.scalar(query)


def get_job_by_id(session: Session, job_id: int) -> Job | None:
    """A job by primary key."""
    return session.get(Job, job_id)


def list_jobs(
    session: Session,
    *,
    customer_id: int | None = None,
    service_id: int | None = None,
    status: str | None = None,
    kind: str | None = None,
    since: datetime | None = None,
    after_id: int | None = None,
    limit: int = 50,
) -> Sequence[Job]:
    """A page of jobs matching the filters, oldest first, after a cursor id."""
    query = select(Job)
    if customer_id is not None:
        query = query.where(Job.customer_id == customer_id)
    if service_id is not None:
        query = query.where(Job.service_id == service_id)
    if status:
        query = query.where(Job.status == status)
    if kind:
        query = query.where(Job.kind == kind)
    if since is not None:
        query = query.where(Job.created_at >= since)
    if after_id is not None:
        query = query.where(Job.id > after_id)
    return session.scalars(query.order_by(Job.id).limit(limit)).all()


def active_job(session: Session, service_id: int) -> Job | None:
    """The queued or running job of a service, if any."""
    return session.scalar(
        select(Job)
        .where(Job.service_id == service_id, Job.status.in_(ACTIVE))
        .order_by(Job.id)
        .limit(1)
    )


def active_jobs(session: Session, service_id: int) -> Sequence[Job]:
    """Every queued or running job of a service."""
    return session.scalars(
        select(Job).where(Job.service_id == service_id, Job.status.in_(ACTIVE)).order_by(Job.id)
    ).all()


def lock_job(session: Session, job_id: int, *, skip_locked: bool = True) -> Job | None:
    """Claim a job's row lock; None when another worker holds it (or it is gone)."""
    query = select(Job).where(Job.id == job_id).with_for_update(skip_locked=skip_locked)
    return session.scalar(query)


def due_job_ids(session: Session, now: datetime, limit: int = 500) -> list[tuple[int, str]]:
    """Active jobs whose next check or lease is due: (id, uuid), oldest due first."""
    rows = session.execute(
        select(Job.id, Job.uuid)
        .where(
            Job.status.in_(ACTIVE),
            or_(Job.next_check_at.is_(None), Job.next_check_at <= now),
        )
        .order_by(Job.next_check_at.nulls_first())
        .limit(limit)
    ).all()
    return [(row[0], row[1]) for row in rows]


def push_next_check(session: Session, job_ids: Sequence[int], until: datetime) -> None:
    """Mark jobs as handed to the queue until `until` (their lease for the dispatch)."""
    if job_ids:
        session.execute(
            update(Job)
            .where(Job.id.in_(job_ids), Job.status.in_(ACTIVE))
            .values(next_check_at=until)
        )


def start_attempt(session: Session, job: Job) -> JobAttempt:
    """Record a new attempt of the job."""
    attempt = JobAttempt(job_id=job.id, number=job.attempts, status="running")
    session.add(attempt)
    session.flush()
    return attempt


def finish_attempt(
    session: Session, job: Job, status: str, error: dict[str, Any] | None = None
) -> None:
    """Close the job's current attempt."""
    attempt = session.scalar(
        select(JobAttempt).where(JobAttempt.job_id == job.id, JobAttempt.number == job.attempts)
    )
    if attempt is not None and attempt.finished_at is None:
        attempt.status = status
        attempt.error = error
        attempt.finished_at = utcnow()


def list_attempts(session: Session, job_id: int) -> Sequence[JobAttempt]:
    """The job's attempts, oldest first."""
    return session.scalars(
        select(JobAttempt).where(JobAttempt.job_id == job_id).order_by(JobAttempt.number)
    ).all()
