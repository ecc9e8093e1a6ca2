"""Idempotency-Key: replay, reuse with another body, concurrent duplicates, scoping."""

from __future__ import annotations

from typing import Any

from tests.conftest import create_customer, unique_name


def create(client: Any, headers: dict[str, str], key: str, name: str) -> Any:
    return client.post(
        "/api/inference/services",
        json={"name": name, "model_path": "/models/m", "framework": "onnx"},
        headers={**headers, "Idempotency-Key": key},
    )


def test_same_key_same_body_replays_and_creates_one_job(client, customer):
    name = unique_name()
    first = create(client, customer["headers"], "key-1", name)
    second = create(client, customer["headers"], "key-1", name)
    assert first.status_code == second.status_code == 202
    assert first.json() == second.json()
    assert second.headers["idempotent-replayed"] == "true"
    assert second.headers["location"] == first.headers["location"]
    jobs = client.get("/api/jobs", headers=customer["headers"]).json()["items"]
    assert len(jobs) == 1


def test_same_key_different_body_is_422(client, customer):
    assert create(client, customer["headers"], "key-2", unique_name()).status_code == 202
    response = create(client, customer["headers"], "key-2", unique_name())
    assert response.status_code == 422
    assert response.json()["error"]["code"] == "idempotency_key_reused"
    assert len(client.get("/api/jobs", headers=customer["headers"]).json()["items"]) == 1


def test_concurrent_duplicate_is_409(client, customer):
    from db.engine import session_scope
    from db.repositories import idempotency

    name = unique_name()
    # A first request holding the key (as if still executing).
    import hashlib

    body = ('{"name":"%s","model_path":"/models/m","framework":"onnx"}' % name).encode()
    digest = hashlib.sha256(b"\n".join([b"POST", b"/api/inference/services", b"", body])).hexdigest()
    with session_scope() as session:
        assert idempotency.reserve(
            session, customer_id=customer["customer_id"], key="key-3", method="POST",
            path="/api/inference/services", request_hash=digest, ttl_hours=24,
        ) is None
    response = client.post(
        "/api/inference/services", content=body,
        headers={**customer["headers"], "Idempotency-Key": "key-3",
                 "content-type": "application/json"},
    )
    assert response.status_code == 409
    assert response.json()["error"]["code"] == "idempotency_in_progress"


def test_keys_are_scoped_per_customer(client, customer):
    other = create_customer("other")
    assert create(client, customer["headers"], "shared", unique_name()).status_code == 202
    assert create(client, other["headers"], "shared", unique_name()).status_code == 202


def test_failed_validation_is_replayed_not_reexecuted(client, customer):
    bad = client.post("/api/inference/services", json={"name": "Bad"},
                      headers={**customer["headers"], "Idempotency-Key": "key-4"})
    again = client.post("/api/inference/services", json={"name": "Bad"},
                        headers={**customer["headers"], "Idempotency-Key": "key-4"})
    assert bad.status_code == again.status_code == 422
    assert again.headers.get("idempotent-replayed") == "true"


def test_patch_and_delete_accept_the_key(client, customer):
    created = create(client, customer["headers"], "key-5", unique_name()).json()
    sid = created["service_id"]
    first = client.delete(f"/api/inference/services/{sid}",
                          headers={**customer["headers"], "Idempotency-Key": "del-1"})
    second = client.delete(f"/api/inference/services/{sid}",
                           headers={**customer["headers"], "Idempotency-Key": "del-1"})
    assert first.status_code == 202 and second.json() == first.json()


def test_overlong_key_is_rejected(client, customer):
    response = create(client, customer["headers"], "k" * 256, unique_name())
    assert response.status_code == 422
    assert response.json()["error"]["details"][0]["field"] == "Idempotency-Key"
