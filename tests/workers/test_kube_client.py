"""The Kubernetes boundary against the fake API server: one retry test per status code."""

from __future__ import annotations

import time
from typing import Any

import pytest

from workers.kube.client import KubeClient, load_api_client
from workers.kube.errors import NotFound, Permanent, Transient, TooManyRequests


@pytest.fixture
def kube(fake_kube: Any) -> KubeClient:
    import os

    return KubeClient(load_api_client(os.environ["KUBECONFIG"], 2.0), timeout=2.0,
                      retry_attempts=4, retry_max_wait=0.05)


def namespace(name: str) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}}


def requests_for(fake_kube: Any, verb_resource: str) -> int:
    return int(fake_kube.stats()["by_verb_resource"].get(verb_resource, 0))


@pytest.mark.parametrize("code", [500, 503, 504])
def test_server_errors_are_retried_then_raised(kube, fake_kube, code):
    fake_kube.reset_stats()
    fake_kube.set_faults(error_rate=1.0, codes=(code,), path_regex=r"/api/v1/namespaces/.*")
    with pytest.raises(Transient):
        kube.apply(namespace("retry-5xx"))
    assert requests_for(fake_kube, "patch namespaces") == 4  # every attempt reached the server
    fake_kube.set_faults(error_rate=0.0)
    kube.apply(namespace("retry-5xx"))
    assert fake_kube.get_object("v1", "namespaces", None, "retry-5xx") is not None


def test_429_honours_retry_after(kube, fake_kube):
    kube.retry_max_wait = 5.0
    fake_kube.reset_stats()
    fake_kube.set_faults(error_rate=1.0, codes=(429,), retry_after=1,
                         path_regex=r"/api/v1/namespaces/.*")
    started = time.monotonic()
    with pytest.raises(TooManyRequests) as raised:
        kube.apply(namespace("retry-429"))
    assert raised.value.retry_after == 1.0
    assert time.monotonic() - started >= 3 * 1.0  # three waits of Retry-After between 4 tries
    assert requests_for(fake_kube, "patch namespaces") == 4


def test_409_conflict_is_retried(kube, fake_kube):
    fake_kube.reset_stats()
    fake_kube.set_faults(error_rate=1.0, codes=(409,), path_regex=r"/api/v1/namespaces/.*")
    with pytest.raises(Exception) as raised:
        kube.apply(namespace("retry-409"))
    assert type(raised.value).__name__ == "Conflict"
    assert requests_for(fake_kube, "patch namespaces") == 4


def test_422_fails_fast_with_the_api_servers_message(kube, fake_kube):
    fake_kube.reset_stats()
    with pytest.raises(Permanent) as raised:
        kube.apply(namespace("Not_A_Valid_Name"))
    assert raised.value.status == 422
    assert "Not_A_Valid_Name" in raised.value.message
    assert requests_for(fake_kube, "patch namespaces") == 1


def test_404_reads_as_none_and_deletes_as_false(kube, fake_kube):
    assert kube.get("Deployment", "default", "does-not-exist") is None
    assert kube.delete("Deployment", "default", "does-not-exist") is False
    with pytest.raises(NotFound):
        kube.apply({"apiVersion": "v1", "kind": "Service",
                    "metadata": {"name": "x", "namespace": "no-such-namespace"},
                    "spec": {"ports": [{"port": 80}]}})


def test_connection_errors_are_transient(fake_kube, tmp_path):
    import os

    config = open(os.environ["KUBECONFIG"]).read().replace(fake_kube.url, "http://127.0.0.1:9")
    (tmp_path / "config").write_text(config)  # nothing listens on port 9
    client = KubeClient(load_api_client(str(tmp_path / "config"), 0.5), timeout=0.5,
                        retry_attempts=2, retry_max_wait=0.01)
    with pytest.raises(Transient):
        client.get("Deployment", "default", "x")


def test_hanging_requests_time_out_as_transient(kube, fake_kube):
    fake_kube.set_faults(hang_rate=1.0, hang_seconds=5, path_regex=r"/api/v1/namespaces/.*")
    kube.timeout = 0.3
    kube.retry_attempts = 2
    started = time.monotonic()
    with pytest.raises(Transient):
        kube.apply(namespace("retry-hang"))
    assert time.monotonic() - started < 3
