"""Tenant isolation over EVERY operation of the app, enumerated from its own OpenAPI schema.

Each operation must fall in one class of the tables below, or the classification test fails
naming it, so a new route cannot escape these checks:

- PUBLIC: health, no token.
- /api/admin/...: 403 for any customer token, 401 without one.
- operations with path parameters: every parameter name maps to a factory of customer A's
  resource (PATH_PARAMS). Customer B using A's ids gets 404 (never 403 or 2xx) and nothing of
  A's changes, row for row; A itself is not answered 404 on the same request.
- operations without path parameters: NO_PARAM_OPERATIONS says which of A's ids A's own answer
  must show; B's answer never shows any of A's ids or secrets, and A's rows never change.

A's world (services, versions, jobs, webhook endpoint, delivery, workspace) is built directly
in PostgreSQL with its one active job parked an hour ahead, so a session worker, the dispatcher
or the reconciler never touch it while these tests compare it row for row.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import pytest
from fastapi.routing import APIRoute
from sqlalchemy import select

from db.domain import hash_secret, new_secret, new_service_uuid
from db.engine import session_scope
from db.models import (
    ApiToken,
    Base,
    Customer,
    IdempotencyKey,
    InferenceService,
    Job,
    JobAttempt,
    ServiceEvent,
    ServiceVersion,
    WebhookAttempt,
    WebhookDelivery,
    WebhookEndpoint,
    Workspace,
)
from db.repositories import customers as customers_repo
from db.repositories import jobs as jobs_repo
from db.repositories import services as services_repo
from db.repositories import webhooks as webhooks_repo
from db.states import transition_job, transition_service, utcnow
from tests.conftest import create_customer, unique_name

HOOK_URL = "http://127.0.0.1:9/hook"
PUBLIC = {("GET", "/healthz"), ("GET", "/readyz")}
ADMIN_PREFIX = "/api/admin/"
METHODS = ("get", "put", "post", "patch", "delete")


@dataclass
class World:
    """One customer's resources, ids and secrets."""

    customer: dict[str, Any]
    service_id: str
    service_name: str
    workspace_id: int
    api_key: str
    job_id: str
    parked_job_id: str
    webhook_id: str
    webhook_secret: str
    delivery_id: str

    @property
    def headers(self) -> dict[str, str]:
        return self.customer["headers"]

    @property
    def customer_id(self) -> int:
        return int(self.customer["customer_id"])

    def public_ids(self) -> dict[str, str]:
        """Everything of this customer another customer must never see."""
        with session_scope() as session:
            callback_secret = session.get(Customer, self.customer_id).webhook_secret
        return {
            "service_id": self.service_id,
            "job_id": self.job_id,
            "parked_job_id": self.parked_job_id,
            "webhook_id": self.webhook_id,
            "delivery_id": self.delivery_id,
            "api_key": self.api_key,
            "token": self.customer["token"],
            "webhook_secret": self.webhook_secret,
            "callback_secret": callback_secret,
        }


