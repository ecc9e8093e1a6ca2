"""Domain rules shared by the API and the workers: names, frameworks, ids, secrets."""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets

FRAMEWORK_ALIASES: dict[str, str] = {
    "tfserving": "tfserving",
    "tf-serving": "tfserving",
    "tf_serving": "tfserving",
    "tensorflow-serving": "tfserving",
    "tensorflow_serving": "tfserving",
    "tensorflow": "tfserving",
    "torchserve": "torchserve",
    "torch-serve": "torchserve",
    "pytorch": "torchserve",
    "onnxruntime": "onnxruntime",
    "onnx-runtime": "onnxruntime",
    "onnx_runtime": "onnxruntime",
    "onnx": "onnxruntime",
    "ort": "onnxruntime",
    "triton": "triton",
    "tritonserver": "triton",
    "triton-inference-server": "triton",
    "nvidia-triton": "triton",
}
FRAMEWORKS = ("tfserving", "torchserve", "onnxruntime", "triton")
MODEL_FORMATS = ("tensorflow", "pytorch", "onnx")
# The model format each framework serves; Triton serves all three.
FRAMEWORK_FORMATS: dict[str, tuple[str, ...]] = {
    "tfserving": ("tensorflow",),
    "torchserve": ("pytorch",),
    "onnxruntime": ("onnx",),
    "triton": MODEL_FORMATS,
}
SERVICE_STATUSES = (
    "pending",
    "deploying",
    "running",
    "scaling",
    "updating",
    "degraded",
    "failed",
    "deleting",
    "deleted",
)
JOB_KINDS = ("deploy", "scale", "update", "promote", "rollback", "delete")
JOB_STATUSES = ("queued", "running", "succeeded", "failed", "cancelled")

DNS1035_LABEL = re.compile(r"[a-z]([-a-z0-9]*[a-z0-9])?")
_SAFE_PATH = re.compile(r"[A-Za-z0-9._/\-+=@,:~%]+")
# A claim is a Kubernetes object name; a bucket follows S3's naming rules.
_CLAIM_NAME = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")
_BUCKET_NAME = re.compile(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]")


def normalize_framework(value: str) -> str | None:
    """The canonical framework name for a user-supplied name or alias, or None."""
    return FRAMEWORK_ALIASES.get(value.strip().lower())


def default_model_format(framework: str) -> str | None:
    """The model format implied by a framework (None for Triton, which serves several)."""
    formats = FRAMEWORK_FORMATS[framework]
    return formats[0] if len(formats) == 1 else None


def name_error(name: str) -> str | None:
    """Why `name` is not a DNS-1035 label of at most 63 characters, or None."""
    if not name:
        return "must not be empty"
    if len(name) > 63:
        return "must be at most 63 characters"
    if not DNS1035_LABEL.fullmatch(name):
        return (
            "must be a DNS-1035 label: lowercase letters, digits and '-', "
            "starting with a letter and ending with a letter or digit"
        )
    return None


def model_path_error(path: str) -> str | None:
    """Why `path` is not an acceptable model location, or None."""
    if not path:
        return "must not be empty"
    if len(path) > 512:
        return "must be at most 512 characters"
    if not _SAFE_PATH.fullmatch(path):
        return "may contain only letters, digits and . _ / - + = @ , : ~ %"
    for scheme in ("pvc://", "s3://"):
        if path.startswith(scheme):
            rest = path[len(scheme) :]
            if not rest or rest.startswith("/"):
                return f"{scheme} locations need a name after the scheme"
            head = rest.partition("/")[0]
            if scheme == "pvc://" and not (len(head) <= 253 and _CLAIM_NAME.fullmatch(head)):
                return "the pvc:// claim must be a lowercase Kubernetes name (letters, digits, - .)"
            if scheme == "s3://" and not _BUCKET_NAME.fullmatch(head):
                return "the s3:// bucket must be 3-63 lowercase letters, digits, '.' or '-'"
            break
    else:
        if "://" in path:
            return "must be a path, pvc://claim/path or s3://bucket/prefix"
        if not path.startswith("/"):
            return "must be an absolute path, pvc://claim/path or s3://bucket/prefix"
    if any(part == ".." for part in path.split("/")):
        return "must not contain '..' segments"
    return None


def new_service_uuid() -> str:
    """A public service id such as `svc-3f9c1a2b4d5e`."""
    return f"svc-{secrets.token_hex(6)}"


def new_job_uuid() -> str:
    """A public job id such as `job-9b1c…`."""
    return f"job-{secrets.token_hex(8)}"


def new_secret(prefix: str) -> str:
    """A random secret with a recognisable prefix (`spk_`, `spt_`, …)."""
    return f"{prefix}{secrets.token_urlsafe(32)}"


def hash_secret(secret: str) -> str:
    """SHA-256 hex digest used to store tokens and API keys."""
    return hashlib.sha256(secret.encode()).hexdigest()


def secrets_match(stored_hash: str, presented: str) -> bool:
    """Constant-time comparison of a stored hash with a presented secret."""
    return hmac.compare_digest(stored_hash, hash_secret(presented))


def namespace_for(prefix: str, customer_id: int) -> str:
    """The Kubernetes namespace holding a customer's services."""
    return f"{prefix}customer-{customer_id}"


def object_name(service_name: str, version: int) -> str:
    """`<name>-v<N>`, shortened with a stable hash when it would pass 63 characters."""
    suffix = f"-v{version}"
    full = service_name + suffix
    if len(full) <= 63:
        return full
    digest = hashlib.sha256(service_name.encode()).hexdigest()[:8]
    head = service_name[: 63 - len(suffix) - 9].rstrip("-")
    return f"{head}-{digest}{suffix}"


def failure_info(
    reason: str,
    message: str,
    *,
    location: str | None = None,
    exit_code: int | None = None,
) -> dict[str, object]:
    """A failure a user can act on: {reason, message, location, exit_code, time}."""
    from datetime import UTC, datetime

    return {
        "reason": reason,
        "message": message[:2000],
        "location": location,
        "exit_code": exit_code,
        "time": datetime.now(UTC).isoformat(),
    }
