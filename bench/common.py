"""Helpers shared by the benchmarks: percentiles, the event loop, the load client, output."""

from __future__ import annotations

import asyncio
import json
import math
import os
import platform
import sys
import time
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, TypeVar

import aiohttp
import psutil

T = TypeVar("T")


def percentile(values: list[float], q: float) -> float:
    """The q-th percentile (0..100) by nearest rank; NaN for no values."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = max(math.ceil(q / 100 * len(ordered)), 1)
    return ordered[min(rank, len(ordered)) - 1]


def summary(values: list[float], scale: float = 1.0, digits: int = 4) -> dict[str, float]:
    """p50/p95/p99/max/mean of values (multiplied by scale, e.g. 1000 for ms)."""
    if not values:
        return {"n": 0}
    return {
        "n": len(values),
        "p50": round(percentile(values, 50) * scale, digits),
        "p95": round(percentile(values, 95) * scale, digits),
        "p99": round(percentile(values, 99) * scale, digits),
        "max": round(max(values) * scale, digits),
        "mean": round(sum(values) / len(values) * scale, digits),
    }


def machine() -> dict[str, Any]:
    """What the figures were measured on (loadavg: other work on the machine at the end)."""
    return {
        "loadavg": [round(x, 2) for x in os.getloadavg()],
        "nproc": os.cpu_count(),
        "memory_gb": round(psutil.virtual_memory().total / 2**30, 1),
        "python": platform.python_version(),
        "platform": platform.platform(),
    }


def run(main: Callable[[], Coroutine[Any, Any, T]]) -> T:
    """Run a coroutine on uvloop when available (less client overhead), else asyncio."""
    try:
        import uvloop

        return uvloop.run(main())
    except ImportError:
        return asyncio.run(main())


def client_session(limit: int = 0, timeout: float = 30.0) -> aiohttp.ClientSession:
    """A keep-alive HTTP client (limit 0 = no cap on concurrent connections)."""
    connector = aiohttp.TCPConnector(limit=limit, force_close=False, ttl_dns_cache=3600)
    return aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=timeout))


def emit(result: dict[str, Any]) -> None:
    """Print the one JSON object a benchmark produces."""
    print(json.dumps(result, indent=2, sort_keys=False), flush=True)


def cpu_seconds(pids: dict[str, int]) -> dict[str, float]:
    """User + system CPU seconds used so far by each named process (and its children)."""
    out: dict[str, float] = {}
    for name, pid in pids.items():
        try:
            proc = psutil.Process(pid)
            times = proc.cpu_times()
            out[name] = times.user + times.system + times.children_user + times.children_system
        except psutil.NoSuchProcess:
            out[name] = math.nan
    return out


async def load(
    request: Callable[[], Awaitable[bool]],
    concurrency: int,
    seconds: float,
    cpu_of: dict[str, int] | None = None,
) -> dict[str, Any]:
    """Closed-loop load: `concurrency` callers repeat `request` for `seconds`.

    Returns requests/s of successful calls, errors, the latency distribution (ms) and, for
    the processes named in `cpu_of` (plus this client), CPU milliseconds per request.
    """
    pids = {"client": os.getpid(), **(cpu_of or {})}
    cpu_before = cpu_seconds(pids)
    latencies: list[float] = []
    errors = 0
    stop_at = time.perf_counter() + seconds

    async def caller() -> None:
        nonlocal errors
        while time.perf_counter() < stop_at:
            started = time.perf_counter()
            try:
                ok = await request()
            except (aiohttp.ClientError, TimeoutError):
                ok = False
            if ok:
                latencies.append(time.perf_counter() - started)
            else:
                errors += 1

    started = time.perf_counter()
    await asyncio.gather(*(caller() for _ in range(concurrency)))
    elapsed = time.perf_counter() - started
    cpu_after = cpu_seconds(pids)
    done = max(len(latencies), 1)
    return {
        "requests": len(latencies),
        "errors": errors,
        "seconds": round(elapsed, 2),
        "rps": round(len(latencies) / elapsed, 1),
        "latency_ms": summary(latencies, 1000, 2),
        "cpu_ms_per_request": {
            name: round((cpu_after[name] - cpu_before[name]) * 1000 / done, 3) for name in pids
        },
        "cpu_utilisation": {
            name: round((cpu_after[name] - cpu_before[name]) / elapsed, 2) for name in pids
        },
        "loadavg_1m": round(os.getloadavg()[0], 2),
    }


async def post_until_accepted(
    http: aiohttp.ClientSession,
    url: str,
    body: dict[str, Any],
    headers: dict[str, str],
    attempts: int = 10,
) -> tuple[int, dict[str, Any], int]:
    """POST like a well-behaved client: a 503 is retried after its Retry-After.

    Returns (final status, final JSON body, number of 503 answers seen).
    """
    retries = 0
    while True:
        async with http.post(url, json=body, headers=headers) as resp:
            payload = await resp.json(content_type=None)
            if resp.status != 503 or retries + 1 >= attempts:
                return resp.status, payload, retries
            delay = float(resp.headers.get("Retry-After", "1"))
        retries += 1
        await asyncio.sleep(delay)


def fail(message: str) -> None:
    """Abort a benchmark with a message on stderr."""
    print(message, file=sys.stderr, flush=True)
    raise SystemExit(1)
