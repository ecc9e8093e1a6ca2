"""Webhook delivery: sign (Standard Webhooks), POST without following redirects, record, retry.

Retries are times in `webhook_deliveries.next_attempt_at` that the dispatcher chore turns into
tasks, so a broker that loses its queues loses no retry. A task names the attempt count it
was sent for; the delivery row is locked (SKIP LOCKED) while sending, so a duplicate task
does nothing, and a delivery that succeeded is never sent again.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import logging
import random
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email.utils import parsedate_to_datetime
from typing import Any

import httpx
import orjson

from db.engine import session_scope
from db.queue import DELIVER_WEBHOOK_TASK
from db.repositories import webhooks as webhooks_repo
from db.settings import Settings, get_settings
from db.states import utcnow
from db.urlguard import Target, UnsafeUrl, vet_url
from workers.celery_app import app

log = logging.getLogger(__name__)
USER_AGENT = "serveplane-webhooks/0.1"
RETRY_AFTER_CAP_FLOOR = 3600.0  # Retry-After may defer up to max(schedule, 1 h)
SNIPPET_BYTES = 256


@dataclass(frozen=True)
class AttemptResult:
    """What one POST produced: a status code, or an error without one."""

    status_code: int | None
    latency_ms: float | None
    error: str | None
    retry_after: float | None = None

    @property
    def succeeded(self) -> bool:
        """Any 2xx."""
        return self.status_code is not None and 200 <= self.status_code < 300


def sign(secret: str, msg_id: str, timestamp: int, body: bytes) -> str:
    """`v1,<base64 HMAC-SHA256 of "{id}.{timestamp}.{body}">` with the secret's key bytes."""
    key = webhooks_repo.signing_key(secret)
    digest = hmac.new(key, f"{msg_id}.{timestamp}.".encode() + body, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()


def signed_headers(secret: str, msg_id: str, timestamp: int, body: bytes) -> dict[str, str]:
    """The headers of one attempt (the timestamp is the attempt's, the id the delivery's)."""
    return {
        "content-type": "application/json",
        "user-agent": USER_AGENT,
        "webhook-id": msg_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": sign(secret, msg_id, timestamp, body),
    }


def encode_payload(payload: dict[str, Any]) -> bytes:
    """The exact body bytes: `type`, `timestamp`, then `data`, as compact JSON."""
    ordered = {"type": payload.get("type"), "timestamp": payload.get("timestamp")}
    ordered.update({k: v for k, v in payload.items() if k not in ordered})
    return orjson.dumps(ordered)


def parse_retry_after(value: str | None, now: datetime | None = None) -> float | None:
    """Seconds a `Retry-After` header asks for (delta seconds or an HTTP date), or None."""
    if not value:
        return None
    text = value.strip()
    if text.isdigit():
        return float(text)
    try:
        when = parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max((when - (now or utcnow())).total_seconds(), 0.0)


def next_delay(attempt: int, schedule: Sequence[float], retry_after: float | None) -> float | None:
    """Seconds before the attempt after `attempt` (1-based), ±10% jitter; None when exhausted."""
    if attempt > len(schedule):
        return None
    delay = schedule[attempt - 1] * random.uniform(0.9, 1.1)
    if retry_after is not None and retry_after > delay:
        delay = min(retry_after, max(max(schedule), RETRY_AFTER_CAP_FLOOR))
    return delay


def _pinned_request(
    client: httpx.Client, target: Target, address: str, body: bytes, headers: dict[str, str]
) -> httpx.Request:
    """A request to the vetted address itself, with the original Host and TLS server name.

    Connecting to the address that was checked (not re-resolving) closes the DNS-rebinding
    gap between the guard and the connection.
    """
    url = httpx.URL(target.url)
    extensions: dict[str, Any] = {}
    if target.scheme == "https" and target.host != address:
        extensions["sni_hostname"] = target.host
    return client.build_request(
        "POST",
        url.copy_with(host=address),
        content=body,
        headers={**headers, "host": url.netloc.decode("ascii")},
        extensions=extensions,
    )


def post_once(
    url: str, body: bytes, headers: dict[str, str], *, timeout: float, allowed_hosts: str
) -> AttemptResult:
    """One POST: SSRF re-check on every resolved address, no redirects, `timeout` seconds."""
    try:
        target = vet_url(url, allowed_hosts)
    except UnsafeUrl as exc:
        return AttemptResult(None, None, f"refused by the SSRF guard: {exc.reason}")
    started = time.monotonic()
    last_error = "no address to connect to"
    with httpx.Client(timeout=timeout, follow_redirects=False, trust_env=False) as client:
        for address in target.addresses:
            request = _pinned_request(client, target, address, body, headers)
            try:
                response = client.send(request, stream=True)
            except httpx.ConnectError as exc:
                last_error = f"connection to {address} failed: {exc}"
                continue  # try the host's next address
            except httpx.TimeoutException:
                return AttemptResult(None, _ms(started), f"timed out after {timeout:g}s")
            except httpx.HTTPError as exc:
                return AttemptResult(None, _ms(started), f"{type(exc).__name__}: {exc}")
            latency = _ms(started)
            try:
                snippet = _read_snippet(response)
            finally:
                response.close()
            return AttemptResult(
                response.status_code,
                latency,
                _describe(response, snippet),
                parse_retry_after(response.headers.get("retry-after")),
            )
    return AttemptResult(None, _ms(started), last_error)


def _ms(started: float) -> float:
    return round((time.monotonic() - started) * 1000, 1)


def _read_snippet(response: httpx.Response) -> str:
    """The start of the response body, for the attempt's error text (never the whole body)."""
    chunks = b""
    try:
        for chunk in response.iter_bytes():
            chunks += chunk
            if len(chunks) >= SNIPPET_BYTES:
                break
    except httpx.HTTPError:
        pass  # the status code is what counts; a body cut short is not an error
    return chunks[:SNIPPET_BYTES].decode("utf-8", errors="replace").strip()


def _describe(response: httpx.Response, snippet: str) -> str | None:
    code = response.status_code
    if 200 <= code < 300:
        return None
    if 300 <= code < 400:
        where = response.headers.get("location", "")
        return f"HTTP {code}: redirect to {where[:200]!r} not followed"
    return f"HTTP {code}" + (f": {snippet}" if snippet else "")


def deliver(delivery_id: int, expected_attempts: int | None = None) -> str:
    """Make the delivery's next attempt if it is still pending and due; returns the outcome.

    `expected_attempts` is the attempt count the task was sent for: a task whose attempt was
    already made (a duplicate, or a redelivered message) finds a different count and stops.
    """
    settings = get_settings()
    with session_scope() as session:
        delivery = webhooks_repo.lock_delivery(session, delivery_id)
        if delivery is None:
            return "busy"
        if delivery.status != "pending":
            return "done"
        if expected_attempts is not None and delivery.attempts != expected_attempts:
            return "stale"
        endpoint = None
        if delivery.endpoint_id is not None:
            endpoint = webhooks_repo.get_endpoint_by_id(session, delivery.endpoint_id)
            if endpoint is None or endpoint.deleted_at is not None:
                webhooks_repo.give_up(session, delivery, "the webhook endpoint was deleted")
                return "failed"
            if not endpoint.enabled:
                reason = f"endpoint disabled: {endpoint.disabled_reason or 'by serveplane'}"
                webhooks_repo.give_up(session, delivery, reason)
                return "failed"
            secret = endpoint.secret
        else:
            secret = webhooks_repo.callback_secret(session, delivery.customer_id)
        body = encode_payload(delivery.payload)
        at = utcnow()
        try:
            headers = signed_headers(secret, delivery.uuid, int(at.timestamp()), body)
        except ValueError as exc:
            webhooks_repo.give_up(session, delivery, f"cannot sign: {exc}")
            return "failed"
        result = post_once(
            delivery.url,
            body,
            headers,
            timeout=settings.webhook_timeout,
            allowed_hosts=settings.webhook_allowed_hosts,
        )
        outcome, next_at = _judge(result, delivery.attempts + 1, settings)
        webhooks_repo.record_attempt(
            session,
            delivery,
            at=at,
            status_code=result.status_code,
            latency_ms=result.latency_ms,
            error=result.error,
            outcome=outcome,
            next_attempt_at=next_at,
        )
        if result.status_code == 410 and endpoint is not None:
            webhooks_repo.disable_endpoint(
                session, endpoint.id, f"answered 410 Gone to {delivery.uuid} at {at.isoformat()}"
            )
        log.info(
            "webhook %s (%s) attempt %s: %s",
            delivery.uuid,
            delivery.event_type,
            delivery.attempts,
            result.status_code or result.error,
        )
        return outcome


def _judge(result: AttemptResult, attempt: int, settings: Settings) -> tuple[str, datetime | None]:
    """succeeded, failed (410 or schedule exhausted), or pending with the next attempt's time."""
    if result.succeeded:
        return "succeeded", None
    if result.status_code == 410:
        return "failed", None
    delay = next_delay(attempt, settings.webhook_retry_delays, result.retry_after)
    if delay is None:
        return "failed", None
    return "pending", utcnow() + timedelta(seconds=delay)


def send_delivery_tasks(pairs: Sequence[tuple[int, int]]) -> int:
    """Send a task per (delivery id, attempts); unsent ones become due again shortly."""
    sent = 0
    for delivery_id, attempts in pairs:
        try:
            app.send_task(DELIVER_WEBHOOK_TASK, args=[delivery_id, attempts], retry=False)
        except Exception as exc:  # the broker is down: the dispatcher will send them later
            log.warning("webhook tasks deferred to the dispatcher: %s", type(exc).__name__)
            _release([p[0] for p in pairs[sent:]])
            break
        sent += 1
    return sent


def _release(delivery_ids: list[int]) -> None:
    """Make unsent deliveries due again soon (runs after commits: it must not raise)."""
    try:
        with session_scope() as session:
            webhooks_repo.release_deliveries(session, delivery_ids, utcnow() + timedelta(seconds=5))
    except Exception:
        log.exception(
            "could not release %d webhook deliveries; re-sent after their lease", len(delivery_ids)
        )


def dispatch_due_deliveries(limit: int = 200) -> int:
    """Dispatcher chore: claim due pending deliveries for one lease and send their tasks."""
    settings = get_settings()
    now = utcnow()
    lease = now + timedelta(seconds=webhooks_repo.lease_seconds(settings.webhook_timeout))
    with session_scope() as session:
        claimed = webhooks_repo.claim_due_deliveries(session, now, lease, limit)
    return send_delivery_tasks(claimed) if claimed else 0
