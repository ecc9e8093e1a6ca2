"""The admin API end to end: a real worker, the fake cluster, real PostgreSQL and Redis."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from api.admin.router import router as admin_api_router
from db.engine import session_scope
from db.repositories import jobs as jobs_repo
from db.repositories import services as services_repo
from db.repositories import webhooks as webhooks_repo
from db.states import utcnow
from tests.conftest import create_customer, unique_name, wait_for, wait_job
from tests.fake_kube import Behavior

pytestmark = pytest.mark.usefixtures("worker")
FAR = timedelta(hours=1)


@pytest.fixture(scope="module")
def admin(database: str) -> dict[str, Any]:
    """An admin token (as `serveplane customers create ops --admin` issues)."""
    return create_customer("ops", admin=True)


def deploy(client: Any, customer: dict[str, Any], name: str | None = None) -> dict[str, Any]:
    body = {"name": name or unique_name(), "model_path": "/models/m", "framework": "torchserve"}
    response = client.post("/api/inference/services", json=body, headers=customer["headers"])
    assert response.status_code == 202, response.text
    return response.json()


def failed_deploy(client: Any, customer: dict[str, Any], fake_kube: Any) -> dict[str, Any]:
    """A deploy that fails on the fake cluster with an image pull error; returns its body."""
    name = unique_name("badimage")
    fake_kube.add_rule(f"{name}-v1", Behavior(mode="image_pull_backoff"))
    body = deploy(client, customer, name)
    job = wait_job(client, customer["headers"], body["job_id"])
    assert job["status"] == "failed", job
    return {**body, "name": name}


def fix_image(fake_kube: Any, customer: dict[str, Any], name: str) -> None:
    """The image becomes pullable: the deployment's pods start from now on."""
    fake_kube.clear_rules()
    namespace = f"sp-customer-{customer['customer_id']}"
    fake_kube.set_behavior(namespace, f"{name}-v1", Behavior(mode="ready"))


def queued_deploy(customer: dict[str, Any]) -> tuple[str, str]:
    """A committed deploy job the dispatcher has not sent yet: (job id, service id)."""
    name = unique_name("queued")
    with session_scope() as session:
        service = services_repo.add_service(
            session,
            uuid=f"svc-{name[-8:]}",
            customer_id=customer["customer_id"],
            name=name,
            model_path="/models/m",
            framework="torchserve",
            model_format="pytorch",
            replicas=1,
            min_replicas=1,
            max_replicas=1,
            status="pending",
        )
        version = services_repo.add_version(session, service)
        job = jobs_repo.create_job(
            session,
            kind="deploy",
            service=service,
            version_id=version.id,
            max_attempts=5,
            deadline_seconds=600,
        )
        job.next_check_at = utcnow() + FAR
        return job.uuid, service.uuid


def admin_routes() -> set[tuple[str, str]]:
    """Every (method, path) under /api/admin: the router's own and whatever the app serves."""
    from api.app import create_app

    found = {
        (method, route.path)
        for route in admin_api_router.routes
        for method in getattr(route, "methods", ())
    }
    for path, operations in create_app().openapi()["paths"].items():
        if path.startswith("/api/admin"):
            found |= {(method.upper(), path) for method in operations}
    return found


def events(client: Any, customer: dict[str, Any], service_id: str) -> list[tuple[str, str]]:
    body = client.get(
        f"/api/inference/services/{service_id}/events", headers=customer["headers"]
    ).json()
    return [(e["from_status"], e["to_status"]) for e in body if e["kind"] == "status"]


def test_every_admin_route_refuses_customers_and_anonymous(client, customer):
    routes = admin_routes()
    assert {
        ("GET", "/api/admin/jobs"),
        ("POST", "/api/admin/jobs/{job_id}/retry"),
        ("POST", "/api/admin/jobs/retry"),
        ("POST", "/api/admin/jobs/{job_id}/cancel"),
        ("GET", "/api/admin/webhook-deliveries"),
        ("POST", "/api/admin/webhook-deliveries/{delivery_id}/redeliver"),
    } <= routes
    for method, path in sorted(routes):
        url = re.sub(r"\{[^}]+\}", "x-1", path)
        as_customer = client.request(method, url, headers=customer["headers"], json={})
        assert as_customer.status_code == 403, (method, path, as_customer.text)
        assert as_customer.json()["error"]["code"] == "forbidden"
        anonymous = client.request(method, url, json={})
        assert anonymous.status_code == 401, (method, path, anonymous.text)
        assert anonymous.json()["error"]["code"] == "unauthorized"