def make_world(label: str) -> World:
    """A customer with a running two-version service, jobs, a webhook endpoint and a delivery."""
    owner = create_customer(f"{label}-{unique_name()}")
    cid = owner["customer_id"]
    api_key = new_secret("spk_")
    now = utcnow()
    later = now + timedelta(hours=1)
    with session_scope() as session:
        workspace = customers_repo.create_workspace(session, cid, "team")
        uuid = new_service_uuid()
        service = services_repo.add_service(
            session,
            uuid=uuid,
            customer_id=cid,
            workspace_id=workspace.id,
            name=unique_name("iso"),
            description=f"{label}'s model",
            model_path="/models/m",
            framework="onnxruntime",
            model_format="onnx",
            replicas=1,
            min_replicas=1,
            max_replicas=1,
            status="pending",
            endpoint_url=f"http://testserver/inference/{uuid}",
            api_key=hash_secret(api_key),
            api_key_prefix=api_key[:10],
        )
        v1 = services_repo.add_version(session, service)
        v2 = services_repo.add_version(session, service, model_path="/models/m2")
        for version, percent in ((v1, 90), (v2, 10)):
            version.status, version.traffic_percent, version.ready_at = "ready", percent, now
        v1.full_traffic_at = now - timedelta(hours=1)
        deploy = jobs_repo.create_job(
            session,
            kind="deploy",
            service=service,
            version_id=v1.id,
            max_attempts=5,
            deadline_seconds=600,
        )
        transition_job(deploy, "running")
        deploy.attempts = 1
        transition_job(deploy, "succeeded")
        deploy.next_check_at = None
        transition_service(session, service, "deploying", "isolation world", job_id=deploy.id)
        transition_service(session, service, "running", "isolation world", job_id=deploy.id)
        # The one active job, parked: no dispatcher sends it, and the reconciler skips a busy
        # service, so nothing but the requests under test could change this world.
        parked = jobs_repo.create_job(
            session,
            kind="scale",
            service=service,
            max_attempts=5,
            deadline_seconds=7200,
            payload={"replicas": 1},
        )
        parked.next_check_at = later
        endpoint = webhooks_repo.create_endpoint(session, cid, HOOK_URL, ["job.failed"])
        delivery = webhooks_repo.add_delivery(
            session,
            customer_id=cid,
            endpoint_id=endpoint.id,
            url=HOOK_URL,
            event_type="job.failed",
            payload={"job_id": deploy.uuid},
            job_id=deploy.id,
            next_attempt_at=later,
        )
        webhooks_repo.record_attempt(
            session,
            delivery,
            at=now,
            status_code=500,
            latency_ms=2.0,
            error="HTTP 500",
            outcome="failed",
            next_attempt_at=None,
        )
        return World(
            customer=owner,
            service_id=uuid,
            service_name=service.name,
            workspace_id=workspace.id,
            api_key=api_key,
            job_id=deploy.uuid,
            parked_job_id=parked.uuid,
            webhook_id=endpoint.uuid,
            webhook_secret=endpoint.secret,
            delivery_id=delivery.uuid,
        )


# --- the classification tables ------------------------------------------------------------

# Path parameter -> the value naming customer A's resource. Unknown names fail the test.
PATH_PARAMS: dict[str, Callable[[World], Any]] = {
    "service_id": lambda w: w.service_id,
    "job_id": lambda w: w.job_id,
    "webhook_id": lambda w: w.webhook_id,
    "delivery_id": lambda w: w.delivery_id,
    "number": lambda w: 2,  # A's canary version: promotable by A
}

# (METHOD, path) -> a valid body (validation must not answer before the ownership check).
# `owner` is A (whose ids the body may name), `caller` the customer sending it.
BODIES: dict[tuple[str, str], Callable[[World, World], Any]] = {
    ("POST", "/api/inference/services"): lambda owner, caller: {
        "name": unique_name("iso"),
        "model_path": "/models/m",
        "framework": "onnx",
    },
    ("PATCH", "/api/inference/services/{service_id}"): lambda owner, caller: {
        "description": "changed by someone",
        "cpu_cores": 3,
    },
    ("POST", "/api/inference/services/{service_id}/versions"): lambda owner, caller: {
        "model_path": "/models/hijacked",
        "canary_percent": 50,
    },
    ("POST", "/api/inference/services/{service_id}/versions/{number}/promote"): (
        lambda owner, caller: {}
    ),
    ("POST", "/api/inference/services/{service_id}/rollback"): lambda owner, caller: {},
    ("POST", "/api/webhooks"): lambda owner, caller: {"url": HOOK_URL, "events": ["job.failed"]},
    ("POST", "/api/admin/jobs/retry"): lambda owner, caller: {"job_ids": [owner.job_id]},
}

# Customer operations without path parameters -> keys of A's ids that A's own answer shows.
NO_PARAM_OPERATIONS: dict[tuple[str, str], set[str]] = {
    ("GET", "/api/inference/services"): {"service_id"},
    ("POST", "/api/inference/services"): set(),
    ("GET", "/api/jobs"): {"job_id", "parked_job_id"},
    ("GET", "/api/webhooks"): {"webhook_id"},
    ("POST", "/api/webhooks"): set(),
    ("GET", "/api/webhooks/deliveries"): {"delivery_id"},
    ("GET", "/api/webhooks/signing-secret"): {"callback_secret"},
    ("POST", "/api/webhooks/signing-secret/rotate"): set(),
}

# Query parameters of list operations that name a resource: B filtering by A's id sees nothing.
LIST_FILTERS: dict[tuple[str, str], dict[str, Callable[[World], Any]]] = {
    ("GET", "/api/inference/services"): {"workspace_id": lambda w: w.workspace_id},
    ("GET", "/api/jobs"): {"service_id": lambda w: w.service_id},
    ("GET", "/api/webhooks/deliveries"): {"job_id": lambda w: w.job_id},
}


# --- helpers ------------------------------------------------------------------------------


