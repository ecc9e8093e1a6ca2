"""Render the Kubernetes manifests of one model version from the Jinja2 templates.

Pure rendering: no Kubernetes client, no I/O beyond loading the templates once.
Every value interpolated into a template goes through the ``tojson`` filter (JSON is
valid YAML), and the environment refuses any ``{{ }}`` output that did not, so a
hostile string can never change the structure of a manifest.
"""

from __future__ import annotations

import functools
import json
import posixpath
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jinja2
import yaml

TEMPLATE_DIR = Path(__file__).resolve().parents[2] / "k8s_templates"

FRAMEWORKS = ("tfserving", "torchserve", "triton", "onnxruntime")
MODEL_MOUNT_PATH = "/mnt/models"
MODEL_VOLUME_NAME = "model-store"
S3_CREDENTIALS_SECRET = "serveplane-s3-credentials"  # noqa: S105 - a Secret name
SERVICE_PORT = 80
MANAGED_BY = "serveplane"


@dataclass(frozen=True)
class RenderConfig:
    """Deployment-wide settings, built by the caller from env settings."""

    images: Mapping[str, str]
    onnx_server_image: str | None
    model_volume_claim: str | None
    model_host_path: str
    s3_init_image: str
    gpu_node_selector: Mapping[str, str]
    gpu_tolerations: Sequence[Mapping[str, str]]
    progress_deadline_seconds: int
    image_pull_policy: str = "IfNotPresent"


@dataclass(frozen=True)
class ManifestContext:
    """One model version of one service; all strings already validated."""

    namespace: str
    object_name: str
    service_name: str
    service_uuid: str
    customer_id: int
    version: int
    framework: str
    model_path: str
    replicas: int
    min_replicas: int
    max_replicas: int
    cpu_cores: int
    memory_gb: int
    gpu_count: int
    autoscale: bool
    cpu_target_percent: int


@dataclass(frozen=True)
class _Runtime:
    """How one model server is run: container partial, ports and probe paths."""

    partial: str
    http_port: int
    ports: tuple[tuple[str, int], ...]  # (name, containerPort), "http" first
    readiness_path: str  # "{name}" is replaced by the service name
    liveness_path: str


_RUNTIMES: dict[str, _Runtime] = {
    "tfserving": _Runtime(
        partial="containers/tfserving.yaml.j2",
        http_port=8501,
        ports=(("http", 8501), ("grpc", 8500)),
        readiness_path="/v1/models/{name}",
        liveness_path="/v1/models/{name}",
    ),
    "torchserve": _Runtime(
        partial="containers/torchserve.yaml.j2",
        http_port=8080,
        ports=(("http", 8080), ("management", 8081), ("metrics", 8082), ("grpc", 7070)),
        readiness_path="/ping",
        liveness_path="/ping",
    ),
    "triton": _Runtime(
        partial="containers/triton.yaml.j2",
        http_port=8000,
        ports=(("http", 8000), ("grpc", 8001), ("metrics", 8002)),
        readiness_path="/v2/health/ready",
        liveness_path="/v2/health/live",
    ),
    # ONNX Runtime served by Triton's onnxruntime backend (the default).
    "onnxruntime": _Runtime(
        partial="containers/onnxruntime.yaml.j2",
        http_port=8000,
        ports=(("http", 8000), ("grpc", 8001), ("metrics", 8002)),
        readiness_path="/v2/models/{name}/ready",
        liveness_path="/v2/health/live",
    ),
}
# ONNX Runtime served by serveplane's own OIP v2 server (cfg.onnx_server_image set).
_ONNX_SERVER_RUNTIME = _Runtime(
    partial="containers/onnxruntime.yaml.j2",
    http_port=8080,
    ports=(("http", 8080),),
    readiness_path="/v2/models/{name}/ready",
    liveness_path="/v2/models/{name}/ready",
)


# --- the Jinja environment --------------------------------------------------------------

_YAML_UNSAFE = re.compile(r"[^\x00-\x7e]")


class _Json(str):
    """Text produced by the ``tojson`` filter (the only text templates may output)."""

    __slots__ = ()


