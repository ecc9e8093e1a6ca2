"""Route table per service: key hash, status and the live traffic split, cached ≤ 1 s."""

from __future__ import annotations

import asyncio
import bisect
import random
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from api.gateway.upstream import Upstream
from db.repositories import services as services_repo

MAX_ENTRIES = 10_000


@dataclass(slots=True)
class VersionRoute:
    """One version that receives traffic: its share and its upstream base URLs."""

    number: int
    percent: int
    upstreams: tuple[Upstream, ...]
    header: bytes = b""
    _cursor: int = 0

    def __post_init__(self) -> None:
        self.header = str(self.number).encode()

    def rotation(self) -> tuple[Upstream, ...]:
        """Every upstream once, starting at the next one in round-robin order."""
        upstreams = self.upstreams
        if len(upstreams) == 1:
            return upstreams
        start = self._cursor
        self._cursor = (start + 1) % len(upstreams)
        return upstreams[start:] + upstreams[:start]


@dataclass(frozen=True, slots=True)
class ServiceRoute:
    """What the gateway needs to authorise and route one service's requests."""

    uuid: str
    name: str
    status: str
    key_hash: str | None
    versions: tuple[VersionRoute, ...]
    # Versions with traffic but no endpoint yet (counted so a pin to them gets a 503, not 404).
    unreachable: frozenset[int] = frozenset()
    _bounds: tuple[int, ...] = field(default=(), repr=False)

    @property
    def serving(self) -> bool:
        """At least one version has traffic and somewhere to send it."""
        return bool(self.versions)

    def pick(self) -> VersionRoute:
        """A version drawn at random, weighted by traffic_percent."""
        if len(self.versions) == 1:
            return self.versions[0]
        point = random.random() * self._bounds[-1]
        return self.versions[bisect.bisect_right(self._bounds, point)]

    def version(self, number: int) -> VersionRoute | None:
        """The serving version with this number, if any."""
        for version in self.versions:
            if version.number == number:
                return version
        return None


def build_route(uuid: str, rows: Sequence[Any]) -> ServiceRoute | None:
    """The route from `services_repo.gateway_snapshot` rows (None for an unknown service)."""
    if not rows:
        return None
    name, status, key_hash = rows[0][0], rows[0][1], rows[0][2]
    versions: list[VersionRoute] = []
    unreachable: set[int] = set()
    for _, _, _, number, percent, endpoints in rows:
        if number is None or not percent or percent <= 0:
            continue
        upstreams = tuple(
            u for u in (Upstream.parse(e) for e in endpoints or () if isinstance(e, str)) if u
        )
        if upstreams:
            versions.append(VersionRoute(number, percent, upstreams))
        else:
            unreachable.add(number)
    bounds: list[int] = []
    total = 0
    for version in versions:
        total += version.percent
        bounds.append(total)
    return ServiceRoute(
        uuid, name, status, key_hash, tuple(versions), frozenset(unreachable), tuple(bounds)
    )


async def load_route(
    sessionmaker: async_sessionmaker[AsyncSession], uuid: str
) -> ServiceRoute | None:
    """Read the service's route from PostgreSQL (one statement, one snapshot)."""
    async with sessionmaker() as session:
        rows = await session.run_sync(services_repo.gateway_snapshot, uuid)
    return build_route(uuid, rows)


class RouteCache:
    """Routes by service uuid for at most `ttl` seconds; one database read per miss."""

    def __init__(self, ttl: float = 1.0) -> None:
        self.ttl = ttl
        self._entries: dict[str, tuple[float, ServiceRoute | None]] = {}
        self._loading: dict[str, asyncio.Future[ServiceRoute | None]] = {}

    def configure(self, ttl: float) -> None:
        """Set the TTL and forget everything (a new app lifespan)."""
        self.ttl = ttl
        self._entries.clear()
        self._loading.clear()

    async def get(
        self, uuid: str, sessionmaker: async_sessionmaker[AsyncSession]
    ) -> ServiceRoute | None:
        """The cached route, or one fresh read shared by every request that missed."""
        entry = self._entries.get(uuid)
        if entry is not None and entry[0] > time.monotonic():
            return entry[1]
        task = self._loading.get(uuid)
        if task is None or task.get_loop() is not asyncio.get_running_loop():
            # A task of its own, so a caller that goes away does not cancel the others' read.
            task = asyncio.ensure_future(self._load(uuid, sessionmaker))
            self._loading[uuid] = task
        return await asyncio.shield(task)

    async def _load(
        self, uuid: str, sessionmaker: async_sessionmaker[AsyncSession]
    ) -> ServiceRoute | None:
        me = asyncio.current_task()
        try:
            route = await load_route(sessionmaker, uuid)
        finally:
            # After an invalidate() during the read the row may have changed since: don't keep it.
            current = self._loading.get(uuid) is me
            if current:
                del self._loading[uuid]
        if current:
            if len(self._entries) >= MAX_ENTRIES:
                self._entries.clear()
            self._entries[uuid] = (time.monotonic() + self.ttl, route)
        return route

    def invalidate(self, uuid: str) -> None:
        """Forget the service's route so the next request reads it again."""
        self._entries.pop(uuid, None)
        self._loading.pop(uuid, None)


ROUTES = RouteCache()


def invalidate(service_uuid: str) -> None:
    """Drop a service's cached route in this process (after a key rotation or a delete)."""
    ROUTES.invalidate(service_uuid)
