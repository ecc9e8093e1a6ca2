"""/api/admin: every customer's failed jobs and webhook deliveries, retry, cancel, redeliver.

Every route sits behind the router-level admin dependency: customer tokens get 403,
requests without a token 401.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import JSONResponse
from sqlalchemy.orm import Session

from api.admin import service
from api.admin.schemas import (
    DeliveryOut,
    DeliveryPage,
    DeliveryStatus,
    JobKind,
    JobStatus,
    RetryFilter,
    RetryResult,
)
from api.deps import SessionDep, admin_principal
from api.errors import error_responses
from api.jobs.schemas import JobOut, JobPage
from api.queue import enqueue_job
from api.validation import DB_ID_MAX, PathId
from db.models import Job
from db.settings import get_settings

router = APIRouter(
    prefix="/api/admin",
    tags=["admin"],
    dependencies=[Depends(admin_principal)],
    responses=error_responses(401, 403, 422, 503),
)
CONFLICT = error_responses(404, 409, described={409: "the job is not in a state that allows this"})


async def enqueue_all(request: Request, jobs: Sequence[Job]) -> None:
    """After the commit: hand re-queued jobs to the broker (the dispatcher covers a failure)."""
    for job in jobs:
        await enqueue_job(request.app.state.producer, job.id, job.uuid)


def job_accepted(request: Request, view: JobOut) -> JSONResponse:
    """202 with the job view and its Location."""
    location = str(request.url_for("admin_get_job", job_id=view.job_id))
    return JSONResponse(
        view.model_dump(mode="json"), status_code=202, headers={"Location": location}
    )


@router.get("/jobs", response_model=JobPage)
async def admin_list_jobs(
    session: SessionDep,
    status: JobStatus | None = None,
    kind: JobKind | None = None,
    customer_id: int | None = Query(None, ge=1, le=DB_ID_MAX),
    since: datetime | None = Query(None, description="ISO-8601; jobs created at or after it."),
    cursor: str | None = Query(None, max_length=200),
    limit: int = Query(50, ge=1, le=500),
) -> JobPage:
    """Jobs of every customer, oldest first, with their error and attempts."""
    return await session.run_sync(
        lambda s: service.list_jobs(
            s,
            status=status,
            kind=kind,
            customer_id=customer_id,
            since=since,
            cursor=cursor,
            limit=limit,
        )
    )


@router.get("/jobs/{job_id}", response_model=JobOut, responses=error_responses(404))
async def admin_get_job(job_id: PathId, session: SessionDep) -> JobOut:
    """Any customer's job with its attempts."""
    return await session.run_sync(lambda s: service.job_view(s, service.get_job(s, job_id)))


@router.post(
    "/jobs/retry",
    response_model=RetryResult,
    status_code=202,
    responses=error_responses(400, 409, 413),
)
async def admin_retry_jobs(body: RetryFilter, request: Request, session: SessionDep) -> RetryResult:
    """Retry every matching failed job that can be retried; the rest come back with a reason."""
    settings = get_settings()
    result, jobs = await session.run_sync(service.retry_matching, body, settings)
    await session.commit()
    await enqueue_all(request, jobs)
    return result


@router.post("/jobs/{job_id}/retry", response_model=JobOut, status_code=202, responses=CONFLICT)
async def admin_retry_job(job_id: PathId, request: Request, session: SessionDep) -> JSONResponse:
    """Run a failed job again as a new attempt; its history is kept."""
    settings = get_settings()

    def run(s: Session) -> tuple[Job, JobOut]:
        job = service.retry_job(s, job_id, settings)
        return job, service.job_view(s, job)

    job, view = await session.run_sync(run)
    await session.commit()
    await enqueue_all(request, [job])
    return job_accepted(request, view)


@router.post("/jobs/{job_id}/cancel", response_model=JobOut, status_code=202, responses=CONFLICT)
async def admin_cancel_job(job_id: PathId, request: Request, session: SessionDep) -> JSONResponse:
    """Cancel a queued job, or ask a running one to stop at its next step."""
    view = await session.run_sync(lambda s: service.job_view(s, service.cancel_job(s, job_id)))
    await session.commit()
    return job_accepted(request, view)


@router.get("/webhook-deliveries", response_model=DeliveryPage)
async def admin_list_deliveries(
    session: SessionDep,
    status: DeliveryStatus | None = None,
    customer_id: int | None = Query(None, ge=1, le=DB_ID_MAX),
    cursor: str | None = Query(None, max_length=200),
    limit: int = Query(50, ge=1, le=500),
) -> DeliveryPage:
    """Webhook deliveries of every customer, newest first, with their attempts."""
    return await session.run_sync(
        lambda s: service.list_deliveries(
            s, status=status, customer_id=customer_id, cursor=cursor, limit=limit
        )
    )


@router.post(
    "/webhook-deliveries/{delivery_id}/redeliver",
    response_model=DeliveryOut,
    status_code=202,
    responses=error_responses(
        404, 409, described={409: "already pending, or its endpoint is gone"}
    ),
)
async def admin_redeliver(delivery_id: PathId, session: SessionDep) -> DeliveryOut:
    """Queue a failed or succeeded delivery again: same webhook-id, attempts kept.

    The webhook dispatcher sends it (it is due at once)."""
    view = await session.run_sync(
        lambda s: service.delivery_view(s, service.redeliver(s, delivery_id))
    )
    await session.commit()
    return view
