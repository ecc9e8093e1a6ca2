"""Alembic environment: migrates the database named by DATABASE_URL."""

from alembic import context
from sqlalchemy import create_engine, pool

from db.models import Base
from db.settings import get_settings

config = context.config
url = config.get_main_option("sqlalchemy.url") or get_settings().sync_database_url


def run_migrations_online() -> None:
    """Run migrations against a live connection."""
    engine = create_engine(url, poolclass=pool.NullPool)
    with engine.connect() as connection:
        context.configure(connection=connection, target_metadata=Base.metadata)
        with context.begin_transaction():
            context.run_migrations()


if context.is_offline_mode():
    context.configure(url=url, target_metadata=Base.metadata, literal_binds=True)
    with context.begin_transaction():
        context.run_migrations()
else:
    run_migrations_online()
