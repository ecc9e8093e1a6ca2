"""The ceiling for `GET /api/jobs/{id}`: minimal Starlette + psycopg async pool, same data.

Same answer as the API (the job of the caller's customer with its service id, version number
and attempts), same token check (SHA-256 of the bearer token, cached in memory like the
API's), two queries per request. Run by `bench.polling` under uvicorn with one process:

    BENCH_DSN=postgresql://... python -m uvicorn bench.bare_jobs:create_app --factory
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import orjson
from psycopg_pool import AsyncConnectionPool
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

JOB_SQL = """
SELECT j.id, j.uuid, j.kind, j.status, s.uuid, v.number, j.attempts, j.max_attempts, j.error,
       j.payload, j.created_at, j.updated_at, j.started_at, j.finished_at, j.deadline_at
FROM jobs j JOIN inference_services s ON s.id = j.service_id
LEFT JOIN service_versions v ON v.id = j.version_id
WHERE j.uuid = %s AND j.customer_id = %s
"""
ATTEMPTS_SQL = """
SELECT number, status, error, started_at, finished_at FROM job_attempts
WHERE job_id = %s ORDER BY number
"""
TOKEN_SQL = """
SELECT customer_id FROM api_tokens WHERE token_hash = %s AND revoked_at IS NULL
"""
JOB_FIELDS = (
    "job_id",
    "kind",
    "status",
    "service_id",
    "version",
    "attempt_count",
    "max_attempts",
    "error",
    "payload",
    "created_at",
    "updated_at",
    "started_at",
    "finished_at",
    "deadline_at",
)
ATTEMPT_FIELDS = ("number", "status", "error", "started_at", "finished_at")


def json_response(body: Any, status: int = 200) -> Response:
    return Response(orjson.dumps(body), status_code=status, media_type="application/json")


def create_app() -> Starlette:
    """The app; BENCH_DSN names the database."""
    pool = AsyncConnectionPool(os.environ["BENCH_DSN"], min_size=8, max_size=32, open=False)
    tokens: dict[str, int] = {}

    async def customer(request: Request) -> int | None:
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not token:
            return None
        key = hashlib.sha256(token.encode()).hexdigest()
        if key in tokens:
            return tokens[key]
        async with pool.connection() as conn:
            row = await (await conn.execute(TOKEN_SQL, (key,))).fetchone()
        if row is None:
            return None
        tokens[key] = int(row[0])
        return tokens[key]

    async def get_job(request: Request) -> Response:
        customer_id = await customer(request)
        if customer_id is None:
            return json_response({"error": {"code": "unauthorized"}}, 401)
        async with pool.connection() as conn:
            row = await (
                await conn.execute(JOB_SQL, (request.path_params["job_id"], customer_id))
            ).fetchone()
            if row is None:
                return json_response({"error": {"code": "not_found"}}, 404)
            attempts = await (await conn.execute(ATTEMPTS_SQL, (row[0],))).fetchall()
        body = dict(zip(JOB_FIELDS, row[1:], strict=True))
        body["attempts"] = [dict(zip(ATTEMPT_FIELDS, a, strict=True)) for a in attempts]
        return json_response(body)

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        await pool.open()
        try:
            yield
        finally:
            await pool.close()

    return Starlette(routes=[Route("/api/jobs/{job_id}", get_job)], lifespan=lifespan)
