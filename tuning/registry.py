"""The adapter registry: versioned directories that are never overwritten, and a pointer.

`{data_dir}/adapters/v0001/` … each holds a peft adapter and `meta.json`. `CURRENT` names the
serving version and is replaced atomically; `history.jsonl` records every promotion, so a
rollback goes back to the version served before. A version directory appears only when it is
complete: training writes into a hidden temporary directory that is renamed at the end.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bot.adapters import POINTER, current_adapter

_VERSION = re.compile(r"^v(\d{4,})$")
HISTORY = "history.jsonl"


class RegistryError(ValueError):
    """A registry operation that cannot be done; the message says why."""


class AdapterRegistry:
    def __init__(self, root: Path) -> None:
        self.root = root

    def versions(self) -> list[str]:
        if not self.root.exists():
            return []
        found = [p.name for p in self.root.iterdir() if p.is_dir() and _VERSION.match(p.name)]
        return sorted(found, key=lambda v: int(v[1:]))

    def current(self) -> str | None:
        found = current_adapter(self.root)
        return found[0] if found else None

    def path(self, version: str) -> Path:
        path = self.root / version
        if not _VERSION.match(version) or not (path / "adapter_config.json").exists():
            raise RegistryError(f"No adapter version {version!r}; see `assistant tune list`.")
        return path

    def meta(self, version: str) -> dict[str, Any]:
        try:
            return json.loads((self.path(version) / "meta.json").read_text())
        except FileNotFoundError:
            return {}

    def staging_dir(self) -> Path:
        """A fresh hidden directory to write a new adapter into (see `commit`)."""
        self.root.mkdir(parents=True, exist_ok=True)
        return Path(tempfile.mkdtemp(prefix=".staging-", dir=self.root))

    def commit(self, staging: Path, meta: dict[str, Any]) -> str:
        """Give a complete staged adapter the next version number; returns the version."""
        (staging / "meta.json").write_text(json.dumps(meta, indent=2, default=str))
        while True:
            numbers = [int(v[1:]) for v in self.versions()]
            version = f"v{(max(numbers) if numbers else 0) + 1:04d}"
            try:
                os.rename(staging, self.root / version)  # fails if it exists: never overwrite
                return version
            except OSError:
                if not (self.root / version).exists():
                    raise

    def discard_stale_staging(self) -> None:
        """Remove half-written adapters of interrupted runs (call only under the tuning lock)."""
        if self.root.exists():
            for stale in self.root.glob(".staging-*"):
                shutil.rmtree(stale, ignore_errors=True)

    def discard(self, staging: Path) -> None:
        shutil.rmtree(staging, ignore_errors=True)

    def _write_pointer(self, version: str) -> None:
        tmp = self.root / f".{POINTER}.tmp"
        tmp.write_text(version)
        os.replace(tmp, self.root / POINTER)  # atomic: readers see the old or the new name

    def promote(self, version: str, reason: str = "") -> None:
        """Make `version` the serving adapter."""
        self.path(version)
        previous = self.current()
        self._write_pointer(version)
        with open(self.root / HISTORY, "a", encoding="utf-8") as log:
            log.write(json.dumps({"at": datetime.now(UTC).isoformat(), "version": version,
                                  "previous": previous, "reason": reason}) + "\n")

    def history(self) -> list[dict[str, Any]]:
        try:
            lines = (self.root / HISTORY).read_text().splitlines()
        except FileNotFoundError:
            return []
        return [json.loads(line) for line in lines if line.strip()]

    def rollback(self) -> str | None:
        """Serve the version that was serving before the current one (None = base model)."""
        current = self.current()
        if current is None:
            raise RegistryError("Nothing to roll back: the base model is serving.")
        previous = next((h["previous"] for h in reversed(self.history())
                         if h["version"] == current and h.get("reason") != "rollback"), None)
        if previous is not None and previous not in self.versions():
            raise RegistryError(f"{previous}, served before {current}, was pruned; promote one "
                                "of `assistant tune list` instead.")
        if previous is None:
            (self.root / POINTER).unlink(missing_ok=True)
        else:
            self._write_pointer(previous)
        with open(self.root / HISTORY, "a", encoding="utf-8") as log:
            log.write(json.dumps({"at": datetime.now(UTC).isoformat(), "version": previous,
                                  "previous": current, "reason": "rollback"}) + "\n")
        return previous

    def prune(self, keep: int) -> list[str]:
        """Delete old versions, keeping the newest `keep`, the serving one and the `keep` served
        most recently (those a rollback returns to); `keep` 0 keeps all. Returns the deleted.

        A nightly run adds a version every night, ~11 MB for the packaged model whether it was
        promoted or not: unattended, that is 4 GB a year."""
        if keep <= 0:
            return []
        versions = self.versions()
        served: list[str] = []
        for entry in reversed(self.history()):
            for version in (entry.get("version"), entry.get("previous")):
                if version and version not in served:
                    served.append(version)
        kept = set(versions[-keep:]) | set(served[:keep]) | {self.current()}
        deleted = []
        for version in versions:
            if version in kept:
                continue
            doomed = self.root / f".deleted-{version}"
            os.rename(self.root / version, doomed)  # gone from `versions()` at once
            shutil.rmtree(doomed, ignore_errors=True)
            deleted.append(version)
        return deleted
