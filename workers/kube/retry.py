"""The one retry policy for Kubernetes calls: capped exponential backoff with jitter."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from tenacity import (
    RetryCallState,
    Retrying,
    retry_if_exception_type,
    stop_after_attempt,
    wait_exponential_jitter,
)

from workers.kube.errors import Conflict, TooManyRequests, Transient

T = TypeVar("T")
RETRYABLE = (Transient, TooManyRequests, Conflict)


class _Wait:
    """Honour Retry-After on 429; otherwise exponential backoff with jitter."""

    def __init__(self, max_wait: float) -> None:
        self.max_wait = max_wait
        self.backoff = wait_exponential_jitter(initial=0.05, max=max_wait, jitter=0.1)

    def __call__(self, state: RetryCallState) -> float:
        exc = state.outcome.exception() if state.outcome else None
        if isinstance(exc, TooManyRequests) and exc.retry_after is not None:
            return min(exc.retry_after, self.max_wait)
        return float(self.backoff(state))


def call_with_retry(
    fn: Callable[..., T],
    *args: Any,
    attempts: int,
    max_wait: float,
    retry_conflicts: bool = True,
    **kwargs: Any,
) -> T:
    """Run `fn`, retrying transient failures; the last error is raised as is."""
    kinds = RETRYABLE if retry_conflicts else (Transient, TooManyRequests)
    for attempt in Retrying(
        retry=retry_if_exception_type(kinds),
        wait=_Wait(max_wait),
        stop=stop_after_attempt(attempts),
        reraise=True,
    ):
        with attempt:
            return fn(*args, **kwargs)
    raise AssertionError("unreachable")  # pragma: no cover