def operations(client: Any) -> list[tuple[str, str, dict[str, Any]]]:
    """(METHOD, path, operation) for every operation the served schema documents."""
    response = client.get("/openapi.json")
    assert response.status_code == 200
    found = [
        (method.upper(), path, op)
        for path, item in response.json()["paths"].items()
        for method, op in item.items()
        if method in METHODS
    ]
    assert len(found) >= 30, found
    return found


def path_params(path: str) -> list[str]:
    return re.findall(r"\{([^}]+)\}", path)


def url_for(path: str, world: World) -> str:
    """The path with every parameter naming `world`'s resource."""
    return re.sub(r"\{([^}]+)\}", lambda m: str(PATH_PARAMS[m.group(1)](world)), path)


def send(
    client: Any,
    method: str,
    path: str,
    owner: World,
    caller: World | None,
    headers: dict[str, str] | None = None,
    params: dict[str, Any] | None = None,
) -> Any:
    """Call an operation on `owner`'s resources as `caller` (or with `headers`)."""
    body = BODIES.get((method, path))
    kwargs: dict[str, Any] = {"params": params or {}}
    if body is not None:
        kwargs["json"] = body(owner, caller or owner)
    if headers is None:
        headers = caller.headers if caller else {}
    return client.request(method, url_for(path, owner), headers=headers, **kwargs)


# Rows of a customer, per table: a table missing here fails `snapshot` (new tables are noticed).
def _rows(session: Any, world: World) -> dict[str, list[dict[str, Any]]]:
    cid = world.customer_id
    services = select(InferenceService.id).where(InferenceService.customer_id == cid)
    jobs = select(Job.id).where(Job.customer_id == cid)
    deliveries = select(WebhookDelivery.id).where(WebhookDelivery.customer_id == cid)
    queries = {
        Customer: select(Customer).where(Customer.id == cid),
        ApiToken: select(ApiToken).where(ApiToken.customer_id == cid),
        Workspace: select(Workspace).where(Workspace.customer_id == cid),
        InferenceService: select(InferenceService).where(InferenceService.customer_id == cid),
        ServiceVersion: select(ServiceVersion).where(ServiceVersion.service_id.in_(services)),
        ServiceEvent: select(ServiceEvent).where(ServiceEvent.service_id.in_(services)),
        Job: select(Job).where(Job.customer_id == cid),
        JobAttempt: select(JobAttempt).where(JobAttempt.job_id.in_(jobs)),
        WebhookEndpoint: select(WebhookEndpoint).where(WebhookEndpoint.customer_id == cid),
        WebhookDelivery: select(WebhookDelivery).where(WebhookDelivery.customer_id == cid),
        WebhookAttempt: select(WebhookAttempt).where(WebhookAttempt.delivery_id.in_(deliveries)),
        IdempotencyKey: select(IdempotencyKey).where(IdempotencyKey.customer_id == cid),
    }
    tables = {model.__table__.name for model in queries}
    missing = {t.name for t in Base.metadata.sorted_tables} - tables
    assert not missing, f"snapshot() does not cover the tables {sorted(missing)}: add them"
    return {
        model.__table__.name: sorted(
            (
                {c.name: getattr(row, c.key) for c in model.__mapper__.columns}
                for row in session.scalars(query.order_by(model.id))
            ),
            key=lambda r: r["id"],
        )
        for model, query in queries.items()
    }


def snapshot(world: World) -> dict[str, list[dict[str, Any]]]:
    """Every row of every table that belongs to the world's customer."""
    with session_scope() as session:
        return _rows(session, world)


def changed_tables(before: dict[str, Any], after: dict[str, Any]) -> list[str]:
    return sorted(t for t in before if before[t] != after[t])


def strings_in(value: Any) -> set[str]:
    """Every string anywhere in a JSON value (keys included)."""
    if isinstance(value, str):
        return {value}
    if isinstance(value, dict):
        return set(value) | {s for v in value.values() for s in strings_in(v)}
    if isinstance(value, list):
        return {s for v in value for s in strings_in(v)}
    return set()


def leaked(response: Any, world: World) -> set[str]:
    """Which of the world's ids and secrets a response shows that its request did not send."""
    request = response.request
    sent = str(request.url) + request.content.decode(errors="replace")
    text = response.text + " ".join(f"{k}: {v}" for k, v in response.headers.items())
    return {
        name for name, value in world.public_ids().items() if value in text and value not in sent
    }


