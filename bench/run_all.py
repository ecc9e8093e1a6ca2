"""Run every benchmark, one at a time, and write each JSON to bench/results/<name>.json.

    python -m bench.run_all [--only burst,polling] [--quiet-load 1.0]

Each benchmark is its own `python -m bench.<module>` process with its own private stack.
`--quiet-load` waits (up to 5 minutes) until the 1-minute load average drops below the
given value before each benchmark: on a small shared machine other work skews the figures.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from bench.stack import ROOT, log

RESULTS = Path(__file__).resolve().parent / "results"
# name -> (module, extra arguments, timeout seconds)
BENCHMARKS: dict[str, tuple[str, list[str], float]] = {
    "submit_to_running": ("bench.submit_to_running", [], 300),
    "submit_to_running_100x1": (
        "bench.submit_to_running",
        ["--services", "100", "--workers", "1"],
        300,
    ),
    "burst": ("bench.burst", [], 420),
    "slow_rollouts": ("bench.slow_rollouts", [], 480),
    "polling": ("bench.polling", [], 300),
    "gateway": ("bench.gateway", [], 300),
}


def wait_quiet(threshold: float, limit: float = 300.0) -> None:
    """Wait until the 1-minute load average is below `threshold` (at most `limit` s)."""
    deadline = time.monotonic() + limit
    while os.getloadavg()[0] >= threshold and time.monotonic() < deadline:
        time.sleep(5)


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.run_all")
    parser.add_argument("--only", default="", help="comma-separated benchmark names")
    parser.add_argument("--quiet-load", type=float, default=0.0)
    args = parser.parse_args()
    names = [n for n in args.only.split(",") if n] or list(BENCHMARKS)
    unknown = [n for n in names if n not in BENCHMARKS]
    if unknown:
        log(f"unknown benchmark(s): {', '.join(unknown)}; known: {', '.join(BENCHMARKS)}")
        return 2
    RESULTS.mkdir(parents=True, exist_ok=True)
    failed = []
    for name in names:
        module, extra, timeout = BENCHMARKS[name]
        if args.quiet_load:
            wait_quiet(args.quiet_load)
        log(f"{name}: python -m {module} {' '.join(extra)}")
        started = time.monotonic()
        try:
            done = subprocess.run(
                [sys.executable, "-m", module, *extra],
                cwd=ROOT,
                stdout=subprocess.PIPE,
                text=True,
                timeout=timeout,
            )
        except subprocess.TimeoutExpired:
            log(f"{name}: timed out after {timeout:.0f}s")
            failed.append(name)
            continue
        if done.returncode != 0:
            log(f"{name}: exited {done.returncode}")
            failed.append(name)
            continue
        result = json.loads(done.stdout)
        result["command"] = f"python -m {module} {' '.join(extra)}".strip()
        result["ran_at"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
        result["duration_s"] = round(time.monotonic() - started, 1)
        (RESULTS / f"{name}.json").write_text(json.dumps(result, indent=2) + "\n")
        log(f"{name}: done in {result['duration_s']}s -> bench/results/{name}.json")
    if failed:
        log(f"failed: {', '.join(failed)}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
