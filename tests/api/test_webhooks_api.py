"""The webhooks API: registration, validation (SSRF guard), secrets, tenancy, deliveries."""

from __future__ import annotations

import base64
from typing import Any

import pytest
from standardwebhooks.webhooks import Webhook

from tests.conftest import create_customer, unique_name

# Nothing listens here; the worker (if one runs in this session) just records failures.
URL = "http://127.0.0.1:9/hook"


def create(client: Any, headers: dict[str, str], **body: Any) -> Any:
    return client.post(
        "/api/webhooks", json={"url": URL, "events": ["job.succeeded"], **body}, headers=headers
    )


def error_field(response: Any) -> str:
    body = response.json()
    assert set(body) == {"error"}, body
    assert body["error"]["code"] == "validation_error"
    return body["error"]["details"][0]["field"]


def test_create_shows_the_secret_once(client, customer):
    headers = customer["headers"]
    response = create(client, headers, events=["job.failed", "service.degraded", "job.failed"])
    assert response.status_code == 201, response.text
    body = response.json()
    assert set(body) == {
        "id",
        "url",
        "events",
        "enabled",
        "disabled_reason",
        "created_at",
        "secret",
    }
    assert body["id"].startswith("wh-") and body["url"] == URL and body["enabled"] is True
    assert body["events"] == ["job.failed", "service.degraded"]
    assert body["secret"].startswith("whsec_")
    assert len(base64.b64decode(body["secret"][6:], validate=True)) >= 24
    Webhook(body["secret"])  # a Standard Webhooks receiver accepts it

    fetched = client.get(f"/api/webhooks/{body['id']}", headers=headers)
    assert fetched.status_code == 200
    assert "secret" not in fetched.json()
    assert {k: v for k, v in body.items() if k != "secret"} == fetched.json()
    listed = client.get("/api/webhooks", headers=headers).json()["items"]
    assert [w["id"] for w in listed] == [body["id"]] and "secret" not in listed[0]
    # Each endpoint has its own secret.
    assert create(client, headers).json()["secret"] != body["secret"]


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"events": ["job.exploded"]}, "events"),
        ({"events": []}, "events"),
        ({"events": "job.failed"}, "events"),
        ({"url": "ftp://example.com/x"}, "url"),
        ({"url": "not a url"}, "url"),
        ({"url": "http://10.0.0.1/hook"}, "url"),
        ({"url": "http://169.254.169.254/latest/meta-data"}, "url"),
        ({"url": "http://[::1]:8080/hook"}, "url"),
        ({"url": "http://127.0.0.2/hook"}, "url"),  # the test env allowlists 127.0.0.1 only
        ({"url": "http://100.64.0.7/hook"}, "url"),
        ({"url": "http://no-such-host.invalid/hook"}, "url"),
        ({"url": "http://example.com/" + "a" * 2100}, "url"),
        ({"secret": "mine"}, "secret"),
    ],
)
def test_validation_names_the_field(client, customer, body, field):
    response = create(client, customer["headers"], **body)
    assert response.status_code == 422, response.text
    assert error_field(response) == field
    assert client.get("/api/webhooks", headers=customer["headers"]).json()["items"] == []


def test_ssrf_refusal_explains_itself(client, customer):
    response = create(client, customer["headers"], url="http://169.254.169.254/")
    message = response.json()["error"]["details"][0]["message"]
    assert "link-local" in message and "public addresses" in message


def test_allowlisted_hosts_are_accepted(client, customer):
    # SERVEPLANE_WEBHOOK_ALLOWED_HOSTS=127.0.0.1,localhost in the test environment.
    for url in ("http://127.0.0.1:8080/hook", "http://localhost:8080/hook"):
        assert create(client, customer["headers"], url=url).status_code == 201


def test_callback_url_is_guarded_on_every_service_route(client, customer):
    headers = customer["headers"]
    base = {"model_path": "/models/m", "framework": "onnx"}
    bad = "http://10.0.0.1/callback"
    response = client.post(
        "/api/inference/services",
        json={**base, "name": unique_name(), "callback_url": bad},
        headers=headers,
    )
    assert response.status_code == 422 and error_field(response) == "callback_url"
    assert client.get("/api/inference/services", headers=headers).json()["items"] == []

    accepted = client.post(
        "/api/inference/services",
        json={**base, "name": unique_name(), "callback_url": URL},
        headers=headers,
    )
    assert accepted.status_code == 202, accepted.text
    sid = accepted.json()["service_id"]
    response = client.patch(
        f"/api/inference/services/{sid}",
        json={"replicas": 2, "callback_url": "http://169.254.169.254/"},
        headers=headers,
    )
    assert response.status_code == 422 and error_field(response) == "callback_url"
    response = client.delete(
        f"/api/inference/services/{sid}", params={"callback_url": "gopher://x/"}, headers=headers
    )
    assert response.status_code == 422 and error_field(response) == "callback_url"