@pytest.fixture
def b_world(database: str) -> World:
    """Customer B (the intruder) with a world of its own."""
    return make_world("bee")


# --- the tests ----------------------------------------------------------------------------


def test_every_operation_is_classified(client, app):
    """A new route fails here, naming itself, until the tables above say how it is isolated."""
    problems = []
    for method, path, op in operations(client):
        label = f"{method} {path}"
        if (method, path) in PUBLIC:
            continue
        if not path.startswith("/api/"):
            problems.append(f"{label}: outside /api and not PUBLIC")
            continue
        unknown = [p for p in path_params(path) if p not in PATH_PARAMS]
        if unknown:
            problems.append(f"{label}: unknown path parameters {unknown}; add them to PATH_PARAMS")
        if "requestBody" in op and (method, path) not in BODIES:
            problems.append(f"{label}: takes a body; add a valid one to BODIES")
        if (
            not path.startswith(ADMIN_PREFIX)
            and not path_params(path)
            and (method, path) not in NO_PARAM_OPERATIONS
        ):
            problems.append(f"{label}: no path parameter; classify it in NO_PARAM_OPERATIONS")
    # A route hidden from the schema would escape the enumeration: /api has none.
    documented = {(m, p) for m, p, _ in operations(client)}
    for route in app.routes:
        if isinstance(route, APIRoute) and route.path.startswith("/api"):
            for method in route.methods:
                if (method, route.path) not in documented:
                    problems.append(f"{method} {route.path}: served but not in the schema")
    assert not problems, "\n".join(problems)


def test_another_customers_ids_are_not_found_and_change_nothing(client, b_world):
    failures = []
    ops = [
        (m, p)
        for m, p, _ in operations(client)
        if path_params(p) and not p.startswith(ADMIN_PREFIX)
    ]
    assert len(ops) >= 14, ops
    for method, path in ops:
        a_world = make_world("ay")  # fresh per operation: A's control call may change it
        before = snapshot(a_world)
        response = send(client, method, path, a_world, b_world)
        label = f"{method} {path}"
        if response.status_code != 404:
            failures.append(f"{label}: B got {response.status_code}, not 404: {response.text}")
        elif response.json()["error"]["code"] != "not_found":
            failures.append(f"{label}: 404 without the not_found code: {response.text}")
        if leaked(response, a_world):
            failures.append(f"{label}: B's answer shows A's {sorted(leaked(response, a_world))}")
        changed = changed_tables(before, snapshot(a_world))
        if changed:
            failures.append(f"{label}: B's request changed A's rows in {changed}")
        # Control: the same request by A reaches A's resource.
        own = send(client, method, path, a_world, a_world)
        if own.status_code in (401, 403, 404) or own.status_code >= 500:
            failures.append(f"{label}: A's own request got {own.status_code}: {own.text}")
    assert not failures, "\n".join(failures)


def test_admin_operations_refuse_customer_tokens_and_anonymous(client, b_world):
    a_world = make_world("ay")
    ops = [(m, p) for m, p, _ in operations(client) if p.startswith(ADMIN_PREFIX)]
    assert len(ops) >= 7, ops
    failures = []
    before = snapshot(a_world)
    for method, path in ops:
        label = f"{method} {path}"
        for who, headers, status, code in (
            ("customer B", b_world.headers, 403, "forbidden"),
            ("customer A", a_world.headers, 403, "forbidden"),
            ("no token", {}, 401, "unauthorized"),
            ("a bogus token", {"Authorization": "Bearer spt_bogus"}, 401, "unauthorized"),
        ):
            response = send(client, method, path, a_world, None, headers=headers)
            if response.status_code != status or response.json()["error"]["code"] != code:
                failures.append(f"{label} with {who}: {response.status_code} {response.text}")
            elif leaked(response, a_world):
                failures.append(f"{label} with {who}: shows {sorted(leaked(response, a_world))}")
    changed = changed_tables(before, snapshot(a_world))
    assert not failures, "\n".join(failures)
    assert not changed, f"refused admin requests changed A's rows in {changed}"


