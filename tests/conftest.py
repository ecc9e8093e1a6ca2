"""Shared fixtures: a fresh PostgreSQL database, a Redis db, the fake cluster, a real worker.

The environment is set before any project module reads its settings, so every process the
tests start (API in-process, Celery worker as a subprocess) sees the same configuration.
"""

from __future__ import annotations

import os
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
import redis

ROOT = Path(__file__).resolve().parents[1]
PG_ADMIN = os.environ.get("SERVEPLANE_TEST_PG", "postgresql://postgres@127.0.0.1:5432/postgres")
REDIS_BASE = os.environ.get("SERVEPLANE_TEST_REDIS", "redis://127.0.0.1:6379")
RUN_ID = f"{os.getpid()}_{secrets.token_hex(3)}"
DB_NAME = f"serveplane_test_{RUN_ID}"
REDIS_DB = int(os.environ.get("SERVEPLANE_TEST_REDIS_DB", "9"))

TEST_ENV = {
    "DATABASE_URL": f"postgresql+psycopg://postgres@127.0.0.1:5432/{DB_NAME}",
    "REDIS_URL": f"{REDIS_BASE}/{REDIS_DB}",
    "SERVEPLANE_RUNTIME": "kubernetes",
    "SERVEPLANE_QUEUE_PREFIX": f"sp-test-{RUN_ID}",
    "SERVEPLANE_PUBLIC_URL": "http://testserver",
    "SERVEPLANE_READINESS_BACKOFF_INITIAL": "0.05",
    "SERVEPLANE_READINESS_BACKOFF_MAX": "0.3",
    "SERVEPLANE_DISPATCHER_INTERVAL": "0.1",
    "SERVEPLANE_KUBE_RETRY_MAX_WAIT": "0.2",
    "SERVEPLANE_KUBE_RETRY_ATTEMPTS": "8",
    "SERVEPLANE_KUBE_REQUEST_TIMEOUT": "3",
    "SERVEPLANE_JOB_LEASE_SECONDS": "8",
    "SERVEPLANE_VERSION_GRACE_SECONDS": "1",
    "SERVEPLANE_PROGRESS_DEADLINE_SECONDS": "2",
    "SERVEPLANE_WORKER_CONCURRENCY": "8",
    "SERVEPLANE_RECONCILE_INTERVAL": "0.5",
    "SERVEPLANE_WEBHOOK_RETRY_SCHEDULE": "0.2,0.4,0.8",
    "SERVEPLANE_WEBHOOK_ALLOWED_HOSTS": "127.0.0.1,localhost",
}
os.environ.update(TEST_ENV)


def reset_settings() -> None:
    """Forget cached settings and runtime so the next use reads the environment again."""
    from db.settings import get_settings
    from workers.runtime import get_runtime

    get_settings.cache_clear()
    get_runtime.cache_clear()


def _create_database() -> None:
    with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{DB_NAME}"')
        conn.execute(f'CREATE DATABASE "{DB_NAME}"')


def _drop_database() -> None:
    with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{DB_NAME}" WITH (FORCE)')


@pytest.fixture(scope="session")
def database() -> Iterator[str]:
    """A fresh database for this run, built with `alembic upgrade head`."""
    from db.migrate import upgrade_head

    _create_database()
    upgrade_head(TEST_ENV["DATABASE_URL"])
    yield TEST_ENV["DATABASE_URL"]
    from db.engine import dispose_engine

    dispose_engine()
    _drop_database()


@pytest.fixture(scope="session")
def redis_db() -> Iterator[redis.Redis]:
    """The run's Redis database, emptied at start."""
    client = redis.Redis.from_url(TEST_ENV["REDIS_URL"])
    client.flushdb()
    yield client
    client.flushdb()


