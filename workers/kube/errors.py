"""serveplane's own Kubernetes error types; nothing outside workers/kube sees ApiException."""

from __future__ import annotations

import json
from typing import Any


class KubeError(Exception):
    """Base of every Kubernetes failure."""

    def __init__(self, message: str, *, status: int | None = None, reason: str | None = None):
        super().__init__(message)
        self.message = message
        self.status = status
        self.reason = reason


class NotFound(KubeError):
    """404: the object (or its namespace) does not exist."""


class Conflict(KubeError):
    """409: already exists or a stale resourceVersion."""


class TooManyRequests(KubeError):
    """429: the API server asks us to slow down."""

    def __init__(self, message: str, *, retry_after: float | None = None, **kw: Any) -> None:
        super().__init__(message, **kw)
        self.retry_after = retry_after


class Transient(KubeError):
    """5xx, timeouts and connection errors: worth retrying."""


class Permanent(KubeError):
    """400/401/403/422 and the like: retrying will not help."""


def _status_message(body: Any) -> tuple[str | None, str | None]:
    try:
        data = json.loads(body) if isinstance(body, str | bytes) else None
    except ValueError:
        return None, None
    if isinstance(data, dict):
        return data.get("message"), data.get("reason")
    return None, None


def from_http(status: int, body: Any, headers: Any, default: str) -> KubeError:
    """Translate an HTTP error answer of the API server into our types."""
    message, reason = _status_message(body)
    message = message or default
    kw: dict[str, Any] = {"status": status, "reason": reason}
    if status == 404:
        return NotFound(message, **kw)
    if status == 409:
        return Conflict(message, **kw)
    if status == 429:
        retry_after = None
        try:
            retry_after = float((headers or {}).get("Retry-After", ""))
        except (TypeError, ValueError):
            retry_after = None
        return TooManyRequests(message, retry_after=retry_after, **kw)
    if status >= 500:
        return Transient(message, **kw)
    return Permanent(message, **kw)
