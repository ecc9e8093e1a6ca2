"""Inference services, their versions and events."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import Row, func, select
from sqlalchemy.orm import Session

from db.models import InferenceService, Job, ServiceEvent, ServiceVersion

RESOURCE_FIELDS = (
    "replicas",
    "min_replicas",
    "max_replicas",
    "cpu_cores",
    "memory_gb",
    "gpu_count",
)


def get_service(
    session: Session, uuid: str, *, customer_id: int | None = None, lock: bool = False
) -> InferenceService | None:
    """A service by public id, scoped to a customer when given."""
    query = select(InferenceService).where(InferenceService.uuid == uuid)
    if customer_id is not None:
        query = query.where(InferenceService.customer_id == customer_id)
    if lock:
        query = query.with_for_update()
    return session.scalar(query)


def lock_service(session: Session, service_id: int) -> InferenceService:
    """Load a service by primary key under a row lock."""
    service = session.scalar(
        select(InferenceService).where(InferenceService.id == service_id).with_for_update()
    )
    assert service is not None
    return service


def list_services(
    session: Session,
    customer_id: int,
    *,
    status: str | None = None,
    workspace_id: int | None = None,
    after_id: int | None = None,
    limit: int = 50,
) -> Sequence[InferenceService]:
    """A page of the customer's services, oldest first, after a cursor id."""
    query = select(InferenceService).where(InferenceService.customer_id == customer_id)
    if status:
        query = query.where(InferenceService.status == status)
    if workspace_id is not None:
        query = query.where(InferenceService.workspace_id == workspace_id)
    if after_id is not None:
        query = query.where(InferenceService.id > after_id)
    return session.scalars(query.order_by(InferenceService.id).limit(limit)).all()


def add_service(session: Session, **values: Any) -> InferenceService:
    """Insert a service row."""
    service = InferenceService(**values)
    session.add(service)
    session.flush()
    return service


def add_version(
    session: Session, service: InferenceService, number: int | None = None, **overrides: Any
) -> ServiceVersion:
    """Insert the next version of a service (or `number`), inheriting its model and resources."""
    if number is None:
        number = (
            session.scalar(
                select(func.max(ServiceVersion.number)).where(
                    ServiceVersion.service_id == service.id
                )
            )
            or 0
        ) + 1
    values: dict[str, Any] = {
        "model_path": service.model_path,
        "model_format": service.model_format,
        "framework": service.framework,
        **{field: getattr(service, field) for field in RESOURCE_FIELDS},
    }
    values.update({k: v for k, v in overrides.items() if v is not None})
    version = ServiceVersion(service_id=service.id, number=number, status="pending", **values)
    session.add(version)
    session.flush()
    return version


def get_version(session: Session, version_id: int) -> ServiceVersion | None:
    """A version by primary key."""
    return session.get(ServiceVersion, version_id)


def version_by_number(session: Session, service_id: int, number: int) -> ServiceVersion | None:
    """A version by its number within a service."""
    return session.scalar(
        select(ServiceVersion).where(
            ServiceVersion.service_id == service_id, ServiceVersion.number == number
        )
    )


def list_versions(session: Session, service_id: int) -> Sequence[ServiceVersion]:
    """All versions of a service, oldest first."""
    return session.scalars(
        select(ServiceVersion)
        .where(ServiceVersion.service_id == service_id)
        .order_by(ServiceVersion.number)
    ).all()


def live_versions(session: Session, service_id: int) -> Sequence[ServiceVersion]:
    """Versions that still have (or may have) objects in the runtime."""
    return session.scalars(
        select(ServiceVersion)
        .where(ServiceVersion.service_id == service_id, ServiceVersion.status != "removed")
        .order_by(ServiceVersion.number)
    ).all()


def serving_versions(session: Session, service_id: int) -> Sequence[ServiceVersion]:
    """Versions that currently receive traffic."""
    return session.scalars(
        select(ServiceVersion)
        .where(ServiceVersion.service_id == service_id, ServiceVersion.traffic_percent > 0)
        .order_by(ServiceVersion.number)
    ).all()


def list_events(session: Session, service_id: int, limit: int = 500) -> Sequence[ServiceEvent]:
    """The service's events, oldest first."""
    return session.scalars(
        select(ServiceEvent)
        .where(ServiceEvent.service_id == service_id)
        .order_by(ServiceEvent.at, ServiceEvent.id)
        .limit(limit)
    ).all()


