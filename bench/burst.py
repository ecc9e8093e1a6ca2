"""A burst of 1,000 services submitted as fast as the API accepts them (32 concurrent POSTs).

Reports the POST latency under that load and the time from the first POST until every
service is `running` (counted in the database every 100 ms, which costs the API nothing).

    python -m bench.burst [--services 1000] [--concurrency 32] [--workers 2]
"""

from __future__ import annotations

import argparse
import asyncio
import time
from typing import Any

from bench.common import client_session, emit, machine, post_until_accepted, run, summary
from bench.profiling import Profiler
from bench.stack import Stack, StackConfig, log
from bench.submit_to_running import per_deploy, service_body, wait_all_running


async def burst(stack: Stack, count: int, concurrency: int, timeout: float) -> dict[str, Any]:
    """Submit `count` services with `concurrency` callers; wait until all run."""
    latencies: list[float] = []
    failures: list[str] = []
    queue: asyncio.Queue[int] = asyncio.Queue()
    for i in range(count):
        queue.put_nowait(i)
    counts: list[tuple[float, int]] = []
    retried: list[int] = []
    started = time.perf_counter()

    async with client_session(limit=concurrency, timeout=60) as http:

        async def caller() -> None:
            while not queue.empty():
                i = queue.get_nowait()
                t0 = time.perf_counter()
                status, _, retries = await post_until_accepted(
                    http,
                    f"{stack.api_url}/api/inference/services",
                    service_body(f"burst-{i}"),
                    stack.headers,
                )
                retried.append(retries)
                if status != 202:
                    failures.append(f"{status}")
                    continue
                latencies.append(time.perf_counter() - t0)

        await asyncio.gather(*(caller() for _ in range(concurrency)))
    submitted = time.perf_counter() - started

    def count_running() -> float:
        deadline = time.monotonic() + timeout
        with stack.sql() as conn:
            while time.monotonic() < deadline:
                row = conn.execute(
                    "SELECT count(*) FILTER (WHERE status = 'running'), "
                    "count(*) FILTER (WHERE status = 'failed') FROM inference_services "
                    "WHERE name LIKE 'burst-%'"
                ).fetchone()
                assert row is not None
                counts.append((round(time.perf_counter() - started, 2), int(row[0])))
                if row[0] + row[1] >= count:
                    return time.perf_counter() - started
                time.sleep(0.1)
        return float("nan")

    all_running = await asyncio.to_thread(count_running)
    return {
        "submitted_in_s": round(submitted, 2),
        "post_rate_per_s": round(len(latencies) / submitted, 1),
        "post_latency_ms": summary(latencies, 1000, 2),
        "post_503_retries": sum(retried),
        "post_failures": len(failures),
        "all_running_s": round(all_running, 2),
        "running_at_s": counts[:: max(len(counts) // 20, 1)],
    }


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.burst")
    parser.add_argument("--services", type=int, default=1000)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--api-workers", type=int, default=1)
    parser.add_argument("--timeout", type=float, default=180)
    args = parser.parse_args()

    with Stack(StackConfig(workers=args.workers, api_workers=args.api_workers)) as stack:
        assert stack.fake is not None
        from bench.submit_to_running import submit_and_watch

        run(lambda: submit_and_watch(stack, 4, 0.02, "warm"))
        wait_all_running(stack, 4, 60)
        stack.fake.reset_stats()
        log(f"burst: {args.services} services, {args.concurrency} concurrent POSTs")
        pids = {f"worker{i}": p.pid for i, p in enumerate(stack.workers)}
        profiler = Profiler("burst", {"api": stack.api_pids()[-1], **pids}, 15)
        figures = run(lambda: burst(stack, args.services, args.concurrency, args.timeout))
        stats = stack.fake.stats()
        profiler.wait()
        with stack.sql() as conn:
            statuses = dict(
                conn.execute(
                    "SELECT status, count(*) FROM inference_services "
                    "WHERE name LIKE 'burst-%' GROUP BY status"
                ).fetchall()
            )
    emit(
        {
            "benchmark": "burst",
            "services": args.services,
            "concurrency": args.concurrency,
            "workers": args.workers,
            "api_workers": args.api_workers,
            **figures,
            "final_statuses": statuses,
            "kube_requests_per_deploy": per_deploy(stats, args.services),
            "machine": machine(),
        }
    )


if __name__ == "__main__":
    main()
