"""Fair, bounded scheduling of blocking work (generation) and per-user rate limits.

The model answers one request at a time per worker. Waiting requests are served round-robin
across users, so one user with many questions cannot starve the others, and the queue has a
total bound and a per-user bound, so a flood is refused quickly instead of piling up.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Hashable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from bot.services import UserError

logger = logging.getLogger(__name__)

T = TypeVar("T")


class QueueFull(UserError):
    """Too many requests are waiting overall."""


class TooManyPending(UserError):
    """This user already has the most requests allowed in the queue."""


class FairQueue:
    """Runs blocking callables on `workers` threads, round-robin across keys."""

    def __init__(self, workers: int = 1, max_waiting: int = 64, max_per_key: int = 2) -> None:
        self.workers = workers
        # Its own threads: the event loop's default pool (min(32, cores + 4)) is shared with
        # ratings, /reset and the update dedupe, and is smaller than `workers` on small hosts.
        self._executor = ThreadPoolExecutor(max_workers=workers,
                                            thread_name_prefix="generation")
        self.max_waiting = max_waiting
        self.max_per_key = max_per_key
        self._queues: OrderedDict[Hashable, deque] = OrderedDict()
        self._pending: dict[Hashable, int] = {}  # waiting + running, per key
        self._last_served: dict[Hashable, int] = {}
        self._served = 0
        self._wakeup: asyncio.Event | None = None
        self._tasks: list[asyncio.Task] = []

    @property
    def waiting(self) -> int:
        return sum(len(q) for q in self._queues.values())

    def _start(self) -> None:
        if not self._tasks:
            self._wakeup = asyncio.Event()
            self._tasks = [asyncio.create_task(self._worker(), name=f"generation-worker-{i}")
                           for i in range(self.workers)]

    async def run(self, key: Hashable, func: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Run `func(*args, **kwargs)` in its turn; raises QueueFull or TooManyPending."""
        self._start()
        if self._pending.get(key, 0) >= self.max_per_key:
            raise TooManyPending.about("busy_user")
        if self.waiting >= self.max_waiting:
            raise QueueFull.about("busy_all")
        future: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        self._queues.setdefault(key, deque()).append((func, args, kwargs, future))
        self._pending[key] = self._pending.get(key, 0) + 1
        assert self._wakeup is not None  # made by _start, in the running loop
        self._wakeup.set()
        try:
            return await future
        finally:
            self._pending[key] -= 1
            if not self._pending[key]:
                del self._pending[key]

    def _next_job(self):
        """Pop the oldest job of the key served least recently (never served comes first)."""
        if not self._queues:
            return None
        key = min(self._queues, key=lambda k: self._last_served.get(k, -1))
        queue = self._queues[key]
        job = queue.popleft()
        if not queue:
            del self._queues[key]
        self._served += 1
        self._last_served[key] = self._served
        if len(self._last_served) > 10_000:  # forget long-idle keys
            idle = [k for k in self._last_served if k not in self._queues]
            for k in idle[: len(idle) // 2]:
                del self._last_served[k]
        return job

    async def _worker(self) -> None:
        while True:
            job = self._next_job()
            if job is None:
                assert self._wakeup is not None
                self._wakeup.clear()
                await self._wakeup.wait()
                continue
            func, args, kwargs, future = job
            if future.cancelled():
                continue
            try:
                result = await asyncio.get_running_loop().run_in_executor(
                    self._executor, functools.partial(func, *args, **kwargs))
            except Exception as exc:
                if not future.done():
                    future.set_exception(exc)
            else:
                if not future.done():
                    future.set_result(result)

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks = []
        self._executor.shutdown(wait=False, cancel_futures=True)


class RateLimiter:
    """At most `per_minute` events per key in any 60-second window."""

    def __init__(self, per_minute: int, clock: Callable[[], float] = time.monotonic) -> None:
        self.per_minute = per_minute
        self._clock = clock
        self._events: dict[Hashable, deque[float]] = {}

    def retry_after(self, key: Hashable) -> float:
        """0 if the event is allowed now (and counts it); else seconds until it would be."""
        if self.per_minute <= 0:
            return 0.0
        now = self._clock()
        events = self._events.setdefault(key, deque())
        while events and now - events[0] >= 60:
            events.popleft()
        if len(events) >= self.per_minute:
            return 60 - (now - events[0])
        events.append(now)
        return 0.0
