"""Alembic environment: migrates the connection it is handed, or the configured database."""

from alembic import context

from bot.storage.models import Base

target_metadata = Base.metadata


def run_migrations(connection) -> None:  # type: ignore[no-untyped-def]
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        render_as_batch=connection.dialect.name == "sqlite",  # SQLite needs batch ALTERs
    )
    with context.begin_transaction():
        context.run_migrations()


connection = context.config.attributes.get("connection")
if connection is not None:
    run_migrations(connection)
else:  # the plain `alembic` command line: use the configured database
    from bot.config import Settings
    from bot.storage.db import make_engine

    engine = make_engine(context.config.get_main_option("sqlalchemy.url") or Settings().sqlalchemy_url)
    with engine.connect() as conn:
        run_migrations(conn)
        conn.commit()
