"""CPU per operation measured in-process, for checking an optimisation before a full run.

    python -m bench.inprocess engine [--jobs 150]    # the worker's advance_job per deploy
    python -m bench.inprocess api [--requests 2000]  # POST a service, GET a job (ASGI, no HTTP)

`engine` creates jobs through the API of a private stack (no workers), then calls the job
engine's `advance_job` for each in this process against the fake cluster: CPU and wall ms per
deploy and SQL statements per deploy by kind. `api` calls the ASGI app directly (its
lifespan, middlewares, routers; no socket, no uvicorn): CPU ms per POST and per job GET.
Prints one JSON object. Not part of `run_all`.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import json
import os
import re
import time
from typing import Any

import httpx

from bench.common import emit, machine, run
from bench.stack import Stack, StackConfig

PROJECT_ENV = ("SERVEPLANE_", "DATABASE_URL", "REDIS_URL", "KUBECONFIG")


def statement_kind(statement: str) -> str:
    """`UPDATE jobs`, `SELECT … FROM service_versions FOR UPDATE`, …"""
    words = statement.split()
    if not words:
        return "?"
    if words[0] == "SELECT":
        found = re.search(r"\bFROM\s+(\S+)", statement)
        source = found.group(1) if found else ""
        lock = " FOR UPDATE" if "FOR UPDATE" in statement else ""
        return f"SELECT … FROM {source}{lock}"
    return " ".join(words[:3]) if words[0] in ("INSERT", "UPDATE", "DELETE") else words[0]


def count_statements() -> collections.Counter[str]:
    """Count every statement SQLAlchemy sends from now on, by kind."""
    from sqlalchemy import event
    from sqlalchemy.engine import Engine

    counts: collections.Counter[str] = collections.Counter()

    @event.listens_for(Engine, "before_cursor_execute")
    def _statement(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        counts[statement_kind(statement)] += 1

    @event.listens_for(Engine, "commit")
    def _commit(conn: Any) -> None:
        counts["COMMIT"] += 1

    return counts


def engine(jobs: int) -> dict[str, Any]:
    """advance_job for `jobs` deploys created through the API; figures per deploy."""
    with Stack(StackConfig(workers=0, start_workers=False)) as stack:
        with httpx.Client(timeout=30) as http:
            for i in range(jobs + 5):
                body = {"name": f"e-{i}", "model_path": "/m", "framework": "onnxruntime"}
                http.post(
                    f"{stack.api_url}/api/inference/services", json=body, headers=stack.headers
                ).raise_for_status()
        with stack.sql() as conn:
            ids = [r[0] for r in conn.execute("SELECT id FROM jobs ORDER BY id").fetchall()]
        os.environ.update({k: v for k, v in stack.env.items() if k.startswith(PROJECT_ENV)})
        import workers.tasks  # noqa: F401 - registers the job-ended hooks like a worker
        from workers.jobs.engine import advance_job

        for job_id in ids[:5]:  # warm-up: imports, connections, the namespace
            advance_job(job_id)
        counts = count_statements()
        cpu, wall = time.process_time(), time.perf_counter()
        for job_id in ids[5:]:
            advance_job(job_id)
        cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
        with stack.sql() as conn:
            running = conn.execute(
                "SELECT count(*) FROM inference_services WHERE status = 'running'"
            ).fetchone()
        kube = stack.fake.stats()["by_verb_resource"] if stack.fake else {}
    statements = {k: round(v / jobs, 2) for k, v in counts.most_common()}
    return {
        "deploys": jobs,
        "running": running[0] if running else 0,
        "cpu_ms_per_deploy": round(cpu * 1000 / jobs, 2),
        "wall_ms_per_deploy": round(wall * 1000 / jobs, 2),
        "statements_per_deploy": round(
            sum(v for k, v in counts.items() if k != "COMMIT") / jobs, 2
        ),
        "statements_by_kind": statements,
        "kube_requests": kube,
    }


async def _api(requests: int, stack: Stack) -> dict[str, Any]:
    from api.app import create_app

    app = create_app()
    auth = f"Bearer {stack.token}".encode()

    async def call(method: str, path: str, body: bytes = b"") -> tuple[int, bytes]:
        headers = [
            (b"host", b"bench"),
            (b"authorization", auth),
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
        ]
        scope = {
            "type": "http",
            "asgi": {"version": "3.0"},
            "http_version": "1.1",
            "method": method,
            "scheme": "http",
            "path": path,
            "raw_path": path.encode(),
            "query_string": b"",
            "root_path": "",
            "headers": headers,
            "client": ("127.0.0.1", 1),
            "server": ("127.0.0.1", 80),
            "app": app,
        }
        sent = False
        status, chunks = 0, []

        async def receive() -> dict[str, Any]:
            nonlocal sent
            if sent:
                await asyncio.sleep(3600)
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}

        async def send(message: dict[str, Any]) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            elif message["type"] == "http.response.body":
                chunks.append(message.get("body", b""))

        await app(scope, receive, send)
        return status, b"".join(chunks)

    def post_body(i: int) -> bytes:
        return json.dumps(
            {"name": f"a-{i}", "model_path": "/m", "framework": "onnxruntime"}
        ).encode()

    async with app.router.lifespan_context(app):
        job_ids = []
        for i in range(50):  # warm-up
            status, raw = await call("POST", "/api/inference/services", post_body(-i - 1))
            assert status == 202, raw
            job_ids.append(json.loads(raw)["job_id"])
        cpu = time.process_time()
        for i in range(requests):
            await call("POST", "/api/inference/services", post_body(i))
        post_cpu = time.process_time() - cpu
        cpu = time.process_time()
        for i in range(requests):
            status, _ = await call("GET", f"/api/jobs/{job_ids[i % len(job_ids)]}")
            assert status == 200
        get_cpu = time.process_time() - cpu
    return {
        "requests": requests,
        "post_service_cpu_ms": round(post_cpu * 1000 / requests, 3),
        "get_job_cpu_ms": round(get_cpu * 1000 / requests, 3),
    }


def api(requests: int) -> dict[str, Any]:
    """CPU per POST /api/inference/services and per GET /api/jobs/{id}, in-process."""
    with Stack(StackConfig(workers=0, start_workers=False, fake_cluster=False)) as stack:
        os.environ.update({k: v for k, v in stack.env.items() if k.startswith(PROJECT_ENV)})
        return run(lambda: _api(requests, stack))


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.inprocess")
    parser.add_argument("what", choices=["engine", "api"])
    parser.add_argument("--jobs", type=int, default=150)
    parser.add_argument("--requests", type=int, default=2000)
    args = parser.parse_args()
    result = engine(args.jobs) if args.what == "engine" else api(args.requests)
    emit({"benchmark": f"inprocess_{args.what}", **result, "machine": machine()})


if __name__ == "__main__":
    main()
