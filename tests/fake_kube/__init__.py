"""A faithful fake Kubernetes API server for tests: `FakeKube` and pod `Behavior` modes."""

from .behavior import MODES, Behavior
from .fake import FakeKube

__all__ = ["MODES", "Behavior", "FakeKube"]
