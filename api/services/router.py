"""/api/inference/services: the REST resource users deploy models through."""

from __future__ import annotations

from typing import Literal

from fastapi import APIRouter, Query, Request, Response
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from api import gateway
from api.deps import CurrentCustomer, SessionDep
from api.errors import error_responses
from api.pagination import decode_cursor, encode_cursor
from api.queue import enqueue_job
from api.services import service
from api.services.schemas import (
    ApiKeyRotated,
    CreateServiceRequest,
    EventOut,
    JobAccepted,
    ServiceAccepted,
    ServiceOut,
    ServicePage,
    UpdateServiceRequest,
)
from api.validation import DB_ID_MAX, PathId
from api.webhooks.service import guard_url
from db.repositories import services as services_repo
from db.settings import get_settings

router = APIRouter(
    prefix="/api/inference/services",
    tags=["services"],
    responses=error_responses(401, 422, 503),
)
ServiceStatus = Literal[
    "pending",
    "deploying",
    "running",
    "scaling",
    "updating",
    "degraded",
    "failed",
    "deleting",
    "deleted",
]


def accepted(request: Request, body: ServiceAccepted | JobAccepted) -> JSONResponse:
    """202 with Location pointing at the job."""
    location = str(request.url_for("get_job", job_id=body.job_id))
    return JSONResponse(
        body.model_dump(mode="json", exclude_none=False),
        status_code=202,
        headers={"Location": location},
    )


def job_accepted(request: Request, service_id: str, result: service.Accepted) -> JSONResponse:
    """202 for a mutation of an existing service: its new job and the service view."""
    assert result.job is not None
    return accepted(
        request,
        JobAccepted(
            service_id=service_id,
            job_id=result.job.uuid,
            status=result.service.status,
            service=result.service,
        ),
    )


async def guard_callback(url: str | None) -> None:
    """422 naming `callback_url` unless the SSRF guard accepts it (DNS off the event loop)."""
    if url is not None:
        await run_in_threadpool(guard_url, "callback_url", url, get_settings())


async def commit_and_enqueue(
    request: Request, session: SessionDep, result: service.Accepted
) -> None:
    """Commit the request's transaction, then hand the new job to the queue."""
    job = result.job
    await session.commit()
    if job is not None and job.status == "queued":
        await enqueue_job(request.app.state.producer, job.id, job.uuid)


@router.post(
    "",
    status_code=202,
    response_model=ServiceAccepted,
    responses=error_responses(400, 409, 413, described={409: "name taken"}),
)
async def create_service(
    body: CreateServiceRequest, request: Request, principal: CurrentCustomer, session: SessionDep
) -> JSONResponse:
    """Accept a deployment: the service starts `pending`; poll the job or the service."""
    await guard_callback(body.callback_url)
    settings = get_settings()
    result = await session.run_sync(service.create_service, principal.customer_id, body, settings)
    await commit_and_enqueue(request, session, result)
    assert result.job is not None
    out = ServiceAccepted(
        service_id=result.service.service_id,
        job_id=result.job.uuid,
        status=result.service.status,
        endpoint_url=result.service.endpoint_url,
        api_key=result.api_key,
        service=result.service,
    )
    return accepted(request, out)


@router.get("", response_model=ServicePage)
async def list_services(
    principal: CurrentCustomer,
    session: SessionDep,
    status: ServiceStatus | None = None,
    workspace_id: int | None = Query(None, ge=1, le=DB_ID_MAX),
    cursor: str | None = Query(None, max_length=200),
    limit: int = Query(50, ge=1, le=500),
) -> ServicePage:
    """The caller's services, oldest first."""
    after = decode_cursor(cursor)

    def run(s):  # type: ignore[no-untyped-def]
        rows = services_repo.list_services(
            s,
            principal.customer_id,
            status=status,
            workspace_id=workspace_id,
            after_id=after,
            limit=limit + 1,
        )
        page = list(rows[:limit])
        return ServicePage(
            items=[service.service_out(s, r) for r in page],
            next_cursor=encode_cursor(page[-1].id) if len(rows) > limit else None,
        )

    return await session.run_sync(run)


@router.get("/{service_id}", response_model=ServiceOut, responses=error_responses(404))
async def get_service(
    service_id: PathId, principal: CurrentCustomer, session: SessionDep
) -> ServiceOut:
    """One service with its traffic split and active job."""
    return await session.run_sync(
        lambda s: service.service_out(s, service.get_service(s, principal.customer_id, service_id))
    )


@router.patch(
    "/{service_id}",
    response_model=JobAccepted,
    responses={
        200: {"model": ServiceOut},
        **error_responses(400, 404, 409, 413, described={409: "another job is active"}),
    },
    status_code=202,
)
async def update_service(
    service_id: PathId,
    body: UpdateServiceRequest,
    request: Request,
    principal: CurrentCustomer,
    session: SessionDep,
) -> Response:
    """Replicas → a scale job; cpu/memory/gpu → an update job (a new version, no downtime)."""
    await guard_callback(body.callback_url)
    settings = get_settings()
    result = await session.run_sync(
        service.update_service, principal.customer_id, service_id, body, settings
    )
    await commit_and_enqueue(request, session, result)
    if result.job is None:
        return JSONResponse(result.service.model_dump(mode="json"), status_code=200)
    return job_accepted(request, service_id, result)


@router.delete(
    "/{service_id}",
    response_model=JobAccepted,
    status_code=202,
    responses=error_responses(404, 409, described={409: "already deleted"}),
)
async def delete_service(
    service_id: PathId,
    request: Request,
    principal: CurrentCustomer,
    session: SessionDep,
    callback_url: str | None = Query(None, max_length=2048),
) -> JSONResponse:
    """Queue a delete job; the service ends `deleted` and its name becomes free."""
    await guard_callback(callback_url)
    settings = get_settings()
    result = await session.run_sync(
        service.delete_service, principal.customer_id, service_id, callback_url, settings
    )
    await commit_and_enqueue(request, session, result)
    gateway.invalidate(service_id)  # inference answers 404 from now on in this process
    return job_accepted(request, service_id, result)


@router.get("/{service_id}/events", response_model=list[EventOut], responses=error_responses(404))
async def list_events(
    service_id: PathId, principal: CurrentCustomer, session: SessionDep
) -> list[EventOut]:
    """Every status transition and traffic change, oldest first."""
    return await session.run_sync(service.list_events, principal.customer_id, service_id)


@router.post(
    "/{service_id}/api-key/rotate",
    response_model=ApiKeyRotated,
    responses=error_responses(404, 409),
)
async def rotate_api_key(
    service_id: PathId, request: Request, principal: CurrentCustomer, session: SessionDep
) -> ApiKeyRotated:
    """A new API key, shown once; the old key stops working at once."""
    api_key = await session.run_sync(service.rotate_api_key, principal.customer_id, service_id)
    await session.commit()
    gateway.invalidate(service_id)  # at once here; other API processes within the route TTL
    return ApiKeyRotated(service_id=service_id, api_key=api_key)
