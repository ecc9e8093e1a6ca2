"""`/inference/{service_id}/{path}` for every method: check the key, pick a version, proxy.

The gateway is a pure ASGI layer placed in front of the FastAPI app instead of a FastAPI route:
on the proxy path the route matching, request object and response classes cost more than the
proxying itself (measured: the same forwarding code behind a FastAPI route reached ~60% of the
requests per second it reaches here). Errors still use the one JSON shape.
"""

from __future__ import annotations

from sqlalchemy.exc import InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from starlette.types import ASGIApp, Receive, Scope, Send

from api.errors import database_unavailable, error_response
from api.gateway.proxy import (
    BodyTooLarge,
    ClientGone,
    IncomingRequest,
    forward,
    read_headers,
    request_body,
)
from api.gateway.routes import ROUTES, ServiceRoute, VersionRoute
from api.gateway.upstream import Upstream, UpstreamPool
from db.domain import secrets_match
from db.settings import Settings, get_settings

PREFIX = "/inference/"
RAW_PREFIX = PREFIX.encode()
RETRY_AFTER = "5"
MAX_ID_LENGTH = 64
GONE_STATUSES = ("deleting", "deleted")


class GatewayError(Exception):
    """An answer the gateway gives itself, in the project's error shape."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        details: object = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.details = details
        self.headers = headers


class InferenceGateway:
    """ASGI middleware: `/inference/...` is proxied here, everything else goes to the app."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not scope["path"].startswith(PREFIX):
            await self.app(scope, receive, send)
            return
        try:
            await handle(scope, receive, send)
        except GatewayError as exc:
            response = error_response(exc.status, exc.code, exc.message, exc.details, exc.headers)
            await response(scope, receive, send)
        except (OperationalError, InterfaceError, PoolTimeout) as exc:
            await database_unavailable(exc)(scope, receive, send)


def create_pool(settings: Settings) -> UpstreamPool:
    """The process's upstream connection pool (one per API lifespan)."""
    return UpstreamPool(
        max_connections=settings.gateway_max_connections,
        connect_timeout=settings.gateway_connect_timeout,
        timeout=settings.gateway_timeout,
        keepalive_expiry=settings.gateway_keepalive_expiry,
    )


async def handle(scope: Scope, receive: Receive, send: Send) -> None:
    """Serve one inference request."""
    state = scope["app"].state
    service_id, target = split_path(scope)
    client = scope.get("client")
    incoming = read_headers(scope["headers"], client[0] if client else None)
    if not service_id or len(service_id) > MAX_ID_LENGTH or "\x00" in service_id:
        raise GatewayError(404, "service_not_found", f"service {service_id!r} not found")
    route = await ROUTES.get(service_id, state.sessionmaker)
    if route is None or route.status in GONE_STATUSES:
        raise GatewayError(404, "service_not_found", f"service {service_id} not found")
    authorize(route, incoming)
    if not route.serving:
        raise GatewayError(
            503,
            "service_unavailable",
            f"service {service_id} is not serving (status {route.status})",
            {"status": route.status},
            {"Retry-After": RETRY_AFTER},
        )
    attempts = choose(route, incoming.pinned)
    limit = get_settings().gateway_max_body_bytes
    if incoming.content_length is not None and incoming.content_length > limit:
        raise _too_large(limit)
    try:
        body, framing = await request_body(receive, incoming, limit)
        failure = await forward(
            state.upstreams,
            send,
            service=service_id,
            method=scope["method"],
            target=target,
            incoming=incoming,
            body=body,
            framing=framing,
            attempts=attempts,
        )
    except BodyTooLarge:
        raise _too_large(limit) from None
    except ClientGone:
        return
    if failure is not None:
        raise GatewayError(failure.status, failure.code, failure.message)


def split_path(scope: Scope) -> tuple[str, bytes]:
    """The service id and the upstream target (raw path after the id, plus the query)."""
    rest = scope["path"][len(PREFIX) :]
    service_id = rest.partition("/")[0]
    raw = scope.get("raw_path")
    if raw and raw.startswith(RAW_PREFIX):
        tail = raw[len(RAW_PREFIX) :].partition(b"/")[2]
    else:
        tail = rest.partition("/")[2].encode()
    target = b"/" + tail
    query = scope.get("query_string")
    if query:
        target += b"?" + query
    return service_id, target


def presented_key(incoming: IncomingRequest) -> str | None:
    """The API key from `Authorization: Bearer <key>` or `X-API-Key: <key>`."""
    if incoming.authorization is not None:
        scheme, _, token = incoming.authorization.partition(b" ")
        if scheme.lower() == b"bearer" and token.strip():
            return token.strip().decode("latin-1")
    if incoming.api_key is not None and incoming.api_key.strip():
        return incoming.api_key.strip().decode("latin-1")
    return None


def authorize(route: ServiceRoute, incoming: IncomingRequest) -> None:
    """401 unless the presented key matches the stored hash (constant-time comparison)."""
    key = presented_key(incoming)
    challenge = {"WWW-Authenticate": "Bearer"}
    if key is None:
        raise GatewayError(
            401,
            "unauthorized",
            "missing API key: send 'Authorization: Bearer <api_key>' or 'X-API-Key: <api_key>'",
            headers=challenge,
        )
    if route.key_hash is None or not secrets_match(route.key_hash, key):
        raise GatewayError(401, "unauthorized", "invalid API key", headers=challenge)


def choose(route: ServiceRoute, pinned: bytes | None) -> list[tuple[VersionRoute, Upstream]]:
    """Upstreams to try in order: the chosen version's replicas, then (unpinned) the others."""
    if pinned is None:
        first = route.pick()
        if len(route.versions) == 1:
            return [(first, upstream) for upstream in first.rotation()]
        return _upstreams(first, [v for v in route.versions if v is not first])
    value = pinned.strip()
    if not value.isdigit():
        raise GatewayError(
            400,
            "invalid_header",
            "X-Serveplane-Version: must be a version number",
            [{"field": "X-Serveplane-Version", "message": "must be a version number"}],
        )
    number = int(value)
    version = route.version(number)
    if version is not None:
        return _upstreams(version, [])
    if number in route.unreachable:
        raise GatewayError(
            503,
            "version_unavailable",
            f"X-Serveplane-Version: version {number} of {route.uuid} has no ready replica yet",
            {"version": number},
            {"Retry-After": RETRY_AFTER},
        )
    serving = [v.number for v in route.versions]
    raise GatewayError(
        404,
        "version_not_serving",
        f"X-Serveplane-Version: version {number} of {route.uuid} does not receive traffic",
        {"version": number, "serving_versions": serving},
    )


def _upstreams(
    first: VersionRoute, others: list[VersionRoute]
) -> list[tuple[VersionRoute, Upstream]]:
    attempts = [(first, upstream) for upstream in first.rotation()]
    for version in others:
        attempts.extend((version, upstream) for upstream in version.rotation())
    return attempts


def _too_large(limit: int) -> GatewayError:
    return GatewayError(413, "payload_too_large", f"request body is larger than {limit} bytes")
