"""Optional py-spy profiles of the stack's processes during a benchmark's measured phase.

Set SERVEPLANE_BENCH_PROFILE=<dir> and a benchmark records `py-spy record --format raw`
(collapsed stacks) of the API and worker processes while it measures: by default only the
thread holding the GIL (`--gil`, i.e. where Python CPU time goes), or every non-idle thread
with SERVEPLANE_BENCH_PROFILE_MODE=wall. Summarise with

    python -m bench.profiling <file.txt> [--top 25] [--match substring]

which prints the functions with the most samples inclusive (on the stack) and exclusive
(on top of the stack), as percentages of all samples.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
from collections import Counter
from pathlib import Path

from bench.stack import log

IDLE_LEAVES = ("Condition.wait (threading.py", "select (selectors.py", "epoll.poll")


class Profiler:
    """py-spy recorders for some pids, for a fixed number of seconds."""

    def __init__(self, label: str, pids: dict[str, int], seconds: float) -> None:
        self.dir = os.environ.get("SERVEPLANE_BENCH_PROFILE")
        self.procs: list[subprocess.Popen[bytes]] = []
        if not self.dir or not shutil.which("py-spy"):
            return
        Path(self.dir).mkdir(parents=True, exist_ok=True)
        for name, pid in pids.items():
            out = Path(self.dir) / f"{label}-{name}.txt"
            argv = [
                "py-spy",
                "record",
                "--pid",
                str(pid),
                "--duration",
                str(int(seconds)),
                "--rate",
                "200",
                "--format",
                "raw",
                "--output",
                str(out),
                "--threads",
            ]
            self.procs.append(
                subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            )
            log(f"profiling {name} (pid {pid}) into {out}")

    def wait(self) -> None:
        """Wait for the recorders to write their files."""
        for proc in self.procs:
            try:
                proc.wait(60)
            except subprocess.TimeoutExpired:
                proc.kill()


def summarize(path: str, top: int, match: str | None) -> None:
    """Print inclusive and exclusive sample shares per function."""
    inclusive: Counter[str] = Counter()
    exclusive: Counter[str] = Counter()
    total = 0
    for line in Path(path).read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = [f for f in stack.split(";") if not f.startswith("thread ")]
        if frames and frames[-1].startswith(IDLE_LEAVES):
            continue  # a pool thread waiting for work (py-spy does not always drop those)
        if match and not any(match in f for f in frames):
            continue
        total += count
        for frame in set(frames):
            inclusive[frame] += count
        if frames:
            exclusive[frames[-1]] += count
    print(f"{total} samples")
    for title, counter in (("inclusive", inclusive), ("exclusive", exclusive)):
        print(f"--- {title}")
        for frame, count in counter.most_common(top):
            print(f"{100 * count / max(total, 1):6.1f}%  {frame}")


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.profiling")
    parser.add_argument("path")
    parser.add_argument("--top", type=int, default=25)
    parser.add_argument("--match", default=None)
    args = parser.parse_args()
    summarize(args.path, args.top, args.match)


if __name__ == "__main__":
    main()
