"""Submit N services at once against an instantly-ready fake cluster; time POST → `running`.

Each service is polled with `GET /api/inference/services/{id}` every ~20 ms from the moment
its POST answered. Kubernetes API requests are counted by the fake cluster (reset after a
short warm-up) and divided by the number of deploys.

    python -m bench.submit_to_running [--services 200] [--workers 2]
"""

from __future__ import annotations

import argparse
import asyncio
import time
from typing import Any

from bench.common import client_session, emit, machine, post_until_accepted, run, summary
from bench.profiling import Profiler
from bench.stack import Stack, StackConfig, log

READINESS = ("get deployments", "list deployments", "list pods")


def service_body(name: str) -> dict[str, Any]:
    """A small ONNX service (one replica; the default autoscaling bounds)."""
    return {"name": name, "model_path": f"/models/{name}", "framework": "onnxruntime"}


def wait_all_running(stack: Stack, count: int, timeout: float) -> None:
    """Block until `count` services are running (checked in the database)."""
    deadline = time.monotonic() + timeout
    with stack.sql() as conn:
        while time.monotonic() < deadline:
            row = conn.execute(
                "SELECT count(*) FROM inference_services WHERE status = 'running'"
            ).fetchone()
            if row is not None and row[0] >= count:
                return
            time.sleep(0.1)
    raise RuntimeError(f"{count} services were not running within {timeout}s")


def db_counters(stack: Stack) -> dict[str, float]:
    """Cumulative transaction and row counters of the stack's database (pg_stat_*)."""
    with stack.sql() as conn:
        row = conn.execute(
            "SELECT xact_commit, xact_rollback FROM pg_stat_database WHERE datname = %s",
            (stack.db.name,),
        ).fetchone()
        tables = conn.execute(
            "SELECT relname, n_tup_ins, n_tup_upd, coalesce(idx_scan, 0) + seq_scan "
            "FROM pg_stat_user_tables"
        ).fetchall()
    out: dict[str, float] = {"commits": row[0], "rollbacks": row[1]} if row else {}
    for name, ins, upd, scans in tables:
        out[f"{name}.inserted"] = ins
        out[f"{name}.updated"] = upd
        out[f"{name}.scans"] = scans
    return out


def db_per_deploy(
    before: dict[str, float], after: dict[str, float], deploys: int
) -> dict[str, float]:
    """Database work per deploy between two db_counters snapshots (API and workers together)."""
    return {
        key: round((after[key] - before.get(key, 0)) / deploys, 2)
        for key in sorted(after)
        if after[key] - before.get(key, 0)
    }


def cpu_per_deploy(
    before: dict[str, float], after: dict[str, float], client: float, deploys: int
) -> dict[str, float]:
    """CPU milliseconds per deploy by component (the client's polling included)."""
    out = {k: round((after[k] - before.get(k, 0.0)) * 1000 / deploys, 1) for k in after}
    out["bench_client"] = round(client * 1000 / deploys, 1)
    out["total"] = round(sum(out.values()), 1)
    return out


def per_deploy(stats: dict[str, Any], deploys: int) -> dict[str, Any]:
    """Kubernetes requests per deploy, split into readiness checks and everything else."""
    by_vr: dict[str, int] = stats["by_verb_resource"]
    readiness = sum(n for key, n in by_vr.items() if key in READINESS)
    return {
        "total": round(stats["total"] / deploys, 2),
        "by_verb": {v: round(n / deploys, 2) for v, n in stats["by_verb"].items() if n},
        "by_verb_resource": {k: round(n / deploys, 2) for k, n in sorted(by_vr.items())},
        "readiness_checks": round(readiness / deploys, 2),
        "beyond_readiness": round((stats["total"] - readiness) / deploys, 2),
    }


