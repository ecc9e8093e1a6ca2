"""The Kubernetes runtime: one Deployment + Service (+ HPA) per version, via workers.kube."""

from __future__ import annotations

from typing import Any

from db.domain import namespace_for, object_name
from db.settings import Settings
from workers.kube.client import KubeClient, load_api_client
from workers.kube.errors import KubeError, NotFound, Permanent
from workers.kube.render import (
    ManifestContext,
    RenderConfig,
    render_manifests,
    render_namespace,
    service_port,
)
from workers.kube.rollout import deployment_progress, stuck_pod
from workers.runtime.base import (
    RolloutStatus,
    RuntimeError_,
    TransientRuntimeError,
    VersionSpec,
)

KINDS_PER_VERSION = ("HorizontalPodAutoscaler", "Service", "Deployment")
LIST_CHUNK = 100  # service uuids per label selector (keeps URLs short)


def _chunks(items: list[str], size: int) -> list[list[str]]:
    return [items[i : i + size] for i in range(0, len(items), size)]


def _uuid_selector(uuids: list[str]) -> str:
    return f"serveplane.io/service in ({','.join(uuids)})"


class KubernetesRuntime:
    """Runs versions as Kubernetes objects through server-side apply."""

    name = "kubernetes"

    def __init__(self, settings: Settings, kube: KubeClient | None = None) -> None:
        self.settings = settings
        self.kube = kube or KubeClient(
            load_api_client(settings.kubeconfig, settings.kube_request_timeout),
            timeout=settings.kube_request_timeout,
            retry_attempts=settings.kube_retry_attempts,
            retry_max_wait=settings.kube_retry_max_wait,
        )
        self.render_config = RenderConfig(
            images={
                fw: settings.image_for(fw)
                for fw in ("tfserving", "torchserve", "triton", "onnxruntime")
            },
            onnx_server_image=settings.onnx_server_image,
            model_volume_claim=settings.model_volume_claim,
            model_host_path=settings.model_host_path,
            s3_init_image=settings.s3_init_image,
            gpu_node_selector=settings.gpu_node_selector,
            gpu_tolerations=settings.gpu_tolerations,
            progress_deadline_seconds=settings.progress_deadline_seconds,
        )

    def namespace(self, spec: VersionSpec) -> str:
        """The customer's namespace."""
        return namespace_for(self.settings.namespace_prefix, spec.customer_id)

    def context(self, spec: VersionSpec) -> ManifestContext:
        """Template values for a version."""
        return ManifestContext(
            namespace=self.namespace(spec),
            object_name=object_name(spec.service_name, spec.version),
            service_name=spec.service_name,
            service_uuid=spec.service_uuid,
            customer_id=spec.customer_id,
            version=spec.version,
            framework=spec.framework,
            model_path=spec.model_path,
            replicas=spec.replicas,
            min_replicas=spec.min_replicas,
            max_replicas=spec.max_replicas,
            cpu_cores=spec.cpu_cores,
            memory_gb=spec.memory_gb,
            gpu_count=spec.gpu_count,
            autoscale=spec.autoscale,
            cpu_target_percent=spec.cpu_target_percent,
        )

    def apply(self, spec: VersionSpec) -> None:
        """Apply namespace, Deployment, Service and the HPA (or remove a stale HPA)."""
        ctx = self.context(spec)
        namespace_obj = render_namespace(ctx.namespace, spec.customer_id)
        try:
            self.kube.ensure_namespace(namespace_obj)
            try:
                self._apply_objects(ctx)
            except NotFound:
                # Namespace deleted behind our back since we cached it: recreate once.
                self.kube.forget_namespace(ctx.namespace)
                self.kube.ensure_namespace(namespace_obj)
                self._apply_objects(ctx)
        except Permanent as exc:
            raise RuntimeError_("KubernetesRejected", exc.message) from None
        except NotFound as exc:
            raise RuntimeError_("KubernetesNotFound", exc.message) from None
        except KubeError as exc:
            raise TransientRuntimeError("KubernetesUnavailable", exc.message) from None

    def _apply_objects(self, ctx: ManifestContext) -> None:
        for manifest in render_manifests(ctx, self.render_config):
            self.kube.apply(manifest)
        if not ctx.autoscale:
            # Fixed replicas: an HPA left from an autoscaling period must go.
            self.kube.delete("HorizontalPodAutoscaler", ctx.namespace, ctx.object_name)

    def rollout_status(self, spec: VersionSpec) -> RolloutStatus:
        """Deployment progress; pods are read only while it is not ready."""
        ctx = self.context(spec)
        try:
            deployment = self.kube.get("Deployment", ctx.namespace, ctx.object_name)
            if deployment is None:
                return RolloutStatus(
                    "missing",
                    reason="DeploymentNotFound",
                    message=f"deployment {ctx.object_name} does not exist",
                )
            progress = deployment_progress(deployment)
            if progress.state != "progressing":
                return self._with_endpoints(progress, ctx)
            pods = self.kube.list("Pod", ctx.namespace, self._selector(spec))
        except KubeError as exc:
            raise TransientRuntimeError("KubernetesUnavailable", exc.message) from None
        return stuck_pod(pods) or progress

    def rollout_statuses(self, specs: list[VersionSpec]) -> dict[tuple[str, int], RolloutStatus]:
        """Many rollouts with two LIST calls per namespace instead of calls per version."""
        by_namespace: dict[str, list[VersionSpec]] = {}
        for spec in specs:
            by_namespace.setdefault(self.namespace(spec), []).append(spec)
        result: dict[tuple[str, int], RolloutStatus] = {}
        try:
            for namespace, group in by_namespace.items():
                result.update(self._namespace_statuses(namespace, group))
        except KubeError as exc:
            raise TransientRuntimeError("KubernetesUnavailable", exc.message) from None
        return result

    def _namespace_statuses(
        self, namespace: str, specs: list[VersionSpec]
    ) -> dict[tuple[str, int], RolloutStatus]:
        """Statuses of versions in one namespace: LIST calls by service uuid, in chunks."""
        result: dict[tuple[str, int], RolloutStatus] = {}
        uuids = sorted({s.service_uuid for s in specs})
        deployments: dict[str, dict[str, Any]] = {}
        for chunk in _chunks(uuids, LIST_CHUNK):
            for d in self.kube.list("Deployment", namespace, _uuid_selector(chunk)):
                deployments[d["metadata"]["name"]] = d
        waiting: list[VersionSpec] = []
        for spec in specs:
            ctx = self.context(spec)
            deployment = deployments.get(ctx.object_name)
            if deployment is None:
                result[(spec.service_uuid, spec.version)] = RolloutStatus(
                    "missing",
                    reason="DeploymentNotFound",
                    message=f"deployment {ctx.object_name} does not exist",
                )
                continue
            progress = deployment_progress(deployment)
            result[(spec.service_uuid, spec.version)] = self._with_endpoints(progress, ctx)
            if progress.state == "progressing":
                waiting.append(spec)
        pods_by_version: dict[tuple[str, str], list[dict[str, Any]]] = {}
        for chunk in _chunks(sorted({s.service_uuid for s in waiting}), LIST_CHUNK):
            for pod in self.kube.list("Pod", namespace, _uuid_selector(chunk)):
                labels = pod.get("metadata", {}).get("labels") or {}
                key = (
                    labels.get("serveplane.io/service", ""),
                    labels.get("serveplane.io/version", ""),
                )
                pods_by_version.setdefault(key, []).append(pod)
        for spec in waiting:
            stuck = stuck_pod(pods_by_version.get((spec.service_uuid, str(spec.version)), []))
            if stuck is not None:
                result[(spec.service_uuid, spec.version)] = stuck
        return result

    def _with_endpoints(self, status: RolloutStatus, ctx: ManifestContext) -> RolloutStatus:
        if status.state != "ready":
            return status
        return RolloutStatus(
            "ready",
            desired_replicas=status.desired_replicas,
            current_replicas=status.current_replicas,
            ready_replicas=status.ready_replicas,
            endpoints=[self._upstream(ctx)],
        )

    def _upstream(self, ctx: ManifestContext) -> str:
        base = self.settings.kube_upstream_template.format(
            name=ctx.object_name, namespace=ctx.namespace
        )
        port = service_port()
        return base if port == 80 else f"{base}:{port}"

    def _selector(self, spec: VersionSpec) -> str:
        return f"serveplane.io/service={spec.service_uuid},serveplane.io/version={spec.version}"

    def endpoints(self, spec: VersionSpec) -> list[str]:
        """The version's Kubernetes Service address."""
        return [self._upstream(self.context(spec))]

    def delete_version(self, spec: VersionSpec) -> None:
        """Delete HPA, Service and Deployment; already gone is fine."""
        ctx = self.context(spec)
        try:
            for kind in KINDS_PER_VERSION:
                self.kube.delete(kind, ctx.namespace, ctx.object_name)
        except KubeError as exc:
            raise TransientRuntimeError("KubernetesUnavailable", exc.message) from None

    def version_gone(self, spec: VersionSpec) -> bool:
        """True when neither the Deployment nor the Service exists any more."""
        ctx = self.context(spec)
        try:
            return all(
                self.kube.get(kind, ctx.namespace, ctx.object_name) is None
                for kind in ("Deployment", "Service")
            )
        except KubeError as exc:
            raise TransientRuntimeError("KubernetesUnavailable", exc.message) from None