def test_every_api_operation_needs_a_token(client):
    a_world = make_world("ay")
    before = snapshot(a_world)
    failures = []
    for method, path, _ in operations(client):
        if (method, path) in PUBLIC:
            response = client.request(method, path)
            if response.status_code != 200:
                failures.append(f"{method} {path}: public but answered {response.status_code}")
            continue
        for headers in (
            {},
            {"Authorization": "Bearer spt_bogus"},
            {"Authorization": "Basic x"},
            {"Authorization": f"Bearer {a_world.api_key}"},
        ):  # a key is no token
            response = send(client, method, path, a_world, None, headers=headers)
            if response.status_code != 401 or response.json()["error"]["code"] != "unauthorized":
                failures.append(f"{method} {path} {headers}: {response.status_code}")
            elif response.headers.get("www-authenticate") != "Bearer":
                failures.append(f"{method} {path}: 401 without WWW-Authenticate: Bearer")
    assert not failures, "\n".join(failures)
    assert not changed_tables(before, snapshot(a_world))


def test_no_param_operations_stay_in_the_callers_tenant(client, b_world):
    a_world = make_world("ay")
    failures = []
    for method, path, _ in operations(client):
        if path_params(path) or path.startswith(ADMIN_PREFIX) or (method, path) in PUBLIC:
            continue
        label = f"{method} {path}"
        before = snapshot(a_world)
        response = send(client, method, path, a_world, b_world)
        if response.status_code >= 300:
            failures.append(f"{label}: B got {response.status_code}: {response.text}")
        if leaked(response, a_world):
            failures.append(f"{label}: B's answer shows A's {sorted(leaked(response, a_world))}")
        for name, value in LIST_FILTERS.get((method, path), {}).items():
            filtered = send(client, method, path, a_world, b_world, params={name: value(a_world)})
            if filtered.status_code != 200 or filtered.json()["items"]:
                failures.append(f"{label}?{name}=<A's>: B got {filtered.text}")
            mine = send(client, method, path, a_world, a_world, params={name: value(a_world)})
            if not mine.json()["items"]:
                failures.append(f"{label}?{name}=<A's>: A's own filter found nothing")
        changed = changed_tables(before, snapshot(a_world))
        if changed:
            failures.append(f"{label}: B's request changed A's rows in {changed}")
        # Control: A's own answer shows A's objects (so B's empty answer means something).
        if method == "GET":
            ids = a_world.public_ids()
            own = send(client, method, path, a_world, a_world)
            missing = {k for k in NO_PARAM_OPERATIONS[(method, path)] if ids[k] not in own.text}
            if own.status_code != 200 or missing:
                failures.append(f"{label}: A's own answer lacks {sorted(missing)}: {own.text}")
    assert not failures, "\n".join(failures)


def test_service_names_and_workspaces_are_per_customer(client, b_world):
    a_world = make_world("ay")
    before = snapshot(a_world)
    same_name = {"name": a_world.service_name, "model_path": "/models/m", "framework": "onnx"}
    # A's name is free for B (names are unique per customer, and B learns nothing from a 409).
    response = client.post("/api/inference/services", json=same_name, headers=b_world.headers)
    assert response.status_code == 202, response.text
    # A's workspace does not exist for B.
    response = client.post(
        "/api/inference/services",
        json={**same_name, "name": unique_name("iso"), "workspace_id": a_world.workspace_id},
        headers=b_world.headers,
    )
    assert response.status_code == 422, response.text
    assert response.json()["error"]["details"][0]["field"] == "workspace_id"
    assert changed_tables(before, snapshot(a_world)) == []
    # B's callback secret is B's own.
    theirs = client.get("/api/webhooks/signing-secret", headers=b_world.headers).json()["secret"]
    assert theirs != a_world.public_ids()["callback_secret"]


def test_gateway_refuses_another_services_key(client, b_world):
    a_world = make_world("ay")
    url = f"/inference/{a_world.service_id}/v2/models/m/infer"
    refused = {
        "B's service key": {"Authorization": f"Bearer {b_world.api_key}"},
        "B's service key as X-API-Key": {"X-API-Key": b_world.api_key},
        "B's customer token": b_world.headers,
        "A's customer token": a_world.headers,
        "no key": {},
        "A's key with a typo": {"X-API-Key": a_world.api_key[:-1]},
    }
    for what, headers in refused.items():
        response = client.post(url, json={"inputs": []}, headers=headers)
        assert response.status_code == 401, (what, response.status_code, response.text)
        assert response.json()["error"]["code"] == "unauthorized", what
        assert not leaked(response, a_world), what
    # Control: each key passes its own service's check (no upstream runs, so not 401 but 5xx).
    for world in (a_world, b_world):
        response = client.post(
            f"/inference/{world.service_id}/v2/models/m/infer",
            json={"inputs": []},
            headers={"X-API-Key": world.api_key},
        )
        assert response.status_code not in (401, 403, 404), response.text
