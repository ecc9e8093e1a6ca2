"""Job views."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncConnection
from sqlalchemy.orm import Session

from api.errors import NotFound
from api.jobs.schemas import AttemptOut, JobOut, JobPage
from api.pagination import decode_cursor, encode_cursor
from db.models import InferenceService, Job, JobAttempt, ServiceVersion
from db.repositories import jobs as jobs_repo
from db.repositories import services as services_repo


def jobs_out(session: Session, jobs: Sequence[Job], *, with_customer: bool = False) -> list[JobOut]:
    """Public views of jobs, with their attempts, in three queries whatever the count."""
    if not jobs:
        return []
    ids = [j.id for j in jobs]
    attempts: dict[int, list[AttemptOut]] = {}
    for attempt in session.scalars(
        select(JobAttempt).where(JobAttempt.job_id.in_(ids)).order_by(JobAttempt.number)
    ):
        attempts.setdefault(attempt.job_id, []).append(
            AttemptOut(
                number=attempt.number,
                status=attempt.status,
                error=attempt.error,
                started_at=attempt.started_at,
                finished_at=attempt.finished_at,
            )
        )
    services: dict[int, str] = {
        row[0]: row[1]
        for row in session.execute(
            select(InferenceService.id, InferenceService.uuid).where(
                InferenceService.id.in_({j.service_id for j in jobs})
            )
        )
    }
    version_ids = {j.version_id for j in jobs if j.version_id}
    versions: dict[int, int] = {}
    if version_ids:
        versions = {
            row[0]: row[1]
            for row in session.execute(
                select(ServiceVersion.id, ServiceVersion.number).where(
                    ServiceVersion.id.in_(version_ids)
                )
            )
        }
    return [
        JobOut(
            job_id=j.uuid,
            kind=j.kind,
            status=j.status,
            service_id=services[j.service_id],
            version=versions.get(j.version_id) if j.version_id else None,
            attempts=attempts.get(j.id, []),
            attempt_count=j.attempts,
            max_attempts=j.max_attempts,
            error=j.error,
            payload=j.payload,
            created_at=j.created_at,
            updated_at=j.updated_at,
            started_at=j.started_at,
            finished_at=j.finished_at,
            deadline_at=j.deadline_at,
            customer_id=j.customer_id if with_customer else None,
        )
        for j in jobs
    ]


# GET /api/jobs/{id} is what clients poll: one round trip (the job, its service id, version
# number and attempts as JSON), Core tables so that no ORM objects are built.


def job_view(row: Any) -> JobOut:
    """The public view of one `jobs_repo.JOB_VIEW` row."""
    return JobOut(
        job_id=row.uuid,
        kind=row.kind,
        status=row.status,
        service_id=row.service_uuid,
        version=row.version_number,
        attempts=[AttemptOut.model_validate(a) for a in row.attempts_json],
        attempt_count=row.attempts,
        max_attempts=row.max_attempts,
        error=row.error,
        payload=row.payload,
        created_at=row.created_at,
        updated_at=row.updated_at,
        started_at=row.started_at,
        finished_at=row.finished_at,
        deadline_at=row.deadline_at,
    )


async def get_job(conn: AsyncConnection, customer_id: int, uuid: str) -> JobOut:
    """One of the customer's jobs, or 404 (one statement; the hot path of polling clients)."""
    row = await jobs_repo.job_view_row(conn, customer_id, uuid)
    if row is None:
        raise NotFound(f"job {uuid} not found")
    return job_view(row)


def list_jobs(
    session: Session,
    *,
    customer_id: int | None,
    service_uuid: str | None = None,
    status: str | None = None,
    kind: str | None = None,
    since: datetime | None = None,
    cursor: str | None = None,
    limit: int = 50,
    with_customer: bool = False,
) -> JobPage:
    """A page of jobs (a customer's, or everyone's for admins)."""
    service_id = None
    if service_uuid:
        service = services_repo.get_service(session, service_uuid, customer_id=customer_id)
        if service is None:
            return JobPage(items=[], next_cursor=None)
        service_id = service.id
    jobs = jobs_repo.list_jobs(
        session,
        customer_id=customer_id,
        service_id=service_id,
        status=status,
        kind=kind,
        since=since,
        after_id=decode_cursor(cursor),
        limit=limit + 1,
    )
    page = list(jobs[:limit])
    next_cursor = encode_cursor(page[-1].id) if len(jobs) > limit else None
    return JobPage(
        items=jobs_out(session, page, with_customer=with_customer), next_cursor=next_cursor
    )
