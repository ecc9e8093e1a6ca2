"""The Kubernetes client: typed API calls returning plain dicts, errors translated, retried."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from typing import Any

import urllib3
from kubernetes import client, config
from kubernetes.client.exceptions import ApiException

from workers.kube.errors import KubeError, NotFound, Transient, from_http
from workers.kube.retry import call_with_retry

APPLY = "application/apply-patch+yaml"
FIELD_MANAGER = "serveplane"

# kind -> (api attribute, namespaced apply, read, delete, list) method names
_METHODS: dict[str, tuple[str, str]] = {
    "Namespace": ("core", "namespace"),
    "Service": ("core", "namespaced_service"),
    "Pod": ("core", "namespaced_pod"),
    "Deployment": ("apps", "namespaced_deployment"),
    "HorizontalPodAutoscaler": ("autoscaling", "namespaced_horizontal_pod_autoscaler"),
}


def load_api_client(kubeconfig: str | None, timeout: float) -> client.ApiClient:
    """An ApiClient from a kubeconfig file, or in-cluster config when none is given."""
    configuration = client.Configuration()
    if kubeconfig:
        config.load_kube_config(  # type: ignore[no-untyped-call]
            config_file=kubeconfig, client_configuration=configuration
        )
    else:
        try:
            config.load_incluster_config(  # type: ignore[no-untyped-call]
                client_configuration=configuration
            )
        except config.ConfigException:
            config.load_kube_config(  # type: ignore[no-untyped-call]
                client_configuration=configuration
            )
    configuration.connection_pool_maxsize = 32
    configuration.retries = False
    # The token refresh hook re-assigns the host before every request, and each assignment
    # re-reads the proxy settings from the whole environment (~0.4 ms of CPU per request).
    # The host never changes, so pin the proxy resolved at load time.
    configuration.proxy = configuration.proxy
    return client.ApiClient(configuration)


class KubeClient:
    """Thread-safe wrapper over the typed APIs that serveplane uses."""

    def __init__(
        self,
        api_client: client.ApiClient,
        *,
        timeout: float = 10.0,
        retry_attempts: int = 6,
        retry_max_wait: float = 8.0,
    ) -> None:
        self.api_client = api_client
        self.timeout = timeout
        self.retry_attempts = retry_attempts
        self.retry_max_wait = retry_max_wait
        self._apis = {
            "core": client.CoreV1Api(api_client),
            "apps": client.AppsV1Api(api_client),
            "autoscaling": client.AutoscalingV2Api(api_client),
        }
        self._known_namespaces: set[str] = set()
        self._namespace_locks: dict[str, threading.Lock] = {}
        self._lock = threading.Lock()

    def _method(self, kind: str, verb: str) -> Callable[..., Any]:
        api, suffix = _METHODS[kind]
        return getattr(self._apis[api], f"{verb}_{suffix}")  # type: ignore[no-any-return]

    def _call(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """One HTTP call: raw JSON decoded, errors translated (no retry)."""
        try:
            response = fn(*args, _preload_content=False, _request_timeout=self.timeout, **kwargs)
        except ApiException as exc:
            raise from_http(exc.status or 0, exc.body, exc.headers, str(exc.reason)) from None
        except (urllib3.exceptions.HTTPError, OSError) as exc:
            raise Transient(f"Kubernetes API unreachable: {type(exc).__name__}") from None
        data = response.data
        return json.loads(data) if data else {}

    def _retrying(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        return call_with_retry(
            self._call,
            fn,
            *args,
            attempts=self.retry_attempts,
            max_wait=self.retry_max_wait,
            **kwargs,
        )

    def apply(self, obj: dict[str, Any]) -> dict[str, Any]:
        """Server-side apply one object (create or update; field manager `serveplane`)."""
        kind = obj["kind"]
        name = obj["metadata"]["name"]
        patch = self._method(kind, "patch")
        kwargs = {"field_manager": FIELD_MANAGER, "force": True, "_content_type": APPLY}
        if kind == "Namespace":
            result: dict[str, Any] = self._retrying(patch, name, obj, **kwargs)
            return result
        namespace = obj["metadata"]["namespace"]
        try:
            result = self._retrying(patch, name, namespace, obj, **kwargs)
        except NotFound:
            # The namespace went away behind our back: recreate it once.
            with self._lock:
                self._known_namespaces.discard(namespace)
            raise
        return result

    def ensure_namespace(self, namespace_obj: dict[str, Any]) -> None:
        """Apply a namespace unless this process applied it already (one thread applies)."""
        name = namespace_obj["metadata"]["name"]
        with self._lock:
            if name in self._known_namespaces:
                return
            lock = self._namespace_locks.setdefault(name, threading.Lock())
        with lock:
            with self._lock:
                if name in self._known_namespaces:
                    return
            self.apply(namespace_obj)
            with self._lock:
                self._known_namespaces.add(name)

    def forget_namespace(self, name: str) -> None:
        """Drop a namespace from the applied cache."""
        with self._lock:
            self._known_namespaces.discard(name)

    def get(self, kind: str, namespace: str, name: str) -> dict[str, Any] | None:
        """Read one object; None when it does not exist."""
        try:
            result: dict[str, Any] = self._retrying(self._method(kind, "read"), name, namespace)
        except NotFound:
            return None
        return result

    def list(self, kind: str, namespace: str, label_selector: str) -> list[dict[str, Any]]:
        """List objects of a kind in a namespace by label selector."""
        result = self._retrying(
            self._method(kind, "list"), namespace, label_selector=label_selector
        )
        return list(result.get("items") or [])

    def delete(self, kind: str, namespace: str, name: str) -> bool:
        """Delete an object (background propagation); False when it was already gone."""
        body = client.V1DeleteOptions(propagation_policy="Background")
        try:
            self._retrying(
                self._method(kind, "delete"), name, namespace, body=body, retry_conflicts=False
            )
        except NotFound:
            return False
        return True


__all__ = ["KubeClient", "KubeError", "load_api_client"]
