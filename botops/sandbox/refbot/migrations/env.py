"""Alembic environment for the reference bot.

The database URL comes from the ``DATABASE_URL`` environment variable (or ``-x
database_url=...``). Plain ``postgresql://`` URLs, as found in the bot's configuration,
are accepted and converted to the ``postgresql+psycopg://`` dialect (psycopg 3).
"""

from __future__ import annotations

import os
from logging.config import fileConfig

from alembic import context
from sqlalchemy import create_engine, pool

config = context.config

if config.config_file_name is not None:
    fileConfig(config.config_file_name, disable_existing_loggers=False)

# The schema is described by the revision files only (no ORM models).
target_metadata = None


def sqlalchemy_url(url: str) -> str:
    """Return ``url`` with the psycopg 3 driver selected for SQLAlchemy."""
    for prefix in ("postgresql+psycopg://", "postgresql://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix):]
    raise RuntimeError(
        "DATABASE_URL must be a postgresql:// URL, got scheme "
        f"{url.split('://', 1)[0]!r}"
    )


def database_url() -> str:
    url = (
        context.get_x_argument(as_dictionary=True).get("database_url")
        or os.environ.get("DATABASE_URL")
        or config.get_main_option("sqlalchemy.url")
    )
    if not url:
        raise RuntimeError(
            "No database URL: set DATABASE_URL=postgresql://user:password@host:port/dbname"
        )
    return sqlalchemy_url(url)


def run_migrations_offline() -> None:
    context.configure(
        url=database_url(),
        target_metadata=target_metadata,
        literal_binds=True,
        dialect_opts={"paramstyle": "named"},
        transaction_per_migration=True,
    )
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    engine = create_engine(database_url(), poolclass=pool.NullPool)
    try:
        with engine.connect() as connection:
            context.configure(
                connection=connection,
                target_metadata=target_metadata,
                transaction_per_migration=True,
            )
            with context.begin_transaction():
                context.run_migrations()
    finally:
        engine.dispose()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
