"""Webhook endpoints, deliveries and their attempts; the customers' callback signing secrets."""

from __future__ import annotations

import base64
import binascii
import secrets
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from db.models import Customer, Job, WebhookAttempt, WebhookDelivery, WebhookEndpoint
from db.states import utcnow

SECRET_PREFIX = "whsec_"  # noqa: S105 - a prefix, not a secret
SECRET_BYTES = 32
EVENT_TYPES = (
    "job.succeeded",
    "job.failed",
    "job.cancelled",
    "service.running",
    "service.failed",
    "service.deleted",
    "service.degraded",
)
TEST_EVENT = "webhook.test"
# Beyond the send timeout, how long a claimed delivery stays in flight before it is re-sent.
LEASE_MARGIN_SECONDS = 60.0


def lease_seconds(timeout: float) -> float:
    """How long a delivery handed to the queue counts as in flight."""
    return timeout + LEASE_MARGIN_SECONDS


def new_signing_secret() -> str:
    """A Standard Webhooks secret: `whsec_` + standard base64 of 32 random bytes."""
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(SECRET_BYTES)).decode()


def signing_key(secret: str) -> bytes:
    """The HMAC key of a `whsec_` secret (its base64 part, decoded); ValueError if malformed."""
    body = secret.removeprefix(SECRET_PREFIX)
    try:
        key = base64.b64decode(body, validate=True)
    except (binascii.Error, ValueError):
        raise ValueError("not a standard base64 webhook secret") from None
    if len(key) < 24:
        raise ValueError("webhook secret is shorter than 24 bytes")
    return key


def is_standard_secret(secret: str) -> bool:
    """True when `secret` is `whsec_` + standard base64 of at least 24 bytes."""
    if not secret.startswith(SECRET_PREFIX):
        return False
    try:
        signing_key(secret)
    except ValueError:
        return False
    return True


def new_endpoint_uuid() -> str:
    """A public webhook endpoint id such as `wh-3f9c1a2b4d5e6f70`."""
    return f"wh-{secrets.token_hex(8)}"


def new_message_id() -> str:
    """A Standard Webhooks message id (`msg_…`), kept for every retry of a delivery."""
    return f"msg_{secrets.token_hex(12)}"


# Endpoints


def create_endpoint(
    session: Session, customer_id: int, url: str, events: list[str]
) -> WebhookEndpoint:
    """Insert an enabled endpoint with a fresh signing secret."""
    endpoint = WebhookEndpoint(
        uuid=new_endpoint_uuid(),
        customer_id=customer_id,
        url=url,
        events=events,
        secret=new_signing_secret(),
        enabled=True,
    )
    session.add(endpoint)
    session.flush()
    return endpoint


def get_endpoint(
    session: Session, uuid: str, *, customer_id: int, lock: bool = False
) -> WebhookEndpoint | None:
    """The customer's endpoint by public id (deleted ones are gone)."""
    query = select(WebhookEndpoint).where(
        WebhookEndpoint.uuid == uuid,
        WebhookEndpoint.customer_id == customer_id,
        WebhookEndpoint.deleted_at.is_(None),
    )
    if lock:
        query = query.with_for_update()
    return session.scalar(query)


def get_endpoint_by_id(session: Session, endpoint_id: int) -> WebhookEndpoint | None:
    """An endpoint by primary key, deleted or not."""
    return session.get(WebhookEndpoint, endpoint_id)


def list_endpoints(session: Session, customer_id: int) -> Sequence[WebhookEndpoint]:
    """The customer's endpoints, oldest first."""
    return session.scalars(
        select(WebhookEndpoint)
        .where(WebhookEndpoint.customer_id == customer_id, WebhookEndpoint.deleted_at.is_(None))
        .order_by(WebhookEndpoint.id)
    ).all()


def subscribed_endpoints(
    session: Session, customer_id: int, event_type: str
) -> Sequence[WebhookEndpoint]:
    """The customer's enabled, live endpoints subscribed to `event_type`."""
    return session.scalars(
        select(WebhookEndpoint)
        .where(
            WebhookEndpoint.customer_id == customer_id,
            WebhookEndpoint.enabled.is_(True),
            WebhookEndpoint.deleted_at.is_(None),
            WebhookEndpoint.events.contains([event_type]),
        )
        .order_by(WebhookEndpoint.id)
    ).all()


def delete_endpoint(session: Session, endpoint: WebhookEndpoint) -> int:
    """Soft-delete the endpoint and give up its pending deliveries; returns how many."""
    endpoint.deleted_at = utcnow()
    session.flush()
    return fail_pending_for_endpoint(session, endpoint.id, "the webhook endpoint was deleted")


