"""Idempotency-Key for POST/PATCH/DELETE (Stripe semantics, IETF draft header name).

The same key with the same request replays the first response and creates nothing new;
the same key with a different request is a 422; a duplicate that arrives while the first
is still running is a 409. Keys are scoped per customer and kept SERVEPLANE_IDEMPOTENCY_TTL_HOURS.

A stored answer may hold a secret shown once (a new service's API key), so it is sealed
(AES-GCM) with a key derived from the caller's bearer token and the Idempotency-Key; the
database keeps neither of them in plaintext (the key only as a digest, see the repository).
A replay with another token of the same customer cannot open it and is answered 422.
"""

from __future__ import annotations

import base64
import hashlib
import os
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from sqlalchemy.exc import InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api.deps import bearer_token, principal_for_token
from api.errors import database_unavailable, error_response
from db.repositories import idempotency as repo
from db.settings import get_settings

METHODS = {"POST", "PATCH", "DELETE"}
REPLAYED_HEADERS = ("content-type", "location")
NONCE_BYTES = 12


def sealing_key(token: str, key: str) -> bytes:
    """The AES key of a stored answer: derivable only with the token and the raw key."""
    material = b"\0".join([b"serveplane-idempotent-answer", token.encode(), key.encode()])
    return hashlib.sha256(material).digest()


def seal(body: bytes, secret: bytes) -> str:
    """Encrypt and authenticate an answer for storage."""
    nonce = os.urandom(NONCE_BYTES)
    return base64.b64encode(nonce + AESGCM(secret).encrypt(nonce, body, None)).decode()


def unseal(stored: str, secret: bytes) -> bytes | None:
    """The answer sealed by `seal`, or None when `secret` does not open it."""
    try:
        raw = base64.b64decode(stored, validate=True)
        return AESGCM(secret).decrypt(raw[:NONCE_BYTES], raw[NONCE_BYTES:], None)
    except (ValueError, InvalidTag):
        return None


class IdempotencyMiddleware:
    """Pure ASGI middleware wrapping mutating /api requests that carry Idempotency-Key."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await self._handle(scope, receive, send)
        except (OperationalError, PoolTimeout, InterfaceError) as exc:
            response = database_unavailable(exc)
            await response(scope, receive, send)

    async def _handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (
            scope["type"] != "http"
            or scope["method"] not in METHODS
            or not scope["path"].startswith("/api/")
        ):
            await self.app(scope, receive, send)
            return
        headers = {k.decode().lower(): v.decode("latin-1") for k, v in scope["headers"]}
        key = headers.get("idempotency-key")
        if key is None:
            await self.app(scope, receive, send)
            return
        if not key or len(key) > 255:
            response = error_response(
                422,
                "validation_error",
                "Idempotency-Key: must be 1 to 255 characters",
                [{"field": "Idempotency-Key", "message": "must be 1 to 255 characters"}],
            )
            await response(scope, receive, send)
            return
        app_state = scope["app"].state
        principal = await principal_for_token(app_state.sessionmaker, headers.get("authorization"))
        if principal is None:  # the route answers 401
            await self.app(scope, receive, send)
            return
        token = bearer_token(headers.get("authorization"))
        assert token is not None  # a principal was found for it
        secret = sealing_key(token, key)
        body = await _read_body(receive)
        digest = hashlib.sha256(
            b"\n".join(
                [
                    scope["method"].encode(),
                    scope["path"].encode(),
                    scope.get("query_string", b""),
                    body,
                ]
            )
        ).hexdigest()
        async with app_state.sessionmaker() as session:
            existing = await session.run_sync(
                lambda s: repo.reserve(
                    s,
                    customer_id=principal.customer_id,
                    key=key,
                    method=scope["method"],
                    path=scope["path"],
                    request_hash=digest,
                    ttl_hours=get_settings().idempotency_ttl_hours,
                )
            )
            snapshot = _snapshot(existing)
            await session.commit()
        if snapshot is not None:
            await _answer_existing(snapshot, digest, secret, scope, receive, send)
            return
        await self._run_and_store(scope, body, send, principal.customer_id, key, secret)

    async def _run_and_store(
        self, scope: Scope, body: bytes, send: Send, customer_id: int, key: str, secret: bytes
    ) -> None:
        status = 500
        response_headers: dict[str, str] = {}
        chunks: list[bytes] = []
        sent_body = False

        async def replay_receive() -> Message:
            nonlocal sent_body
            if not sent_body:
                sent_body = True
                return {"type": "http.request", "body": body, "more_body": False}
            return {"type": "http.disconnect"}

        async def capture(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                for k, v in message.get("headers", []):
                    name = k.decode().lower()
                    if name in REPLAYED_HEADERS:
                        response_headers[name] = v.decode("latin-1")
            elif message["type"] == "http.response.body":
                chunks.append(message.get("body", b""))
            await send(message)

        sessionmaker = scope["app"].state.sessionmaker
        try:
            await self.app(scope, replay_receive, capture)
        finally:
            async with sessionmaker() as session:
                if status >= 500:
                    await session.run_sync(
                        lambda s: repo.release(s, customer_id=customer_id, key=key)
                    )
                else:
                    text = seal(b"".join(chunks), secret)
                    await session.run_sync(
                        lambda s: repo.complete(
                            s,
                            customer_id=customer_id,
                            key=key,
                            status=status,
                            body=text,
                            headers=response_headers,
                        )
                    )
                await session.commit()


def _snapshot(row: Any) -> dict[str, Any] | None:
    if row is None:
        return None
    return {
        "state": row.state,
        "request_hash": row.request_hash,
        "status": row.response_code,
        "body": row.response_body,
        "headers": row.response_headers or {},
    }


async def _answer_existing(
    snapshot: dict[str, Any],
    digest: str,
    secret: bytes,
    scope: Scope,
    receive: Receive,
    send: Send,
) -> None:
    answer = unseal(snapshot["body"] or "", secret) if snapshot["state"] == "done" else None
    if snapshot["request_hash"] != digest:
        response = error_response(
            422,
            "idempotency_key_reused",
            "Idempotency-Key was already used with a different request",
            [{"field": "Idempotency-Key", "message": "reused with a different request"}],
        )
    elif snapshot["state"] != "done":
        response = error_response(
            409,
            "idempotency_in_progress",
            "a request with this Idempotency-Key is still being processed; retry later",
            headers={"Retry-After": "1"},
        )
    elif answer is None:
        response = error_response(
            422,
            "idempotency_key_reused",
            "Idempotency-Key was already used with another token of this customer",
            [{"field": "Idempotency-Key", "message": "used with another token"}],
        )
    else:
        headers = {**snapshot["headers"], "idempotent-replayed": "true"}
        await send(
            {
                "type": "http.response.start",
                "status": snapshot["status"],
                "headers": [(k.encode(), v.encode("latin-1")) for k, v in headers.items()],
            }
        )
        await send({"type": "http.response.body", "body": answer})
        return
    await response(scope, receive, send)


async def _read_body(receive: Receive) -> bytes:
    chunks = []
    while True:
        message = await receive()
        if message["type"] != "http.request":
            break
        chunks.append(message.get("body", b""))
        if not message.get("more_body"):
            break
    return b"".join(chunks)