@pytest.fixture(scope="session")
def fake_kube(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """The fake Kubernetes API server, with KUBECONFIG pointing at it."""
    from tests.fake_kube import FakeKube

    fake = FakeKube().start()
    path = fake.write_kubeconfig(str(tmp_path_factory.mktemp("kube") / "config"))
    os.environ["KUBECONFIG"] = path
    reset_settings()
    yield fake
    fake.stop()


@pytest.fixture(autouse=True)
def _fresh_fake_rules(request: pytest.FixtureRequest) -> Iterator[None]:
    """Rules and faults never leak from one test into the next."""
    yield
    if "fake_kube" in request.fixturenames:
        fake = request.getfixturevalue("fake_kube")
        fake.clear_rules()
        fake.set_faults(error_rate=0.0)


class WorkerProcess:
    """A real Celery worker subprocess consuming the run's Redis queue."""

    def __init__(self, env: dict[str, str], log_path: Path) -> None:
        self.env = env
        self.log_path = log_path
        self.proc: subprocess.Popen[bytes] | None = None
        self.kills = 0

    def start(self) -> WorkerProcess:
        log = open(self.log_path, "ab")  # noqa: SIM115 - the subprocess owns it
        # `serveplane worker` reads its settings (queues, concurrency) from this env.
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "api.cli", "worker"],
            cwd=ROOT,
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        return self

    def kill(self) -> None:
        """SIGKILL the whole worker (no graceful shutdown)."""
        assert self.proc is not None
        os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(10)
        self.kills += 1

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(15)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(5)

    def log_tail(self, n: int = 60) -> str:
        lines = self.log_path.read_text(errors="replace").splitlines()
        return "\n".join(lines[-n:])


@pytest.fixture(scope="session")
def worker(
    database: str, redis_db: redis.Redis, fake_kube: Any, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[WorkerProcess]:
    """One worker for the session's end-to-end tests."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = WorkerProcess(env, tmp_path_factory.mktemp("worker") / "worker.log").start()
    yield proc
    proc.stop()


@pytest.fixture(scope="session")
def app(database: str, redis_db: redis.Redis) -> Any:
    """The FastAPI application (one per session)."""
    from api.app import create_app

    return create_app()


@pytest.fixture(scope="session")
def client(app: Any) -> Iterator[Any]:
    """An HTTP client talking to the app in-process (lifespan run once)."""
    from fastapi.testclient import TestClient

    with TestClient(app) as test_client:
        yield test_client


def create_customer(name: str = "acme", *, admin: bool = False) -> dict[str, Any]:
    """A customer with a token, through the same code as `serveplane customers create`."""
    from db.engine import session_scope
    from db.repositories.customers import create_customer as create

    with session_scope() as session:
        customer, token = create(session, name, admin=admin)
        return {
            "customer_id": customer.id,
            "token": token,
            "headers": {"Authorization": f"Bearer {token}"},
        }


@pytest.fixture
def customer(database: str) -> dict[str, Any]:
    """A fresh customer per test: tests never see each other's services."""
    return create_customer(f"cust-{secrets.token_hex(3)}")


def unique_name(prefix: str = "svc") -> str:
    """A DNS-1035 service name unique to this run."""
    return f"{prefix}-{secrets.token_hex(4)}"


def wait_for(predicate: Any, timeout: float = 20.0, interval: float = 0.05, what: str = "") -> Any:
    """Poll until `predicate()` returns something truthy; fail with `what` on timeout."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = predicate()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}; last={last!r}")


def wait_job(
    client: Any, headers: dict[str, str], job_id: str, timeout: float = 30.0
) -> dict[str, Any]:
    """Poll a job until it is terminal; return its body."""

    def done() -> dict[str, Any] | None:
        body = client.get(f"/api/jobs/{job_id}", headers=headers).json()
        return body if body["status"] in ("succeeded", "failed", "cancelled") else None

    return wait_for(done, timeout, what=f"job {job_id} to finish")


# One session-wide definition of the local-runtime stack (importing it into several test
# modules would start one stack per module, all sharing one database name).
from tests.local_fixtures import local_stack  # noqa: E402,F401
