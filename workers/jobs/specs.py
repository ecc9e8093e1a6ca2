"""Build runtime specs from database rows."""

from __future__ import annotations

from db.models import InferenceService, ServiceVersion
from db.settings import get_settings
from workers.runtime.base import VersionSpec


def version_spec(service: InferenceService, version: ServiceVersion) -> VersionSpec:
    """The runtime spec of one version of a service."""
    return VersionSpec(
        service_uuid=service.uuid,
        service_name=service.name,
        customer_id=service.customer_id,
        version=version.number,
        framework=version.framework,
        model_path=version.model_path,
        model_format=version.model_format,
        replicas=version.replicas,
        min_replicas=version.min_replicas,
        max_replicas=version.max_replicas,
        cpu_cores=version.cpu_cores,
        memory_gb=version.memory_gb,
        gpu_count=version.gpu_count,
        cpu_target_percent=service.cpu_target_percent or get_settings().hpa_cpu_target_percent,
    )
