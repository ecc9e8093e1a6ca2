"""A private serveplane stack per benchmark: own database, Redis, fake cluster, API, workers.

Nothing is shared with the machine's other users except the PostgreSQL server (a fresh
database is created, migrated, and dropped afterwards). Every process is started in its own
session and killed by process group in `stop()`, which runs even when the benchmark fails.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import psutil
import psycopg

ROOT = Path(__file__).resolve().parents[1]
PG_SERVER = os.environ.get("SERVEPLANE_BENCH_PG", "postgresql://postgres@127.0.0.1:5432")
START_TIMEOUT = 60.0


def log(message: str) -> None:
    """Progress goes to stderr; stdout carries only the result JSON."""
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def free_port() -> int:
    """A free loopback TCP port."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_port(port: int, timeout: float = 20.0) -> None:
    """Wait until something listens on 127.0.0.1:port."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise RuntimeError(f"port {port} did not open within {timeout}s")


def kill_group(proc: subprocess.Popen[bytes] | None, timeout: float = 15.0) -> None:
    """SIGTERM a child's process group, SIGKILL it when it does not exit in time."""
    if proc is None or proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(5)
    except ProcessLookupError:
        proc.wait(5)


class Database:
    """A fresh database on the local PostgreSQL server, migrated to head, dropped at the end."""

    def __init__(self) -> None:
        self.name = f"serveplane_bench_{secrets.token_hex(4)}"
        self.url = f"postgresql+psycopg://{PG_SERVER.split('://', 1)[1]}/{self.name}"
        self.dsn = f"{PG_SERVER}/{self.name}"

    def create(self) -> Database:
        from db.migrate import upgrade_head

        with psycopg.connect(f"{PG_SERVER}/postgres", autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{self.name}"')
        upgrade_head(self.url)
        return self

    def drop(self) -> None:
        with psycopg.connect(f"{PG_SERVER}/postgres", autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{self.name}" WITH (FORCE)')


class FakeCluster:
    """`python -m tests.fake_kube` in standalone mode, driven through its /_fake control API."""

    def __init__(self, workdir: Path, ready_delay: float = 0.0) -> None:
        self.kubeconfig = str(workdir / "kubeconfig")
        self.log_path = workdir / "fake_kube.log"
        self.ready_delay = ready_delay
        self.proc: subprocess.Popen[bytes] | None = None
        self.url = ""
        self.http = httpx.Client(timeout=30)

    def start(self, env: dict[str, str]) -> FakeCluster:
        argv = [
            sys.executable,
            "-m",
            "tests.fake_kube",
            "--port",
            "0",
            "--kubeconfig",
            self.kubeconfig,
        ]
        if self.ready_delay:
            argv += ["--ready-delay", str(self.ready_delay)]
        with open(self.log_path, "ab") as err:
            self.proc = subprocess.Popen(
                argv, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=err, start_new_session=True
            )
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"fake cluster did not start; see {self.log_path}")
        self.url = json.loads(line)["url"]
        return self

    def stop(self) -> None:
        kill_group(self.proc)
        self.http.close()

    def _post(self, path: str, body: dict[str, Any] | None = None) -> None:
        self.http.post(f"{self.url}/_fake/{path}", json=body or {}).raise_for_status()

    def stats(self) -> dict[str, Any]:
        """Request counters since the last reset (total, by_verb, by_verb_resource...)."""
        response = self.http.get(f"{self.url}/_fake/stats")
        response.raise_for_status()
        return dict(response.json())

    def reset_stats(self) -> None:
        self._post("stats/reset")

    def default_behavior(self, mode: str = "ready", delay: float = 0.0) -> None:
        self._post("default-behavior", {"mode": mode, "delay": delay})

    def add_rule(self, name_regex: str, mode: str = "ready", delay: float = 0.0) -> None:
        self._post("rules", {"name_regex": name_regex, "behavior": {"mode": mode, "delay": delay}})


@dataclass
class StackConfig:
    """What to run: worker processes, API processes, runtime, extra environment."""

    workers: int = 2
    api_workers: int = 1
    runtime: str = "kubernetes"
    fake_cluster: bool = True
    start_workers: bool = True
    env: dict[str, str] = field(default_factory=dict)


class Stack:
    """Database + Redis + fake cluster + API + workers, all private to one benchmark run."""

    def __init__(self, config: StackConfig) -> None:
        self.config = config
        self.workdir = Path(tempfile.mkdtemp(prefix="sp-bench-"))
        self.db = Database()
        self.redis_port = free_port()
        self.api_port = free_port()
        self.redis: subprocess.Popen[bytes] | None = None
        self.fake: FakeCluster | None = None
        self.api: subprocess.Popen[bytes] | None = None
        self.workers: list[subprocess.Popen[bytes]] = []
        self.env: dict[str, str] = {}
        self.token = ""
        self.customer_id = 0
        self._db_created = False

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.api_port}"

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}

    def __enter__(self) -> Stack:
        try:
            return self.start()
        except BaseException:
            self.stop()
            raise

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ---- start -----------------------------------------------------------------------------
    def start(self) -> Stack:
        cfg = self.config
        base = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith("SERVEPLANE_")
            and k not in ("KUBECONFIG", "DATABASE_URL", "REDIS_URL")
        }
        self.env = {
            **base,
            "PYTHONPATH": str(ROOT),
            "DATABASE_URL": self.db.url,
            "REDIS_URL": f"redis://127.0.0.1:{self.redis_port}/0",
            "SERVEPLANE_RUNTIME": cfg.runtime,
            "SERVEPLANE_QUEUE_PREFIX": f"bench-{secrets.token_hex(3)}",
            "SERVEPLANE_PUBLIC_URL": self.api_url,
            "SERVEPLANE_LOCAL_STATE_DIR": str(self.workdir / "local"),
            **cfg.env,
        }
        log(f"stack in {self.workdir}: database {self.db.name}")
        self.db.create()
        self._db_created = True
        self.redis = subprocess.Popen(
            [
                "redis-server",
                "--port",
                str(self.redis_port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--daemonize",
                "no",
                "--loglevel",
                "warning",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        wait_port(self.redis_port)
        if cfg.fake_cluster and cfg.runtime == "kubernetes":
            self.fake = FakeCluster(self.workdir).start(self.env)
            self.env["KUBECONFIG"] = self.fake.kubeconfig
        self.customer_id, self.token = self.create_customer("bench")
        self.api = self._spawn(
            "api",
            [
                sys.executable,
                "-m",
                "api.cli",
                "api",
                "--port",
                str(self.api_port),
                "--workers",
                str(cfg.api_workers),
            ],
        )
        if cfg.start_workers:
            for _ in range(cfg.workers):
                self.start_worker()
        self._wait_api()
        for index in range(len(self.workers)):
            self._wait_worker(index)
        log(f"stack up: api {self.api_url}, {len(self.workers)} worker(s)")
        return self

    def _spawn(self, name: str, argv: list[str]) -> subprocess.Popen[bytes]:
        with open(self.workdir / f"{name}.log", "ab") as out:
            return subprocess.Popen(
                argv,
                cwd=ROOT,
                env=self.env,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def start_worker(self) -> subprocess.Popen[bytes]:
        """One more `serveplane worker` process."""
        argv = [sys.executable, "-m", "api.cli", "worker"]
        proc = self._spawn(f"worker{len(self.workers)}", argv)
        self.workers.append(proc)
        return proc

    def _wait_api(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self.api is not None and self.api.poll() is not None:
                raise RuntimeError(f"the API exited:\n{self.tail('api')}")
            try:
                if httpx.get(f"{self.api_url}/readyz", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise RuntimeError(f"the API was not ready in time:\n{self.tail('api')}")

    def _wait_worker(self, index: int) -> None:
        path = self.workdir / f"worker{index}.log"
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self.workers[index].poll() is not None:
                raise RuntimeError(f"worker {index} exited:\n{self.tail(f'worker{index}')}")
            if path.exists() and " ready." in path.read_text(errors="replace"):
                return
            time.sleep(0.1)
        raise RuntimeError(f"worker {index} was not ready in time:\n{self.tail(f'worker{index}')}")

    def create_customer(self, name: str) -> tuple[int, str]:
        """A customer and its token, through `serveplane customers create`."""
        out = subprocess.run(
            [sys.executable, "-m", "api.cli", "customers", "create", name],
            cwd=ROOT,
            env=self.env,
            check=True,
            capture_output=True,
            text=True,
            timeout=60,
        ).stdout
        data = json.loads(out.strip().splitlines()[-1])
        return int(data["customer_id"]), str(data["token"])

    # ---- observation -----------------------------------------------------------------------
    def worker_pids(self) -> list[int]:
        """Pids of every worker process and its children."""
        pids: list[int] = []
        for proc in self.workers:
            if proc.poll() is not None:
                continue
            try:
                parent = psutil.Process(proc.pid)
                pids.append(parent.pid)
                pids.extend(child.pid for child in parent.children(recursive=True))
            except psutil.NoSuchProcess:
                continue
        return pids

    def api_pids(self) -> list[int]:
        """Pids of the API process tree (uvicorn supervisor and its workers)."""
        if self.api is None or self.api.poll() is not None:
            return []
        parent = psutil.Process(self.api.pid)
        return [parent.pid, *(c.pid for c in parent.children(recursive=True))]

    def component_pids(self) -> dict[str, list[int]]:
        """Pids per component: api, workers, fake cluster, redis, this database's backends."""
        out: dict[str, list[int]] = {
            "api": self.api_pids(),
            "workers": self.worker_pids(),
            "fake_kube": [self.fake.proc.pid] if self.fake and self.fake.proc else [],
            "redis": [self.redis.pid] if self.redis else [],
            "postgres": [],
        }
        for proc in psutil.process_iter(["name", "cmdline"]):
            cmdline = " ".join(proc.info.get("cmdline") or [])
            if cmdline.startswith("postgres:") and f" {self.db.name} " in cmdline:
                out["postgres"].append(proc.pid)
        return out

    def cpu_seconds(self) -> dict[str, float]:
        """CPU seconds (user + system) used so far by each component's processes."""
        out: dict[str, float] = {}
        for name, pids in self.component_pids().items():
            total = 0.0
            for pid in pids:
                try:
                    times = psutil.Process(pid).cpu_times()
                except psutil.NoSuchProcess:
                    continue
                total += times.user + times.system
            out[name] = total
        return out

    def worker_rss(self) -> int:
        """Resident memory of all worker processes, in bytes."""
        total = 0
        for pid in self.worker_pids():
            try:
                total += psutil.Process(pid).memory_info().rss
            except psutil.NoSuchProcess:
                continue
        return total

    def tail(self, name: str, lines: int = 40) -> str:
        path = self.workdir / f"{name}.log"
        if not path.exists():
            return ""
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])

    def sql(self) -> psycopg.Connection[Any]:
        """An autocommit connection to the stack's database."""
        return psycopg.connect(self.db.dsn, autocommit=True)

    # ---- stop ------------------------------------------------------------------------------
    def stop(self) -> None:
        """Stop everything this stack started and drop its database (idempotent)."""
        for proc in reversed(self.workers):
            kill_group(proc)
        kill_group(self.api)
        if self.config.runtime == "local" and self.env:
            subprocess.run(
                [sys.executable, "-m", "workers.runtime.local", "stop-all"],
                cwd=ROOT,
                env=self.env,
                timeout=60,
                check=False,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
        if self.fake is not None:
            self.fake.stop()
        kill_group(self.redis)
        if self._db_created:
            try:
                self.db.drop()
            except psycopg.Error as exc:
                log(f"could not drop {self.db.name}: {exc}")
            self._db_created = False
        if os.environ.get("SERVEPLANE_BENCH_KEEP_LOGS"):
            log(f"logs kept in {self.workdir}")
        else:
            shutil.rmtree(self.workdir, ignore_errors=True)
