"""Outages for real: PostgreSQL restarted during submissions, Redis down during submissions."""

from __future__ import annotations

import threading
import time
from typing import Any

import httpx
import psycopg
import pytest

from tests.chaos_support import ApiProcess, PrivatePostgres, PrivateRedis, base_env, customer_token
from tests.conftest import WorkerProcess
from tests.fake_kube import FakeKube


@pytest.fixture
def stack(tmp_path: Any) -> Any:
    """Private PostgreSQL, Redis and fake cluster, with an API and a worker on them."""
    from db.migrate import upgrade_head

    pg = PrivatePostgres().init()
    redis_server = PrivateRedis().start()
    fake = FakeKube().start()
    upgrade_head(pg.url)
    env = base_env(
        DATABASE_URL=pg.url, REDIS_URL=redis_server.url,
        KUBECONFIG=fake.write_kubeconfig(str(tmp_path / "kubeconfig")),
        SERVEPLANE_QUEUE_PREFIX="outage", SERVEPLANE_JOB_LEASE_SECONDS="3",
        SERVEPLANE_RECONCILE_INTERVAL="3600",
    )
    api = ApiProcess(env).start()
    worker = WorkerProcess(env, tmp_path / "worker.log").start()
    _, token = customer_token(pg.url)
    yield {"pg": pg, "redis": redis_server, "api": api, "worker": worker,
           "headers": {"Authorization": f"Bearer {token}"}}
    worker.stop()
    api.stop()
    fake.stop()
    redis_server.stop()
    pg.destroy()


def submit(api: ApiProcess, headers: dict[str, str], i: int) -> httpx.Response:
    body = {"name": f"svc-{i}", "model_path": "/models/m", "framework": "onnx",
            "replicas": 1, "min_replicas": 1, "max_replicas": 1}
    return httpx.post(f"{api.url}/api/inference/services", json=body, headers=headers, timeout=15)


def all_jobs_done(pg_url: str, job_ids: list[str], timeout: float = 60) -> dict[str, str]:
    deadline = time.monotonic() + timeout
    statuses: dict[str, str] = {}
    while time.monotonic() < deadline:
        try:
            with psycopg.connect(pg_url.replace("+psycopg", "")) as conn:
                statuses = dict(conn.execute(
                    "SELECT uuid, status FROM jobs WHERE uuid = ANY(%s)", (job_ids,)
                ).fetchall())
        except psycopg.OperationalError:
            statuses = {}
        if len(statuses) == len(job_ids) and set(statuses.values()) <= {"succeeded", "failed"}:
            return statuses
        time.sleep(0.3)
    raise AssertionError(f"jobs not finished: {statuses}")


def test_postgres_restart_during_submissions(stack: dict[str, Any]) -> None:
    api, headers, pg = stack["api"], stack["headers"], stack["pg"]
    responses: list[httpx.Response] = []
    outage = {"ready": None}
    stop = threading.Event()

    def load() -> None:
        i = 0
        while not stop.is_set():
            try:
                responses.append(submit(api, headers, i))
            except httpx.TransportError as exc:  # never expected: the API stays up
                raise AssertionError(f"API unreachable: {exc}") from exc
            i += 1
            time.sleep(0.02)

    thread = threading.Thread(target=load)
    thread.start()
    time.sleep(1.0)
    pg.stop()
    time.sleep(0.5)
    outage["ready"] = httpx.get(f"{api.url}/readyz", timeout=10)
    time.sleep(2.0)
    pg.start()
    time.sleep(2.0)
    stop.set()
    thread.join()

    codes = [r.status_code for r in responses]
    assert 500 not in codes and all(c in (202, 503) for c in codes), codes
    unavailable = [r for r in responses if r.status_code == 503]
    assert unavailable, "the outage was not observed"
    for r in unavailable:
        assert r.headers["retry-after"]
        assert r.json()["error"]["code"] == "database_unavailable"
    assert outage["ready"].status_code == 503
    assert outage["ready"].json()["error"]["details"]["database"].startswith("unavailable")
    accepted = [r.json()["job_id"] for r in responses if r.status_code == 202]
    assert accepted and codes[-1] == 202
    statuses = all_jobs_done(pg.url, accepted)
    assert set(statuses.values()) == {"succeeded"}, statuses
    print(f"pg restart: {len(accepted)} accepted, {len(unavailable)} answered 503, none lost")


def test_redis_down_submissions_wait_in_postgres(stack: dict[str, Any]) -> None:
    api, headers, pg, redis_server = stack["api"], stack["headers"], stack["pg"], stack["redis"]
    redis_server.stop()
    ready = httpx.get(f"{api.url}/readyz", timeout=10)
    assert ready.status_code == 503 and ready.json()["error"]["details"]["broker"] != "ok"
    started = time.monotonic()
    accepted = []
    for i in range(5):
        r = submit(api, headers, 1000 + i)
        assert r.status_code == 202, r.text
        accepted.append(r.json()["job_id"])
    assert time.monotonic() - started < 10, "submissions must not hang while Redis is down"
    with psycopg.connect(pg.url.replace("+psycopg", "")) as conn:
        queued = conn.execute("SELECT count(*) FROM jobs WHERE uuid = ANY(%s) AND status = "
                              "'queued'", (accepted,)).fetchone()[0]
    assert queued == 5
    redis_server.start()
    statuses = all_jobs_done(pg.url, accepted)
    assert set(statuses.values()) == {"succeeded"}, statuses
