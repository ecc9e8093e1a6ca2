"""All configuration, read once from the environment (see README "Configuration")."""

from __future__ import annotations

from functools import lru_cache
from typing import Literal

from pydantic import AliasChoices, Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    """serveplane settings: `SERVEPLANE_*` plus DATABASE_URL, REDIS_URL and KUBECONFIG."""

    model_config = SettingsConfigDict(env_prefix="SERVEPLANE_", extra="ignore")

    database_url: str = Field(
        "postgresql+psycopg://postgres@127.0.0.1:5432/serveplane",
        validation_alias=AliasChoices("DATABASE_URL", "SERVEPLANE_DATABASE_URL"),
    )
    redis_url: str = Field(
        "redis://127.0.0.1:6379/0",
        validation_alias=AliasChoices("REDIS_URL", "SERVEPLANE_REDIS_URL"),
    )
    kubeconfig: str | None = Field(
        None, validation_alias=AliasChoices("KUBECONFIG", "SERVEPLANE_KUBECONFIG")
    )
    runtime: Literal["kubernetes", "local"] = "kubernetes"
    queue_prefix: str = "serveplane"
    public_url: str = "http://127.0.0.1:8000"

    # Kubernetes objects
    namespace_prefix: str = "sp-"
    image_tfserving: str = "tensorflow/serving:2.16.1"
    image_torchserve: str = "pytorch/torchserve:0.11.1-cpu"
    image_triton: str = "nvcr.io/nvidia/tritonserver:24.05-py3"
    image_onnxruntime: str = "nvcr.io/nvidia/tritonserver:24.05-py3"
    onnx_server_image: str | None = None
    model_volume_claim: str | None = None
    model_host_path: str = "/var/lib/serveplane/models"
    s3_init_image: str = "amazon/aws-cli:2.17.0"
    gpu_node_selector: dict[str, str] = {}
    gpu_tolerations: list[dict[str, str]] = [
        {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}
    ]
    progress_deadline_seconds: int = 600
    hpa_cpu_target_percent: int = 70
    kube_request_timeout: float = 10.0
    kube_upstream_template: str = "http://{name}.{namespace}.svc.cluster.local"

    # Jobs and readiness
    job_deadline_seconds: int = 1800
    job_max_attempts: int = 5
    job_lease_seconds: int = 60
    readiness_backoff_initial: float = 0.2
    readiness_backoff_max: float = 15.0
    dispatcher_interval: float = 0.25
    kube_retry_attempts: int = 6
    kube_retry_max_wait: float = 8.0
    worker_concurrency: int = 16
    api_db_pool_size: int = 40
    worker_db_pool_size: int = 20

    # Versions, drift and webhooks
    version_grace_seconds: float = 30.0
    reconcile_interval: float = 15.0
    self_heal: bool = False
    webhook_retry_schedule: str = "5,300,1800,7200,18000,36000,36000"
    webhook_allowed_hosts: str = ""
    webhook_timeout: float = 15.0
    idempotency_ttl_hours: int = 24

    # Local runtime (model servers as processes on the worker host) and `serveplane dev`
    local_state_dir: str = "~/.serveplane/local"
    local_stop_timeout: float = 5.0
    local_start_timeout: float = 120.0

    # Inference gateway (/inference/{service_id}/...)
    gateway_timeout: float = 60.0
    gateway_connect_timeout: float = 2.0
    gateway_max_connections: int = 256
    gateway_keepalive_expiry: float = 4.0
    gateway_route_ttl: float = Field(1.0, ge=0.0, le=1.0)
    gateway_max_body_bytes: int = 64 * 1024 * 1024

    # Limits on what a customer may ask for
    max_replicas_cap: int = 100
    max_cpu_cores: int = 64
    max_memory_gb: int = 512
    max_gpu_count: int = 8
    max_body_bytes: int = 1_048_576

    @field_validator("namespace_prefix")
    @classmethod
    def _prefix_is_dns(cls, value: str) -> str:
        import re

        if not re.fullmatch(r"[a-z0-9]([-a-z0-9]{0,30})?", value.rstrip("-") or "x"):
            raise ValueError("namespace prefix must be lowercase alphanumerics and '-'")
        return value

    @field_validator("webhook_retry_schedule")
    @classmethod
    def _schedule_is_seconds(cls, value: str) -> str:
        try:
            delays = [float(part) for part in value.split(",") if part.strip()]
        except ValueError:
            raise ValueError("webhook retry schedule must be seconds separated by commas") from None
        if any(d < 0 for d in delays):
            raise ValueError("webhook retry delays must not be negative")
        return value

    @property
    def webhook_retry_delays(self) -> list[float]:
        """Seconds before each webhook retry (attempt n waits delays[n-1]); empty = no retry."""
        return [float(part) for part in self.webhook_retry_schedule.split(",") if part.strip()]

    def image_for(self, framework: str) -> str:
        """Container image configured for a framework."""
        return str(getattr(self, f"image_{framework}"))

    @property
    def sync_database_url(self) -> str:
        """The database URL with the psycopg (v3) driver, whatever the user wrote."""
        url = self.database_url
        for prefix in ("postgresql://", "postgres://", "postgresql+psycopg2://"):
            if url.startswith(prefix):
                return "postgresql+psycopg://" + url[len(prefix) :]
        return url


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings (cached; tests clear the cache after changing the env)."""
    return Settings()
