"""The FastAPI application: routers, error handlers, health, body limits."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import redis.asyncio as aioredis
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from sqlalchemy import text
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api.admin.page import router as admin_page_router
from api.admin.router import router as admin_router
from api.errors import error_response, error_responses, install_error_handlers
from api.gateway.router import InferenceGateway, create_pool
from api.gateway.routes import ROUTES
from api.idempotency import IdempotencyMiddleware
from api.jobs.router import router as jobs_router
from api.queue import make_producer
from api.services.router import router as services_router
from api.versions.router import router as versions_router
from api.webhooks.router import router as webhooks_router
from db.engine import create_api_engine
from db.settings import get_settings

log = logging.getLogger(__name__)


class BodyLimit:
    """Refuse request bodies larger than the configured limit with a JSON 413."""

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        for name, value in scope.get("headers", []):
            if name == b"content-length" and value.isdigit() and int(value) > self.limit:
                await self._too_large(scope, receive, send)
                return
        received = 0

        async def limited() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.limit:
                    raise _TooLarge
            return message

        try:
            await self.app(scope, limited, send)
        except _TooLarge:
            await self._too_large(scope, receive, send)

    async def _too_large(self, scope: Scope, receive: Receive, send: Send) -> None:
        response = error_response(
            413, "payload_too_large", f"request body is larger than {self.limit} bytes"
        )
        await response(scope, receive, send)


class _TooLarge(Exception):
    pass


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    """Per-process engine, broker producer and Redis client."""
    settings = get_settings()
    engine, sessionmaker = create_api_engine()
    app.state.engine = engine
    app.state.sessionmaker = sessionmaker
    # Same pool, autocommit: a single-statement read pays no BEGIN/ROLLBACK round trips.
    app.state.read_engine = engine.execution_options(isolation_level="AUTOCOMMIT")
    app.state.producer = make_producer()
    app.state.redis = aioredis.from_url(
        settings.redis_url, socket_timeout=2, socket_connect_timeout=2
    )
    app.state.upstreams = create_pool(settings)
    ROUTES.configure(settings.gateway_route_ttl)
    try:
        yield
    finally:
        await app.state.upstreams.aclose()
        await app.state.redis.aclose()
        await engine.dispose()


def create_app() -> FastAPI:
    """Build the application."""
    settings = get_settings()
    app = FastAPI(
        title="serveplane",
        version="0.1.0",
        description="Deploy trained models as online REST inference services on Kubernetes.",
        lifespan=lifespan,
        # No OpenTelemetry here: its per-request check costs ~5% of the gateway's CPU.
        telemetry={"tracing": False, "metrics": False, "logs": False},
    )
    install_error_handlers(app)
    app.include_router(services_router)
    app.include_router(jobs_router)
    app.include_router(webhooks_router)
    app.include_router(versions_router)
    app.include_router(admin_router)
    app.include_router(admin_page_router)

    @app.get("/healthz", tags=["health"])
    async def healthz() -> dict[str, str]:
        """The process is up."""
        return {"status": "ok"}

    @app.get(
        "/readyz",
        tags=["health"],
        responses=error_responses(503, described={503: "a dependency is down"}),
    )
    async def readyz(request: Request) -> JSONResponse:
        """The database and the broker answer."""
        checks: dict[str, str] = {}
        try:
            async with request.app.state.engine.connect() as conn:
                await conn.execute(text("SELECT 1"))
            checks["database"] = "ok"
        except Exception as exc:
            checks["database"] = f"unavailable: {type(exc).__name__}"
        try:
            await request.app.state.redis.ping()
            checks["broker"] = "ok"
        except Exception as exc:
            checks["broker"] = f"unavailable: {type(exc).__name__}"
        ok = all(v == "ok" for v in checks.values())
        if ok:
            return JSONResponse({"status": "ok", "checks": checks})
        return JSONResponse(
            {
                "error": {
                    "code": "not_ready",
                    "message": "a dependency is unavailable",
                    "details": checks,
                }
            },
            status_code=503,
            headers={"Retry-After": "5"},
        )

    app.add_middleware(IdempotencyMiddleware)
    app.add_middleware(BodyLimit, limit=settings.max_body_bytes)
    # Outermost: /inference/... never pays for the API's routing, body limit or idempotency.
    app.add_middleware(InferenceGateway)
    return app
