"""The ceiling for `GET /api/jobs/{id}`: minimal Starlette + psycopg async pool, same data.

Same answer as the API (the caller's job with its service id, version number and attempts),
the same SQL statement (one round trip), the same token check (SHA-256 of the bearer token,
cached in memory like the API's); JSON by orjson, no validation, no middleware. Run by
`bench.polling` under uvicorn with one process:

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
from sqlalchemy.dialects import postgresql
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from api.jobs.service import JOB_VIEW

# The very statement the API runs (api.jobs.service.JOB_VIEW), compiled for psycopg.
JOB_SQL = str(JOB_VIEW.compile(dialect=postgresql.psycopg.dialect()))
TOKEN_SQL = """
SELECT customer_id FROM api_tokens WHERE token_hash = %s AND revoked_at IS NULL
"""
JOB_FIELDS = (
    "job_id",
    "kind",
    "status",
    "service_id",
    "version",
    "attempts",
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
        params = {"uuid": request.path_params["job_id"], "customer_id": customer_id}
        async with pool.connection() as conn:
            row = await (await conn.execute(JOB_SQL, params)).fetchone()
        if row is None:
            return json_response({"error": {"code": "not_found"}}, 404)
        return json_response(dict(zip(JOB_FIELDS, row, strict=True)))

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        await pool.open()
        try:
            yield
        finally:
            await pool.close()

    return Starlette(routes=[Route("/api/jobs/{job_id}", get_job)], lifespan=lifespan)