def test_failed_job_is_listed_then_retried_to_success(client, customer, admin, fake_kube):
    failed = failed_deploy(client, customer, fake_kube)
    listing = client.get(
        "/api/admin/jobs",
        params={"status": "failed", "customer_id": customer["customer_id"]},
        headers=admin["headers"],
    )
    assert listing.status_code == 200, listing.text
    items = {j["job_id"]: j for j in listing.json()["items"]}
    job = items[failed["job_id"]]
    assert job["status"] == "failed" and job["kind"] == "deploy"
    assert job["error"]["reason"] in ("ErrImagePull", "ImagePullBackOff")
    assert job["error"]["message"]
    assert job["service_id"] == failed["service_id"]
    assert job["customer_id"] == customer["customer_id"]
    assert [(a["number"], a["status"]) for a in job["attempts"]] == [(1, "failed")]
    assert job["attempts"][0]["error"]["reason"] == job["error"]["reason"]
    assert job["attempts"][0]["started_at"] and job["attempts"][0]["finished_at"]
    first_reason = job["error"]["reason"]

    fix_image(fake_kube, customer, failed["name"])
    retried = client.post(f"/api/admin/jobs/{failed['job_id']}/retry", headers=admin["headers"])
    assert retried.status_code == 202, retried.text
    assert retried.headers["location"].endswith(f"/api/admin/jobs/{failed['job_id']}")
    view = retried.json()
    assert view["status"] == "queued" and view["error"] is None
    assert view["max_attempts"] > view["attempt_count"] == 1
    assert len(view["attempts"]) == 1  # the history is kept

    done = wait_job(client, customer["headers"], failed["job_id"])
    assert done["status"] == "succeeded", done
    assert done["attempt_count"] == 2
    attempts = [(a["number"], a["status"]) for a in done["attempts"]]
    assert attempts == [(1, "failed"), (2, "succeeded")]
    assert done["attempts"][0]["error"]["reason"] == first_reason
    assert done["attempts"][1]["error"] is None
    service = client.get(
        f"/api/inference/services/{failed['service_id']}", headers=customer["headers"]
    ).json()
    assert service["status"] == "running" and service["failure"] is None
    assert events(client, customer, failed["service_id"]) == [
        ("pending", "deploying"),
        ("deploying", "failed"),
        ("failed", "deploying"),
        ("deploying", "running"),
    ]
    # The admin view of the job tells the same story.
    admin_view = client.get(f"/api/admin/jobs/{failed['job_id']}", headers=admin["headers"]).json()
    assert admin_view["status"] == "succeeded" and len(admin_view["attempts"]) == 2


def test_retry_refuses_jobs_that_are_not_failed(client, customer, admin):
    body = deploy(client, customer)
    assert wait_job(client, customer["headers"], body["job_id"])["status"] == "succeeded"
    response = client.post(f"/api/admin/jobs/{body['job_id']}/retry", headers=admin["headers"])
    assert response.status_code == 409, response.text
    error = response.json()["error"]
    assert error["code"] == "job_not_failed" and "succeeded" in error["message"]
    assert error["details"] == {"status": "succeeded"}
    missing = client.post("/api/admin/jobs/job-doesnotexist/retry", headers=admin["headers"])
    assert missing.status_code == 404


def test_retry_refuses_a_deleted_service(client, customer, admin, fake_kube):
    failed = failed_deploy(client, customer, fake_kube)
    deleted = client.delete(
        f"/api/inference/services/{failed['service_id']}", headers=customer["headers"]
    )
    assert deleted.status_code == 202
    response = client.post(f"/api/admin/jobs/{failed['job_id']}/retry", headers=admin["headers"])
    assert response.status_code == 409
    assert response.json()["error"]["code"] == "service_deleted"


def parked_job(service_id: str, kind: str = "scale", **values: Any) -> str:
    """A job of the service that the dispatcher leaves alone (its check is far away)."""
    with session_scope() as session:
        service = services_repo.get_service(session, service_id)
        assert service is not None
        job = jobs_repo.create_job(
            session, kind=kind, service=service, max_attempts=5, deadline_seconds=600
        )
        job.next_check_at = utcnow() + FAR
        for field, value in values.items():
            setattr(job, field, value)
        return job.uuid


