"""/api/inference/services/{id}/versions, promote and rollback."""

from __future__ import annotations

from fastapi import APIRouter, Body, Request
from fastapi.responses import JSONResponse

from api.deps import CurrentCustomer, SessionDep
from api.errors import error_responses
from api.services.router import commit_and_enqueue, guard_callback, job_accepted
from api.services.schemas import JobAccepted
from api.validation import PathId
from api.versions import service
from api.versions.schemas import CreateVersionRequest, TrafficChangeRequest, VersionOut
from db.settings import get_settings

router = APIRouter(
    prefix="/api/inference/services/{service_id}",
    tags=["versions"],
    responses=error_responses(401, 404, 422, 503),
)
CHANGE_ERRORS = error_responses(400, 409, 413)


@router.post(
    "/versions",
    response_model=JobAccepted,
    status_code=202,
    responses=error_responses(
        400, 409, 413, described={409: "another job is active or not running"}
    ),
)
async def create_version(
    service_id: PathId,
    body: CreateVersionRequest,
    request: Request,
    principal: CurrentCustomer,
    session: SessionDep,
) -> JSONResponse:
    """Deploy a new version beside the current one; it receives canary_percent once ready."""
    await guard_callback(body.callback_url)
    result = await session.run_sync(
        service.create_version, principal.customer_id, service_id, body, get_settings()
    )
    await commit_and_enqueue(request, session, result)
    return job_accepted(request, service_id, result)


@router.get("/versions", response_model=list[VersionOut])
async def list_versions(
    service_id: PathId, principal: CurrentCustomer, session: SessionDep
) -> list[VersionOut]:
    """Versions with status, traffic percent, replicas and times."""
    return await session.run_sync(service.list_versions, principal.customer_id, service_id)


@router.post(
    "/versions/{number}/promote",
    response_model=JobAccepted,
    status_code=202,
    responses=CHANGE_ERRORS,
)
async def promote(
    service_id: PathId,
    number: int,
    request: Request,
    principal: CurrentCustomer,
    session: SessionDep,
    body: TrafficChangeRequest | None = Body(None),
) -> JSONResponse:
    """Give the version 100% of the traffic; the others are removed after the grace period."""
    callback = body.callback_url if body else None
    await guard_callback(callback)
    result = await session.run_sync(
        service.promote, principal.customer_id, service_id, number, callback, get_settings()
    )
    await commit_and_enqueue(request, session, result)
    return job_accepted(request, service_id, result)


@router.post("/rollback", response_model=JobAccepted, status_code=202, responses=CHANGE_ERRORS)
async def rollback(
    service_id: PathId,
    request: Request,
    principal: CurrentCustomer,
    session: SessionDep,
    body: TrafficChangeRequest | None = Body(None),
) -> JSONResponse:
    """Return all traffic to the last version that served 100%; the canary is removed."""
    callback = body.callback_url if body else None
    await guard_callback(callback)
    result = await session.run_sync(
        service.rollback, principal.customer_id, service_id, callback, get_settings()
    )
    await commit_and_enqueue(request, session, result)
    return job_accepted(request, service_id, result)