def test_delete_is_soft_and_final(client, customer):
    headers = customer["headers"]
    hook = create(client, headers).json()
    assert client.delete(f"/api/webhooks/{hook['id']}", headers=headers).status_code == 204
    assert client.get(f"/api/webhooks/{hook['id']}", headers=headers).status_code == 404
    assert client.delete(f"/api/webhooks/{hook['id']}", headers=headers).status_code == 404
    assert client.post(f"/api/webhooks/{hook['id']}/test", headers=headers).status_code == 404
    assert client.get("/api/webhooks", headers=headers).json()["items"] == []

    from db.engine import session_scope
    from db.models import WebhookEndpoint

    with session_scope() as session:
        row = session.query(WebhookEndpoint).filter_by(uuid=hook["id"]).one()
        assert row.deleted_at is not None and row.secret == hook["secret"]


def test_test_event_is_queued_and_listed(client, customer):
    headers = customer["headers"]
    hook = create(client, headers).json()
    response = client.post(f"/api/webhooks/{hook['id']}/test", headers=headers)
    assert response.status_code == 202, response.text
    queued = response.json()
    assert queued["delivery_id"].startswith("msg_")
    assert queued == {
        "delivery_id": queued["delivery_id"],
        "webhook_id": hook["id"],
        "event_type": "webhook.test",
        "status": "pending",
    }
    [delivery] = client.get(f"/api/webhooks/{hook['id']}/deliveries", headers=headers).json()[
        "items"
    ]
    assert delivery["id"] == queued["delivery_id"]
    assert delivery["webhook_id"] == hook["id"] and delivery["url"] == URL
    assert delivery["payload"]["type"] == "webhook.test"
    assert delivery["payload"]["data"]["webhook_id"] == hook["id"]
    everything = client.get("/api/webhooks/deliveries", headers=headers).json()["items"]
    assert [d["id"] for d in everything] == [queued["delivery_id"]]


def test_deliveries_are_paged_newest_first(client, customer):
    headers = customer["headers"]
    hook = create(client, headers).json()
    ids = [
        client.post(f"/api/webhooks/{hook['id']}/test", headers=headers).json()["delivery_id"]
        for _ in range(3)
    ]
    page = client.get(
        f"/api/webhooks/{hook['id']}/deliveries", params={"limit": 2}, headers=headers
    ).json()
    assert [d["id"] for d in page["items"]] == ids[::-1][:2] and page["next_cursor"]
    rest = client.get(
        f"/api/webhooks/{hook['id']}/deliveries",
        params={"limit": 2, "cursor": page["next_cursor"]},
        headers=headers,
    ).json()
    assert [d["id"] for d in rest["items"]] == [ids[0]] and rest["next_cursor"] is None


def test_tenant_isolation_on_every_route(client, customer):
    owner = customer["headers"]
    other = create_customer("intruder")["headers"]
    hook = create(client, owner).json()
    client.post(f"/api/webhooks/{hook['id']}/test", headers=owner)
    wid = hook["id"]

    for method, path in [
        ("get", f"/api/webhooks/{wid}"),
        ("delete", f"/api/webhooks/{wid}"),
        ("post", f"/api/webhooks/{wid}/test"),
        ("get", f"/api/webhooks/{wid}/deliveries"),
    ]:
        response = client.request(method, path, headers=other)
        assert response.status_code == 404, (method, path, response.text)
        assert response.json()["error"]["code"] == "not_found"
    assert client.get("/api/webhooks", headers=other).json()["items"] == []
    assert client.get("/api/webhooks/deliveries", headers=other).json()["items"] == []
    # The owner's endpoint is untouched and only one test was queued.
    assert client.get(f"/api/webhooks/{wid}", headers=owner).status_code == 200
    assert len(client.get(f"/api/webhooks/{wid}/deliveries", headers=owner).json()["items"]) == 1
    # Secrets are per customer.
    mine = client.get("/api/webhooks/signing-secret", headers=owner).json()["secret"]
    theirs = client.get("/api/webhooks/signing-secret", headers=other).json()["secret"]
    assert mine != theirs


def test_every_route_needs_a_token(client):
    for method, path in [
        ("get", "/api/webhooks"),
        ("post", "/api/webhooks"),
        ("get", "/api/webhooks/wh-x"),
        ("delete", "/api/webhooks/wh-x"),
        ("post", "/api/webhooks/wh-x/test"),
        ("get", "/api/webhooks/wh-x/deliveries"),
        ("get", "/api/webhooks/deliveries"),
        ("get", "/api/webhooks/signing-secret"),
        ("post", "/api/webhooks/signing-secret/rotate"),
    ]:
        assert client.request(method, path).status_code == 401, (method, path)


def test_signing_secret_is_stable_until_rotated(client, customer):
    headers = customer["headers"]
    first = client.get("/api/webhooks/signing-secret", headers=headers).json()["secret"]
    assert client.get("/api/webhooks/signing-secret", headers=headers).json()["secret"] == first
    Webhook(first)
    assert len(base64.b64decode(first.removeprefix("whsec_"), validate=True)) >= 24
    rotated = client.post("/api/webhooks/signing-secret/rotate", headers=headers)
    assert rotated.status_code == 200
    second = rotated.json()["secret"]
    assert second != first and second.startswith("whsec_")
    assert client.get("/api/webhooks/signing-secret", headers=headers).json()["secret"] == second