def test_retry_waits_for_the_services_other_jobs(client, customer, admin, fake_kube):
    failed = failed_deploy(client, customer, fake_kube)
    scale = parked_job(failed["service_id"])
    busy = client.post(f"/api/admin/jobs/{failed['job_id']}/retry", headers=admin["headers"])
    assert busy.status_code == 409
    assert busy.json()["error"]["code"] == "job_in_progress"
    assert busy.json()["error"]["details"] == {"active_job_id": scale}
    cancelled = client.post(f"/api/admin/jobs/{scale}/cancel", headers=admin["headers"])
    assert cancelled.status_code == 202 and cancelled.json()["status"] == "cancelled"
    service = client.get(
        f"/api/inference/services/{failed['service_id']}", headers=customer["headers"]
    ).json()
    assert service["status"] == "failed"  # a cancelled queued scale changes nothing
    # A job that was cancelled before it ever ran does not stand in the way of a retry.
    fix_image(fake_kube, customer, failed["name"])
    retried = client.post(f"/api/admin/jobs/{failed['job_id']}/retry", headers=admin["headers"])
    assert retried.status_code == 202, retried.text
    assert wait_job(client, customer["headers"], failed["job_id"])["status"] == "succeeded"

    other = failed_deploy(client, customer, fake_kube)
    parked_job(other["service_id"], status="succeeded", attempts=1)
    stale = client.post(f"/api/admin/jobs/{other['job_id']}/retry", headers=admin["headers"])
    assert stale.status_code == 409 and stale.json()["error"]["code"] == "superseded"


def test_list_filters_and_since_validation(client, customer, admin, fake_kube):
    failed = failed_deploy(client, customer, fake_kube)
    params = {"status": "failed", "customer_id": customer["customer_id"], "kind": "deploy"}
    listed = client.get("/api/admin/jobs", params=params, headers=admin["headers"]).json()
    assert [j["job_id"] for j in listed["items"]] == [failed["job_id"]]
    later = (datetime.now(UTC) + timedelta(minutes=5)).isoformat()
    none = client.get(
        "/api/admin/jobs", params={**params, "since": later}, headers=admin["headers"]
    ).json()
    assert none["items"] == []
    earlier = (datetime.now(UTC) - timedelta(minutes=5)).isoformat()
    some = client.get(
        "/api/admin/jobs", params={**params, "since": earlier}, headers=admin["headers"]
    ).json()
    assert [j["job_id"] for j in some["items"]] == [failed["job_id"]]
    scale = client.get(
        "/api/admin/jobs", params={**params, "kind": "scale"}, headers=admin["headers"]
    ).json()
    assert scale["items"] == []
    bad = client.get("/api/admin/jobs", params={"since": "yesterday"}, headers=admin["headers"])
    assert bad.status_code == 422
    assert bad.json()["error"]["details"][0]["field"] == "since"


def test_paging_covers_every_customer(client, admin, fake_kube):
    one, two = create_customer("one"), create_customer("two")
    ids = {failed_deploy(client, c, fake_kube)["job_id"] for c in (one, two)}
    seen: set[str] = set()
    customers: set[int] = set()
    cursor = None
    while True:
        params: dict[str, Any] = {"status": "failed", "limit": 1}
        if cursor:
            params["cursor"] = cursor
        page = client.get("/api/admin/jobs", params=params, headers=admin["headers"]).json()
        for item in page["items"]:
            seen.add(item["job_id"])
            customers.add(item["customer_id"])
        cursor = page["next_cursor"]
        if not cursor:
            break
    assert ids <= seen
    assert {one["customer_id"], two["customer_id"]} <= customers


