"""Kubernetes `Status` error bodies and the exception that carries them."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .resources import ResourceInfo


@dataclass
class FieldError:
    """One validation cause (like k8s.io/apimachinery field.Error)."""

    kind: str  # Required | Invalid | Forbidden | NotSupported | Duplicate | TooLong
    field: str
    value: Any = None
    detail: str = ""

    REASONS = {
        "Required": "FieldValueRequired",
        "Invalid": "FieldValueInvalid",
        "Forbidden": "FieldValueForbidden",
        "NotSupported": "FieldValueNotSupported",
        "Duplicate": "FieldValueDuplicate",
        "TooLong": "FieldValueTooLong",
    }

    @property
    def message(self) -> str:
        """Cause message without the field prefix, as the real server renders it."""
        if self.kind == "Required":
            head = "Required value"
        elif self.kind == "Forbidden":
            head = "Forbidden"
        elif self.kind == "NotSupported":
            head = f"Unsupported value: {go_repr(self.value)}"
        elif self.kind == "Duplicate":
            head = f"Duplicate value: {go_repr(self.value)}"
        elif self.kind == "TooLong":
            head = f"Too long: {go_repr(self.value)}"
        else:
            head = f"Invalid value: {go_repr(self.value)}"
        return f"{head}: {self.detail}" if self.detail else head

    def cause(self) -> dict[str, Any]:
        """Render as a StatusCause."""
        return {"reason": self.REASONS[self.kind], "message": self.message, "field": self.field}

    def __str__(self) -> str:
        return f"{self.field}: {self.message}"


def go_repr(value: Any) -> str:
    """Approximate Go's %#v / %q rendering used in validation messages."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return str(value)
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, dict) and all(isinstance(v, str) for v in value.values()):
        inner = ", ".join(f"{json.dumps(k)}:{json.dumps(v)}" for k, v in value.items())
        return "map[string]string{" + inner + "}"
    if value is None:
        return "null"
    return json.dumps(value, separators=(",", ":"))


class ApiError(Exception):
    """An API failure that renders as a v1 Status body."""

    def __init__(
        self,
        code: int,
        reason: str,
        message: str,
        details: dict[str, Any] | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.code = code
        self.reason = reason
        self.message = message
        self.details = details
        self.headers = headers or {}

    def body(self) -> dict[str, Any]:
        """The Status object for this error."""
        out: dict[str, Any] = {
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
        }
        if self.details is not None:
            out["details"] = self.details
        out["code"] = self.code
        return out


def _details(res: ResourceInfo | None, name: str, kind: str | None = None) -> dict[str, Any]:
    """StatusDetails with the empty group omitted, as the server does."""
    d: dict[str, Any] = {"name": name}
    if res is not None and res.group:
        d["group"] = res.group
    d["kind"] = kind if kind is not None else (res.plural if res else "")
    return d


def not_found(res: ResourceInfo, name: str) -> ApiError:
    """404 NotFound for a named object."""
    return ApiError(404, "NotFound", f'{res.qualified} "{name}" not found', _details(res, name))


def namespace_not_found(ns: str) -> ApiError:
    """404 for a missing namespace on create."""
    return ApiError(
        404, "NotFound", f'namespaces "{ns}" not found', {"name": ns, "kind": "namespaces"}
    )


def already_exists(res: ResourceInfo, name: str) -> ApiError:
    """409 AlreadyExists."""
    return ApiError(
        409, "AlreadyExists", f'{res.qualified} "{name}" already exists', _details(res, name)
    )


def conflict(res: ResourceInfo, name: str, why: str | None = None) -> ApiError:
    """409 Conflict for an optimistic-concurrency failure."""
    why = why or (
        "the object has been modified; please apply your changes to the latest version and "
        "try again"
    )
    msg = f'Operation cannot be fulfilled on {res.qualified} "{name}": {why}'
    return ApiError(409, "Conflict", msg, _details(res, name))


def invalid(res: ResourceInfo, name: str, errors: list[FieldError]) -> ApiError:
    """422 Invalid with one cause per field error."""
    joined = str(errors[0]) if len(errors) == 1 else "[" + ", ".join(str(e) for e in errors) + "]"
    msg = f'{res.group_kind} "{name}" is invalid: {joined}'
    details = _details(res, name, res.kind)
    details["causes"] = [e.cause() for e in errors]
    return ApiError(422, "Invalid", msg, details)


def invalid_options(kind: str, errors: list[FieldError]) -> ApiError:
    """422 for invalid request options (e.g. PatchOptions without fieldManager)."""
    joined = str(errors[0]) if len(errors) == 1 else "[" + ", ".join(map(str, errors)) + "]"
    msg = f'{kind}.meta.k8s.io "" is invalid: {joined}'
    details = {"group": "meta.k8s.io", "kind": kind, "causes": [e.cause() for e in errors]}
    return ApiError(422, "Invalid", msg, details)


def bad_request(message: str) -> ApiError:
    """400 BadRequest."""
    return ApiError(400, "BadRequest", message)


def method_not_allowed() -> ApiError:
    """405 MethodNotAllowed."""
    msg = "the server does not allow this method on the requested resource"
    return ApiError(405, "MethodNotAllowed", msg, {})


def unsupported_media_type(content_type: str, accepted: list[str]) -> ApiError:
    """415 UnsupportedMediaType."""
    msg = (
        f"the body of the request was in an unknown format - accepted media types include: "
        f"{', '.join(accepted)}"
    )
    return ApiError(415, "UnsupportedMediaType", msg, {})


def path_not_found() -> ApiError:
    """404 for a path the server does not serve."""
    return ApiError(404, "NotFound", "the server could not find the requested resource", {})


def internal_error(message: str) -> ApiError:
    """500 InternalError."""
    msg = f"Internal error occurred: {message}"
    return ApiError(500, "InternalError", msg, {"causes": [{"message": message}]})


def too_many_requests(retry_after: int) -> ApiError:
    """429 TooManyRequests with Retry-After."""
    return ApiError(
        429,
        "TooManyRequests",
        "Too many requests, please try again later.",
        {"retryAfterSeconds": retry_after},
        {"Retry-After": str(retry_after)},
    )


def injected_fault(code: int, retry_after: int) -> ApiError:
    """The Status an injected fault answers with (500, 429, 503 or 504)."""
    if code == 429:
        return too_many_requests(retry_after)
    if code == 500:
        return internal_error("fake fault injected")
    if code == 422:
        # What a ValidatingAdmissionPolicy denial looks like on a real cluster.
        message = (
            "deployments.apps is forbidden: ValidatingAdmissionPolicy 'require-team-label' "
            "with binding 'require-team-label' denied request: every workload needs a team label"
        )
        return ApiError(422, "Invalid", message, {"causes": [{"message": message}]})
    if code == 403:
        message = (
            'admission webhook "policy.example.com" denied the request: images from this '
            "registry are not allowed"
        )
        return ApiError(403, "Forbidden", message, {})
    reason = {503: "ServiceUnavailable", 504: "Timeout", 409: "Conflict"}.get(code, "Unknown")
    return ApiError(code, reason, "fake fault injected", {})


def gone(message: str) -> ApiError:
    """410 Expired (too old resource version / continue token)."""
    return ApiError(410, "Expired", message)


def unprocessable_patch(err: str) -> ApiError:
    """422 for a JSON patch that cannot be applied."""
    msg = "the server rejected our request due to an error in our request"
    return ApiError(422, "Invalid", msg, {"causes": [{"message": err}]})
