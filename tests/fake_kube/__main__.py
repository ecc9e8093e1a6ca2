"""Standalone mode: `python -m tests.fake_kube --port 0 --kubeconfig /tmp/x.yaml`."""

from __future__ import annotations

import argparse
import json
import signal
import sys
import threading

from . import Behavior, FakeKube


def main(argv: list[str] | None = None) -> int:
    """Start a FakeKube, print {"url", "kubeconfig"} as one JSON line, serve until SIGTERM."""
    parser = argparse.ArgumentParser(prog="python -m tests.fake_kube")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--kubeconfig", default=None)
    parser.add_argument(
        "--ready-delay", type=float, default=0.0, help="default seconds until pods become ready"
    )
    args = parser.parse_args(argv)
    fake = FakeKube()
    if args.ready_delay:
        fake.set_default_behavior(Behavior("ready", args.ready_delay))
    fake.start(args.host, args.port)
    kubeconfig = fake.write_kubeconfig(args.kubeconfig) if args.kubeconfig else None
    done = threading.Event()

    def on_signal(signum: int, frame: object) -> None:
        done.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    print(json.dumps({"url": fake.url, "kubeconfig": kubeconfig}), flush=True)
    while not done.wait(0.5):
        pass
    fake.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
