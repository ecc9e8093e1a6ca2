"""Secret hygiene: customer tokens and service API keys live only as hashes, are shown once,
and never reach a later answer, a job, an event, a webhook payload or a log line; the
kubeconfig's bearer token never reaches a job, an error or a log either.

Every table of the database is scanned for the plaintexts (row text, so JSON and TEXT columns
alike). The API runs in-process with every logger at DEBUG captured (SQLAlchemy then logs each
statement with its parameters); the worker is the real subprocess and its log file is read.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable
from typing import Any

import pytest
import yaml
from sqlalchemy import select, text

from db.domain import hash_secret, object_name
from db.engine import session_scope
from db.models import ApiToken, Base, Customer, InferenceService
from db.repositories.customers import issue_token
from db.settings import get_settings
from tests.conftest import create_customer, unique_name, wait_for, wait_job
from tests.fake_kube import Behavior

pytestmark = pytest.mark.usefixtures("worker")
HOOK_URL = "http://127.0.0.1:9/hook"


def tables_containing(needle: str) -> list[str]:
    """Every table with a row whose text holds `needle`."""
    found = []
    with session_scope() as session:
        for table in Base.metadata.sorted_tables:
            count = session.execute(
                text(f'SELECT count(*) FROM "{table.name}" AS t WHERE strpos(t::text, :s) > 0'),
                {"s": needle},
            ).scalar_one()
            if count:
                found.append(table.name)
    return found


def kube_token() -> str:
    """The bearer token of the kubeconfig the fake_kube fixture wrote (what workers use)."""
    with open(os.environ["KUBECONFIG"]) as fh:
        config = yaml.safe_load(fh)
    token = config["users"][0]["user"]["token"]
    assert isinstance(token, str) and len(token) >= 8
    return token


def deploy(client: Any, headers: dict[str, str], **body: Any) -> dict[str, Any]:
    response = client.post(
        "/api/inference/services",
        json={"name": unique_name("sec"), "model_path": "/models/m", "framework": "onnx", **body},
        headers={**headers, "Idempotency-Key": unique_name("idem")},
    )
    assert response.status_code == 202, response.text
    return dict(response.json())


def rotate(client: Any, headers: dict[str, str], service_id: str) -> str:
    response = client.post(
        f"/api/inference/services/{service_id}/api-key/rotate",
        headers={**headers, "Idempotency-Key": unique_name("idem")},
    )
    assert response.status_code == 200, response.text
    return str(response.json()["api_key"])


def everything_a_customer_can_read(
    client: Any, headers: dict[str, str], admin: dict[str, str], service_ids: Iterable[str]
) -> dict[str, str]:
    """The text of every GET answer that could show a service, job, event or delivery."""
    pages = {
        "services": "/api/inference/services?limit=500",
        "jobs": "/api/jobs?limit=500",
        "webhooks": "/api/webhooks",
        "deliveries": "/api/webhooks/deliveries?limit=200",
        "admin jobs": "/api/admin/jobs?limit=500",
        "admin deliveries": "/api/admin/webhook-deliveries?limit=500",
    }
    for sid in service_ids:
        pages[f"service {sid}"] = f"/api/inference/services/{sid}"
        pages[f"events {sid}"] = f"/api/inference/services/{sid}/events"
        pages[f"versions {sid}"] = f"/api/inference/services/{sid}/versions"
    answers = {}
    for what, url in pages.items():
        response = client.get(url, headers=admin if what.startswith("admin") else headers)
        assert response.status_code == 200, (url, response.text)
        answers[what] = response.text
    for job in client.get("/api/jobs?limit=500", headers=headers).json()["items"]:
        answers[f"job {job['job_id']}"] = client.get(
            f"/api/jobs/{job['job_id']}", headers=headers
        ).text
    return answers


@pytest.fixture
def admin(database: str) -> dict[str, str]:
    return dict(create_customer("sec-admin", admin=True)["headers"])


def test_tokens_and_api_keys_are_stored_only_as_hashes(client, customer):
    headers = customer["headers"]
    token = customer["token"]
    first = deploy(client, headers)
    sid = first["service_id"]
    plain = deploy(client, headers)  # without Idempotency-Key too
    response = client.post(
        "/api/inference/services",
        json={"name": unique_name("sec"), "model_path": "/models/m", "framework": "onnx"},
        headers=headers,
    )
    keys = [first["api_key"], plain["api_key"], response.json()["api_key"]]
    keys += [rotate(client, headers, sid), rotate(client, headers, sid)]
    assert all(k.startswith("spk_") and len(k) > 40 for k in keys)

    with session_scope() as session:
        row = session.scalar(
            select(ApiToken).where(ApiToken.customer_id == customer["customer_id"])
        )
        assert row is not None and row.token_hash == hash_secret(token)
        assert token.startswith(row.prefix) and len(row.prefix) <= 10  # a display prefix only
        service = session.scalar(select(InferenceService).where(InferenceService.uuid == sid))
        assert service is not None and service.api_key == hash_secret(keys[-1])
    for secret in [token, *keys]:
        assert tables_containing(secret) == [], f"{secret[:8]}… is stored in plaintext"


def test_idempotent_replays_still_show_the_key_once_issued(client, customer):
    """Stored responses are sealed, not stripped: a retried create still gets its key."""
    headers = {**customer["headers"], "Idempotency-Key": "create-once"}
    body = {"name": unique_name("sec"), "model_path": "/models/m", "framework": "onnx"}
    first = client.post("/api/inference/services", json=body, headers=headers)
    again = client.post("/api/inference/services", json=body, headers=headers)
    assert first.status_code == again.status_code == 202
    assert again.headers["idempotent-replayed"] == "true"
    assert again.json()["api_key"] == first.json()["api_key"]
    assert tables_containing(first.json()["api_key"]) == []
    # Another token of the same customer cannot open the stored answer.
    with session_scope() as session:
        owner = session.get(Customer, customer["customer_id"])
        second_token = issue_token(session, owner)
    other = client.post(
        "/api/inference/services",
        json=body,
        headers={"Authorization": f"Bearer {second_token}", "Idempotency-Key": "create-once"},
    )
    assert other.status_code == 422, other.text
    assert first.json()["api_key"] not in other.text


def test_keys_are_never_returned_again(client, customer, admin):
    headers = customer["headers"]
    created = deploy(client, headers, callback_url=HOOK_URL)
    sid = created["service_id"]
    rotated = rotate(client, headers, sid)
    secrets = {"token": customer["token"], "first key": created["api_key"], "rotated": rotated}
    for what, answer in everything_a_customer_can_read(client, headers, admin, [sid]).items():
        for name, secret in secrets.items():
            assert secret not in answer, f"{what} shows the {name}"
    # Refusals do not echo what was presented either.
    for presented in (created["api_key"], rotated[:-1] + "x"):
        refused = client.post(
            f"/inference/{sid}/v2/models/m/infer", json={}, headers={"X-API-Key": presented}
        )
        assert refused.status_code == 401 and presented not in refused.text
    wrong = customer["token"][:-2] + "xx"
    refused = client.get("/api/jobs", headers={"Authorization": f"Bearer {wrong}"})
    assert refused.status_code == 401 and wrong not in refused.text


def test_secrets_never_reach_jobs_events_errors_or_logs(
    client, customer, admin, fake_kube, worker, caplog
):
    caplog.set_level(logging.DEBUG)
    # SQLAlchemy pins its own loggers at WARNING; at DEBUG they log statements and parameters.
    caplog.set_level(logging.DEBUG, logger="sqlalchemy")
    headers = customer["headers"]
    namespace = f"{get_settings().namespace_prefix}customer-{customer['customer_id']}"

    # A deploy that succeeds, then a rotation and a scale of the running service.
    good = deploy(client, headers, callback_url=HOOK_URL)
    assert wait_job(client, headers, good["job_id"])["status"] == "succeeded"
    rotated = rotate(client, headers, good["service_id"])
    scaled = client.patch(
        f"/api/inference/services/{good['service_id']}",
        json={"max_replicas": 3},
        headers={**headers, "Idempotency-Key": unique_name("idem")},
    )
    assert scaled.status_code == 202, scaled.text
    assert wait_job(client, headers, scaled.json()["job_id"])["status"] == "succeeded"
    client.post(
        f"/inference/{good['service_id']}/v2/models/m/infer",
        json={},
        headers={"X-API-Key": rotated},
    )

    # A deploy whose pods cannot pull their image.
    name = unique_name("secpull")
    fake_kube.add_rule(f"{name}-v1", Behavior(mode="image_pull_backoff"))
    pulled = deploy(client, headers, name=name)
    failed = wait_job(client, headers, pulled["job_id"])
    assert failed["status"] == "failed" and failed["error"]["reason"] in (
        "ErrImagePull",
        "ImagePullBackOff",
    ), failed

    # A deploy the API server keeps refusing: its message flows into the job's error.
    name = unique_name("secrefused")
    fake_kube.set_faults(
        error_rate=1.0,
        codes=(500,),
        retry_after=0,
        path_regex=f"/namespaces/{namespace}/deployments/{object_name(name, 1)}",
    )
    try:
        refused = deploy(client, headers, name=name)
        rejected = wait_job(client, headers, refused["job_id"], timeout=90)
    finally:
        fake_kube.set_faults(error_rate=0.0)
    assert rejected["status"] == "failed", rejected
    assert rejected["error"]["message"] and len(rejected["attempts"]) >= 1

    service_ids = [good["service_id"], pulled["service_id"], refused["service_id"]]
    secrets = {
        "customer token": customer["token"],
        "kubeconfig token": kube_token(),
        **{f"api key of {b['service_id']}": b["api_key"] for b in (good, pulled, refused)},
        "rotated api key": rotated,
    }
    # Webhook deliveries of the callback are recorded before we look.
    wait_for(
        lambda: client.get("/api/webhooks/deliveries", headers=headers).json()["items"],
        what="callback deliveries",
    )
    answers = everything_a_customer_can_read(client, headers, admin, service_ids)
    assert any(rejected["error"]["message"] in answer for answer in answers.values())
    worker_log = worker.log_path.read_text(errors="replace")
    api_log = caplog.text
    # The captures are real: the worker ran these jobs, SQL was logged with its parameters.
    assert good["job_id"] in worker_log and refused["job_id"] in worker_log
    assert "INSERT INTO idempotency_keys" in api_log and good["service_id"] in api_log
    for name, secret in secrets.items():
        assert secret not in worker_log, f"the worker log shows the {name}"
        assert secret not in api_log, f"the API log shows the {name}"
        assert tables_containing(secret) == [], f"the database holds the {name}"
        for what, answer in answers.items():
            assert secret not in answer, f"{what} shows the {name}"
