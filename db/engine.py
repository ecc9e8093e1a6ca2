"""Engines and sessions, created per process (never shared across a fork)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

from sqlalchemy import Engine, create_engine
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker, create_async_engine
from sqlalchemy.orm import Session, sessionmaker

from db.settings import get_settings

_engine: Engine | None = None
_session_factory: sessionmaker[Session] | None = None


def get_engine() -> Engine:
    """The process's synchronous engine (workers, CLI)."""
    global _engine, _session_factory
    if _engine is None:
        _engine = create_engine(
            get_settings().sync_database_url,
            pool_size=get_settings().worker_db_pool_size,
            max_overflow=5,
            pool_pre_ping=True,
            pool_timeout=10,
        )
        _session_factory = sessionmaker(_engine, expire_on_commit=False)
    return _engine


def dispose_engine() -> None:
    """Drop the engine (after a fork, or at shutdown)."""
    global _engine, _session_factory
    if _engine is not None:
        _engine.dispose(close=False)
    _engine = None
    _session_factory = None


@contextmanager
def session_scope() -> Iterator[Session]:
    """One transaction: commit on success, roll back on error."""
    get_engine()
    assert _session_factory is not None
    session = _session_factory()
    try:
        yield session
        session.commit()
    except BaseException:
        session.rollback()
        raise
    finally:
        session.close()
    for callback in session.info.pop("after_commit", []):
        callback()


def after_commit(session: Session, callback: Callable[[], None]) -> None:
    """Run `callback` once the session's transaction has committed (dropped on rollback)."""
    session.info.setdefault("after_commit", []).append(callback)


def create_api_engine() -> tuple[AsyncEngine, async_sessionmaker]:  # type: ignore[type-arg]
    """The API's async engine and session factory (one per app lifespan)."""
    engine = create_async_engine(
        get_settings().sync_database_url,
        # A fixed pool and a patient wait: a burst is served from the pool instead of churning
        # overflow connections, and waiting requests are not turned into 503s after 5 s.
        pool_size=get_settings().api_db_pool_size,
        max_overflow=0,
        pool_pre_ping=False,
        pool_timeout=30,
    )
    return engine, async_sessionmaker(engine, expire_on_commit=False)
