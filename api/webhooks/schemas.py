"""Request and response bodies for webhook endpoints and deliveries."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from db.repositories.webhooks import EVENT_TYPES


def _events(values: list[str]) -> list[str]:
    unknown = [v for v in values if v not in EVENT_TYPES]
    if unknown:
        raise ValueError(f"unknown event type {unknown[0]!r}; use any of {', '.join(EVENT_TYPES)}")
    if not values:
        raise ValueError("must list at least one event type")
    return list(dict.fromkeys(values))  # de-duplicated, order kept


EventList = Annotated[list[str], Field(max_length=len(EVENT_TYPES) * 2), AfterValidator(_events)]


class CreateWebhookRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    url: str = Field(max_length=2048)
    events: EventList


class WebhookOut(BaseModel):
    id: str
    url: str
    events: list[str]
    enabled: bool
    disabled_reason: str | None = None
    created_at: datetime


class WebhookCreated(WebhookOut):
    secret: str = Field(description="The signing secret (whsec_…), shown only in this response.")


class WebhookList(BaseModel):
    items: list[WebhookOut]


class TestQueued(BaseModel):
    delivery_id: str
    webhook_id: str
    event_type: str
    status: str


class AttemptOut(BaseModel):
    number: int
    at: datetime
    status_code: int | None
    latency_ms: float | None
    error: str | None
    next_attempt_at: datetime | None


class DeliveryOut(BaseModel):
    id: str
    webhook_id: str | None
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
    payload: dict[str, Any]
    attempts: list[AttemptOut]


class DeliveryPage(BaseModel):
    items: list[DeliveryOut]
    next_cursor: str | None


class SigningSecret(BaseModel):
    secret: str = Field(description="Signs deliveries to per-request callback_url (whsec_…).")
