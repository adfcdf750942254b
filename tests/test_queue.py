import asyncio
import threading

import pytest

from bot.services.queue import FairQueue, QueueFull, RateLimiter, TooManyPending


async def test_waiting_jobs_are_served_round_robin_across_users() -> None:
    queue = FairQueue(workers=1, max_waiting=100, max_per_key=10)
    gate = threading.Event()
    order: list[str] = []

    def job(name: str) -> str:
        gate.wait(5)
        order.append(name)
        return name

    # The flooder queues five questions before anyone else; the worker is held on the first.
    tasks = [asyncio.create_task(queue.run("flooder", job, f"f{i}")) for i in range(5)]
    await asyncio.sleep(0.05)
    tasks += [asyncio.create_task(queue.run(user, job, user)) for user in ("alice", "bob")]
    await asyncio.sleep(0.05)
    gate.set()
    await asyncio.gather(*tasks)
    await queue.close()
    # Alice and Bob are served right after the flooder's first question, not after all five.
    assert order == ["f0", "alice", "bob", "f1", "f2", "f3", "f4"]


async def test_bounds_refuse_with_clear_messages() -> None:
    queue = FairQueue(workers=1, max_waiting=2, max_per_key=1)
    gate = threading.Event()
    running = asyncio.create_task(queue.run("a", gate.wait, 5))
    await asyncio.sleep(0.05)
    with pytest.raises(TooManyPending, match="previous question"):
        await queue.run("a", lambda: None)
    waiting = [asyncio.create_task(queue.run(k, lambda: None)) for k in ("b", "c")]
    await asyncio.sleep(0.05)
    with pytest.raises(QueueFull, match="try again"):
        await queue.run("d", lambda: None)
    gate.set()
    await asyncio.gather(running, *waiting)
    await queue.close()


async def test_errors_reach_the_caller_and_the_worker_survives() -> None:
    queue = FairQueue()

    def boom() -> None:
        raise RuntimeError("model crashed")

    with pytest.raises(RuntimeError, match="model crashed"):
        await queue.run("a", boom)
    assert await queue.run("a", lambda: 42) == 42
    await queue.close()


def test_rate_limiter_allows_a_burst_then_says_when() -> None:
    now = [0.0]
    limiter = RateLimiter(per_minute=3, clock=lambda: now[0])
    assert [limiter.retry_after("u") for _ in range(3)] == [0.0, 0.0, 0.0]
    now[0] = 20.0
    assert limiter.retry_after("u") == pytest.approx(40.0)
    assert limiter.retry_after("other") == 0.0
    now[0] = 60.5
    assert limiter.retry_after("u") == 0.0


async def test_all_workers_generate_at_once_however_small_the_default_pool() -> None:
    """Eight workers run eight jobs together, even where the event loop's default thread pool
    (shared with ratings and /reset) has two threads, as on a 2-core host."""
    from concurrent.futures import ThreadPoolExecutor

    asyncio.get_running_loop().set_default_executor(ThreadPoolExecutor(max_workers=2))
    queue = FairQueue(workers=8, max_waiting=100, max_per_key=8)
    barrier = threading.Barrier(8, timeout=5)  # breaks unless all eight are inside at once
    results = await asyncio.gather(*(queue.run(i, barrier.wait) for i in range(8)))
    assert sorted(results) == list(range(8))
    assert await asyncio.to_thread(lambda: "the default pool is free") == "the default pool is free"
    await queue.close()
