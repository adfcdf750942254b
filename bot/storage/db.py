"""Engine, sessions and migrations.

SQLite runs in WAL mode with a busy timeout. Write transactions start with `BEGIN IMMEDIATE`:
a deferred transaction that reads first and writes later cannot upgrade its lock while another
connection writes (SQLite answers "database is locked" at once, without waiting), so every
write path takes the write lock up front and simply waits its turn.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from sqlalchemy import Engine, create_engine, event, inspect, text
from sqlalchemy.orm import Session, sessionmaker

logger = logging.getLogger(__name__)

def _migrations_dir() -> Path:
    """The Alembic scripts: shipped as `bot.migrations` (from the top-level alembic/ folder)."""
    from importlib.util import find_spec

    spec = find_spec("bot.migrations")
    if spec is not None and spec.submodule_search_locations:
        return Path(next(iter(spec.submodule_search_locations)))
    return Path(__file__).resolve().parents[2] / "alembic"  # a source tree on sys.path


ALEMBIC_DIR = _migrations_dir()
BUSY_TIMEOUT_MS = 30_000


def head_revision() -> str:
    """The newest migration's revision, read from the file names (`NNNN_what.py`, revision
    "NNNN"; a test checks this is Alembic's head) without loading Alembic."""
    return max(p.name.split("_", 1)[0] for p in (ALEMBIC_DIR / "versions").glob("[0-9]*_*.py"))


def make_engine(url: str) -> Engine:
    """Create an engine; SQLite gets WAL, foreign keys, a busy timeout and explicit BEGINs."""
    if not url.startswith("sqlite"):
        return create_engine(url, pool_pre_ping=True)
    if url.startswith("sqlite:///") and url != "sqlite:///:memory:":
        Path(url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
    engine = create_engine(url, connect_args={"timeout": BUSY_TIMEOUT_MS / 1000})

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn, _record):
        dbapi_conn.isolation_level = None  # let the "begin" hook below issue BEGIN itself
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
        cur.execute("PRAGMA foreign_keys=ON")
        cur.execute("PRAGMA synchronous=NORMAL")
        cur.execute("PRAGMA secure_delete=ON")  # deleted rows are overwritten, not left in free pages
        cur.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn):
        immediate = conn.get_execution_options().get("sqlite_immediate", False)
        conn.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")

    return engine


class Database:
    """Owns the engine; hands out read and write sessions that commit or roll back as a unit."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.engine = make_engine(url)
        self.is_sqlite = self.engine.dialect.name == "sqlite"
        writer = self.engine.execution_options(sqlite_immediate=True) if self.is_sqlite else self.engine
        self._read = sessionmaker(self.engine, expire_on_commit=False)
        self._write = sessionmaker(writer, expire_on_commit=False)

    @contextmanager
    def read(self) -> Iterator[Session]:
        with self._read() as session:
            yield session

    @contextmanager
    def write(self) -> Iterator[Session]:
        with self._write() as session, session.begin():
            yield session

    def upgrade(self) -> None:
        """Bring the schema to the newest Alembic revision (safe to call on every start).

        A database already at the newest revision is only read: no Alembic import, no script
        parsing, no write lock (a third of a second off every command-line start)."""
        if self.revision() == head_revision():
            return
        from alembic import command
        from alembic.config import Config

        cfg = Config()
        cfg.set_main_option("script_location", str(ALEMBIC_DIR))
        writer = self.engine.execution_options(sqlite_immediate=True) if self.is_sqlite else self.engine
        with writer.connect() as conn:
            cfg.attributes["connection"] = conn
            command.upgrade(cfg, "head")
            conn.commit()

    def revision(self) -> str | None:
        """The schema revision Alembic recorded, None for a database it never touched."""
        with self.engine.connect() as conn:
            if not inspect(conn).has_table("alembic_version"):
                return None
            return conn.execute(text("SELECT version_num FROM alembic_version")).scalar()

    def scrub(self) -> None:
        """After deleting personal data: move the write-ahead log into the database file and
        truncate it, so no copy of the deleted rows stays in the -wal file (secure_delete has
        already zeroed them in the file's pages). PostgreSQL's VACUUM runs on its own."""
        if self.is_sqlite:
            with self.engine.connect() as conn:
                conn.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)")

    def dispose(self) -> None:
        self.engine.dispose()