async def submit_and_watch(
    stack: Stack, count: int, poll_interval: float, prefix: str
) -> dict[str, Any]:
    """POST `count` services concurrently, poll each until running; the client-side figures."""
    headers = stack.headers
    to_running: list[float] = []
    post_latency: list[float] = []
    failures: list[str] = []
    done_at: list[float] = []
    retried: list[int] = []

    async with client_session(limit=0, timeout=60) as http:

        async def one(i: int) -> None:
            started = time.perf_counter()
            status, body, retries = await post_until_accepted(
                http,
                f"{stack.api_url}/api/inference/services",
                service_body(f"{prefix}-{i}"),
                headers,
            )
            retried.append(retries)
            if status != 202:
                failures.append(f"POST {status}: {body}")
                return
            post_latency.append(time.perf_counter() - started)
            url = f"{stack.api_url}/api/inference/services/{body['service_id']}"
            while True:
                await asyncio.sleep(poll_interval)
                async with http.get(url, headers=headers) as resp:
                    status = (await resp.json()).get("status")
                if status == "running":
                    now = time.perf_counter()
                    to_running.append(now - started)
                    done_at.append(now)
                    return
                if status == "failed":
                    failures.append(f"{body['service_id']} failed")
                    return

        first = time.perf_counter()
        await asyncio.gather(*(one(i) for i in range(count)))
    wall = (max(done_at) - first) if done_at else float("nan")
    return {
        "submit_to_running_s": summary(to_running, 1.0, 4),
        "post_latency_ms": summary(post_latency, 1000, 2),
        "wall_s": round(wall, 3),
        "services_per_s": round(len(to_running) / wall, 1) if done_at else 0.0,
        "post_503_retries": sum(retried),
        "failures": failures[:5],
        "failed": len(failures),
    }


def recorded_latency(stack: Stack, prefix: str) -> dict[str, Any]:
    """Server-side view from the rows (no polling delay), split into stages.

    created → claimed: commit, enqueue, wait for a worker thread (jobs.started_at);
    claimed → running: the worker's apply + readiness check + completion (running event).
    """
    with stack.sql() as conn:
        rows = conn.execute(
            "SELECT extract(epoch FROM e.at - s.created_at), "
            "extract(epoch FROM j.started_at - s.created_at), "
            "extract(epoch FROM e.at - j.started_at) "
            "FROM inference_services s "
            "JOIN service_events e ON e.service_id = s.id AND e.to_status = 'running' "
            "JOIN jobs j ON j.service_id = s.id AND j.kind = 'deploy' "
            "WHERE s.name LIKE %s",
            (f"{prefix}-%",),
        ).fetchall()
    return {
        "created_to_running_s": summary([float(r[0]) for r in rows], 1.0, 4),
        "created_to_claimed_s": summary([float(r[1]) for r in rows], 1.0, 4),
        "claimed_to_running_s": summary([float(r[2]) for r in rows], 1.0, 4),
    }


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.submit_to_running")
    parser.add_argument("--services", type=int, default=200)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--api-workers", type=int, default=1)
    parser.add_argument("--poll-interval", type=float, default=0.02)
    parser.add_argument("--warmup", type=int, default=4)
    parser.add_argument(
        "--sequential",
        type=int,
        default=20,
        help="then this many services one at a time (latency without a queue)",
    )
    args = parser.parse_args()

    with Stack(StackConfig(workers=args.workers, api_workers=args.api_workers)) as stack:
        assert stack.fake is not None
        log(f"warm-up: {args.warmup} services")
        run(lambda: submit_and_watch(stack, args.warmup, args.poll_interval, "warm"))
        wait_all_running(stack, args.warmup, 60)
        time.sleep(1.0)
        stack.fake.reset_stats()
        time.sleep(1.0)  # PostgreSQL publishes statistics at most once a second
        db_before = db_counters(stack)
        cpu_before = stack.cpu_seconds()
        client_before = time.process_time()
        log(f"run: {args.services} services at once")
        pids = {f"worker{i}": p.pid for i, p in enumerate(stack.workers)}
        profiler = Profiler("submit_to_running", {"api": stack.api_pids()[-1], **pids}, 8)
        client = run(lambda: submit_and_watch(stack, args.services, args.poll_interval, "svc"))
        profiler.wait()
        cpu_after = stack.cpu_seconds()
        client_cpu = time.process_time() - client_before
        stats = stack.fake.stats()
        recorded = recorded_latency(stack, "svc")
        time.sleep(1.5)
        db_after = db_counters(stack)
        alone: list[float] = []
        for i in range(args.sequential):
            one = run(lambda i=i: submit_and_watch(stack, 1, args.poll_interval, f"seq{i}"))
            alone.append(one["submit_to_running_s"]["max"])
    result = {
        "benchmark": "submit_to_running",
        "services": args.services,
        "workers": args.workers,
        "api_workers": args.api_workers,
        "poll_interval_s": args.poll_interval,
        **client,
        "recorded": recorded,
        "one_at_a_time_submit_to_running_s": summary(alone, 1.0, 4),
        "kube_requests": stats["total"],
        "kube_requests_per_deploy": per_deploy(stats, args.services),
        "db_per_deploy": db_per_deploy(db_before, db_after, args.services),
        "cpu_ms_per_deploy": cpu_per_deploy(cpu_before, cpu_after, client_cpu, args.services),
        "machine": machine(),
    }
    emit(result)


if __name__ == "__main__":
    main()