def _escape_char(match: re.Match[str]) -> str:
    code = ord(match.group())
    if 0xD800 <= code <= 0xDFFF:
        raise ValueError("strings must not contain lone surrogate code points")
    return f"\\u{code:04x}" if code <= 0xFFFF else f"\\U{code:08x}"


def _tojson(value: Any) -> _Json:
    """JSON for ``value``, ASCII-only so YAML reads back exactly the same value.

    Python's own ``ensure_ascii`` writes astral characters as UTF-16 surrogate pairs,
    which YAML decodes as two lone surrogates; YAML's ``\\U`` escape is used instead.
    DEL and everything above it is escaped too (YAML rejects C1 controls and treats
    U+0085/U+2028/U+2029 as line breaks).
    """
    text = json.dumps(value, ensure_ascii=False, allow_nan=False)
    return _Json(_YAML_UNSAFE.sub(_escape_char, text))


def _finalize(value: Any) -> Any:
    if not isinstance(value, _Json):
        raise TypeError(
            f"template interpolated {value!r} without the tojson filter; "
            "every value must be written as {{ value | tojson }}"
        )
    return value


_ENV = jinja2.Environment(
    loader=jinja2.FileSystemLoader(str(TEMPLATE_DIR)),
    undefined=jinja2.StrictUndefined,
    autoescape=False,  # noqa: S701 - YAML, not HTML; values are escaped by tojson
    trim_blocks=True,
    lstrip_blocks=True,
    keep_trailing_newline=True,
    auto_reload=False,
    finalize=_finalize,
)
_ENV.filters["tojson"] = _tojson

_YAML_LOADER: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


@functools.cache
def _template(name: str) -> jinja2.Template:
    return _ENV.get_template(name)


def _render(name: str, **variables: Any) -> dict[str, Any]:
    text = _template(name).render(**variables)
    obj = yaml.load(text, Loader=_YAML_LOADER)  # noqa: S506 - a SafeLoader
    if not isinstance(obj, dict):
        raise ValueError(f"template {name} did not render a mapping")
    return obj


# --- public helpers ---------------------------------------------------------------------


def _runtime(framework: str, cfg: RenderConfig | None) -> _Runtime:
    if framework == "onnxruntime" and cfg is not None and cfg.onnx_server_image:
        return _ONNX_SERVER_RUNTIME
    try:
        return _RUNTIMES[framework]
    except KeyError:
        raise ValueError(f"unknown framework {framework!r}") from None


def container_port(framework: str, cfg: RenderConfig | None = None) -> int:
    """The HTTP inference port the Service targets.

    ``onnxruntime`` is 8000 on Triton, or 8080 when ``cfg.onnx_server_image`` is set
    (pass ``cfg`` to get that answer).
    """
    return _runtime(framework, cfg).http_port


def service_port() -> int:
    """The Service's own port."""
    return SERVICE_PORT


def object_labels(ctx: ManifestContext) -> dict[str, str]:
    """Labels put on every object of a model version (and on its pods)."""
    return {
        "app.kubernetes.io/name": ctx.service_name,
        "app.kubernetes.io/managed-by": MANAGED_BY,
        "app.kubernetes.io/instance": ctx.object_name,
        "serveplane.io/service": ctx.service_uuid,
        "serveplane.io/version": str(ctx.version),
        "serveplane.io/customer": str(ctx.customer_id),
    }


def selector_labels(ctx: ManifestContext) -> dict[str, str]:
    """The Deployment and Service selector: service uuid + version."""
    return {
        "serveplane.io/service": ctx.service_uuid,
        "serveplane.io/version": str(ctx.version),
    }


@dataclass(frozen=True)
class _ModelVolume:
    kind: str  # "pvc" | "host" | "s3"
    claim: str | None = None
    sub_path: str | None = None
    host_path: str | None = None
    s3_source: str | None = None


def _relative(path: str) -> str:
    rel = path.strip("/")
    if any(part == ".." for part in rel.split("/")):
        raise ValueError(f"model path {path!r} must not contain '..' segments")
    return rel


