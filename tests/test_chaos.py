"""Chaos run: 200 deploys on a flaky fake cluster while the worker is SIGKILLed and Redis restarts.

Bounded for CI (SERVEPLANE_CHAOS_SERVICES, default 200). Prints its figures.
"""

from __future__ import annotations

import json
import os
import random
import secrets
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import psycopg
import pytest

from tests.chaos_support import ApiProcess, PrivateRedis, base_env, customer_token
from tests.conftest import PG_ADMIN, WorkerProcess
from tests.fake_kube import Behavior, FakeKube

SERVICES = int(os.environ.get("SERVEPLANE_CHAOS_SERVICES", "200"))
FAIL_EVERY = 10  # every 10th service is made to fail (image pull error)


@pytest.fixture
def chaos_db() -> Any:
    from db.migrate import upgrade_head

    name = f"serveplane_chaos_{secrets.token_hex(4)}"
    with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    url = f"postgresql+psycopg://postgres@127.0.0.1:5432/{name}"
    upgrade_head(url)
    yield url
    with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def test_chaos_run(chaos_db: str, tmp_path: Any) -> None:
    fake = FakeKube().start()
    redis_server = PrivateRedis().start()
    kubeconfig = fake.write_kubeconfig(str(tmp_path / "kubeconfig"))
    env = base_env(
        DATABASE_URL=chaos_db,
        REDIS_URL=redis_server.url,
        KUBECONFIG=kubeconfig,
        SERVEPLANE_QUEUE_PREFIX="chaos",
        SERVEPLANE_JOB_LEASE_SECONDS="3",
        SERVEPLANE_JOB_MAX_ATTEMPTS="10",
        SERVEPLANE_KUBE_RETRY_MAX_WAIT="0.2",
        SERVEPLANE_KUBE_RETRY_ATTEMPTS="10",
        SERVEPLANE_PROGRESS_DEADLINE_SECONDS="3",
        SERVEPLANE_RECONCILE_INTERVAL="3600",
        SERVEPLANE_WORKER_CONCURRENCY="8",
    )
    fake.set_faults(error_rate=0.2, codes=(500, 429), retry_after=0)
    # Every write takes a little while, so two overlapping writers of one object would be seen.
    fake.set_latency(0.01)
    fake.add_rule(r"chaos-fail-.*", Behavior(mode="image_pull_backoff"))
    api = ApiProcess(env).start()
    worker = WorkerProcess(env, tmp_path / "worker.log").start()
    _, token = customer_token(chaos_db)
    headers = {"Authorization": f"Bearer {token}"}
    stop = threading.Event()
    kills = 0
    redis_restarts = 0
    started = time.monotonic()

    def saboteur() -> None:
        nonlocal kills, redis_restarts
        rng = random.Random(7)
        while not stop.is_set() and (kills < 4 or redis_restarts < 1):
            stop.wait(rng.uniform(1.0, 3.0))
            if stop.is_set():
                return
            if kills == 2 and redis_restarts == 0:
                redis_server.restart_empty()
                redis_restarts += 1
                continue
            worker.kill()
            kills += 1
            worker.start()

    def submit(i: int) -> dict[str, Any]:
        name = f"chaos-{'fail' if i % FAIL_EVERY == 0 else 'ok'}-{i}"
        body = {"name": name, "model_path": f"/models/m{i}", "framework": "onnxruntime",
                "replicas": 1, "min_replicas": 1, "max_replicas": 1}
        for _ in range(50):
            try:
                r = httpx.post(f"{api.url}/api/inference/services", json=body, headers=headers,
                               timeout=10)
            except httpx.TransportError:
                time.sleep(0.2)
                continue
            assert r.status_code == 202, r.text
            return {"name": name, **r.json()}
        raise AssertionError(f"could not submit {name}")

    thread = threading.Thread(target=saboteur, daemon=True)
    thread.start()
    try:
        with ThreadPoolExecutor(8) as pool:
            submitted = list(pool.map(submit, range(SERVICES)))
        # Let the saboteur finish its kills, then wait for everything to settle.
        thread.join(timeout=60)
        stop.set()
        deadline = time.monotonic() + 240
        with psycopg.connect(chaos_db.replace("+psycopg", "")) as conn:
            while time.monotonic() < deadline:
                active = conn.execute(
                    "SELECT count(*) FROM jobs WHERE status IN ('queued', 'running')"
                ).fetchone()[0]
                conn.commit()
                if active == 0:
                    break
                time.sleep(0.5)
            converged = time.monotonic() - started
            jobs = conn.execute("SELECT status, count(*) FROM jobs GROUP BY status").fetchall()
            services = dict(conn.execute("SELECT name, status FROM inference_services").fetchall())
            versions = conn.execute(
                "SELECT s.uuid, v.number FROM service_versions v "
                "JOIN inference_services s ON s.id = v.service_id WHERE v.status <> 'removed'"
            ).fetchall()
            attempts = conn.execute("SELECT coalesce(sum(attempts), 0) FROM jobs").fetchone()[0]
    finally:
        stop.set()
        worker.stop()
        api.stop()
        redis_server.stop()
        stats = fake.stats()
        violations = fake.concurrent_violations
        # Namespaces are shared by every job of a customer; overlapping applies there are
        # different jobs. Per-version objects belong to one job at a time.
        violation_keys = [k for k in fake.concurrent_violation_keys if k[0] != "namespaces"]
        violations = len(violation_keys)
        deployments = fake.list_objects("deployments")
        kube_services = fake.list_objects("services")
        fake.stop()

    figures = {
        "services": SERVICES, "jobs": dict(jobs), "worker_kills": kills,
        "redis_restarts": redis_restarts, "concurrent_apply_violations": violations,
        "duplicates_found": 0, "time_to_converge_s": round(converged, 1),
        "kube_requests": stats["total"], "faults_injected": stats["faults_injected"],
        "job_attempts_total": attempts,
    }
    # Every job is terminal and every service where it should be.
    assert dict(jobs).keys() <= {"succeeded", "failed"}, figures
    assert len(submitted) == SERVICES == len(services)
    for name, status in services.items():
        expected = "failed" if name.startswith("chaos-fail-") else "running"
        assert status == expected, (name, status, worker.log_tail())
    # Exactly one Deployment and one Service per live version, and nothing else.
    live = {(uuid, str(number)) for uuid, number in versions}

    def keys(objs: list[dict[str, Any]]) -> list[tuple[str, str]]:
        ours = [o["metadata"].get("labels") or {} for o in objs]
        return [(labels["serveplane.io/service"], labels["serveplane.io/version"])
                for labels in ours if labels.get("app.kubernetes.io/managed-by") == "serveplane"]

    dep_keys, svc_keys = keys(deployments), keys(kube_services)
    figures["duplicates_found"] = (len(dep_keys) - len(set(dep_keys))) + (
        len(svc_keys) - len(set(svc_keys)))
    assert figures["duplicates_found"] == 0, figures
    assert set(dep_keys) == live and set(svc_keys) == live, figures
    assert violations == 0, (figures, violation_keys)
    assert kills >= 3 and redis_restarts == 1, figures
    print("CHAOS", json.dumps(figures))
