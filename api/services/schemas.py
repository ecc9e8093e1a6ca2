"""Request and response bodies for services."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from api.validation import (
    CallbackUrl,
    DbId,
    Description,
    Framework,
    ModelFormat,
    ModelPath,
    NonNegativeInt,
    PositiveInt,
    Replicas,
    ServiceName,
)


class ResourceFields(BaseModel):
    """Replica bounds and resources; range checks against the caps happen in the service."""

    model_config = ConfigDict(extra="forbid")

    replicas: Replicas | None = None
    min_replicas: Replicas | None = None
    max_replicas: PositiveInt | None = None
    cpu_cores: PositiveInt | None = None
    memory_gb: PositiveInt | None = None
    gpu_count: NonNegativeInt | None = None
    cpu_target_percent: int | None = Field(None, ge=1, le=100)


class CreateServiceRequest(ResourceFields):
    name: ServiceName
    model_path: ModelPath
    framework: Framework
    model_format: ModelFormat | None = None
    description: Description | None = None
    workspace_id: DbId | None = None
    callback_url: CallbackUrl | None = None


class UpdateServiceRequest(ResourceFields):
    description: Description | None = None
    callback_url: CallbackUrl | None = None


class TrafficEntry(BaseModel):
    version: int
    percent: int


class ServiceOut(BaseModel):
    service_id: str
    name: str
    description: str | None
    workspace_id: int | None
    model_path: str
    model_format: str | None
    framework: str
    replicas: int
    min_replicas: int
    max_replicas: int
    autoscaling: bool
    cpu_cores: int
    memory_gb: int
    gpu_count: int
    cpu_target_percent: int | None
    endpoint_url: str | None
    status: str
    failure: dict[str, Any] | None
    current_replicas: int | None
    desired_replicas: int | None
    traffic: list[TrafficEntry]
    active_job_id: str | None
    created_at: datetime
    updated_at: datetime


class ServiceAccepted(BaseModel):
    service_id: str
    job_id: str
    status: str
    endpoint_url: str | None
    api_key: str | None = None
    service: ServiceOut


class JobAccepted(BaseModel):
    service_id: str
    job_id: str
    status: str
    service: ServiceOut


class ServicePage(BaseModel):
    items: list[ServiceOut]
    next_cursor: str | None


class EventOut(BaseModel):
    from_status: str | None
    to_status: str | None
    reason: str | None
    at: datetime
    kind: str
    details: dict[str, Any] | None = None
    job_id: str | None = None


class ApiKeyRotated(BaseModel):
    service_id: str
    api_key: str
