"""Traffic splits between versions, changed in one transaction so the gateway never sees half."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta

from sqlalchemy.orm import Session

from db.models import InferenceService, ServiceVersion
from db.repositories import services as services_repo
from db.states import record_traffic_event, utcnow


def set_traffic(
    session: Session,
    service: InferenceService,
    target: ServiceVersion,
    percent: int,
    *,
    grace_seconds: float,
    reason: str,
    job_id: int | None = None,
) -> dict[int, int]:
    """Give `target` `percent`; the primary keeps the rest; every other version retires."""
    versions = services_repo.live_versions(session, service.id)
    others = [v for v in versions if v.id != target.id]
    primary = _primary(others) if percent < 100 else None
    now = utcnow()
    for version in others:
        if version is primary:
            version.traffic_percent = 100 - percent
        else:
            version.traffic_percent = 0
            if version.status in ("ready", "deploying", "pending"):
                version.status = "retiring"
                version.remove_after = now + timedelta(seconds=grace_seconds)
    target.traffic_percent = percent
    target.status = "ready"
    target.remove_after = None
    if percent == 100:
        target.full_traffic_at = now
        _mirror_primary(service, target)
    split = {v.number: v.traffic_percent for v in versions if v.traffic_percent > 0}
    record_traffic_event(session, service, split, reason, job_id=job_id)
    return split


def _primary(versions: Sequence[ServiceVersion]) -> ServiceVersion | None:
    """The version that keeps the remaining traffic: the largest share, newest on ties."""
    serving = [v for v in versions if v.traffic_percent > 0 and v.status == "ready"]
    if not serving:
        return None
    return max(serving, key=lambda v: (v.traffic_percent, v.number))


def _mirror_primary(service: InferenceService, version: ServiceVersion) -> None:
    """The service row describes the version that serves 100%."""
    service.model_path = version.model_path
    service.model_format = version.model_format
    service.framework = version.framework
    service.cpu_cores = version.cpu_cores
    service.memory_gb = version.memory_gb
    service.gpu_count = version.gpu_count
