"""Load run: simulated users chat with the real bot (real model) through the Bot API emulator.

Starts `assistant run` as a process against the emulator, then N users each ask M questions
one after another (the next once the previous answer is complete), all users at once. Reports
replies lost, and p50/p95 of the time to the first visible text and to the complete answer.

Usage: python bench/load/run.py [--users 20] [--messages 10] [--max-new-tokens 40]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import shutil
import signal
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from tests.botapi import BotAPIEmulator  # noqa: E402

QUESTIONS = [
    "How do I start a new conversation?",
    "How do I rate an answer?",
    "Who can add documents to the knowledge base?",
    "What does the assistant store about me?",
    "How does the assistant learn from ratings?",
    "Does the bot answer in group chats?",
    "How do I rebuild the search index?",
    "Which language model does the assistant use?",
    "Can I change my vote?",
    "Where is the data kept?",
]


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return round(ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))], 2)


async def user_session(botapi: BotAPIEmulator, user_id: int, messages: int, timeout: float,
                       first_seen: list[float], complete: list[float]) -> int:
    """Ask `messages` questions in turn; returns how many got a complete answer."""
    answered = 0
    for i in range(messages):
        before = len(botapi.sent_messages(user_id))
        started = time.monotonic()
        botapi.send_text(user_id, QUESTIONS[(user_id + i) % len(QUESTIONS)])
        try:
            await botapi.wait_for(lambda: len(botapi.sent_messages(user_id)) > before,
                                  timeout, "first text")
            first_seen.append(time.monotonic() - started)
            await botapi.wait_for(lambda: "reply_markup" in botapi.sent_messages(user_id)[-1],
                                  timeout, "complete answer")
            complete.append(time.monotonic() - started)
            answered += 1
        except AssertionError:
            continue
    return answered


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--users", type=int, default=20)
    parser.add_argument("--messages", type=int, default=10)
    parser.add_argument("--max-new-tokens", type=int, default=40)
    parser.add_argument("--timeout", type=float, default=600.0, help="Per answer")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "load.json")
    args = parser.parse_args()

    botapi = BotAPIEmulator()
    await botapi.start()
    data_dir = ROOT / ".cache" / "bench-load"
    shutil.rmtree(data_dir, ignore_errors=True)
    data_dir.mkdir(parents=True)
    env = {**os.environ, "TELEGRAM_BOT_TOKEN": botapi.token, "TELEGRAM_API_URL": botapi.url,
           "ASSISTANT_DATA_DIR": str(data_dir), "MODEL_CACHE_DIR": str(ROOT / ".cache" / "models"),
           "MAX_NEW_TOKENS": str(args.max_new_tokens), "RATE_LIMIT_PER_MINUTE": "0",
           "QUEUE_MAX_WAITING": str(args.users * 2), "LOG_LEVEL": "WARNING"}
    for var in ("DATABASE_URL", "CHROMA_URL"):
        env.pop(var, None)
    log = open(data_dir / "assistant.log", "wb")  # noqa: SIM115
    proc = await asyncio.create_subprocess_exec(sys.executable, "-m", "bot.cli", "run", env=env,
                                                cwd=ROOT, stdout=log, stderr=log)
    try:
        await botapi.wait_for(lambda: botapi.calls_to("getUpdates"), 300, "the bot to start")
        first_seen: list[float] = []
        complete: list[float] = []
        started = time.monotonic()
        answered = await asyncio.gather(*[
            user_session(botapi, 10_000 + u, args.messages, args.timeout, first_seen, complete)
            for u in range(args.users)])
        wall = time.monotonic() - started
    finally:
        proc.send_signal(signal.SIGINT)
        await proc.wait()
        log.close()
        await botapi.stop()
    asked = args.users * args.messages
    result = {
        "users": args.users, "messages_per_user": args.messages, "asked": asked,
        "answered": sum(answered), "replies_lost": asked - sum(answered),
        "max_new_tokens": args.max_new_tokens, "wall_s": round(wall, 1),
        "answers_per_minute": round(sum(answered) / wall * 60, 1),
        "first_text_s": {"p50": pct(first_seen, 0.5), "p95": pct(first_seen, 0.95)},
        "complete_answer_s": {"p50": pct(complete, 0.5), "p95": pct(complete, 0.95)},
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, CPU only",
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    asyncio.run(main())
