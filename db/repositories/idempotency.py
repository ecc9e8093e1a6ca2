"""Idempotency keys: the first response to a (customer, key) is stored and replayed.

Keys are stored as digests: the raw key is half of what opens a stored (sealed) answer.
"""

from __future__ import annotations

import hashlib
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import delete, select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.orm import Session

from db.models import IdempotencyKey
from db.states import utcnow

ABANDONED_AFTER = timedelta(minutes=5)


def key_digest(key: str) -> str:
    """What the `key` column holds for a client's Idempotency-Key."""
    return hashlib.sha256(b"serveplane-idempotency-key\0" + key.encode()).hexdigest()


def reserve(
    session: Session,
    *,
    customer_id: int,
    key: str,
    method: str,
    path: str,
    request_hash: str,
    ttl_hours: int,
) -> IdempotencyKey | None:
    """Claim the key for this request; None when we own it now, else the existing row."""
    key = key_digest(key)
    now = utcnow()
    session.execute(
        delete(IdempotencyKey).where(
            IdempotencyKey.customer_id == customer_id,
            IdempotencyKey.key == key,
            (IdempotencyKey.expires_at < now)
            | (
                (IdempotencyKey.state == "in_progress")
                & (IdempotencyKey.created_at < now - ABANDONED_AFTER)
            ),
        )
    )
    inserted = session.execute(
        insert(IdempotencyKey)
        .values(
            customer_id=customer_id,
            key=key,
            method=method,
            path=path,
            request_hash=request_hash,
            state="in_progress",
            expires_at=now + timedelta(hours=ttl_hours),
        )
        .on_conflict_do_nothing(index_elements=["customer_id", "key"])
        .returning(IdempotencyKey.id)
    ).scalar()
    if inserted is not None:
        return None
    return session.scalar(
        select(IdempotencyKey).where(
            IdempotencyKey.customer_id == customer_id, IdempotencyKey.key == key
        )
    )


def complete(
    session: Session,
    *,
    customer_id: int,
    key: str,
    status: int,
    body: str,
    headers: dict[str, Any],
) -> None:
    """Store the response of the request that owns the key."""
    key = key_digest(key)
    row = session.scalar(
        select(IdempotencyKey).where(
            IdempotencyKey.customer_id == customer_id, IdempotencyKey.key == key
        )
    )
    if row is not None:
        row.state = "done"
        row.response_code = status
        row.response_body = body
        row.response_headers = headers


def release(session: Session, *, customer_id: int, key: str) -> None:
    """Forget a key whose request failed on our side, so a retry can run."""
    key = key_digest(key)
    session.execute(
        delete(IdempotencyKey).where(
            IdempotencyKey.customer_id == customer_id,
            IdempotencyKey.key == key,
            IdempotencyKey.state == "in_progress",
        )
    )


def purge_expired(session: Session, now: datetime | None = None) -> int:
    """Delete expired keys; returns how many."""
    result = session.execute(
        delete(IdempotencyKey).where(IdempotencyKey.expires_at < (now or utcnow()))
    )
    return int(result.rowcount or 0)  # type: ignore[attr-defined]
