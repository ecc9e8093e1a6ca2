"""Fault injection settings, request statistics and the concurrent-write detector."""

from __future__ import annotations

import random
import re
import threading
from dataclasses import dataclass
from typing import Any

VERBS = ("get", "list", "watch", "create", "update", "patch", "delete", "deletecollection")


@dataclass
class FaultConfig:
    """What fraction of API requests fail or hang, and how."""

    error_rate: float = 0.0
    codes: tuple[int, ...] = (500, 429)
    retry_after: int = 1
    hang_rate: float = 0.0
    hang_seconds: float = 30.0
    path_regex: str | None = None


class Faults:
    """Decides per request whether to inject an error or a hang."""

    def __init__(self) -> None:
        self.config = FaultConfig()
        self._regex: re.Pattern[str] | None = None
        self.rng = random.Random()

    def configure(self, config: FaultConfig) -> None:
        """Replace the fault settings."""
        for code in config.codes:
            if code not in (500, 429, 503, 504, 409, 422, 403):
                raise ValueError(f"unsupported fault code {code}")
        self._regex = re.compile(config.path_regex) if config.path_regex else None
        self.config = config

    def decide(self, path: str) -> tuple[str, Any] | None:
        """("error", code) / ("hang", seconds) / None for one request path."""
        cfg = self.config
        if cfg.error_rate <= 0 and cfg.hang_rate <= 0:
            return None
        if self._regex is not None and not self._regex.search(path):
            return None
        if cfg.error_rate > 0 and self.rng.random() < cfg.error_rate:
            return ("error", self.rng.choice(cfg.codes))
        if cfg.hang_rate > 0 and self.rng.random() < cfg.hang_rate:
            return ("hang", cfg.hang_seconds)
        return None


class Stats:
    """Counters of API requests by verb and by "verb resource"."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.reset()

    def reset(self) -> None:
        """Zero every counter."""
        with self.lock:
            self.by_verb = dict.fromkeys(VERBS, 0)
            self.by_verb_resource: dict[str, int] = {}
            self.faults_injected = 0
            self.discovery = 0
            self.concurrent_violations = 0

    def count(self, verb: str, resource: str) -> None:
        """Record one API request."""
        with self.lock:
            if verb == "discovery":
                self.discovery += 1
                return
            self.by_verb[verb] = self.by_verb.get(verb, 0) + 1
            key = f"{verb} {resource}"
            self.by_verb_resource[key] = self.by_verb_resource.get(key, 0) + 1

    def fault(self) -> None:
        """Record one injected fault."""
        with self.lock:
            self.faults_injected += 1

    def snapshot(self) -> dict[str, Any]:
        """Copy of all counters (total excludes discovery requests)."""
        with self.lock:
            return {
                "total": sum(self.by_verb.values()),
                "by_verb": dict(self.by_verb),
                "by_verb_resource": dict(self.by_verb_resource),
                "faults_injected": self.faults_injected,
                "discovery": self.discovery,
                "concurrent_violations": self.concurrent_violations,
            }


class InFlight:
    """Tracks mutating requests in flight per object to detect overlapping writers."""

    def __init__(self, stats: Stats) -> None:
        self.stats = stats
        self.active: dict[tuple[str, str, str], int] = {}
        self.violation_keys: list[tuple[str, str, str]] = []

    def enter(self, key: tuple[str, str, str]) -> None:
        """A mutating request for `key` started; counts a violation if one is already active."""
        n = self.active.get(key, 0)
        if n:
            with self.stats.lock:
                self.stats.concurrent_violations += 1
                self.violation_keys.append(key)
        self.active[key] = n + 1

    def leave(self, key: tuple[str, str, str]) -> None:
        """The request for `key` finished."""
        n = self.active.get(key, 1) - 1
        if n:
            self.active[key] = n
        else:
            self.active.pop(key, None)
