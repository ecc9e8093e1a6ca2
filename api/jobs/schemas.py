"""Job bodies."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel


class AttemptOut(BaseModel):
    number: int
    status: str
    error: dict[str, Any] | None
    started_at: datetime
    finished_at: datetime | None


class JobOut(BaseModel):
    job_id: str
    kind: str
    status: str
    service_id: str
    version: int | None
    attempts: list[AttemptOut]
    attempt_count: int
    max_attempts: int
    error: dict[str, Any] | None
    payload: dict[str, Any]
    created_at: datetime
    updated_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    deadline_at: datetime | None
    customer_id: int | None = None


class JobPage(BaseModel):
    items: list[JobOut]
    next_cursor: str | None
