"""Runtime drivers; `get_runtime()` picks the one named by SERVEPLANE_RUNTIME."""

from __future__ import annotations

from functools import lru_cache

from db.settings import get_settings
from workers.runtime.base import Runtime


@lru_cache(maxsize=1)
def get_runtime() -> Runtime:
    """The process's runtime driver."""
    settings = get_settings()
    if settings.runtime == "local":
        from workers.runtime.local import LocalRuntime

        return LocalRuntime(settings)
    from workers.runtime.kubernetes import KubernetesRuntime

    return KubernetesRuntime(settings)