def test_bulk_retry_by_filter(client, admin, fake_kube):
    target, other = create_customer("bulk"), create_customer("bystander")
    mine = [failed_deploy(client, target, fake_kube) for _ in range(2)]
    theirs = failed_deploy(client, other, fake_kube)
    fine = deploy(client, target)
    assert wait_job(client, target["headers"], fine["job_id"])["status"] == "succeeded"

    refused = client.post(
        "/api/admin/jobs/retry", json={"status": "succeeded"}, headers=admin["headers"]
    )
    assert refused.status_code == 422
    assert refused.json()["error"]["details"][0]["field"] == "status"
    typo = client.post("/api/admin/jobs/retry", json={"customer": 1}, headers=admin["headers"])
    assert typo.status_code == 422

    for item in mine:
        fix_image(fake_kube, target, item["name"])
    response = client.post(
        "/api/admin/jobs/retry",
        json={"status": "failed", "kind": "deploy", "customer_id": target["customer_id"]},
        headers=admin["headers"],
    )
    assert response.status_code == 202, response.text
    result = response.json()
    assert sorted(result["retried"]) == sorted(m["job_id"] for m in mine)
    assert result["skipped"] == [] and result["truncated"] is False
    for item in mine:
        job = wait_job(client, target["headers"], item["job_id"])
        assert job["status"] == "succeeded" and job["attempt_count"] == 2
    bystander = client.get(f"/api/admin/jobs/{theirs['job_id']}", headers=admin["headers"]).json()
    assert bystander["status"] == "failed" and bystander["attempt_count"] == 1

    by_ids = client.post(
        "/api/admin/jobs/retry",
        json={
            "job_ids": [theirs["job_id"], fine["job_id"], "job-nosuchjob"],
            "customer_id": other["customer_id"],
        },
        headers=admin["headers"],
    ).json()
    assert by_ids["retried"] == [theirs["job_id"]]
    skipped = {s["job_id"]: s["code"] for s in by_ids["skipped"]}
    assert skipped == {fine["job_id"]: "filtered_out", "job-nosuchjob": "not_found"}
    not_failed = client.post(
        "/api/admin/jobs/retry", json={"job_ids": [fine["job_id"]]}, headers=admin["headers"]
    ).json()
    assert not_failed["retried"] == []
    assert [(s["job_id"], s["code"]) for s in not_failed["skipped"]] == [
        (fine["job_id"], "job_not_failed")
    ]
    # Its image is still broken: the second attempt fails too, with the history kept.
    job = wait_job(client, other["headers"], theirs["job_id"])
    assert job["status"] == "failed"
    assert [a["number"] for a in job["attempts"]] == [1, 2]


def test_cancel_queued_deploy_fails_the_pending_service(client, customer, admin):
    job_id, service_id = queued_deploy(customer)
    response = client.post(f"/api/admin/jobs/{job_id}/cancel", headers=admin["headers"])
    assert response.status_code == 202, response.text
    view = response.json()
    assert view["status"] == "cancelled"
    assert view["error"]["reason"] == "Cancelled"
    assert view["error"]["message"] == "cancelled by an admin"
    service = client.get(
        f"/api/inference/services/{service_id}", headers=customer["headers"]
    ).json()
    assert service["status"] == "failed" and service["failure"]["reason"] == "Cancelled"
    assert service["active_job_id"] is None
    assert events(client, customer, service_id) == [("pending", "failed")]
    again = client.post(f"/api/admin/jobs/{job_id}/cancel", headers=admin["headers"])
    assert again.status_code == 409 and again.json()["error"]["code"] == "job_finished"


def test_cancel_queued_scale_leaves_the_service_running(client, customer, admin):
    body = deploy(client, customer)
    assert wait_job(client, customer["headers"], body["job_id"])["status"] == "succeeded"
    with session_scope() as session:
        service = services_repo.get_service(session, body["service_id"])
        assert service is not None
        job = jobs_repo.create_job(
            session, kind="scale", service=service, max_attempts=5, deadline_seconds=600
        )
        job.next_check_at = utcnow() + FAR
        job_id = job.uuid
    before = events(client, customer, body["service_id"])
    response = client.post(f"/api/admin/jobs/{job_id}/cancel", headers=admin["headers"])
    assert response.status_code == 202 and response.json()["status"] == "cancelled"
    service_view = client.get(
        f"/api/inference/services/{body['service_id']}", headers=customer["headers"]
    ).json()
    assert service_view["status"] == "running"
    assert events(client, customer, body["service_id"]) == before