def _model_volume(model_path: str, cfg: RenderConfig) -> _ModelVolume:
    if model_path.startswith("s3://"):
        if not model_path[len("s3://") :].partition("/")[0]:
            raise ValueError(f"model path {model_path!r} has no bucket")
        return _ModelVolume(kind="s3", s3_source=model_path)
    if model_path.startswith("pvc://"):
        claim, _, sub = model_path[len("pvc://") :].partition("/")
        if not claim:
            raise ValueError(f"model path {model_path!r} has no claim name")
        return _ModelVolume(kind="pvc", claim=claim, sub_path=_relative(sub) or None)
    rel = _relative(model_path)
    if cfg.model_volume_claim:
        return _ModelVolume(kind="pvc", claim=cfg.model_volume_claim, sub_path=rel or None)
    host = posixpath.join(cfg.model_host_path, rel) if rel else cfg.model_host_path
    return _ModelVolume(kind="host", host_path=host)


def _image(ctx: ManifestContext, cfg: RenderConfig) -> str:
    if ctx.framework == "onnxruntime" and cfg.onnx_server_image:
        return cfg.onnx_server_image
    try:
        return cfg.images[ctx.framework]
    except KeyError:
        raise ValueError(f"no image configured for framework {ctx.framework!r}") from None


# --- renderers --------------------------------------------------------------------------


def render_namespace(namespace: str, customer_id: int) -> dict[str, Any]:
    """The customer's Namespace."""
    labels = {
        "app.kubernetes.io/managed-by": MANAGED_BY,
        "serveplane.io/customer": str(customer_id),
    }
    return _render("namespace.yaml.j2", namespace=namespace, labels=labels)


def render_deployment(ctx: ManifestContext, cfg: RenderConfig) -> dict[str, Any]:
    """The Deployment running the model server of one model version."""
    runtime = _runtime(ctx.framework, cfg)
    gpu = ctx.gpu_count > 0
    return _render(
        "deployment.yaml.j2",
        ctx=ctx,
        cfg=cfg,
        labels=object_labels(ctx),
        selector=selector_labels(ctx),
        image=_image(ctx, cfg),
        onnx_server=runtime is _ONNX_SERVER_RUNTIME,
        partial=runtime.partial,
        http_port=runtime.http_port,
        ports=[{"name": name, "port": port} for name, port in runtime.ports],
        readiness_path=runtime.readiness_path.replace("{name}", ctx.service_name),
        liveness_path=runtime.liveness_path.replace("{name}", ctx.service_name),
        volume=_model_volume(ctx.model_path, cfg),
        mount_path=MODEL_MOUNT_PATH,
        volume_name=MODEL_VOLUME_NAME,
        s3_secret=S3_CREDENTIALS_SECRET,
        gpu=gpu,
        node_selector=dict(cfg.gpu_node_selector) if gpu else {},
        tolerations=[dict(t) for t in cfg.gpu_tolerations] if gpu else [],
    )


def render_service(ctx: ManifestContext, cfg: RenderConfig) -> dict[str, Any]:
    """The ClusterIP Service in front of one model version."""
    return _render(
        "service.yaml.j2",
        ctx=ctx,
        labels=object_labels(ctx),
        selector=selector_labels(ctx),
        port=SERVICE_PORT,
        target_port=container_port(ctx.framework, cfg),
    )


def render_hpa(ctx: ManifestContext, cfg: RenderConfig) -> dict[str, Any]:
    """The autoscaling/v2 HorizontalPodAutoscaler of one model version."""
    return _render("hpa.yaml.j2", ctx=ctx, labels=object_labels(ctx))


def render_manifests(ctx: ManifestContext, cfg: RenderConfig) -> list[dict[str, Any]]:
    """[Deployment, Service] plus the HPA when autoscaling (the Namespace is not included)."""
    manifests = [render_deployment(ctx, cfg), render_service(ctx, cfg)]
    if ctx.autoscale:
        manifests.append(render_hpa(ctx, cfg))
    return manifests
