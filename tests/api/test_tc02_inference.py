"""TC-02 for real: deploy an ONNX model, then call its inference API through the gateway.

A real API process and a real Celery worker on the LOCAL runtime (`local_stack`: the model
server runs as a process), the service's own `endpoint_url` and API key, plain HTTP and the
official Triton client (`tritonclient.http`, JSON tensors).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import tritonclient.http as triton

from tests.conftest import unique_name, wait_for
from tests.local_fixtures import LocalStack
from tests.models import build_linear_model

RNG = np.random.default_rng(7)
W = RNG.standard_normal((4, 3)).astype(np.float32)
B = RNG.standard_normal(3).astype(np.float32)


def infer_body(x: np.ndarray) -> dict[str, Any]:
    return {
        "inputs": [
            {
                "name": "x",
                "shape": list(x.shape),
                "datatype": "FP32",
                "data": x.reshape(-1).tolist(),
            }
        ]
    }


def outputs(response: httpx.Response) -> np.ndarray:
    out = response.json()["outputs"][0]
    assert out["name"] == "y" and out["datatype"] == "FP32"
    return np.array(out["data"], dtype=np.float32).reshape(out["shape"])


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def error_code(response: httpx.Response) -> str:
    return str(response.json()["error"]["code"])


@pytest.mark.timeout(180)
def test_tc02_deployed_service_answers_predictions(
    local_stack: LocalStack,
    tmp_path: Path,
) -> None:
    api, headers = local_stack.api_url, local_stack.headers
    model = build_linear_model(tmp_path / "linear.onnx", W, B)
    name = unique_name("tc02")
    created = httpx.post(
        f"{api}/api/inference/services",
        headers=headers,
        json={"name": name, "model_path": str(model), "framework": "onnxruntime"},
        timeout=10,
    )
    assert created.status_code == 202, created.text
    accepted = created.json()
    service_id, key = accepted["service_id"], accepted["api_key"]
    endpoint = accepted["endpoint_url"]
    assert endpoint == f"{api}/inference/{service_id}"
    infer_url = f"{endpoint}/v2/models/{name}/infer"
    x = RNG.standard_normal((6, 4)).astype(np.float32)
    expected = x @ W + B

    # Until the deploy finishes the gateway says "not yet" (503 + Retry-After), never anything else.
    def running() -> bool:
        probe = httpx.post(infer_url, json=infer_body(x), headers=bearer(key), timeout=10)
        if probe.status_code == 503:
            assert error_code(probe) == "service_unavailable" and probe.headers["retry-after"]
        else:
            assert probe.status_code == 200, probe.text
        service = httpx.get(f"{api}/api/inference/services/{service_id}", headers=headers).json()
        assert service["status"] != "failed", service
        return service["status"] == "running" and probe.status_code == 200

    wait_for(running, 60, interval=0.2, what=f"{service_id} to run and answer")

    # Plain HTTP with either key header.
    for auth in (bearer(key), {"X-API-Key": key}):
        response = httpx.post(infer_url, json=infer_body(x), headers=auth, timeout=10)
        assert response.status_code == 200, response.text
        assert response.headers["x-serveplane-version"] == "1"
        body = response.json()
        assert body["model_name"] == name
        np.testing.assert_allclose(outputs(response), expected, atol=1e-5, rtol=1e-5)

    # The OIP v2 read endpoints through the gateway.
    ready = httpx.get(f"{endpoint}/v2/health/ready", headers=bearer(key), timeout=10)
    assert (ready.status_code, ready.json()) == (200, {"ready": True})
    metadata = httpx.get(f"{endpoint}/v2/models/{name}", headers=bearer(key), timeout=10)
    assert metadata.status_code == 200
    assert metadata.json()["name"] == name
    assert metadata.json()["inputs"] == [{"name": "x", "datatype": "FP32", "shape": [-1, 4]}]
    model_ready = httpx.get(f"{endpoint}/v2/models/{name}/ready", headers=bearer(key), timeout=10)
    assert (model_ready.status_code, model_ready.json()["ready"]) == (200, True)

    # The official Triton HTTP client, pointed at the endpoint URL (its path prefix included).
    client = triton.InferenceServerClient(url=endpoint.removeprefix("http://"))
    try:
        auth = bearer(key)
        assert client.is_server_live(headers=auth)
        assert client.is_server_ready(headers=auth)
        assert client.is_model_ready(name, headers=auth)
        assert client.get_model_metadata(name, headers=auth)["name"] == name
        tensor = triton.InferInput("x", list(x.shape), "FP32")
        tensor.set_data_from_numpy(x, binary_data=False)
        result = client.infer(
            name,
            [tensor],
            outputs=[triton.InferRequestedOutput("y", binary_data=False)],
            headers=auth,
        )
        np.testing.assert_allclose(result.as_numpy("y"), expected, atol=1e-5, rtol=1e-5)
        with pytest.raises(triton.InferenceServerException):
            client.infer(name, [tensor], headers=bearer("spk_wrong"))
    finally:
        client.close()

    # Key rotation: the old key stops at once, the new one works.
    rotated = httpx.post(
        f"{api}/api/inference/services/{service_id}/api-key/rotate", headers=headers, timeout=10
    )
    assert rotated.status_code == 200, rotated.text
    new_key = rotated.json()["api_key"]
    old = httpx.post(infer_url, json=infer_body(x), headers=bearer(key), timeout=10)
    assert (old.status_code, error_code(old)) == (401, "unauthorized")
    new = httpx.post(infer_url, json=infer_body(x), headers=bearer(new_key), timeout=10)
    assert new.status_code == 200, new.text
    np.testing.assert_allclose(outputs(new), expected, atol=1e-5, rtol=1e-5)

    # Delete: inference answers 404 at once, and still after the delete job has finished.
    deleted = httpx.delete(f"{api}/api/inference/services/{service_id}", headers=headers)
    assert deleted.status_code == 202, deleted.text
    gone = httpx.post(infer_url, json=infer_body(x), headers=bearer(new_key), timeout=10)
    assert (gone.status_code, error_code(gone)) == (404, "service_not_found")
    service_url = f"{api}/api/inference/services/{service_id}"
    wait_for(
        lambda: httpx.get(service_url, headers=headers).json()["status"] == "deleted",
        30,
        what="the delete job",
    )
    after = httpx.get(f"{endpoint}/v2/health/ready", headers=bearer(new_key), timeout=10)
    assert (after.status_code, error_code(after)) == (404, "service_not_found")