def idle_serving_services(session: Session, limit: int = 500) -> Sequence[InferenceService]:
    """Services that should be serving and have no queued or running job (drift reconcile)."""
    busy = select(Job.service_id).where(Job.status.in_(("queued", "running")))
    return session.scalars(
        select(InferenceService)
        .where(
            InferenceService.status.in_(("running", "degraded")),
            InferenceService.id.not_in(busy),
        )
        .order_by(InferenceService.id)
        .limit(limit)
    ).all()


def versions_past_grace(session: Session, now: datetime, limit: int) -> list[tuple[int, int]]:
    """(version id, service id) of retired or failed versions whose grace period is over."""
    rows = session.execute(
        select(ServiceVersion.id, ServiceVersion.service_id)
        .where(
            ServiceVersion.status.in_(("retiring", "failed")),
            ServiceVersion.remove_after.is_not(None),
            ServiceVersion.remove_after <= now,
        )
        .limit(limit)
    ).all()
    return [(row[0], row[1]) for row in rows]


def lock_version_if_free(session: Session, version_id: int) -> ServiceVersion | None:
    """A version under a row lock, or None when someone else holds it."""
    return session.scalar(
        select(ServiceVersion)
        .where(ServiceVersion.id == version_id)
        .with_for_update(skip_locked=True)
    )


def versions_with_services(
    session: Session, version_ids: Sequence[int]
) -> list[tuple[ServiceVersion, InferenceService]]:
    """Versions joined with their services (batched readiness checks)."""
    rows = session.execute(
        select(ServiceVersion, InferenceService)
        .join(InferenceService, InferenceService.id == ServiceVersion.service_id)
        .where(ServiceVersion.id.in_(version_ids))
    ).all()
    return [(row[0], row[1]) for row in rows]


def rollback_target(session: Session, service: InferenceService) -> ServiceVersion | None:
    """The last version that served 100%, other than the newest version serving now."""
    serving = [v for v in live_versions(session, service.id) if v.traffic_percent > 0]
    current = max(serving, key=lambda v: v.number, default=None)
    candidates = [
        v
        for v in list_versions(session, service.id)
        if v.full_traffic_at is not None and (current is None or v.id != current.id)
    ]
    return max(candidates, key=lambda v: v.full_traffic_at, default=None)  # type: ignore[arg-type,return-value]


def services_with_versions_in(session: Session, statuses: tuple[str, ...]) -> Sequence[int]:
    """Ids of non-deleted services having a version in one of `statuses` (local supervision)."""
    return session.scalars(
        select(InferenceService.id)
        .where(
            InferenceService.status.not_in(("deleting", "deleted")),
            InferenceService.id.in_(
                select(ServiceVersion.service_id).where(ServiceVersion.status.in_(statuses))
            ),
        )
        .order_by(InferenceService.id)
    ).all()


def lock_service_if_free(session: Session, service_id: int) -> InferenceService | None:
    """The service under a row lock, or None when someone else (a job step) holds it."""
    return session.scalar(
        select(InferenceService)
        .where(InferenceService.id == service_id)
        .with_for_update(skip_locked=True)
    )


def versions_in(
    session: Session, service_id: int, statuses: tuple[str, ...]
) -> Sequence[ServiceVersion]:
    """The service's versions in one of `statuses`, oldest first."""
    return session.scalars(
        select(ServiceVersion)
        .where(ServiceVersion.service_id == service_id, ServiceVersion.status.in_(statuses))
        .order_by(ServiceVersion.number)
    ).all()


def gateway_snapshot(session: Session, uuid: str) -> Sequence[Row[Any]]:
    """The gateway's view of a service, read in ONE statement so a traffic change is seen whole.

    Rows of (name, status, api_key hash, version number, traffic_percent, endpoints): one per
    version with traffic, or a single row with NULL version columns when none has traffic;
    no rows for an unknown service.
    """
    return session.execute(
        select(
            InferenceService.name,
            InferenceService.status,
            InferenceService.api_key,
            ServiceVersion.number,
            ServiceVersion.traffic_percent,
            ServiceVersion.endpoints,
        )
        .select_from(InferenceService)
        .outerjoin(
            ServiceVersion,
            (ServiceVersion.service_id == InferenceService.id)
            & (ServiceVersion.traffic_percent > 0),
        )
        .where(InferenceService.uuid == uuid)
        .order_by(ServiceVersion.number)
    ).all()
