"""`GET /api/jobs/{id}` throughput against 100,000 jobs, versus a bare Starlette + psycopg app.

Seeds a customer's service, its version and 100,000 succeeded deploy jobs (one attempt each)
straight in SQL, then drives each server for `--seconds` at `--concurrency` with random job
ids: first the serveplane API, then `bench.bare_jobs` (the ceiling for this stack), both
one uvicorn process with the same loop and HTTP parser, in the same run.

    python -m bench.polling [--jobs 100000] [--concurrency 64] [--seconds 10]
"""

from __future__ import annotations

import argparse
import random
import subprocess
import sys
import time
from typing import Any

import httpx

from bench.common import client_session, emit, load, machine, run
from bench.profiling import Profiler
from bench.stack import ROOT, Stack, StackConfig, free_port, kill_group, log

SEED_SQL = [
    """
    INSERT INTO inference_services (uuid, customer_id, name, model_path, framework, status,
                                    endpoint_url, replicas, min_replicas, max_replicas)
    VALUES ('svc-pollbench01', %(customer)s, 'poll-bench', '/models/poll', 'onnxruntime',
            'running', 'http://127.0.0.1/inference/svc-pollbench01', 1, 1, 1)
    """,
    """
    INSERT INTO service_versions (service_id, number, model_path, framework, replicas,
                                  min_replicas, max_replicas, cpu_cores, memory_gb, gpu_count,
                                  status, traffic_percent, endpoints)
    SELECT id, 1, model_path, framework, 1, 1, 1, 2, 4, 0, 'ready', 100, '[]'::jsonb
    FROM inference_services WHERE uuid = 'svc-pollbench01'
    """,
    """
    INSERT INTO jobs (uuid, kind, status, service_id, version_id, customer_id, payload, attempts,
                      max_attempts, phase, check_count, cancel_requested, started_at,
                      finished_at, deadline_at)
    SELECT 'job-' || substr(md5(g::text), 1, 16), 'deploy', 'succeeded', s.id, v.id,
           s.customer_id, '{"canary_percent": 100}'::jsonb, 1, 5, 'wait', 3, false,
           now(), now(), now() + interval '30 minutes'
    FROM generate_series(1, %(jobs)s) g
    JOIN inference_services s ON s.uuid = 'svc-pollbench01'
    JOIN service_versions v ON v.service_id = s.id
    """,
    """
    INSERT INTO job_attempts (job_id, number, status, started_at, finished_at)
    SELECT id, 1, 'succeeded', now(), now() FROM jobs
    """,
]


def seed(stack: Stack, jobs: int) -> list[str]:
    """Insert the rows; returns the job ids."""
    started = time.monotonic()
    with stack.sql() as conn:
        for statement in SEED_SQL:
            conn.execute(statement, {"customer": stack.customer_id, "jobs": jobs})
        conn.execute("ANALYZE")
        ids = [r[0] for r in conn.execute("SELECT uuid FROM jobs").fetchall()]
    log(f"seeded {len(ids)} jobs in {time.monotonic() - started:.1f}s")
    return ids


def start_bare(stack: Stack) -> tuple[subprocess.Popen[bytes], str]:
    """`bench.bare_jobs` under uvicorn, one process, on a free port."""
    port = free_port()
    env = {**stack.env, "BENCH_DSN": stack.db.dsn}
    with open(stack.workdir / "bare.log", "ab") as out:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "uvicorn",
                "bench.bare_jobs:create_app",
                "--factory",
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                "--no-access-log",
                "--log-level",
                "warning",
            ],
            cwd=ROOT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            httpx.get(f"{url}/api/jobs/none", timeout=1)
            return proc, url
        except httpx.HTTPError:
            time.sleep(0.1)
    kill_group(proc)
    raise RuntimeError(f"bare server did not start:\n{stack.tail('bare')}")


async def drive(
    base_url: str,
    headers: dict[str, str],
    ids: list[str],
    concurrency: int,
    seconds: float,
    server_pid: int,
) -> dict[str, Any]:
    """Warm up 2 s, then measure `seconds` of closed-loop GETs of random jobs."""
    rng = random.Random(1)
    async with client_session(limit=concurrency) as http:

        async def request() -> bool:
            job_id = ids[rng.randrange(len(ids))]
            async with http.get(f"{base_url}/api/jobs/{job_id}", headers=headers) as resp:
                body = await resp.json()
                return resp.status == 200 and body["job_id"] == job_id

        await load(request, concurrency, 2.0)
        return await load(request, concurrency, seconds, {"server": server_pid})


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.polling")
    parser.add_argument("--jobs", type=int, default=100_000)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--seconds", type=float, default=10.0)
    args = parser.parse_args()

    config = StackConfig(workers=0, start_workers=False, fake_cluster=False)
    with Stack(config) as stack:
        ids = seed(stack, args.jobs)
        log("load on the API")
        api_pid = stack.api_pids()[-1]
        profiler = Profiler("polling", {"api": api_pid}, args.seconds + 2)
        api = run(
            lambda: drive(
                stack.api_url, stack.headers, ids, args.concurrency, args.seconds, api_pid
            )
        )
        profiler.wait()
        bare_proc, bare_url = start_bare(stack)
        try:
            log("load on the bare app")
            bare = run(
                lambda: drive(
                    bare_url, stack.headers, ids, args.concurrency, args.seconds, bare_proc.pid
                )
            )
        finally:
            kill_group(bare_proc)
    emit(
        {
            "benchmark": "polling",
            "jobs": args.jobs,
            "concurrency": args.concurrency,
            "server_processes": 1,
            "api": api,
            "bare": bare,
            "ratio": round(api["rps"] / bare["rps"], 3) if bare["rps"] else None,
            "machine": machine(),
        }
    )


if __name__ == "__main__":
    main()
