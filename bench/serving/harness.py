"""What every serving worker measures, in the same way (standard library only: the llama.cpp
worker runs in its own virtual environment, without the project's dependencies).

A runtime is one function, `generate(prompt, on_token) -> tokens`, that calls `on_token()` as
each token arrives and returns how many it generated. The harness times it:

  * single chat, one prompt after another: time to first token, reply time, decode tokens/s
    (tokens after the first, over the time after the first);
  * N chats at once (threads started together, each with its own prompt): total generated
    tokens/s over the wall time, and each chat's wait until its whole reply was there.
"""

from __future__ import annotations

import json
import resource
import statistics
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

Generate = Callable[[Any, Callable[[], None]], int]


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))] if ordered else 0.0


def timed(generate: Generate, prompt: Any) -> dict[str, float]:
    """One reply: seconds to the first token, seconds to the whole reply, tokens."""
    started = time.perf_counter()
    first: list[float] = []

    def on_token() -> None:
        if not first:
            first.append(time.perf_counter() - started)

    tokens = generate(prompt, on_token)
    reply = time.perf_counter() - started
    return {"ttft": first[0] if first else reply, "reply": reply, "tokens": tokens}


def single(generate: Generate, prompts: list[Any]) -> dict[str, float]:
    """One chat at a time over every prompt."""
    runs = [timed(generate, p) for p in prompts]
    decode = [(r["tokens"] - 1) / (r["reply"] - r["ttft"]) for r in runs
              if r["tokens"] > 1 and r["reply"] > r["ttft"]]
    replies = [r["reply"] for r in runs]
    return {"prompts": len(runs), "ttft_s": round(statistics.median(r["ttft"] for r in runs), 3),
            "reply_p50_s": round(percentile(replies, 0.5), 3),
            "reply_p95_s": round(percentile(replies, 0.95), 3),
            "decode_tok_s": round(statistics.median(decode), 1) if decode else 0.0,
            "answer_tokens_p50": statistics.median(r["tokens"] for r in runs)}


def concurrent(generate: Generate, prompts: list[Any], chats: int) -> dict[str, float]:
    """`chats` chats asking at the same moment."""
    barrier = threading.Barrier(chats + 1)
    results: list[dict[str, float] | None] = [None] * chats
    errors: list[BaseException] = []

    def chat(i: int) -> None:
        barrier.wait()
        try:
            results[i] = timed(generate, prompts[i % len(prompts)])
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=chat, args=(i,)) for i in range(chats)]
    for thread in threads:
        thread.start()
    barrier.wait()
    started = time.perf_counter()
    for thread in threads:
        thread.join()
    wall = time.perf_counter() - started
    if errors:
        raise errors[0]
    done = [r for r in results if r is not None]
    waits = [r["reply"] for r in done]
    return {"chats": chats, "total_tok_s": round(sum(r["tokens"] for r in done) / wall, 1),
            "wait_p50_s": round(percentile(waits, 0.5), 2),
            "wait_p95_s": round(percentile(waits, 0.95), 2),
            "first_token_p95_s": round(percentile([r["ttft"] for r in done], 0.95), 2)}


def peak_rss_mb() -> float:
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


def run(name: str, generate: Generate, prompts: list[Any], levels: list[int], out: Path,
        warmup: int = 2, **extra: Any) -> None:
    """Measure `generate` and write one result row to `out`."""
    for prompt in prompts[:warmup]:
        generate(prompt, lambda: None)
    row: dict[str, Any] = {"name": name, **single(generate, prompts)}
    row["concurrency"] = []
    for chats in levels:
        row["concurrency"].append(concurrent(generate, prompts, chats))
        print(f"  {name}: {row['concurrency'][-1]}", file=sys.stderr, flush=True)
    row["peak_rss_mb"] = peak_rss_mb()
    row.update(extra)
    out.write_text(json.dumps(row, indent=2) + "\n")
