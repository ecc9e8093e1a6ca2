"""Version bodies."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, Field

from api.services.schemas import ResourceFields
from api.validation import CallbackUrl, Framework, ModelFormat, ModelPath


class CreateVersionRequest(ResourceFields):
    model_path: ModelPath
    framework: Framework | None = None
    model_format: ModelFormat | None = None
    canary_percent: int = Field(100, ge=0, le=100)
    callback_url: CallbackUrl | None = None


class TrafficChangeRequest(BaseModel):
    callback_url: CallbackUrl | None = None


class VersionOut(BaseModel):
    version: int
    status: str
    traffic_percent: int
    serving: bool
    model_path: str
    framework: str
    model_format: str | None
    replicas: int
    min_replicas: int
    max_replicas: int
    cpu_cores: int
    memory_gb: int
    gpu_count: int
    failure: dict[str, Any] | None
    created_at: datetime
    ready_at: datetime | None
    full_traffic_at: datetime | None
    remove_after: datetime | None
