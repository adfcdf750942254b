"""Taking turns on one embedded Chroma directory between processes."""

from __future__ import annotations

import fcntl
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


class SharedStore:
    """The processes sharing one embedded Chroma directory (the bot, `assistant kb ...`, the
    nightly job) take turns through two files in it.

    Chroma's embedded mode is not safe for concurrent writers, and a process does not see the
    vectors another one added until it opens the store again. So a writer holds an exclusive
    `flock` on `.write.lock` (another writer waits; the kernel releases it if the process
    dies) and then bumps the counter in `.generation`; a process about to read or write whose
    last-seen counter is behind reopens its client first (~25 ms), under a shared lock so it
    never loads files a writer is half-way through. A Chroma server needs none of this.
    """

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self._lock_path = directory / ".write.lock"
        self._generation_path = directory / ".generation"

    @contextmanager
    def locked(self, exclusive: bool) -> Iterator[None]:
        self.directory.mkdir(parents=True, exist_ok=True)
        with open(self._lock_path, "a+b") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    def generation(self) -> int:
        try:
            return int(self._generation_path.read_text() or 0)
        except (FileNotFoundError, ValueError):
            return 0

    def bump(self) -> int:
        """Count one more write (the caller holds the exclusive lock)."""
        value = self.generation() + 1
        staged = self._generation_path.with_suffix(".tmp")
        staged.write_text(str(value))
        os.replace(staged, self._generation_path)
        return value