def disable_endpoint(session: Session, endpoint_id: int, reason: str) -> None:
    """Stop sending to an endpoint (e.g. it answered 410 Gone) and give up its backlog."""
    session.execute(
        update(WebhookEndpoint)
        .where(WebhookEndpoint.id == endpoint_id)
        .values(enabled=False, disabled_reason=reason)
    )
    fail_pending_for_endpoint(session, endpoint_id, f"endpoint disabled: {reason}")


def fail_pending_for_endpoint(session: Session, endpoint_id: int, reason: str) -> int:
    """Mark the endpoint's pending deliveries failed (rows being sent are left to their task)."""
    ids = session.scalars(
        select(WebhookDelivery.id)
        .where(WebhookDelivery.endpoint_id == endpoint_id, WebhookDelivery.status == "pending")
        .with_for_update(skip_locked=True)
    ).all()
    if ids:
        session.execute(
            update(WebhookDelivery)
            .where(WebhookDelivery.id.in_(ids))
            .values(status="failed", next_attempt_at=None, last_error=reason)
        )
    return len(ids)


# Deliveries


def add_delivery(
    session: Session,
    *,
    customer_id: int,
    endpoint_id: int | None,
    url: str,
    event_type: str,
    payload: dict[str, Any],
    job_id: int | None,
    next_attempt_at: datetime,
) -> WebhookDelivery:
    """Insert a pending delivery (its message id is fixed here, for every retry)."""
    delivery = WebhookDelivery(
        uuid=new_message_id(),
        customer_id=customer_id,
        endpoint_id=endpoint_id,
        url=url,
        event_type=event_type,
        payload=payload,
        job_id=job_id,
        status="pending",
        attempts=0,
        next_attempt_at=next_attempt_at,
    )
    session.add(delivery)
    session.flush()
    return delivery


def lock_delivery(session: Session, delivery_id: int) -> WebhookDelivery | None:
    """The delivery under a row lock; None if another worker holds it (or it is gone)."""
    return session.scalar(
        select(WebhookDelivery)
        .where(WebhookDelivery.id == delivery_id)
        .with_for_update(skip_locked=True)
    )


def claim_due_deliveries(
    session: Session, now: datetime, lease_until: datetime, limit: int = 200
) -> list[tuple[int, int]]:
    """Pending deliveries due by `now`, marked in flight until `lease_until`: (id, attempts)."""
    rows = session.execute(
        select(WebhookDelivery.id, WebhookDelivery.attempts)
        .where(WebhookDelivery.status == "pending", WebhookDelivery.next_attempt_at <= now)
        .order_by(WebhookDelivery.next_attempt_at)
        .limit(limit)
        .with_for_update(skip_locked=True)
    ).all()
    claimed = [(row[0], row[1]) for row in rows]
    if claimed:
        session.execute(
            update(WebhookDelivery)
            .where(WebhookDelivery.id.in_([c[0] for c in claimed]))
            .values(next_attempt_at=lease_until)
        )
    return claimed


def release_deliveries(session: Session, delivery_ids: Sequence[int], at: datetime) -> None:
    """Make claimed deliveries due again at `at` (their task could not be sent)."""
    if delivery_ids:
        session.execute(
            update(WebhookDelivery)
            .where(WebhookDelivery.id.in_(delivery_ids), WebhookDelivery.status == "pending")
            .values(next_attempt_at=at)
        )


def record_attempt(
    session: Session,
    delivery: WebhookDelivery,
    *,
    at: datetime,
    status_code: int | None,
    latency_ms: float | None,
    error: str | None,
    outcome: str,
    next_attempt_at: datetime | None,
) -> WebhookAttempt:
    """Store one attempt and move the delivery: succeeded, failed, or pending until next time."""
    delivery.attempts += 1
    delivery.status = outcome
    delivery.next_attempt_at = next_attempt_at if outcome == "pending" else None
    delivery.last_status_code = status_code
    delivery.last_error = error
    attempt = WebhookAttempt(
        delivery_id=delivery.id,
        number=delivery.attempts,
        at=at,
        status_code=status_code,
        latency_ms=latency_ms,
        error=error,
        next_attempt_at=delivery.next_attempt_at,
    )
    session.add(attempt)
    session.flush()
    return attempt


def give_up(session: Session, delivery: WebhookDelivery, reason: str) -> None:
    """Fail a delivery without sending it (its endpoint is gone or disabled)."""
    delivery.status = "failed"
    delivery.next_attempt_at = None
    delivery.last_error = reason
    session.flush()


