"""Webhook delivery: real HTTP receivers on 127.0.0.1, the real worker on Redis, signatures
checked with the `standardwebhooks` receiver library."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import orjson
import pytest
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from tests.conftest import create_customer, unique_name, wait_for, wait_job
from tests.fake_kube import Behavior

# A response: status code, extra headers, seconds to wait before answering.
Reply = tuple[int, dict[str, str], float]


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: bytes
    at: float

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class Receiver:
    """An HTTP server in a thread that answers POSTs from a script and records them."""

    script: list[Reply] = field(default_factory=list)
    default: Reply = (200, {}, 0.0)
    requests: list[Received] = field(default_factory=list)

    def __post_init__(self) -> None:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length", "0")))
                with receiver.lock:
                    index = len(receiver.requests)
                    receiver.requests.append(
                        Received(
                            self.path,
                            {k.lower(): v for k, v in self.headers.items()},
                            body,
                            time.monotonic(),
                        )
                    )
                code, headers, pause = (
                    receiver.script[index] if index < len(receiver.script) else receiver.default
                )
                if pause:
                    time.sleep(pause)
                try:
                    self.send_response(code)
                    for name, value in headers.items():
                        self.send_header(name, value)
                    self.send_header("content-length", "2")
                    self.end_headers()
                    self.wfile.write(b"ok")
                except OSError:
                    pass  # the client gave up (timeout test)

            def log_message(self, *args: Any) -> None:
                pass

        self.lock = threading.Lock()
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/hook"

    def count(self) -> int:
        with self.lock:
            return len(self.requests)

    def events(self) -> list[str]:
        with self.lock:
            return [r.json()["type"] for r in self.requests]

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receivers() -> Iterator[Callable[..., Receiver]]:
    """Make receivers; all stopped at the end of the test."""
    made: list[Receiver] = []

    def make(*script: Reply, default: Reply = (200, {}, 0.0)) -> Receiver:
        receiver = Receiver(list(script), default)
        made.append(receiver)
        return receiver

    yield make
    for receiver in made:
        receiver.stop()


def verify(secret: str, request: Received) -> Any:
    """What a receiver does: check the Standard Webhooks signature, return the payload."""
    return Webhook(secret).verify(request.body, request.headers)


def register(client: Any, headers: dict[str, str], url: str, events: list[str]) -> dict[str, Any]:
    response = client.post("/api/webhooks", json={"url": url, "events": events}, headers=headers)
    assert response.status_code == 201, response.text
    return response.json()


def deliveries(client: Any, headers: dict[str, str], webhook_id: str) -> list[dict[str, Any]]:
    response = client.get(f"/api/webhooks/{webhook_id}/deliveries", headers=headers)
    assert response.status_code == 200, response.text
    return response.json()["items"]


OK: Reply = (200, {}, 0.0)
FAIL: Reply = (500, {}, 0.0)


# Through the real worker and Redis


@pytest.mark.usefixtures("worker")
def test_retries_keep_one_message_id_and_stop_after_success(client, customer, receivers):
    receiver = receivers(FAIL, FAIL, OK)
    hook = register(client, customer["headers"], receiver.url, ["job.succeeded"])
    response = client.post(f"/api/webhooks/{hook['id']}/test", headers=customer["headers"])
    assert response.status_code == 202, response.text
    queued = response.json()
    assert queued["delivery_id"].startswith("msg_") and queued["event_type"] == "webhook.test"

    wait_for(lambda: receiver.count() >= 3, timeout=20, what="three requests")
    # Schedule 0.2, 0.4, 0.8 s (+ dispatch): a fourth request would have come by now.
    time.sleep(3.0)
    assert receiver.count() == 3

    ids = {r.headers["webhook-id"] for r in receiver.requests}
    assert ids == {queued["delivery_id"]}
    for request in receiver.requests:
        payload = verify(hook["secret"], request)
        assert payload["type"] == "webhook.test"
        assert payload["data"]["webhook_id"] == hook["id"]
        assert request.headers["content-type"] == "application/json"
    stamps = [int(r.headers["webhook-timestamp"]) for r in receiver.requests]
    assert abs(stamps[0] - time.time()) < 60
    assert receiver.requests[0].body == receiver.requests[2].body  # same bytes every time
    gaps = [b.at - a.at for a, b in zip(receiver.requests, receiver.requests[1:], strict=False)]
    assert gaps[0] >= 0.18 and gaps[1] >= 0.36, gaps  # schedule minus 10 % jitter

    [delivery] = deliveries(client, customer["headers"], hook["id"])
    assert delivery["id"] == queued["delivery_id"]
    assert delivery["status"] == "succeeded" and delivery["attempt_count"] == 3
    assert [a["status_code"] for a in delivery["attempts"]] == [500, 500, 200]
    assert [a["number"] for a in delivery["attempts"]] == [1, 2, 3]
    assert delivery["attempts"][0]["error"].startswith("HTTP 500")
    assert delivery["attempts"][0]["next_attempt_at"] is not None
    assert delivery["attempts"][2]["error"] is None
    assert delivery["attempts"][2]["next_attempt_at"] is None
    assert all(a["latency_ms"] is not None for a in delivery["attempts"])
    assert delivery["next_attempt_at"] is None and delivery["last_status_code"] == 200


@pytest.mark.usefixtures("worker")
def test_schedule_exhausted_marks_the_delivery_failed(client, customer, receivers):
    receiver = receivers(default=(503, {}, 0.0))
    hook = register(client, customer["headers"], receiver.url, ["job.failed"])
    client.post(f"/api/webhooks/{hook['id']}/test", headers=customer["headers"])

    def failed() -> dict[str, Any] | None:
        items = deliveries(client, customer["headers"], hook["id"])
        return items[0] if items and items[0]["status"] == "failed" else None

    delivery = wait_for(failed, timeout=20, what="the delivery to fail")
    # The first attempt plus one per schedule step (0.2, 0.4, 0.8).
    assert delivery["attempt_count"] == 4 and receiver.count() == 4
    assert delivery["attempts"][-1]["next_attempt_at"] is None
    time.sleep(1.5)
    assert receiver.count() == 4
    # The endpoint stays enabled: only 410 disables it.
    assert client.get(f"/api/webhooks/{hook['id']}", headers=customer["headers"]).json()["enabled"]


@pytest.mark.usefixtures("worker")
def test_gone_disables_the_endpoint(client, customer, receivers, fake_kube):
    receiver = receivers(default=(410, {}, 0.0))
    events = ["job.succeeded", "service.running"]
    hook = register(client, customer["headers"], receiver.url, events)
    client.post(f"/api/webhooks/{hook['id']}/test", headers=customer["headers"])

    def disabled() -> dict[str, Any] | None:
        body = client.get(f"/api/webhooks/{hook['id']}", headers=customer["headers"]).json()
        return body if not body["enabled"] else None

    body = wait_for(disabled, timeout=20, what="the endpoint to be disabled")
    assert "410" in body["disabled_reason"]
    [delivery] = deliveries(client, customer["headers"], hook["id"])
    assert delivery["status"] == "failed" and delivery["attempt_count"] == 1

    # No more deliveries go to it: neither tests nor events of a finished job.
    again = client.post(f"/api/webhooks/{hook['id']}/test", headers=customer["headers"])
    assert again.status_code == 409 and again.json()["error"]["code"] == "webhook_disabled"
    job_id = deploy(client, customer)["job_id"]
    assert wait_job(client, customer["headers"], job_id)["status"] == "succeeded"
    time.sleep(1.0)
    assert len(deliveries(client, customer["headers"], hook["id"])) == 1
    assert receiver.count() == 1


def deploy(client: Any, customer: dict[str, Any], **overrides: Any) -> dict[str, Any]:
    body = {"name": unique_name("hooked"), "model_path": "/models/m", "framework": "onnx"}
    body.update(overrides)
    response = client.post("/api/inference/services", json=body, headers=customer["headers"])
    assert response.status_code == 202, response.text
    return response.json()


@pytest.mark.usefixtures("worker")
def test_deploy_emits_signed_job_and_service_events(client, customer, receivers, fake_kube):
    headers = customer["headers"]
    endpoint = receivers()
    callback = receivers()
    unsubscribed = receivers()
    hook = register(client, headers, endpoint.url, ["job.succeeded", "service.running"])
    register(client, headers, unsubscribed.url, ["job.failed", "service.deleted"])
    secret = client.get("/api/webhooks/signing-secret", headers=headers).json()["secret"]
    accepted = deploy(client, customer, callback_url=callback.url)
    job = wait_job(client, headers, accepted["job_id"])
    assert job["status"] == "succeeded"

    wait_for(lambda: endpoint.count() >= 2 and callback.count() >= 2, what="both events")
    time.sleep(0.5)
    assert sorted(endpoint.events()) == ["job.succeeded", "service.running"]
    assert sorted(callback.events()) == ["job.succeeded", "service.running"]
    assert unsubscribed.count() == 0

    by_type = {
        verify(hook["secret"], r)["type"]: verify(hook["secret"], r) for r in endpoint.requests
    }
    job_event = by_type["job.succeeded"]
    assert set(job_event) == {"type", "timestamp", "data"}
    data_job = job_event["data"]["job"]
    assert data_job["job_id"] == accepted["job_id"]
    assert data_job["kind"] == "deploy" and data_job["status"] == "succeeded"
    assert data_job["service_id"] == accepted["service_id"]
    assert data_job["attempts"] == job["attempt_count"] and data_job["error"] is None, job
    assert data_job["created_at"] and data_job["finished_at"]
    service = by_type["service.running"]["data"]["service"]
    assert service == {
        "service_id": accepted["service_id"],
        "name": accepted["service"]["name"],
        "status": "running",
        "endpoint_url": accepted["endpoint_url"],
        "failure": None,
        "traffic": [{"version": 1, "percent": 100}],
    }
    assert job_event["data"]["service"] == service

    # The per-request callback is signed with the customer's secret, not the endpoint's.
    for request in callback.requests:
        assert verify(secret, request)["data"]["job"]["job_id"] == accepted["job_id"]
        with pytest.raises(WebhookVerificationError):
            verify(hook["secret"], request)

    def settled() -> list[dict[str, Any]] | None:
        items = client.get(
            "/api/webhooks/deliveries", params={"job_id": accepted["job_id"]}, headers=headers
        ).json()["items"]
        return items if {d["status"] for d in items} == {"succeeded"} else None

    all_for_job = wait_for(settled, what="every delivery of the job to succeed")
    assert len(all_for_job) == 4
    assert sorted(d["webhook_id"] is None for d in all_for_job) == [False, False, True, True]


@pytest.mark.usefixtures("worker")
def test_failed_deploy_emits_job_failed_and_service_failed(client, customer, receivers, fake_kube):
    headers = customer["headers"]
    endpoint = receivers()
    callback = receivers()
    hook = register(client, headers, endpoint.url, ["job.failed", "service.failed"])
    name = unique_name("badimage")
    fake_kube.add_rule(f"{name}-v1", Behavior(mode="image_pull_backoff"))
    accepted = deploy(client, customer, name=name, callback_url=callback.url)
    assert wait_job(client, headers, accepted["job_id"])["status"] == "failed"

    wait_for(lambda: endpoint.count() >= 2 and callback.count() >= 2, what="both events")
    secret = client.get("/api/webhooks/signing-secret", headers=headers).json()["secret"]
    events = {
        verify(hook["secret"], r)["type"]: verify(hook["secret"], r) for r in endpoint.requests
    }
    assert set(events) == {"job.failed", "service.failed"}
    job = events["job.failed"]["data"]["job"]
    assert job["status"] == "failed"
    assert job["error"]["reason"] in ("ErrImagePull", "ImagePullBackOff")
    service = events["service.failed"]["data"]["service"]
    assert service["status"] == "failed"
    assert service["failure"]["reason"] == job["error"]["reason"]
    assert sorted(verify(secret, r)["type"] for r in callback.requests) == [
        "job.failed",
        "service.failed",
    ]


@pytest.mark.usefixtures("worker")
def test_dispatcher_sends_deliveries_whose_task_was_lost(client, customer, receivers):
    from db.engine import session_scope
    from db.repositories import webhooks as repo
    from db.states import utcnow

    receiver = receivers()
    hook = register(client, customer["headers"], receiver.url, ["job.succeeded"])
    with session_scope() as session:
        endpoint = repo.get_endpoint(session, hook["id"], customer_id=customer["customer_id"])
        assert endpoint is not None
        # Committed but never enqueued (the broker was down): due now, no task anywhere.
        repo.add_delivery(
            session,
            customer_id=customer["customer_id"],
            endpoint_id=endpoint.id,
            url=endpoint.url,
            event_type="job.succeeded",
            payload={"type": "job.succeeded", "timestamp": utcnow().isoformat(), "data": {}},
            job_id=None,
            next_attempt_at=utcnow(),
        )
    wait_for(lambda: receiver.count() >= 1, timeout=15, what="the dispatcher to send it")
    time.sleep(1.0)
    assert receiver.count() == 1
    verify(hook["secret"], receiver.requests[0])


@pytest.mark.usefixtures("worker")
def test_service_degraded_can_be_emitted_by_other_code(client, customer, receivers):
    from db.engine import session_scope
    from db.repositories import services as services_repo
    from workers.jobs.reconcile import reconcile_hooks
    from workers.webhooks.events import emit_service_event, on_reconciled

    assert on_reconciled in reconcile_hooks  # the drift reconciler calls it
    receiver = receivers()
    hook = register(client, customer["headers"], receiver.url, ["service.degraded"])
    accepted = deploy(client, customer)
    assert wait_job(client, customer["headers"], accepted["job_id"])["status"] == "succeeded"
    with session_scope() as session:
        service = services_repo.get_service(session, accepted["service_id"])
        assert service is not None
        assert len(emit_service_event(session, service, "service.degraded")) == 1
    wait_for(lambda: receiver.count() >= 1, what="service.degraded")
    payload = verify(hook["secret"], receiver.requests[0])
    assert payload["type"] == "service.degraded" and payload["data"]["job"] is None
    assert payload["data"]["service"]["service_id"] == accepted["service_id"]
    with pytest.raises(ValueError), session_scope() as session:
        emit_service_event(session, service, "service.exploded")


def test_a_webhook_failure_never_fails_the_callers_transaction(database, monkeypatch):
    from db.engine import session_scope
    from db.models import Customer
    from db.repositories import webhooks as repo
    from workers.webhooks import events

    owner = create_customer("robust")
    with session_scope() as session:
        repo.create_endpoint(session, owner["customer_id"], "http://127.0.0.1:9/", ["job.failed"])

    def broken(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("webhook table unavailable")

    monkeypatch.setattr(events.webhooks_repo, "add_delivery", broken)
    with session_scope() as session:
        customer = session.get(Customer, owner["customer_id"])
        assert customer is not None
        customer.name = "renamed"  # the caller's own work in the same transaction
        assert events.emit(session, owner["customer_id"], ["job.failed"], {}) == []
    with session_scope() as session:
        assert session.get(Customer, owner["customer_id"]).name == "renamed"


# In-process: one attempt at a time, with settings changed for the test


@pytest.fixture
def inprocess(database, monkeypatch) -> Iterator[Callable[..., Any]]:
    """Settings for in-process delivery: short timeout, no retries left for the worker."""
    from db.settings import get_settings

    def configure(**env: str) -> Any:
        for name, value in env.items():
            monkeypatch.setenv(name, value)
        get_settings.cache_clear()
        return get_settings()

    configure(SERVEPLANE_WEBHOOK_RETRY_SCHEDULE="")
    yield configure
    monkeypatch.undo()
    get_settings.cache_clear()


def make_delivery(customer_id: int, url: str, *, with_endpoint: bool = True) -> tuple[int, str]:
    """A pending delivery not yet due (so only the test sends it); returns (id, secret)."""
    from db.engine import session_scope
    from db.repositories import webhooks as repo
    from db.states import utcnow

    with session_scope() as session:
        endpoint = repo.create_endpoint(session, customer_id, url, ["job.succeeded"])
        payload = {"type": "job.succeeded", "timestamp": utcnow().isoformat(), "data": {"n": 1}}
        delivery = repo.add_delivery(
            session,
            customer_id=customer_id,
            endpoint_id=endpoint.id if with_endpoint else None,
            url=url,
            event_type="job.succeeded",
            payload=payload,
            job_id=None,
            next_attempt_at=utcnow() + timedelta(hours=1),
        )
        secret = endpoint.secret if with_endpoint else repo.callback_secret(session, customer_id)
        return delivery.id, secret


def delivery_row(delivery_id: int) -> tuple[Any, list[Any]]:
    from db.engine import session_scope
    from db.models import WebhookDelivery
    from db.repositories import webhooks as repo

    with session_scope() as session:
        delivery = session.get(WebhookDelivery, delivery_id)
        assert delivery is not None
        session.expunge(delivery)
        attempts = repo.attempts_of(session, [delivery_id]).get(delivery_id, [])
        for attempt in attempts:
            session.expunge(attempt)
        return delivery, attempts


def test_hanging_receiver_is_cut_at_the_timeout(inprocess, customer, receivers):
    from workers.webhooks.delivery import deliver

    inprocess(SERVEPLANE_WEBHOOK_TIMEOUT="0.5")
    receiver = receivers(default=(200, {}, 5.0))
    delivery_id, _ = make_delivery(customer["customer_id"], receiver.url)
    started = time.monotonic()
    assert deliver(delivery_id, 0) == "failed"
    assert time.monotonic() - started < 3.0
    delivery, [attempt] = delivery_row(delivery_id)
    assert receiver.count() == 1
    assert attempt.status_code is None and attempt.error == "timed out after 0.5s"
    assert 400 <= attempt.latency_ms < 3000
    assert delivery.status == "failed" and delivery.last_error == "timed out after 0.5s"


def test_redirect_is_not_followed(inprocess, customer, receivers):
    from workers.webhooks.delivery import deliver

    target = receivers()
    redirector = receivers(default=(302, {"Location": target.url}, 0.0))
    delivery_id, _ = make_delivery(customer["customer_id"], redirector.url)
    assert deliver(delivery_id, 0) == "failed"
    time.sleep(0.3)
    assert redirector.count() == 1 and target.count() == 0
    _, [attempt] = delivery_row(delivery_id)
    assert attempt.status_code == 302 and "not followed" in attempt.error


def test_duplicate_or_stale_tasks_send_nothing(inprocess, customer, receivers):
    from workers.webhooks.delivery import deliver

    inprocess(SERVEPLANE_WEBHOOK_RETRY_SCHEDULE="3600")
    receiver = receivers(FAIL, OK)
    delivery_id, _ = make_delivery(customer["customer_id"], receiver.url)
    assert deliver(delivery_id, 0) == "pending"
    assert deliver(delivery_id, 0) == "stale"  # the same task again: its attempt was made
    assert receiver.count() == 1
    assert deliver(delivery_id, 1) == "succeeded"
    assert deliver(delivery_id, 1) == "done"
    assert deliver(delivery_id, 2) == "done"
    assert receiver.count() == 2


def test_retry_after_is_honoured_when_longer(inprocess, customer, receivers):
    from db.states import utcnow
    from workers.webhooks.delivery import deliver

    inprocess(SERVEPLANE_WEBHOOK_RETRY_SCHEDULE="0.2")
    receiver = receivers((429, {"Retry-After": "30"}, 0.0))
    delivery_id, _ = make_delivery(customer["customer_id"], receiver.url)
    before = utcnow()
    assert deliver(delivery_id, 0) == "pending"
    delivery, [attempt] = delivery_row(delivery_id)
    wait = (delivery.next_attempt_at - before).total_seconds()
    assert 29 <= wait <= 32 and attempt.next_attempt_at == delivery.next_attempt_at
    assert attempt.status_code == 429
    _give_up(delivery_id)  # keep the session's worker from retrying it later


def _give_up(delivery_id: int) -> None:
    from db.engine import session_scope
    from db.models import WebhookDelivery
    from db.repositories import webhooks as repo

    with session_scope() as session:
        delivery = session.get(WebhookDelivery, delivery_id)
        assert delivery is not None
        repo.give_up(session, delivery, "test over")


def test_send_time_guard_refuses_a_host_that_now_resolves_privately(
    inprocess, customer, receivers, monkeypatch
):
    from db.urlguard import check_url
    from workers.webhooks.delivery import deliver

    receiver = receivers()
    port = receiver.server.server_address[1]
    answers = {"hooks.example": "93.184.216.34"}
    real = socket.getaddrinfo

    def getaddrinfo(host: str, *args: Any, **kwargs: Any) -> Any:
        if host in answers:
            return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (answers[host], args[0]))]
        return real(host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    url = f"http://hooks.example:{port}/hook"
    check_url(url, "127.0.0.1,localhost")  # accepted at registration: public then
    answers["hooks.example"] = "10.0.0.1"  # DNS now points inside
    delivery_id, _ = make_delivery(customer["customer_id"], url)
    assert deliver(delivery_id, 0) == "failed"
    _, [attempt] = delivery_row(delivery_id)
    assert attempt.status_code is None
    assert attempt.error.startswith("refused by the SSRF guard")
    assert "10.0.0.1, which is a private address" in attempt.error
    assert receiver.count() == 0
    # An allowlisted address resolves and the request is pinned to it (Host kept).
    answers["hooks.example"] = "127.0.0.1"
    delivery_id, secret = make_delivery(customer["customer_id"], url)
    assert deliver(delivery_id, 0) == "succeeded"
    [request] = receiver.requests
    assert request.headers["host"] == f"hooks.example:{port}"
    assert verify(secret, request)["data"] == {"n": 1}


def test_callback_delivery_is_signed_with_the_customer_secret(inprocess, customer, receivers):
    from workers.webhooks.delivery import deliver

    receiver = receivers()
    delivery_id, secret = make_delivery(customer["customer_id"], receiver.url, with_endpoint=False)
    assert deliver(delivery_id, 0) == "succeeded"
    [request] = receiver.requests
    assert verify(secret, request)["type"] == "job.succeeded"


def test_legacy_customer_secret_is_upgraded_once(database):
    from db.engine import session_scope
    from db.models import Customer
    from db.repositories import webhooks as repo

    # Customers are created with a URL-safe secret that Standard Webhooks cannot decode.
    other = create_customer("legacy")
    with session_scope() as session:
        customer = session.get(Customer, other["customer_id"])
        customer.webhook_secret = "whsec_" + "-_" * 20
    with session_scope() as session:
        first = repo.callback_secret(session, other["customer_id"])
    with session_scope() as session:
        assert repo.callback_secret(session, other["customer_id"]) == first
    assert repo.is_standard_secret(first)
    Webhook(first)  # decodes


# Units: signing, schedule, payload size


def test_signature_matches_standard_webhooks():
    from db.repositories.webhooks import new_signing_secret
    from workers.webhooks.delivery import encode_payload, signed_headers

    secret = new_signing_secret()
    body = encode_payload({"data": {"x": "é"}, "type": "job.failed", "timestamp": "t"})
    assert body.startswith(b'{"type":"job.failed","timestamp":"t","data"')
    headers = signed_headers(secret, "msg_abc", int(time.time()), body)
    assert verify(secret, Received("/", headers, body, 0.0)) == {
        "type": "job.failed",
        "timestamp": "t",
        "data": {"x": "é"},
    }
    tampered = body.replace(b"failed", b"succeeded")
    with pytest.raises(WebhookVerificationError):
        verify(secret, Received("/", headers, tampered, 0.0))
    with pytest.raises(WebhookVerificationError):
        verify(new_signing_secret(), Received("/", headers, body, 0.0))


def test_retry_delays_jitter_and_retry_after():
    from email.utils import format_datetime

    from db.states import utcnow
    from workers.webhooks.delivery import next_delay, parse_retry_after

    schedule = [5.0, 300.0, 1800.0]
    for attempt, base in enumerate(schedule, start=1):
        for _ in range(50):
            delay = next_delay(attempt, schedule, None)
            assert delay is not None and base * 0.9 <= delay <= base * 1.1
    assert next_delay(4, schedule, None) is None
    assert next_delay(1, schedule, 1.0) <= 5.5  # asks for less: the schedule wins
    assert next_delay(1, schedule, 120.0) == 120.0  # asks for more: honoured
    assert next_delay(1, schedule, 10 * 86400.0) == 3600.0  # capped
    assert next_delay(1, [1.0, 7200.0], 10 * 86400.0) == 7200.0
    now = utcnow()
    assert parse_retry_after("120") == 120.0
    http_date = format_datetime(now + timedelta(seconds=90), usegmt=True)
    assert 85 <= parse_retry_after(http_date, now) <= 91
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT", now) == 0.0
    assert parse_retry_after("soon") is None and parse_retry_after(None) is None


def test_payload_stays_under_20_kb():
    from db.states import utcnow
    from workers.webhooks.events import MAX_PAYLOAD_BYTES, build_payload

    huge = {"reason": "CrashLoopBackOff", "message": "x" * 100_000}
    data = {
        "job": {"job_id": "job-1", "error": huge},
        "service": {"service_id": "svc-1", "failure": huge, "name": "n" * 256},
    }
    payload = build_payload("job.failed", utcnow(), data)
    assert len(orjson.dumps(payload)) < MAX_PAYLOAD_BYTES
    assert payload["data"]["job"]["error"]["reason"] == "CrashLoopBackOff"
    assert payload["data"]["job"]["error"]["message"].startswith("xxxx")
    small = build_payload("job.failed", utcnow(), {"job": {"error": {"message": "short"}}})
    assert small["data"]["job"]["error"]["message"] == "short"
