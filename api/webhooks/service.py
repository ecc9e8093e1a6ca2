"""Webhook operations. Synchronous functions run inside the request's session via run_sync."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta

from sqlalchemy.orm import Session

from api.errors import Conflict, NotFound, Unprocessable
from api.pagination import decode_cursor, encode_cursor
from api.webhooks.schemas import (
    AttemptOut,
    CreateWebhookRequest,
    DeliveryOut,
    DeliveryPage,
    TestQueued,
    WebhookCreated,
    WebhookOut,
)
from db.models import WebhookAttempt, WebhookDelivery, WebhookEndpoint
from db.repositories import jobs as jobs_repo
from db.repositories import webhooks as webhooks_repo
from db.settings import Settings
from db.states import utcnow
from db.urlguard import UnsafeUrl, check_url


def guard_url(field: str, url: str, settings: Settings) -> None:
    """422 naming `field` unless the SSRF guard accepts the URL (resolves its host, no request)."""
    try:
        check_url(url, settings.webhook_allowed_hosts)
    except UnsafeUrl as exc:
        raise Unprocessable.field(field, exc.reason) from None


def attempt_views(attempts: Sequence[WebhookAttempt]) -> list[AttemptOut]:
    """Public views of delivery attempts (customer and admin views share them)."""
    return [
        AttemptOut(
            number=a.number,
            at=a.at,
            status_code=a.status_code,
            latency_ms=a.latency_ms,
            error=a.error,
            next_attempt_at=a.next_attempt_at,
        )
        for a in attempts
    ]


def webhook_out(endpoint: WebhookEndpoint) -> WebhookOut:
    """The public view of an endpoint (never its secret)."""
    return WebhookOut(
        id=endpoint.uuid,
        url=endpoint.url,
        events=list(endpoint.events),
        enabled=endpoint.enabled,
        disabled_reason=endpoint.disabled_reason,
        created_at=endpoint.created_at,
    )


def create_webhook(
    session: Session, customer_id: int, body: CreateWebhookRequest
) -> WebhookCreated:
    """Register an endpoint; the answer is the only time its secret is shown."""
    endpoint = webhooks_repo.create_endpoint(session, customer_id, body.url, body.events)
    session.refresh(endpoint, ["created_at"])
    return WebhookCreated(**webhook_out(endpoint).model_dump(), secret=endpoint.secret)


def get_endpoint(session: Session, customer_id: int, uuid: str) -> WebhookEndpoint:
    """The customer's endpoint or 404 (another customer's endpoint is not found either)."""
    endpoint = webhooks_repo.get_endpoint(session, uuid, customer_id=customer_id)
    if endpoint is None:
        raise NotFound(f"webhook {uuid} not found")
    return endpoint


def list_webhooks(session: Session, customer_id: int) -> list[WebhookOut]:
    """The customer's endpoints, oldest first."""
    return [webhook_out(e) for e in webhooks_repo.list_endpoints(session, customer_id)]


def delete_webhook(session: Session, customer_id: int, uuid: str) -> None:
    """Soft-delete: nothing more is sent to it; pending deliveries are given up."""
    endpoint = webhooks_repo.get_endpoint(session, uuid, customer_id=customer_id, lock=True)
    if endpoint is None:
        raise NotFound(f"webhook {uuid} not found")
    webhooks_repo.delete_endpoint(session, endpoint)


def queue_test(
    session: Session, customer_id: int, uuid: str, settings: Settings
) -> tuple[TestQueued, int]:
    """Record a `webhook.test` delivery to the endpoint; returns the answer and the row id."""
    endpoint = get_endpoint(session, customer_id, uuid)
    if not endpoint.enabled:
        raise Conflict(
            f"webhook {uuid} is disabled: {endpoint.disabled_reason or 'no reason recorded'}",
            code="webhook_disabled",
        )
    now = utcnow()
    payload = {
        "type": webhooks_repo.TEST_EVENT,
        "timestamp": now.isoformat(),
        "data": {"webhook_id": endpoint.uuid, "message": "a test event from serveplane"},
    }
    # In flight from the start: the router sends the task after commit; if that send is lost,
    # the dispatcher sends it once this lease has passed.
    lease = now + timedelta(seconds=webhooks_repo.lease_seconds(settings.webhook_timeout))
    delivery = webhooks_repo.add_delivery(
        session,
        customer_id=customer_id,
        endpoint_id=endpoint.id,
        url=endpoint.url,
        event_type=webhooks_repo.TEST_EVENT,
        payload=payload,
        job_id=None,
        next_attempt_at=lease,
    )
    answer = TestQueued(
        delivery_id=delivery.uuid,
        webhook_id=endpoint.uuid,
        event_type=webhooks_repo.TEST_EVENT,
        status=delivery.status,
    )
    return answer, delivery.id


def list_deliveries(
    session: Session,
    customer_id: int,
    *,
    webhook_uuid: str | None = None,
    job_uuid: str | None = None,
    cursor: str | None = None,
    limit: int = 50,
) -> DeliveryPage:
    """The customer's deliveries with their attempts, newest first."""
    endpoint_id = get_endpoint(session, customer_id, webhook_uuid).id if webhook_uuid else None
    job_id = None
    if job_uuid:
        job = jobs_repo.get_job(session, job_uuid, customer_id=customer_id)
        if job is None:
            return DeliveryPage(items=[], next_cursor=None)
        job_id = job.id
    rows = webhooks_repo.list_deliveries(
        session,
        customer_id,
        endpoint_id=endpoint_id,
        job_id=job_id,
        before_id=decode_cursor(cursor),
        limit=limit + 1,
    )
    page = rows[:limit]
    items = deliveries_out(session, page)
    next_cursor = encode_cursor(page[-1][0].id) if len(rows) > limit else None
    return DeliveryPage(items=items, next_cursor=next_cursor)


def deliveries_out(
    session: Session, rows: Sequence[tuple[WebhookDelivery, str | None, str | None]]
) -> list[DeliveryOut]:
    """Public views of deliveries, with every attempt."""
    attempts = webhooks_repo.attempts_of(session, [d.id for d, _, _ in rows])
    return [
        DeliveryOut(
            id=d.uuid,
            webhook_id=endpoint_uuid,
            url=d.url,
            event_type=d.event_type,
            job_id=job_uuid,
            status=d.status,
            attempt_count=d.attempts,
            next_attempt_at=d.next_attempt_at,
            last_status_code=d.last_status_code,
            last_error=d.last_error,
            created_at=d.created_at,
            updated_at=d.updated_at,
            payload=d.payload,
            attempts=attempt_views(attempts.get(d.id, [])),
        )
        for d, endpoint_uuid, job_uuid in rows
    ]


def signing_secret(session: Session, customer_id: int) -> str:
    """The customer's secret for per-request callback_url deliveries."""
    return webhooks_repo.callback_secret(session, customer_id)


def rotate_signing_secret(session: Session, customer_id: int) -> str:
    """A new callback signing secret; attempts from now on are signed with it."""
    return webhooks_repo.rotate_callback_secret(session, customer_id)