def get_delivery(session: Session, uuid: str, *, customer_id: int) -> WebhookDelivery | None:
    """One of the customer's deliveries by message id."""
    return session.scalar(
        select(WebhookDelivery).where(
            WebhookDelivery.uuid == uuid, WebhookDelivery.customer_id == customer_id
        )
    )


def list_deliveries(
    session: Session,
    customer_id: int,
    *,
    endpoint_id: int | None = None,
    job_id: int | None = None,
    before_id: int | None = None,
    limit: int = 50,
) -> list[tuple[WebhookDelivery, str | None, str | None]]:
    """The customer's deliveries, newest first: (delivery, endpoint uuid, job uuid)."""
    query = (
        select(WebhookDelivery, WebhookEndpoint.uuid, Job.uuid)
        .outerjoin(WebhookEndpoint, WebhookEndpoint.id == WebhookDelivery.endpoint_id)
        .outerjoin(Job, Job.id == WebhookDelivery.job_id)
        .where(WebhookDelivery.customer_id == customer_id)
    )
    if endpoint_id is not None:
        query = query.where(WebhookDelivery.endpoint_id == endpoint_id)
    if job_id is not None:
        query = query.where(WebhookDelivery.job_id == job_id)
    if before_id is not None:
        query = query.where(WebhookDelivery.id < before_id)
    rows = session.execute(query.order_by(WebhookDelivery.id.desc()).limit(limit)).all()
    return [(row[0], row[1], row[2]) for row in rows]


def attempts_of(session: Session, delivery_ids: Sequence[int]) -> dict[int, list[WebhookAttempt]]:
    """Attempts of several deliveries, oldest first, in one query."""
    found: dict[int, list[WebhookAttempt]] = {}
    if delivery_ids:
        for attempt in session.scalars(
            select(WebhookAttempt)
            .where(WebhookAttempt.delivery_id.in_(delivery_ids))
            .order_by(WebhookAttempt.delivery_id, WebhookAttempt.number)
        ):
            found.setdefault(attempt.delivery_id, []).append(attempt)
    return found


# The customer's secret for per-request callback_url deliveries


def callback_secret(session: Session, customer_id: int) -> str:
    """The customer's callback signing secret, upgraded once to the Standard Webhooks format.

    Older customers were given a URL-safe secret that Standard Webhooks receivers cannot
    decode; the first read replaces it (under the customer's row lock) with a standard one.
    """
    secret = session.scalar(select(Customer.webhook_secret).where(Customer.id == customer_id))
    if secret is not None and is_standard_secret(secret):
        return secret
    customer = session.scalar(select(Customer).where(Customer.id == customer_id).with_for_update())
    if customer is None:
        raise LookupError(f"customer {customer_id} not found")
    if not is_standard_secret(customer.webhook_secret):
        customer.webhook_secret = new_signing_secret()
        session.flush()
    return customer.webhook_secret


def rotate_callback_secret(session: Session, customer_id: int) -> str:
    """Replace the customer's callback signing secret; later attempts sign with the new one."""
    customer = session.scalar(select(Customer).where(Customer.id == customer_id).with_for_update())
    if customer is None:
        raise LookupError(f"customer {customer_id} not found")
    customer.webhook_secret = new_signing_secret()
    session.flush()
    return customer.webhook_secret


# Admin: every customer's deliveries


def list_all_deliveries(
    session: Session,
    *,
    status: str | None = None,
    customer_id: int | None = None,
    before_id: int | None = None,
    limit: int = 50,
) -> list[tuple[WebhookDelivery, str | None]]:
    """Deliveries of every customer (or one), newest first: (delivery, job uuid)."""
    query = select(WebhookDelivery, Job.uuid).outerjoin(Job, Job.id == WebhookDelivery.job_id)
    if status is not None:
        query = query.where(WebhookDelivery.status == status)
    if customer_id is not None:
        query = query.where(WebhookDelivery.customer_id == customer_id)
    if before_id is not None:
        query = query.where(WebhookDelivery.id < before_id)
    rows = session.execute(query.order_by(WebhookDelivery.id.desc()).limit(limit)).all()
    return [(row[0], row[1]) for row in rows]


def lock_delivery_by_uuid(session: Session, uuid: str) -> WebhookDelivery | None:
    """Any customer's delivery by message id, under a row lock (waits for a sending task)."""
    return session.scalar(
        select(WebhookDelivery)
        .where(WebhookDelivery.uuid == uuid)
        .with_for_update()
        .execution_options(populate_existing=True)
    )


def requeue_delivery(session: Session, delivery: WebhookDelivery) -> None:
    """Send a finished delivery again: same message id, its attempts kept, due now."""
    delivery.status = "pending"
    delivery.next_attempt_at = utcnow()
    session.flush()
