"""2,000 rollouts that take 120 s in flight; how do new, instantly-ready services fare?

The fake cluster's default behaviour makes pods ready 120 s after a rollout starts; a rule
makes `fast-*` deployments ready at once. Phases:

1. submit the slow services (32 concurrent POSTs) and wait until every job has applied its
   manifests and waits for readiness (jobs.phase = 'wait');
2. let readiness checks reach their steady backoff, then count the Kubernetes requests of a
   window (only slow rollouts in flight): GET deployments + LIST deployments/pods per second;
3. submit 50 fast services, one every 100 ms, each polled every 20 ms: submit → running.

Worker RSS (all worker processes) is sampled every 0.5 s throughout; the peak is reported.
The run stops before the slow rollouts finish (the stack is torn down).

    python -m bench.slow_rollouts [--services 2000] [--fast 50] [--window 25]
"""

from __future__ import annotations

import argparse
import asyncio
import threading
import time
from typing import Any

from bench.common import client_session, emit, machine, post_until_accepted, run, summary
from bench.profiling import Profiler
from bench.stack import Stack, StackConfig, log
from bench.submit_to_running import READINESS, service_body

ROLLOUT_SECONDS = 120.0


async def submit_slow(stack: Stack, count: int, concurrency: int) -> dict[str, Any]:
    """POST `count` slow services with `concurrency` callers."""
    latencies: list[float] = []
    retried: list[int] = []
    failures = 0
    queue: asyncio.Queue[int] = asyncio.Queue()
    for i in range(count):
        queue.put_nowait(i)
    started = time.perf_counter()
    async with client_session(limit=concurrency, timeout=60) as http:

        async def caller() -> None:
            nonlocal failures
            while not queue.empty():
                i = queue.get_nowait()
                t0 = time.perf_counter()
                status, _, retries = await post_until_accepted(
                    http,
                    f"{stack.api_url}/api/inference/services",
                    service_body(f"slow-{i}"),
                    stack.headers,
                )
                retried.append(retries)
                if status != 202:
                    failures += 1
                    continue
                latencies.append(time.perf_counter() - t0)

        await asyncio.gather(*(caller() for _ in range(concurrency)))
    return {
        "submitted_in_s": round(time.perf_counter() - started, 2),
        "post_latency_ms": summary(latencies, 1000, 2),
        "post_503_retries": sum(retried),
        "post_failures": failures,
    }


def wait_applied(stack: Stack, count: int, timeout: float) -> float:
    """Seconds until `count` slow jobs wait for readiness (manifests applied)."""
    started = time.monotonic()
    with stack.sql() as conn:
        while time.monotonic() - started < timeout:
            row = conn.execute(
                "SELECT count(*) FROM jobs WHERE status = 'running' AND phase = 'wait'"
            ).fetchone()
            if row is not None and row[0] >= count:
                return time.monotonic() - started
            time.sleep(0.25)
    raise RuntimeError(f"{count} slow jobs did not reach the wait phase within {timeout}s")


async def submit_fast(stack: Stack, count: int, every: float, poll: float) -> dict[str, Any]:
    """Submit `count` instantly-ready services, one every `every` s; time each to running."""
    to_running: list[float] = []
    failures: list[str] = []
    async with client_session(limit=0, timeout=60) as http:

        async def one(i: int) -> None:
            await asyncio.sleep(i * every)
            t0 = time.perf_counter()
            status, body, _ = await post_until_accepted(
                http,
                f"{stack.api_url}/api/inference/services",
                service_body(f"fast-{i}"),
                stack.headers,
            )
            if status != 202:
                failures.append(f"POST {status}")
                return
            url = f"{stack.api_url}/api/inference/services/{body['service_id']}"
            while time.perf_counter() - t0 < 60:
                await asyncio.sleep(poll)
                async with http.get(url, headers=stack.headers) as resp:
                    status = (await resp.json()).get("status")
                if status == "running":
                    to_running.append(time.perf_counter() - t0)
                    return
                if status == "failed":
                    break
            failures.append(f"{body['service_id']} not running")

        await asyncio.gather(*(one(i) for i in range(count)))
    return {"submit_to_running_s": summary(to_running, 1.0, 4), "failures": failures[:5]}


