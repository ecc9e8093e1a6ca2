"""`local_stack`: a real API + worker on the LOCAL runtime, for end-to-end inference tests.

It is `serveplane dev` pointed at the test PostgreSQL server and Redis (no embedded ones):
its OWN database (built by the same migrations), its OWN queue prefix and its OWN state dir.
A separate database is required, not a nicety: the dispatcher is elected per database, so a
local-runtime worker sharing the session database with the session's Kubernetes `worker`
would have its jobs' readiness checks dispatched to the other worker's queue (and runtime).

It is registered once in tests/conftest.py; just name ``local_stack`` as a test argument
and talk HTTP to ``local_stack.api_url`` (the in-process ``client`` fixture is a different
stack). ``local_stack.token`` / ``.headers`` belong to a customer created at start.
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from tests.conftest import PG_ADMIN, ROOT, RUN_ID, TEST_ENV

START_TIMEOUT = 60.0


class LocalStack:
    """`serveplane dev` with SERVEPLANE_RUNTIME=local as a subprocess."""

    def __init__(self, base: Path) -> None:
        self.db_name = f"serveplane_test_{RUN_ID}_local"
        self.state_dir = base / "state"
        self.log_path = base / "dev.out"
        self.port = _free_port()
        self.env = {
            **{k: v for k, v in os.environ.items() if k != "KUBECONFIG"},
            **TEST_ENV,
            "DATABASE_URL": TEST_ENV["DATABASE_URL"].rsplit("/", 1)[0] + f"/{self.db_name}",
            "SERVEPLANE_RUNTIME": "local",
            "SERVEPLANE_QUEUE_PREFIX": f"{TEST_ENV['SERVEPLANE_QUEUE_PREFIX']}-local",
            "SERVEPLANE_LOCAL_STATE_DIR": str(self.state_dir),
            "PYTHONPATH": str(ROOT),
        }
        self.proc: subprocess.Popen[bytes] | None = None
        self.info: dict[str, Any] = {}

    @property
    def api_url(self) -> str:
        """`http://127.0.0.1:<port>` of the stack's API (also its SERVEPLANE_PUBLIC_URL)."""
        return str(self.info["api_url"])

    @property
    def token(self) -> str:
        """Bearer token of the customer created at start."""
        return str(self.info["token"])

    @property
    def headers(self) -> dict[str, str]:
        """Authorization header for that customer."""
        return {"Authorization": f"Bearer {self.token}"}

    def start(self) -> LocalStack:
        with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{self.db_name}" WITH (FORCE)')
            conn.execute(f'CREATE DATABASE "{self.db_name}"')
        with open(self.log_path, "wb") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "api.cli", "dev", "--port", str(self.port)],
                cwd=ROOT,
                env=self.env,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        deadline = time.monotonic() + START_TIMEOUT
        while not self.info:
            for line in self.log_path.read_text(errors="replace").splitlines():
                if line.startswith("SERVEPLANE_DEV "):
                    self.info = json.loads(line.split(" ", 1)[1])
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"local stack did not start:\n{self.log_tail()}")
            time.sleep(0.1)
        return self

    def create_customer(self, name: str = "") -> dict[str, Any]:
        """Another customer of the stack's database: {customer_id, token, headers}."""
        out = subprocess.run(
            [
                sys.executable,
                "-m",
                "api.cli",
                "customers",
                "create",
                name or f"cust-{secrets.token_hex(3)}",
            ],
            cwd=ROOT,
            env=self.env,
            capture_output=True,
            check=True,
            timeout=30,
        )
        body = json.loads(out.stdout.decode().strip().splitlines()[-1])
        return {**body, "headers": {"Authorization": f"Bearer {body['token']}"}}

    def replicas(self) -> list[dict[str, Any]]:
        """The local runtime's replica records (pid, port, service_uuid, version, index...)."""
        records = []
        for path in sorted((self.state_dir / "replicas").glob("*.json")):
            try:
                records.append(json.loads(path.read_text()))
            except (OSError, ValueError):
                continue
        return records

    def log_tail(self, n: int = 80) -> str:
        """The last lines of the launcher's output, and of the worker's and API's logs."""
        parts = []
        for path in (
            self.log_path,
            self.state_dir / "logs" / "worker.log",
            self.state_dir / "logs" / "api.log",
        ):
            if path.exists():
                lines = path.read_text(errors="replace").splitlines()[-n:]
                parts.append(f"--- {path.name}\n" + "\n".join(lines))
        return "\n".join(parts)

    def stop(self) -> int | None:
        """SIGINT (like Ctrl-C): stops API, worker and every model server; returns exit code."""
        code = None
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGINT)
            try:
                code = self.proc.wait(60)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(5)
        elif self.proc is not None:
            code = self.proc.returncode
        with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{self.db_name}" WITH (FORCE)')
        return code


@pytest.fixture(scope="session")
def local_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStack]:
    """A running API + worker on the local runtime with its own database (see module doc)."""
    stack = LocalStack(tmp_path_factory.mktemp("local-stack")).start()
    yield stack
    stack.stop()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])
