"""Version operations (sync, run inside the request session)."""

from __future__ import annotations

from sqlalchemy.orm import Session

from api.errors import Conflict, NotFound
from api.services.service import (
    Accepted,
    check_model_format,
    check_resources,
    get_service,
    lock_for_mutation,
    service_out,
)
from api.versions.schemas import CreateVersionRequest, VersionOut
from db.models import InferenceService, ServiceVersion
from db.repositories import jobs as jobs_repo
from db.repositories import services as services_repo
from db.settings import Settings

VERSION_RESOURCE_FIELDS = (
    "replicas",
    "min_replicas",
    "max_replicas",
    "cpu_cores",
    "memory_gb",
    "gpu_count",
)


def version_out(version: ServiceVersion) -> VersionOut:
    """The public view of a version."""
    return VersionOut(
        version=version.number,
        status=version.status,
        traffic_percent=version.traffic_percent,
        serving=version.traffic_percent > 0,
        model_path=version.model_path,
        framework=version.framework,
        model_format=version.model_format,
        replicas=version.replicas,
        min_replicas=version.min_replicas,
        max_replicas=version.max_replicas,
        cpu_cores=version.cpu_cores,
        memory_gb=version.memory_gb,
        gpu_count=version.gpu_count,
        failure=version.failure,
        created_at=version.created_at,
        ready_at=version.ready_at,
        full_traffic_at=version.full_traffic_at,
        remove_after=version.remove_after,
    )


def list_versions(session: Session, customer_id: int, uuid: str) -> list[VersionOut]:
    """Every version of the service, oldest first."""
    service = get_service(session, customer_id, uuid)
    return [version_out(v) for v in services_repo.list_versions(session, service.id)]


def _require_serving(session: Session, service: InferenceService) -> None:
    if service.status not in ("running", "degraded") or not services_repo.serving_versions(
        session, service.id
    ):
        raise Conflict(
            f"service {service.uuid} is {service.status}; versions change a running service",
            code="service_not_running",
        )


def create_version(
    session: Session, customer_id: int, uuid: str, body: CreateVersionRequest, settings: Settings
) -> Accepted:
    """Deploy a new version beside the current one; it gets canary_percent once ready."""
    service = lock_for_mutation(session, customer_id, uuid)
    _require_serving(session, service)
    framework = body.framework or service.framework
    model_format = check_model_format(
        framework,
        body.model_format
        if body.model_format
        else (service.model_format if framework == service.framework else None),
    )
    values = {
        f: getattr(body, f) if getattr(body, f) is not None else getattr(service, f)
        for f in VERSION_RESOURCE_FIELDS
    }
    check_resources(values, settings)
    version = services_repo.add_version(
        session,
        service,
        model_path=body.model_path,
        framework=framework,
        model_format=model_format,
        **values,
    )
    job = jobs_repo.create_job(
        session,
        kind="update",
        service=service,
        version_id=version.id,
        payload={"canary_percent": body.canary_percent},
        max_attempts=settings.job_max_attempts,
        deadline_seconds=settings.job_deadline_seconds,
        callback_url=body.callback_url,
    )
    return Accepted(service_out(session, service), job)


def promote(
    session: Session,
    customer_id: int,
    uuid: str,
    number: int,
    callback_url: str | None,
    settings: Settings,
) -> Accepted:
    """Give version `number` 100% of the traffic; the others retire after the grace period."""
    service = lock_for_mutation(session, customer_id, uuid)
    version = services_repo.version_by_number(session, service.id, number)
    if version is None:
        raise NotFound(f"version {number} of service {uuid} not found")
    if version.status == "failed":
        raise Conflict(
            f"version {number} failed; deploy a new version instead", code="version_failed"
        )
    if version.traffic_percent == 100:
        raise Conflict(f"version {number} already serves 100%", code="already_promoted")
    return _traffic_job(session, service, version, "promote", callback_url, settings)


def rollback(
    session: Session, customer_id: int, uuid: str, callback_url: str | None, settings: Settings
) -> Accepted:
    """Send all traffic back to the last version that served 100%."""
    service = lock_for_mutation(session, customer_id, uuid)
    target = services_repo.rollback_target(session, service)
    if target is None:
        raise Conflict("no earlier version served 100% of the traffic", code="nothing_to_roll_back")
    return _traffic_job(session, service, target, "rollback", callback_url, settings)


def _traffic_job(
    session: Session,
    service: InferenceService,
    version: ServiceVersion,
    kind: str,
    callback_url: str | None,
    settings: Settings,
) -> Accepted:
    _require_serving(session, service)
    job = jobs_repo.create_job(
        session,
        kind=kind,
        service=service,
        version_id=version.id,
        payload={"canary_percent": 100, "version": version.number},
        max_attempts=settings.job_max_attempts,
        deadline_seconds=settings.job_deadline_seconds,
        callback_url=callback_url,
    )
    return Accepted(service_out(session, service), job)
