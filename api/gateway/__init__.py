"""The inference gateway: `/inference/{service_id}/...` → the service's model servers."""

from api.gateway.routes import invalidate

__all__ = ["invalidate"]
