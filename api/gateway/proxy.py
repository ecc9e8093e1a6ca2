"""Forward one request to a version's upstreams and relay the answer, unchanged, to the client."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass

from starlette.types import Receive, Send

from api.gateway.routes import VersionRoute
from api.gateway.upstream import (
    Connection,
    Upstream,
    UpstreamError,
    UpstreamPool,
    UpstreamTimeout,
)

log = logging.getLogger(__name__)

# RFC 9110 §7.6.1 connection-specific fields, plus the pre-standard ones still seen in the wild.
HOP_BY_HOP = frozenset(
    {
        b"connection",
        b"keep-alive",
        b"proxy-authenticate",
        b"proxy-authorization",
        b"proxy-connection",
        b"te",
        b"trailer",
        b"transfer-encoding",
        b"upgrade",
    }
)
# Never forwarded: the caller's credentials, our own routing header, and what we set ourselves.
REQUEST_DROP = HOP_BY_HOP | {
    b"host",
    b"content-length",
    b"expect",
    b"authorization",
    b"x-api-key",
    b"x-serveplane-version",
    b"x-forwarded-for",
}
# uvicorn writes its own date and server headers.
RESPONSE_DROP = HOP_BY_HOP | {b"date", b"server"}
IDEMPOTENT = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "DELETE", "TRACE"})
BUFFER_LIMIT = 1024 * 1024  # answers up to this size are read whole and sent in one piece
VERSION_HEADER = b"x-serveplane-version"


class BodyTooLarge(Exception):
    """The client's body passed the gateway's limit."""


class ClientGone(Exception):
    """The client disconnected before its request body arrived."""


@dataclass(slots=True)
class IncomingRequest:
    """What the gateway keeps of the client's request headers in one pass."""

    forward: list[tuple[bytes, bytes]]
    authorization: bytes | None = None
    api_key: bytes | None = None
    pinned: bytes | None = None
    content_length: int | None = None
    chunked: bool = False


def read_headers(raw: Iterable[tuple[bytes, bytes]], client_ip: str | None) -> IncomingRequest:
    """Split the client's headers into what is forwarded and what the gateway itself uses."""
    forward: list[tuple[bytes, bytes]] = []
    incoming = IncomingRequest(forward)
    connection_tokens: set[bytes] = set()
    forwarded_for: bytes | None = None
    for name, value in raw:
        if name not in REQUEST_DROP:
            forward.append((name, value))
        elif name == b"authorization":
            incoming.authorization = value
        elif name == b"x-api-key":
            incoming.api_key = value
        elif name == b"x-serveplane-version":
            incoming.pinned = value
        elif name == b"content-length":
            incoming.content_length = int(value) if value.isdigit() else None
        elif name == b"transfer-encoding":
            incoming.chunked = b"chunked" in value.lower()
        elif name == b"connection":
            connection_tokens.update(t.strip().lower() for t in value.split(b","))
        elif name == b"x-forwarded-for":
            forwarded_for = value
    if connection_tokens:
        forward[:] = [(n, v) for n, v in forward if n not in connection_tokens]
    if client_ip:
        ip = client_ip.encode()
        forward.append((b"x-forwarded-for", forwarded_for + b", " + ip if forwarded_for else ip))
    return incoming


def request_head(
    method: bytes,
    target: bytes,
    authority: bytes,
    headers: list[tuple[bytes, bytes]],
    framing: bytes,
) -> bytes:
    """The request line and headers as sent to the upstream."""
    lines = [method, b" ", target, b" HTTP/1.1\r\nhost: ", authority, b"\r\n"]
    for name, value in headers:
        lines += (name, b": ", value, b"\r\n")
    lines += (framing, b"\r\n")
    return b"".join(lines)


async def request_body(
    receive: Receive, incoming: IncomingRequest, limit: int
) -> tuple[bytes | AsyncIterator[bytes], bytes]:
    """The body (whole when it came in one piece, else a stream) and its framing header."""
    message = await receive()
    if message["type"] == "http.disconnect":
        raise ClientGone
    first: bytes = message.get("body", b"")
    if len(first) > limit:
        raise BodyTooLarge
    if not message.get("more_body", False):
        declared = bool(first) or incoming.content_length is not None or incoming.chunked
        return first, b"content-length: %d\r\n" % len(first) if declared else b""
    if incoming.content_length is not None:
        return _stream(receive, first, limit, chunked=False), b"content-length: %d\r\n" % (
            incoming.content_length
        )
    return _stream(receive, first, limit, chunked=True), b"transfer-encoding: chunked\r\n"


