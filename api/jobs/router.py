"""GET /api/jobs and /api/jobs/{job_id}."""

from __future__ import annotations

from typing import Literal

from fastapi import APIRouter, Query

from api.deps import CurrentCustomer, ReadConnection, SessionDep
from api.errors import error_responses
from api.jobs import service
from api.jobs.schemas import JobOut, JobPage
from api.validation import PUBLIC_ID_PATTERN, PathId

router = APIRouter(prefix="/api/jobs", tags=["jobs"], responses=error_responses(401, 422, 503))
JobStatus = Literal["queued", "running", "succeeded", "failed", "cancelled"]


@router.get("", response_model=JobPage)
async def list_jobs(
    principal: CurrentCustomer,
    session: SessionDep,
    service_id: str | None = Query(None, max_length=64, pattern=PUBLIC_ID_PATTERN),
    status: JobStatus | None = None,
    cursor: str | None = Query(None, max_length=200),
    limit: int = Query(50, ge=1, le=500),
) -> JobPage:
    """The caller's jobs, oldest first, filtered by service and status."""
    return await session.run_sync(
        lambda s: service.list_jobs(
            s,
            customer_id=principal.customer_id,
            service_uuid=service_id,
            status=status,
            cursor=cursor,
            limit=limit,
        )
    )


@router.get("/{job_id}", response_model=JobOut, responses=error_responses(404))
async def get_job(job_id: PathId, principal: CurrentCustomer, conn: ReadConnection) -> JobOut:
    """One job with its attempts (what clients poll: one autocommit statement)."""
    return await service.get_job(conn, principal.customer_id, job_id)
