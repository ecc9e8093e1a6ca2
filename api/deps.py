"""Dependencies: the request's database session and the authenticated customer."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession, async_sessionmaker

from api.errors import Forbidden, Unauthorized
from db.domain import hash_secret
from db.repositories import customers as customers_repo

TOKEN_CACHE_SECONDS = 5.0


@dataclass(frozen=True)
class Principal:
    """Who is calling: a customer, possibly with an admin token."""

    customer_id: int
    name: str
    is_admin: bool


async def get_session(request: Request) -> AsyncIterator[AsyncSession]:
    """One session per request; routers commit before enqueueing, anything else rolls back."""
    async with request.app.state.sessionmaker() as session:
        yield session


SessionDep = Annotated[AsyncSession, Depends(get_session)]


async def get_read_connection(request: Request) -> AsyncIterator[AsyncConnection]:
    """A pooled connection in autocommit, for hot single-statement reads (what clients poll)."""
    async with request.app.state.read_engine.connect() as connection:
        yield connection


ReadConnection = Annotated[AsyncConnection, Depends(get_read_connection)]

_token_cache: dict[str, tuple[float, Principal]] = {}


def bearer_token(authorization: str | None) -> str | None:
    """The bearer token of an Authorization header value, if any."""
    scheme, _, token = (authorization or "").partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return token.strip()


async def principal_for_token(
    sessionmaker: async_sessionmaker[AsyncSession], authorization: str | None
) -> Principal | None:
    """The principal behind an Authorization header (cached briefly by token hash), or None."""
    token = bearer_token(authorization)
    if token is None:
        return None
    key = hash_secret(token)
    cached = _token_cache.get(key)
    now = time.monotonic()
    if cached is not None and cached[0] > now:
        return cached[1]
    async with sessionmaker() as session:
        found = await session.run_sync(customers_repo.customer_for_token, token)
    if found is None:
        return None
    customer, is_admin = found
    principal = Principal(customer.id, customer.name, is_admin)
    if len(_token_cache) > 10_000:
        _token_cache.clear()
    _token_cache[key] = (now + TOKEN_CACHE_SECONDS, principal)
    return principal


async def current_principal(request: Request) -> Principal:
    """Authenticate the request's bearer token; 401 when missing or unknown."""
    authorization = request.headers.get("authorization")
    if bearer_token(authorization) is None:
        raise Unauthorized("missing bearer token", headers={"WWW-Authenticate": "Bearer"})
    principal = await principal_for_token(request.app.state.sessionmaker, authorization)
    if principal is None:
        raise Unauthorized("invalid token", headers={"WWW-Authenticate": "Bearer"})
    return principal


CurrentCustomer = Annotated[Principal, Depends(current_principal)]


async def admin_principal(principal: CurrentCustomer) -> Principal:
    """Only admin tokens pass."""
    if not principal.is_admin:
        raise Forbidden("admin token required")
    return principal


AdminDep = Annotated[Principal, Depends(admin_principal)]
