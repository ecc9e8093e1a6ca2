"""Jobs and their attempts."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import bindparam, func, literal_column, or_, select, update
from sqlalchemy.dialects.postgresql import aggregate_order_by
from sqlalchemy.ext.asyncio import AsyncConnection
from sqlalchemy.orm import Session

from db.domain import new_job_uuid
from db.models import InferenceService, Job, JobAttempt, ServiceVersion
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
    dispatch_grace: float = 5.0,
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
        # The API enqueues at once; the dispatcher sends it only if that enqueue was lost.
        next_check_at=utcnow() + timedelta(seconds=dispatch_grace),
    )
    session.add(job)
    session.flush()
    return job


def get_job(
    session: Session, uuid: str, *, customer_id: int | None = None, lock: bool = False
) -> Job | None:
    """A job by public id, scoped to a customer when given, optionally under a row lock."""
    query = select(Job).where(Job.uuid == uuid)
    if customer_id is not None:
        query = query.where(Job.customer_id == customer_id)
    if lock:
        query = query.with_for_update().execution_options(populate_existing=True)
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
    newest_first: bool = False,
) -> Sequence[Job]:
    """A page of jobs matching the filters after a cursor id (oldest first, or newest first
    with ids below the cursor)."""
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
    if newest_first:
        if after_id is not None:
            query = query.where(Job.id < after_id)
        return session.scalars(query.order_by(Job.id.desc()).limit(limit)).all()
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


def newer_job(session: Session, job: Job) -> Job | None:
    """The first job of the same service created after `job` that ever ran, if any."""
    never_ran = (Job.status == "cancelled") & (Job.attempts == 0)
    return session.scalar(
        select(Job)
        .where(Job.service_id == job.service_id, Job.id > job.id, ~never_ran)
        .order_by(Job.id)
        .limit(1)
    )


def version_has_running_job(session: Session, version_id: int) -> bool:
    """True while a running job works on this version."""
    return (
        session.scalar(
            select(Job.id).where(Job.version_id == version_id, Job.status == "running").limit(1)
        )
        is not None
    )


def active_jobs(session: Session, service_id: int) -> Sequence[Job]:
    """Every queued or running job of a service."""
    return session.scalars(
        select(Job).where(Job.service_id == service_id, Job.status.in_(ACTIVE)).order_by(Job.id)
    ).all()


def service_id_of(session: Session, job_id: int) -> int | None:
    """The service a job belongs to (no lock)."""
    return session.scalar(select(Job.service_id).where(Job.id == job_id))


def lock_job(session: Session, job_id: int, *, skip_locked: bool = True) -> Job | None:
    """Claim a job's row lock; None when another worker holds it (or it is gone)."""
    query = select(Job).where(Job.id == job_id).with_for_update(skip_locked=skip_locked)
    return session.scalar(query)


def claim_due_jobs(session: Session, now: datetime, until: datetime, limit: int = 500) -> list[Job]:
    """Atomically take due active jobs for dispatch: their next check moves to `until`.

    Moving the time before the task is sent means a worker's own rescheduling, which
    happens after it receives the task, is never overwritten by the dispatcher.
    """
    due = (
        select(Job.id)
        .where(
            Job.status.in_(ACTIVE),
            or_(Job.next_check_at.is_(None), Job.next_check_at <= now),
        )
        .order_by(Job.next_check_at.nulls_first())
        .limit(limit)
        .with_for_update(skip_locked=True)
        .scalar_subquery()
    )
    return list(
        session.scalars(
            update(Job)
            .where(Job.id.in_(due))
            .values(next_check_at=until)
            .returning(Job)
            .execution_options(synchronize_session=False)
        ).all()
    )


def reschedule_checks(session: Session, schedule: Sequence[tuple[int, datetime]]) -> None:
    """Set the next readiness check of waiting jobs (and count the check)."""
    for job_id, at in schedule:
        session.execute(
            update(Job)
            .where(Job.id == job_id, Job.status == "running", Job.phase == "wait")
            .values(next_check_at=at, check_count=Job.check_count + 1)
        )


def make_due(session: Session, job_ids: Sequence[int], now: datetime) -> None:
    """Hand jobs back to the next dispatch (their send failed)."""
    if job_ids:
        session.execute(update(Job).where(Job.id.in_(job_ids)).values(next_check_at=now))


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


# The polled job view in ONE statement: job, service id, version number and attempts as JSON.
_JOBS = Job.__table__
_SERVICES = InferenceService.__table__
_VERSIONS = ServiceVersion.__table__
_ATTEMPTS = JobAttempt.__table__
_ATTEMPT_FIELDS = ("number", "status", "error", "started_at", "finished_at")
_ATTEMPTS_JSON = (
    select(
        func.coalesce(
            func.json_agg(
                aggregate_order_by(
                    func.json_build_object(
                        *(
                            part
                            for f in _ATTEMPT_FIELDS
                            for part in (literal_column(f"'{f}'"), _ATTEMPTS.c[f])
                        )
                    ),
                    _ATTEMPTS.c.number,
                )
            ),
            literal_column("'[]'::json"),
        )
    )
    .where(_ATTEMPTS.c.job_id == _JOBS.c.id)
    .scalar_subquery()
)
JOB_VIEW = (
    select(
        _JOBS.c.uuid,
        _JOBS.c.kind,
        _JOBS.c.status,
        _SERVICES.c.uuid.label("service_uuid"),
        _VERSIONS.c.number.label("version_number"),
        _ATTEMPTS_JSON.label("attempts_json"),
        _JOBS.c.attempts,
        _JOBS.c.max_attempts,
        _JOBS.c.error,
        _JOBS.c.payload,
        _JOBS.c.created_at,
        _JOBS.c.updated_at,
        _JOBS.c.started_at,
        _JOBS.c.finished_at,
        _JOBS.c.deadline_at,
    )
    .select_from(
        _JOBS.join(_SERVICES, _SERVICES.c.id == _JOBS.c.service_id).outerjoin(
            _VERSIONS, _VERSIONS.c.id == _JOBS.c.version_id
        )
    )
    .where(_JOBS.c.uuid == bindparam("uuid"), _JOBS.c.customer_id == bindparam("customer_id"))
)


async def job_view_row(conn: AsyncConnection, customer_id: int, uuid: str) -> Any:
    """The JOB_VIEW row of one of the customer's jobs, or None (autocommit connection)."""
    result = await conn.execute(JOB_VIEW, {"uuid": uuid, "customer_id": customer_id})
    return result.first()