def test_cancel_running_job_stops_it(client, customer, admin, fake_kube):
    name = unique_name("slow")
    fake_kube.add_rule(f"{name}-v1", Behavior(mode="ready", delay=5))
    body = deploy(client, customer, name)
    wait_for(
        lambda: (
            client.get(f"/api/jobs/{body['job_id']}", headers=customer["headers"]).json()["status"]
            == "running"
        ),
        what="the slow deploy to start",
    )
    response = client.post(f"/api/admin/jobs/{body['job_id']}/cancel", headers=admin["headers"])
    assert response.status_code == 202, response.text
    job = wait_job(client, customer["headers"], body["job_id"], timeout=4)
    assert job["status"] == "cancelled"
    assert job["attempts"][-1]["status"] == "cancelled"
    service = client.get(
        f"/api/inference/services/{body['service_id']}", headers=customer["headers"]
    ).json()
    assert service["status"] == "failed" and service["failure"]["reason"] == "Cancelled"
    assert events(client, customer, body["service_id"]) == [
        ("pending", "deploying"),
        ("deploying", "failed"),
    ]


def make_delivery(customer: dict[str, Any], *, failed: bool) -> str:
    """A callback delivery of the customer, failed after two attempts or still pending."""
    with session_scope() as session:
        delivery = webhooks_repo.add_delivery(
            session,
            customer_id=customer["customer_id"],
            endpoint_id=None,
            url="http://127.0.0.1:9/hook",
            event_type="job.failed",
            payload={"x": 1},
            job_id=None,
            next_attempt_at=utcnow() + FAR,
        )
        if failed:
            for number in (1, 2):
                webhooks_repo.record_attempt(
                    session,
                    delivery,
                    at=utcnow(),
                    status_code=500,
                    latency_ms=3.0,
                    error=f"HTTP 500 (attempt {number})",
                    outcome="pending" if number == 1 else "failed",
                    next_attempt_at=utcnow() + FAR,
                )
        return delivery.uuid


def test_admin_lists_every_customers_deliveries(client, admin):
    one, two = create_customer("hooks-one"), create_customer("hooks-two")
    failed_one, failed_two = make_delivery(one, failed=True), make_delivery(two, failed=True)
    pending_one = make_delivery(one, failed=False)

    def ids(**params: Any) -> list[str]:
        response = client.get(
            "/api/admin/webhook-deliveries", params=params, headers=admin["headers"]
        )
        assert response.status_code == 200, response.text
        return [d["delivery_id"] for d in response.json()["items"]]

    assert ids(customer_id=one["customer_id"]) == [pending_one, failed_one]  # newest first
    assert ids(customer_id=two["customer_id"]) == [failed_two]
    assert ids(customer_id=one["customer_id"], status="failed") == [failed_one]
    everyone = ids(status="failed", limit=500)
    assert {failed_one, failed_two} <= set(everyone)
    page = client.get(
        "/api/admin/webhook-deliveries",
        params={"customer_id": one["customer_id"], "limit": 1},
        headers=admin["headers"],
    ).json()
    assert [d["delivery_id"] for d in page["items"]] == [pending_one]
    rest = client.get(
        "/api/admin/webhook-deliveries",
        params={"customer_id": one["customer_id"], "cursor": page["next_cursor"]},
        headers=admin["headers"],
    ).json()
    assert [d["delivery_id"] for d in rest["items"]] == [failed_one]
    detail = rest["items"][0]
    assert detail["customer_id"] == one["customer_id"] and detail["status"] == "failed"
    assert detail["attempt_count"] == 2 and detail["last_status_code"] == 500
    assert [(a["number"], a["status_code"]) for a in detail["attempts"]] == [(1, 500), (2, 500)]
    forbidden = client.get("/api/admin/webhook-deliveries", headers=one["headers"])
    assert forbidden.status_code == 403


def test_redeliver_queues_the_same_message_again(client, admin):
    owner = create_customer("redeliver")
    delivery_id = make_delivery(owner, failed=True)
    response = client.post(
        f"/api/admin/webhook-deliveries/{delivery_id}/redeliver", headers=admin["headers"]
    )
    assert response.status_code == 202, response.text
    view = response.json()
    assert view["delivery_id"] == delivery_id  # the same webhook-id
    assert view["status"] == "pending"
    assert view["next_attempt_at"] is not None
    assert view["attempt_count"] == 2 and len(view["attempts"]) == 2  # history kept
    pending = make_delivery(owner, failed=False)
    again = client.post(
        f"/api/admin/webhook-deliveries/{pending}/redeliver", headers=admin["headers"]
    )
    assert again.status_code == 409 and again.json()["error"]["code"] == "delivery_pending"
    missing = client.post(
        "/api/admin/webhook-deliveries/msg_nope/redeliver", headers=admin["headers"]
    )
    assert missing.status_code == 404
