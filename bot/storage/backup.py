"""`assistant db backup` / `db restore`: the database and the adapters, copied consistently.

SQLite is copied with its online backup API, so a backup taken while the bot answers, the
nightly run trains or an admin adds documents is still one consistent snapshot. The adapter
directories are immutable once committed; they are copied first and the `CURRENT` pointer
last, so a backup never names an adapter it lacks. Chroma is not copied: it is an index that
`restore` rebuilds from the documents in SQL. PostgreSQL has `pg_dump` for this; `backup`
says how instead of reimplementing it.
"""

from __future__ import annotations

import json
import shutil
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy.engine import make_url

DATABASE_FILE = "assistant.db"
ADAPTERS = "adapters"
MANIFEST = "manifest.json"


class BackupError(RuntimeError):
    """A backup or restore that cannot go ahead; the message says what to do."""


@dataclass(frozen=True)
class BackupReport:
    path: Path
    database_bytes: int
    adapters: list[str]
    current_adapter: str | None


def _sqlite_path(url: str) -> Path:
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite" or not parsed.database:
        raise BackupError(
            "DATABASE_URL points at a server database. Back it up with its own tool, e.g. "
            "`pg_dump --format=custom --file=assistant.dump \"$DATABASE_URL\"` and restore with "
            "`pg_restore --clean --dbname=\"$DATABASE_URL\" assistant.dump`; then copy "
            "{data_dir}/adapters yourself, or run `assistant db backup` for the adapters only "
            "with a SQLite DATABASE_URL.")
    return Path(parsed.database)


def _copy_adapters(source: Path, target: Path) -> tuple[list[str], str | None]:
    """Committed versions first, then the pointer and history; staging dirs are skipped."""
    if not source.is_dir():
        return [], None
    target.mkdir(parents=True, exist_ok=True)
    versions = sorted(p.name for p in source.iterdir()
                      if p.is_dir() and not p.name.startswith("."))
    for version in versions:
        shutil.copytree(source / version, target / version, dirs_exist_ok=True)
    for name in ("history.jsonl", "CURRENT"):  # CURRENT last: it names a version copied above
        if (source / name).exists():
            shutil.copy2(source / name, target / name)
    current = (target / "CURRENT").read_text().strip() if (target / "CURRENT").exists() else None
    return versions, current or None


def backup(database_url: str, adapters_dir: Path, target: Path) -> BackupReport:
    """Write a backup of the SQLite database and the adapters into the new directory `target`."""
    source = _sqlite_path(database_url)
    if not source.exists():
        raise BackupError(f"No database at {source}: nothing to back up.")
    if target.exists() and any(target.iterdir()):
        raise BackupError(f"{target} is not empty; choose a new directory for the backup.")
    target.mkdir(parents=True, exist_ok=True)
    with sqlite3.connect(source) as src, sqlite3.connect(target / DATABASE_FILE) as dst:
        src.backup(dst)  # online: pages are copied under a read transaction, retried on change
    versions, current = _copy_adapters(adapters_dir, target / ADAPTERS)
    (target / MANIFEST).write_text(json.dumps({
        "created_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "database": DATABASE_FILE,
        "adapters": versions, "current_adapter": current}, indent=2))
    return BackupReport(target, (target / DATABASE_FILE).stat().st_size, versions, current)


def restore(source: Path, database_url: str, adapters_dir: Path, force: bool = False) -> dict:
    """Put the backup in `source` in place of the configured database and adapters. Refuses to
    overwrite a database that exists unless `force`. The caller rebuilds the Chroma index."""
    manifest_path = source / MANIFEST
    if not manifest_path.exists() or not (source / DATABASE_FILE).exists():
        raise BackupError(f"{source} is not a backup made by `assistant db backup`.")
    manifest = json.loads(manifest_path.read_text())
    target = _sqlite_path(database_url)
    if target.exists() and not force:
        raise BackupError(f"A database already exists at {target}; restoring would replace it. "
                          "Use --force to replace it (and its adapters).")
    target.parent.mkdir(parents=True, exist_ok=True)
    for suffix in ("-wal", "-shm", "-journal"):  # a stale log would be replayed onto the copy
        target.with_name(target.name + suffix).unlink(missing_ok=True)
    with sqlite3.connect(source / DATABASE_FILE) as src, sqlite3.connect(target) as dst:
        src.backup(dst)
    if (source / ADAPTERS).is_dir():
        if adapters_dir.exists():
            shutil.rmtree(adapters_dir)
        _copy_adapters(source / ADAPTERS, adapters_dir)
    return dict(manifest)