async def _stream(
    receive: Receive, first: bytes, limit: int, *, chunked: bool
) -> AsyncIterator[bytes]:
    """The rest of the client's body as it arrives, re-framed in chunks when it had no length."""
    received = len(first)
    piece = first
    more = True
    while True:
        if piece:
            yield b"%x\r\n%s\r\n" % (len(piece), piece) if chunked else piece
        if not more:
            break
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ClientGone
        piece = message.get("body", b"")
        more = message.get("more_body", False)
        received += len(piece)
        if received > limit:
            raise BodyTooLarge
    if chunked:
        yield b"0\r\n\r\n"


@dataclass(slots=True)
class Failure:
    """Why no upstream answered."""

    status: int
    code: str
    message: str


async def forward(
    pool: UpstreamPool,
    send: Send,
    *,
    service: str,
    method: str,
    target: bytes,
    incoming: IncomingRequest,
    body: bytes | AsyncIterator[bytes],
    framing: bytes,
    attempts: list[tuple[VersionRoute, Upstream]],
) -> Failure | None:
    """Send to the first upstream that takes the request and relay its answer.

    A replica that refuses the connection (nothing sent) is skipped for the next one; after
    the request went out, only an idempotent method with a replayable body is tried again.
    Returns why it failed when nothing was relayed.
    """
    replayable = isinstance(body, bytes)
    method_bytes = method.encode()
    # Addresses that just refused a connection go last.
    ordered = attempts
    if len(attempts) > 1:
        ordered = sorted(attempts, key=lambda attempt: pool.is_down(attempt[1]))
    error: UpstreamError | None = None
    for version, upstream in ordered:
        head = request_head(
            method_bytes, upstream.base_path + target, upstream.authority, incoming.forward, framing
        )
        try:
            conn = await pool.request(upstream, head, body, head_only=method == "HEAD")
            try:
                small = conn.complete or _small(conn)
                payload = await conn.read_all(pool.timeout) if small else None
            except BaseException:
                pool.release(conn, reuse=False)
                raise
        except UpstreamError as exc:
            error = exc
            log.warning(
                "gateway %s v%d via %s: %s", service, version.number, upstream.url, exc.message
            )
            if _may_retry(exc, method, replayable):
                continue
            break
        await _relay(pool, conn, version, send, payload)
        return None
    if isinstance(error, UpstreamTimeout):
        return Failure(
            504, "upstream_timeout", f"the model server of {service} did not answer in time"
        )
    return Failure(
        502, "upstream_unavailable", f"no model server of {service} could take the request"
    )


def _may_retry(exc: UpstreamError, method: str, replayable: bool) -> bool:
    """Nothing left for the upstream yet, or a request that may safely be sent twice."""
    if not exc.sent:
        return True
    return not isinstance(exc, UpstreamTimeout) and replayable and method in IDEMPOTENT


def _small(conn: Connection) -> bool:
    for name, value in conn.headers:
        if name == b"content-length":
            return value.isdigit() and int(value) <= BUFFER_LIMIT
    return False


def _response_headers(conn: Connection, version: VersionRoute) -> list[tuple[bytes, bytes]]:
    drop: frozenset[bytes] | set[bytes] = RESPONSE_DROP
    for name, value in conn.headers:
        if name == b"connection":
            drop = RESPONSE_DROP | {t.strip().lower() for t in value.split(b",")}
    headers = [(n, v) for n, v in conn.headers if n not in drop]
    headers.append((VERSION_HEADER, version.header))
    return headers


async def _relay(
    pool: UpstreamPool, conn: Connection, version: VersionRoute, send: Send, payload: bytes | None
) -> None:
    """Status, headers and body to the client; the connection goes back to the pool."""
    start = {
        "type": "http.response.start",
        "status": conn.status,
        "headers": _response_headers(conn, version),
    }
    if payload is not None:
        pool.release(conn)
        await send(start)
        await send({"type": "http.response.body", "body": payload})
        return
    try:
        await send(start)
        while chunk := await conn.read_chunk(pool.timeout):
            await send({"type": "http.response.body", "body": chunk, "more_body": True})
        await send({"type": "http.response.body", "body": b""})
    except BaseException:
        pool.release(conn, reuse=False)
        raise
    pool.release(conn)
