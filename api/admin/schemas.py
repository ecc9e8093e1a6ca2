"""Admin request and response bodies."""

from __future__ import annotations

from datetime import datetime
from typing import Literal, get_args

from pydantic import BaseModel, ConfigDict, Field

from api.validation import DbId, PublicId
from api.webhooks.schemas import AttemptOut

JobKind = Literal["deploy", "scale", "update", "promote", "rollback", "delete"]
JobStatus = Literal["queued", "running", "succeeded", "failed", "cancelled"]
DeliveryStatus = Literal["pending", "succeeded", "failed"]
JOB_KINDS: tuple[str, ...] = get_args(JobKind)
JOB_STATUSES: tuple[str, ...] = get_args(JobStatus)
DELIVERY_STATUSES: tuple[str, ...] = get_args(DeliveryStatus)


class RetryFilter(BaseModel):
    """Which failed jobs to retry; unknown fields are refused so a typo never widens the match."""

    model_config = ConfigDict(extra="forbid")

    status: Literal["failed"] = "failed"
    kind: JobKind | None = None
    customer_id: DbId | None = None
    since: datetime | None = None
    job_ids: list[PublicId] | None = Field(None, max_length=1000)
    limit: int = Field(200, ge=1, le=1000, description="At most this many jobs are looked at.")


class SkippedJob(BaseModel):
    job_id: str
    code: str
    reason: str


class RetryResult(BaseModel):
    retried: list[str]
    skipped: list[SkippedJob]
    truncated: bool = Field(description="More jobs matched than `limit`; call again.")


class DeliveryOut(BaseModel):
    delivery_id: str
    customer_id: int
    url: str
    event_type: str
    job_id: str | None
    status: str
    attempt_count: int
    next_attempt_at: datetime | None
    last_status_code: int | None
    last_error: str | None
    created_at: datetime
    updated_at: datetime
    attempts: list[AttemptOut]


class DeliveryPage(BaseModel):
    items: list[DeliveryOut]
    next_cursor: str | None