class RssSampler(threading.Thread):
    """Samples the workers' total RSS every 0.5 s; keeps the peak."""

    def __init__(self, stack: Stack) -> None:
        super().__init__(daemon=True)
        self.stack = stack
        self.peak = 0
        self.last = 0
        self.done = threading.Event()

    def run(self) -> None:
        while not self.done.wait(0.5):
            self.last = self.stack.worker_rss()
            self.peak = max(self.peak, self.last)


def readiness_rate(before: dict[str, Any], after: dict[str, Any], seconds: float) -> dict[str, Any]:
    """Kubernetes requests per second between two stats snapshots."""
    b, a = before["by_verb_resource"], after["by_verb_resource"]
    delta = {k: a.get(k, 0) - b.get(k, 0) for k in set(a) | set(b)}
    readiness = sum(n for k, n in delta.items() if k in READINESS)
    return {
        "window_s": round(seconds, 1),
        "readiness_requests_per_s": round(readiness / seconds, 1),
        "all_requests_per_s": round((after["total"] - before["total"]) / seconds, 1),
        "by_verb_resource_per_s": {k: round(n / seconds, 1) for k, n in sorted(delta.items()) if n},
    }


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.slow_rollouts")
    parser.add_argument("--services", type=int, default=2000)
    parser.add_argument("--fast", type=int, default=50)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument(
        "--settle", type=float, default=15.0, help="seconds between the last apply and the window"
    )
    parser.add_argument("--window", type=float, default=25.0)
    args = parser.parse_args()

    with Stack(StackConfig(workers=args.workers)) as stack:
        fake = stack.fake
        assert fake is not None
        fake.default_behavior("ready", ROLLOUT_SECONDS)
        fake.add_rule(r"fast-.*", "ready", 0.0)
        sampler = RssSampler(stack)
        sampler.start()
        try:
            t0 = time.monotonic()
            log(f"submitting {args.services} slow services")
            submitted = run(lambda: submit_slow(stack, args.services, args.concurrency))
            applied = wait_applied(stack, args.services, 200)
            log(f"all applied {time.monotonic() - t0:.1f}s after the first POST")
            time.sleep(args.settle)
            pids = {f"worker{i}": p.pid for i, p in enumerate(stack.workers)}
            profiler = Profiler("slow_rollouts", pids, args.window)
            before = fake.stats()
            w0 = time.monotonic()
            time.sleep(args.window)
            after = fake.stats()
            profiler.wait()
            window = readiness_rate(before, after, time.monotonic() - w0)
            window["ends_s_after_first_post"] = round(time.monotonic() - t0, 1)
            log(f"window: {window['readiness_requests_per_s']} readiness requests/s")
            fast = run(lambda: submit_fast(stack, args.fast, 0.1, 0.02))
            elapsed = time.monotonic() - t0
            with stack.sql() as conn:
                row = conn.execute(
                    "SELECT count(*) FROM inference_services "
                    "WHERE name LIKE 'slow-%%' AND status = 'running'"
                ).fetchone()
            slow_running = int(row[0]) if row else -1
        finally:
            sampler.done.set()
            sampler.join()
    emit(
        {
            "benchmark": "slow_rollouts",
            "slow_services": args.services,
            "rollout_seconds": ROLLOUT_SECONDS,
            "workers": args.workers,
            "slow_submit": submitted,
            "slow_all_applied_s": round(applied, 1),
            "readiness_window": window,
            "fast_services": args.fast,
            "fast": fast,
            "worker_rss_peak_mb": round(sampler.peak / 2**20, 1),
            "worker_rss_last_mb": round(sampler.last / 2**20, 1),
            "slow_running_at_end": slow_running,
            "elapsed_s": round(elapsed, 1),
            "machine": machine(),
        }
    )


if __name__ == "__main__":
    main()
