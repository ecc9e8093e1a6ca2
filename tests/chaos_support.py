"""Private PostgreSQL / Redis / API processes for fault tests that stop and restart them.

The shared services stay untouched: every fault test gets its own instances on free ports.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import psycopg

from tests.conftest import ROOT


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_port(port: int, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise AssertionError(f"port {port} did not open")


class PrivateRedis:
    """A redis-server that keeps nothing on disk, restartable empty on the same port."""

    def __init__(self) -> None:
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> PrivateRedis:
        self.proc = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--daemonize", "no", "--loglevel", "warning"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        wait_port(self.port)
        return self

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(5)

    def restart_empty(self) -> None:
        self.stop()
        self.start()


class PrivatePostgres:
    """A throwaway PostgreSQL cluster (initdb as the postgres user), stoppable and restartable."""

    def __init__(self) -> None:
        self.port = free_port()
        self.dir = Path(tempfile.mkdtemp(prefix="sp-pg-"))
        self.data = self.dir / "data"
        bindir = sorted(Path("/usr/lib/postgresql").glob("*/bin"))[-1]
        self.bin = bindir
        self.proc: subprocess.Popen[bytes] | None = None

    def _as_postgres(self, args: list[str]) -> list[str]:
        if os.geteuid() == 0:
            return ["runuser", "-u", "postgres", "--", *args]
        return args

    @property
    def url(self) -> str:
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/serveplane"

    def init(self) -> PrivatePostgres:
        if os.geteuid() == 0:
            shutil.chown(self.dir, "postgres", "postgres")
        subprocess.run(
            self._as_postgres([str(self.bin / "initdb"), "-D", str(self.data), "-U", "postgres",
                               "--auth=trust", "-E", "UTF8"]),
            check=True, stdout=subprocess.DEVNULL,
        )
        self.start()
        with psycopg.connect(f"postgresql://postgres@127.0.0.1:{self.port}/postgres",
                             autocommit=True) as conn:
            conn.execute("CREATE DATABASE serveplane")
        return self

    def start(self) -> None:
        self.proc = subprocess.Popen(
            self._as_postgres([str(self.bin / "postgres"), "-D", str(self.data), "-p",
                               str(self.port), "-h", "127.0.0.1", "-k", str(self.dir),
                               "-c", "fsync=off", "-c", "max_connections=200"]),
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
        )
        wait_port(self.port)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                psycopg.connect(f"postgresql://postgres@127.0.0.1:{self.port}/postgres").close()
                return
            except psycopg.OperationalError:
                time.sleep(0.1)
        raise AssertionError("private PostgreSQL did not start")

    def stop(self) -> None:
        """Fast shutdown (SIGINT): what an operator's restart does."""
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGINT)
            self.proc.wait(20)

    def destroy(self) -> None:
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)


class ApiProcess:
    """`serveplane api` as a subprocess on a free port."""

    def __init__(self, env: dict[str, str]) -> None:
        self.port = free_port()
        self.env = {**env, "SERVEPLANE_PUBLIC_URL": f"http://127.0.0.1:{self.port}"}
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> ApiProcess:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "api.cli", "api", "--port", str(self.port)],
            cwd=ROOT, env=self.env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        wait_port(self.port)
        return self

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)


def base_env(**overrides: str) -> dict[str, Any]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.update(overrides)
    return env


def customer_token(database_url: str, name: str = "chaos") -> tuple[int, str]:
    """Create a customer in another database through the CLI (same code path as users)."""
    import json

    out = subprocess.run(
        [sys.executable, "-m", "api.cli", "customers", "create", name], cwd=ROOT,
        env=base_env(DATABASE_URL=database_url), check=True, capture_output=True, text=True,
    ).stdout
    data = json.loads(out.strip().splitlines()[-1])
    return int(data["customer_id"]), str(data["token"])


__all__ = ["ApiProcess", "PrivatePostgres", "PrivateRedis", "base_env", "customer_token",
           "free_port", "httpx"]
