"""Service operations. Synchronous functions run inside the request's session via run_sync."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from api.errors import Conflict, NotFound, Unprocessable
from api.services.schemas import (
    CreateServiceRequest,
    EventOut,
    ResourceFields,
    ServiceOut,
    TrafficEntry,
    UpdateServiceRequest,
)
from db.domain import (
    FRAMEWORK_FORMATS,
    default_model_format,
    hash_secret,
    new_secret,
    new_service_uuid,
)
from db.models import InferenceService, Job
from db.repositories import customers as customers_repo
from db.repositories import jobs as jobs_repo
from db.repositories import services as services_repo
from db.settings import Settings
from db.states import transition_job, transition_service

SPEC_DEFAULTS = {
    "replicas": 1,
    "min_replicas": 1,
    "max_replicas": 10,
    "cpu_cores": 2,
    "memory_gb": 4,
    "gpu_count": 0,
}
RESOURCE_FIELDS = ("cpu_cores", "memory_gb", "gpu_count")


@dataclass
class Accepted:
    """What a mutating call answers: the service, its new job, maybe a one-time API key."""

    service: ServiceOut
    job: Job | None
    api_key: str | None = None


def service_out(
    session: Session,
    service: InferenceService,
    *,
    traffic: list[TrafficEntry] | None = None,
    active: Job | None = None,
) -> ServiceOut:
    """The public view of a service, with its traffic split and active job.

    Callers that already know the split and the active job (a service just created) pass
    them and save two queries.
    """
    if traffic is None:
        traffic = [
            TrafficEntry(version=v.number, percent=v.traffic_percent)
            for v in services_repo.serving_versions(session, service.id)
        ]
    if active is None:
        active = jobs_repo.active_job(session, service.id)
    return ServiceOut(
        service_id=service.uuid,
        name=service.name,
        description=service.description,
        workspace_id=service.workspace_id,
        model_path=service.model_path,
        model_format=service.model_format,
        framework=service.framework,
        replicas=service.replicas,
        min_replicas=service.min_replicas,
        max_replicas=service.max_replicas,
        autoscaling=service.max_replicas > service.min_replicas,
        cpu_cores=service.cpu_cores,
        memory_gb=service.memory_gb,
        gpu_count=service.gpu_count,
        cpu_target_percent=service.cpu_target_percent,
        endpoint_url=service.endpoint_url,
        status=service.status,
        failure=service.failure,
        current_replicas=service.current_replicas,
        desired_replicas=service.desired_replicas,
        traffic=traffic,
        active_job_id=active.uuid if active else None,
        created_at=service.created_at,
        updated_at=service.updated_at,
    )


def check_resources(values: dict[str, Any], settings: Settings) -> None:
    """Replica bounds and resource caps; a 422 names the first offending field."""
    if values["min_replicas"] > values["max_replicas"]:
        raise Unprocessable.field("min_replicas", "must be less than or equal to max_replicas")
    if not values["min_replicas"] <= values["replicas"] <= values["max_replicas"]:
        raise Unprocessable.field(
            "replicas", "must be between min_replicas and max_replicas (inclusive)"
        )
    caps = {
        "max_replicas": settings.max_replicas_cap,
        "cpu_cores": settings.max_cpu_cores,
        "memory_gb": settings.max_memory_gb,
        "gpu_count": settings.max_gpu_count,
    }
    for field, cap in caps.items():
        if values[field] > cap:
            raise Unprocessable.field(field, f"must be at most {cap}")


def check_model_format(framework: str, model_format: str | None) -> str | None:
    """The model format, defaulted from the framework; 422 when they disagree."""
    if model_format is None:
        return default_model_format(framework)
    if model_format not in FRAMEWORK_FORMATS[framework]:
        allowed = ", ".join(FRAMEWORK_FORMATS[framework])
        raise Unprocessable.field(
            "model_format", f"{framework} serves {allowed}, not {model_format}"
        )
    return model_format


def create_service(
    session: Session, customer_id: int, body: CreateServiceRequest, settings: Settings
) -> Accepted:
    """Insert the service, its first version and a deploy job in one transaction."""
    model_format = check_model_format(body.framework, body.model_format)
    values = {
        f: getattr(body, f) if getattr(body, f) is not None else d for f, d in SPEC_DEFAULTS.items()
    }
    if body.replicas is None:
        values["replicas"] = max(values["min_replicas"], min(1, values["max_replicas"]))
    check_resources(values, settings)
    if (
        body.workspace_id is not None
        and customers_repo.get_workspace(session, customer_id, body.workspace_id) is None
    ):
        raise Unprocessable.field("workspace_id", "no such workspace")
    api_key = new_secret("spk_")
    uuid = new_service_uuid()
    try:
        service = services_repo.add_service(
            session,
            uuid=uuid,
            customer_id=customer_id,
            workspace_id=body.workspace_id,
            name=body.name,
            description=body.description,
            model_path=body.model_path,
            model_format=model_format,
            framework=body.framework,
            cpu_target_percent=body.cpu_target_percent,
            endpoint_url=f"{settings.public_url.rstrip('/')}/inference/{uuid}",
            api_key=hash_secret(api_key),
            api_key_prefix=api_key[:8],
            status="pending",
            **values,
        )
    except IntegrityError as exc:
        # The partial unique index on live names decides (no racy pre-check).
        if "uq_inference_services_live_name" not in str(exc.orig):
            raise
        raise Conflict(f"a service named {body.name!r} already exists", code="name_taken") from None
    version = services_repo.add_version(session, service, number=1)
    job = jobs_repo.create_job(
        session,
        kind="deploy",
        service=service,
        version_id=version.id,
        max_attempts=settings.job_max_attempts,
        deadline_seconds=settings.job_deadline_seconds,
        callback_url=body.callback_url,
    )
    return Accepted(service_out(session, service, traffic=[], active=job), job, api_key)


def get_service(session: Session, customer_id: int, uuid: str) -> InferenceService:
    """The customer's service or 404 (another customer's service is not found either)."""
    service = services_repo.get_service(session, uuid, customer_id=customer_id)
    if service is None:
        raise NotFound(f"service {uuid} not found")
    return service


def lock_for_mutation(session: Session, customer_id: int, uuid: str) -> InferenceService:
    """Lock the service for a change; 409 when deleted or another job is active."""
    service = services_repo.get_service(session, uuid, customer_id=customer_id, lock=True)
    if service is None:
        raise NotFound(f"service {uuid} not found")
    if service.status in ("deleting", "deleted"):
        raise Conflict(f"service {uuid} is {service.status}", code="service_deleted")
    active = jobs_repo.active_job(session, service.id)
    if active is not None:
        raise Conflict(
            f"job {active.uuid} ({active.kind}) is still {active.status} for this service",
            details={"active_job_id": active.uuid},
            code="job_in_progress",
        )
    return service


def _replica_values(service: InferenceService, body: ResourceFields) -> dict[str, Any]:
    """Apply PATCH semantics: `replicas` alone means fixed replicas (no autoscaling)."""
    values = {f: getattr(service, f) for f in ("replicas", "min_replicas", "max_replicas")}
    given = body.model_fields_set
    if "replicas" in given and not given & {"min_replicas", "max_replicas"}:
        n = body.replicas
        assert n is not None
        values.update(replicas=n, min_replicas=n, max_replicas=n)
        return values
    for field in ("min_replicas", "max_replicas", "replicas"):
        if field in given and getattr(body, field) is not None:
            values[field] = getattr(body, field)
    if "replicas" not in given:
        values["replicas"] = min(
            max(values["replicas"], values["min_replicas"]), values["max_replicas"]
        )
    return values


def update_service(
    session: Session, customer_id: int, uuid: str, body: UpdateServiceRequest, settings: Settings
) -> Accepted:
    """PATCH: replicas → a scale job; cpu/memory/gpu → an update job (a new version)."""
    service = lock_for_mutation(session, customer_id, uuid)
    given = body.model_fields_set
    if "description" in given:
        service.description = body.description
    values = _replica_values(service, body)
    for field in RESOURCE_FIELDS:
        values[field] = (
            getattr(body, field)
            if field in given and getattr(body, field) is not None
            else getattr(service, field)
        )
    check_resources(values, settings)
    target = (
        body.cpu_target_percent if "cpu_target_percent" in given else service.cpu_target_percent
    )
    resources_changed = any(values[f] != getattr(service, f) for f in RESOURCE_FIELDS)
    replicas_changed = target != service.cpu_target_percent or any(
        values[f] != getattr(service, f) for f in ("replicas", "min_replicas", "max_replicas")
    )
    if not (resources_changed or replicas_changed):
        session.flush()
        return Accepted(service_out(session, service), None)
    for field in ("replicas", "min_replicas", "max_replicas"):
        setattr(service, field, values[field])
    service.cpu_target_percent = target
    kind, version_id = "scale", None
    payload: dict[str, Any] = {"replicas": values}
    if resources_changed:
        current = services_repo.serving_versions(session, service.id)
        base = max(current, key=lambda v: v.traffic_percent) if current else None
        version = services_repo.add_version(
            session,
            service,
            model_path=base.model_path if base else None,
            framework=base.framework if base else None,
            model_format=base.model_format if base else None,
            **{
                f: values[f] for f in (*RESOURCE_FIELDS, "replicas", "min_replicas", "max_replicas")
            },
        )
        kind, version_id = "update", version.id
        payload = {"canary_percent": 100, "reason": "resources changed"}
    job = jobs_repo.create_job(
        session,
        kind=kind,
        service=service,
        version_id=version_id,
        payload=payload,
        max_attempts=settings.job_max_attempts,
        deadline_seconds=settings.job_deadline_seconds,
        callback_url=body.callback_url,
    )
    return Accepted(service_out(session, service), job)


def delete_service(
    session: Session, customer_id: int, uuid: str, callback_url: str | None, settings: Settings
) -> Accepted:
    """DELETE: supersede queued jobs, ask running ones to stop, queue the delete job."""
    service = services_repo.get_service(session, uuid, customer_id=customer_id, lock=True)
    if service is None:
        raise NotFound(f"service {uuid} not found")
    if service.status == "deleted":
        raise Conflict(f"service {uuid} is already deleted", code="service_deleted")
    active = jobs_repo.active_jobs(session, service.id)
    existing = next((j for j in active if j.kind == "delete"), None)
    if existing is not None:
        return Accepted(service_out(session, service), existing)
    for job in active:
        if job.status == "queued":
            transition_job(job, "cancelled")
            job.error = {"reason": "Superseded", "message": "superseded by a delete request"}
        else:
            job.cancel_requested = True
    transition_service(session, service, "deleting", "delete requested")
    job = jobs_repo.create_job(
        session,
        kind="delete",
        service=service,
        max_attempts=settings.job_max_attempts,
        deadline_seconds=settings.job_deadline_seconds,
        callback_url=callback_url,
    )
    return Accepted(service_out(session, service), job)


def list_events(session: Session, customer_id: int, uuid: str) -> list[EventOut]:
    """The service's transitions and traffic changes, oldest first."""
    service = get_service(session, customer_id, uuid)
    job_uuids = {}
    events = services_repo.list_events(session, service.id)
    for event in events:
        if event.job_id and event.job_id not in job_uuids:
            job = jobs_repo.get_job_by_id(session, event.job_id)
            job_uuids[event.job_id] = job.uuid if job else None
    return [
        EventOut(
            from_status=e.from_status,
            to_status=e.to_status,
            reason=e.reason,
            at=e.at,
            kind=e.kind,
            details=e.details,
            job_id=job_uuids.get(e.job_id) if e.job_id else None,
        )
        for e in events
    ]


def rotate_api_key(session: Session, customer_id: int, uuid: str) -> str:
    """A new API key for the service; the old one stops working at once."""
    service = services_repo.get_service(session, uuid, customer_id=customer_id, lock=True)
    if service is None or service.status == "deleted":
        raise NotFound(f"service {uuid} not found")
    api_key = new_secret("spk_")
    service.api_key = hash_secret(api_key)
    service.api_key_prefix = api_key[:8]
    session.flush()
    return api_key
