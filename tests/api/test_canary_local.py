"""Canary end to end on the local runtime: two real ONNX models, promote, rollback."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import psutil

from tests.conftest import unique_name, wait_for
from tests.models import build_linear_model

REQUESTS = 2000
X = [[1.0, 2.0]]


def wait_job(api: str, headers: dict[str, str], job_id: str, timeout: float = 60) -> dict[str, Any]:
    def done() -> dict[str, Any] | None:
        body = httpx.get(f"{api}/api/jobs/{job_id}", headers=headers).json()
        return body if body["status"] in ("succeeded", "failed", "cancelled") else None

    return wait_for(done, timeout, what=f"job {job_id}")


def infer_many(url: str, key: str, n: int) -> list[tuple[int, float]]:
    """(answering version, first output) for n requests through the gateway."""
    body = {"inputs": [{"name": "x", "shape": [1, 2], "datatype": "FP32", "data": X}]}

    def one(client: httpx.Client) -> tuple[int, float]:
        r = client.post(url, json=body, headers={"X-API-Key": key})
        assert r.status_code == 200, r.text
        return int(r.headers["x-serveplane-version"]), r.json()["outputs"][0]["data"][0]

    with httpx.Client(timeout=10) as client, ThreadPoolExecutor(8) as pool:
        return list(pool.map(lambda _: one(client), range(n)))


def test_canary_promote_rollback(local_stack: Any, tmp_path: Path) -> None:
    api, headers = local_stack.api_url, local_stack.headers
    w1, w2 = np.array([[1.0], [1.0]], np.float32), np.array([[10.0], [10.0]], np.float32)
    m1 = build_linear_model(tmp_path / "m1.onnx", w1, np.zeros(1, np.float32))
    m2 = build_linear_model(tmp_path / "m2.onnx", w2, np.zeros(1, np.float32))
    expected = {1: float((np.array(X) @ w1)[0, 0]), 2: float((np.array(X) @ w2)[0, 0])}
    name = unique_name("canary")
    created = httpx.post(
        f"{api}/api/inference/services",
        headers=headers,
        json={
            "name": name,
            "model_path": str(m1),
            "framework": "onnxruntime",
            "replicas": 1,
            "min_replicas": 1,
            "max_replicas": 1,
        },
    ).json()
    assert wait_job(api, headers, created["job_id"])["status"] == "succeeded"
    sid, key = created["service_id"], created["api_key"]
    infer_url = f"{created['endpoint_url']}/v2/models/{name}/infer"

    response = httpx.post(
        f"{api}/api/inference/services/{sid}/versions",
        headers=headers,
        json={"model_path": str(m2), "canary_percent": 20},
    )
    assert response.status_code == 202, response.text
    assert wait_job(api, headers, response.json()["job_id"])["status"] == "succeeded"

    answers = infer_many(infer_url, key, REQUESTS)
    for version, value in answers:  # the header tells the truth about who answered
        assert abs(value - expected[version]) < 1e-5
    share = sum(1 for v, _ in answers if v == 2) / REQUESTS
    print(f"canary share answered by v2: {share:.3f} over {REQUESTS} requests")
    assert 0.17 <= share <= 0.23, share

    v1_pids = [
        r["pid"] for r in local_stack.replicas() if r["version"] == 1 and r["service_uuid"] == sid
    ]
    assert v1_pids
    response = httpx.post(f"{api}/api/inference/services/{sid}/versions/2/promote", headers=headers)
    assert wait_job(api, headers, response.json()["job_id"])["status"] == "succeeded"
    time.sleep(1.2)  # the gateway's route cache (SERVEPLANE_GATEWAY_ROUTE_TTL, 1 s)
    assert {v for v, _ in infer_many(infer_url, key, 200)} == {2}
    # v1's processes are gone after the grace period.
    wait_for(
        lambda: (
            not any(
                psutil.pid_exists(p) and psutil.Process(p).status() != "zombie" for p in v1_pids
            )
        ),
        20,
        what="v1 processes to stop",
    )

    response = httpx.post(f"{api}/api/inference/services/{sid}/rollback", headers=headers)
    assert response.status_code == 202, response.text
    job = wait_job(api, headers, response.json()["job_id"])
    assert job["status"] == "succeeded", job
    time.sleep(1.2)  # the gateway's route cache (1 s) in the API process
    answers = infer_many(infer_url, key, 200)
    assert {v for v, _ in answers} == {1}
    assert all(abs(value - expected[1]) < 1e-5 for _, value in answers)
