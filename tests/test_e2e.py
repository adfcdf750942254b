"""`assistant run` as a real process, real models, real Chroma, real PTB, the emulator over HTTP."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
import time
from pathlib import Path

import pytest
import torch
from sqlalchemy import create_engine, text

from tests.botapi import BotAPIEmulator
from tests.conftest import MODEL_CACHE, ROOT

pytestmark = [pytest.mark.slow, pytest.mark.e2e]

USER = 777


async def start_assistant(botapi: BotAPIEmulator, data_dir: Path, backend: dict[str, str],  # type: ignore[no-untyped-def]
                          *args: str, interpreter_args: tuple[str, ...] = ("-m", "bot.cli", "run")):
    env = {**os.environ, "TELEGRAM_BOT_TOKEN": botapi.token, "TELEGRAM_API_URL": botapi.url,
           "ASSISTANT_DATA_DIR": str(data_dir), "MODEL_CACHE_DIR": str(MODEL_CACHE),
           "HF_HUB_OFFLINE": "1", "LOG_LEVEL": "INFO", "MAX_NEW_TOKENS": "48", **backend}
    log = open(data_dir.parent / "assistant.log", "wb")  # noqa: SIM115 - closed by the caller
    proc = await asyncio.create_subprocess_exec(
        sys.executable, *interpreter_args, *args, cwd=data_dir.parent, env=env,
        stdout=log, stderr=asyncio.subprocess.STDOUT)
    return proc, log


async def stop_assistant(proc, log) -> None:  # type: ignore[no-untyped-def]
    """Ctrl-C, as an operator would (killed if it does not stop within 30 s); closes its log."""
    if proc.returncode is None:
        proc.send_signal(signal.SIGINT)
        try:
            await asyncio.wait_for(proc.wait(), 30)
        except TimeoutError:
            proc.kill()
    log.close()


def mean_logprob(model_dir: Path, prompt: str, answer: str) -> float:
    """Mean per-token log-probability of `answer` after `prompt` under the real model."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir)
    p_ids = tok(prompt, add_special_tokens=False, return_tensors="pt")["input_ids"]
    a_ids = tok(answer, add_special_tokens=False, return_tensors="pt")["input_ids"]
    ids = torch.cat([p_ids, a_ids], dim=1)
    with torch.no_grad():
        logits = model(ids).logits[0, p_ids.shape[1] - 1:-1]
    logprobs = torch.log_softmax(logits.float(), dim=-1)
    return logprobs.gather(1, a_ids[0].unsqueeze(1)).mean().item()


def database(data_dir: Path, backend: dict[str, str]):  # type: ignore[no-untyped-def]
    """The database `assistant run` used: the test's backend, or the data dir's SQLite file."""
    return create_engine(backend["DATABASE_URL"] or f"sqlite:///{data_dir / 'assistant.db'}")


async def test_question_and_rating_through_the_whole_product(botapi: BotAPIEmulator,
                                                             tmp_path: Path, backend) -> None:
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    proc, log = await start_assistant(botapi, data_dir, backend)
    try:
        # Ready when it long-polls (start-up: migrate, seed samples, load both models).
        await botapi.wait_for(lambda: botapi.calls_to("getUpdates") or proc.returncode is not None,
                              timeout=240, what="the bot to start polling")
        assert proc.returncode is None, (tmp_path / "assistant.log").read_text()

        sent_at = time.monotonic()
        botapi.send_text(USER, "How do I start a new conversation with the bot?")
        reply = await botapi.wait_for_message(USER, timeout=120)
        latency = time.monotonic() - sent_at

        answer, _, sources = reply["text"].rpartition("\n\nSources: ")
        assert answer.strip(), reply["text"]
        assert "Bot commands" in sources.split("; ")
        keyboard = reply["reply_markup"]["inline_keyboard"][0]
        assert [b["text"] for b in keyboard] == ["👍", "👎"]

        botapi.press_button(USER, reply, keyboard[0]["callback_data"])
        ack = await botapi.wait_for(lambda: botapi.calls_to("answerCallbackQuery"), timeout=30)
        assert ack[0].params["text"] == "Thanks for the feedback!"
        assert any(c.method == "setMyCommands" for c in botapi.calls)
    finally:
        await stop_assistant(proc, log)
    assert proc.returncode == 0, (tmp_path / "assistant.log").read_text()[-3000:]

    engine = database(data_dir, backend)
    with engine.connect() as conn:
        users = conn.execute(text("SELECT id, username FROM users")).all()
        convs = conn.execute(text("SELECT id, chat_id FROM conversations")).all()
        msgs = conn.execute(text("SELECT id, role, text, prompt, sources, adapter_version, "
                                 "latency_ms, telegram_message_id FROM messages ORDER BY id")).all()
        ratings = conn.execute(text("SELECT message_id, user_id, value FROM ratings")).all()
    engine.dispose()
    assert users == [(USER, f"user{USER}")]
    assert convs == [(convs[0][0], USER)]
    assert [m.role for m in msgs] == ["user", "assistant"]
    question, stored = msgs
    assert question.text == "How do I start a new conversation with the bot?"
    assert stored.text == answer
    # A JSON column reads back as text from SQLite and as a list from PostgreSQL.
    sources = stored.sources if isinstance(stored.sources, list) else json.loads(stored.sources)
    assert "Bot commands" in sources
    assert stored.adapter_version == "base" and stored.latency_ms > 0
    assert stored.telegram_message_id == reply["message_id"]
    assert ratings == [(stored.id, USER, 1)]

    # The answer is the real model's own greedy output: it is highly likely under that model.
    model_dir = next(MODEL_CACHE.glob("SmolLM2-135M-Instruct*"))
    assert mean_logprob(model_dir, stored.prompt, stored.text) > -1.5
    print(f"\nE2E reply latency: {latency:.2f} s (model-side {stored.latency_ms} ms)")
    (ROOT / ".cache").mkdir(exist_ok=True)
    (ROOT / ".cache" / "e2e_latency.json").write_text(json.dumps(
        {"reply_seconds": round(latency, 2), "model_ms": stored.latency_ms}))


# `assistant run` whose model hangs after its first words, so the test can kill it mid-answer.
HANGING_RUN = """
import sys, time
from bot.model import local

generate = local.HFChatModel.generate

def hang_after_first_words(self, messages, on_text=None):
    def first_words(text):
        on_text(text)
        time.sleep(3600)
    return generate(self, messages, on_text=first_words)

local.HFChatModel.generate = hang_after_first_words
from bot.cli import main
sys.exit(main(["run"]))
"""


def reply_journaled(engine) -> bool:  # type: ignore[no-untyped-def]
    with engine.connect() as conn:
        return conn.execute(text("SELECT count(*) FROM processed_updates "
                                 "WHERE reply_message_id IS NOT NULL")).scalar() == 1


async def test_kill_9_during_generation_then_restart_answers_once(botapi: BotAPIEmulator,
                                                                  tmp_path: Path, backend) -> None:
    from bot.i18n import t

    data_dir = tmp_path / "data"
    data_dir.mkdir()
    proc, log = await start_assistant(botapi, data_dir, backend, interpreter_args=("-c", HANGING_RUN))
    try:
        await botapi.wait_for(lambda: botapi.calls_to("getUpdates") or proc.returncode is not None,
                              timeout=240, what="the bot to start polling")
        botapi.send_text(USER, "How do I start a new conversation with the bot?")
        partial = await botapi.wait_for(lambda: botapi.sent_messages(USER), timeout=120,
                                        what="the first words of the answer")
        assert partial[0]["text"].endswith(" …")  # mid-generation
        # The bot journals the message it streams into right after sending it; a kill inside
        # that moment is answered in a new message (as in test_recovery), not the case here.
        engine = database(data_dir, backend)
        try:
            await botapi.wait_for(lambda: reply_journaled(engine), timeout=30,
                                  what="the reply to be journaled")
        finally:
            engine.dispose()
        proc.kill()  # SIGKILL: no clean-up runs
        await proc.wait()
    finally:
        log.close()
    assert proc.returncode == -signal.SIGKILL

    proc, log = await start_assistant(botapi, data_dir, backend)
    try:
        final = await botapi.wait_for_message(USER, timeout=240)
        await botapi.wait_for(lambda: botapi.calls_to("getUpdates") and len(
            botapi.calls_to("getUpdates")) > 1, timeout=60, what="polling after the restart")
    finally:
        await stop_assistant(proc, log)
    # One message: the half-streamed one, finished by the new process and marked late.
    assert len(botapi.sent_messages(USER)) == 1
    assert final["message_id"] == partial[0]["message_id"]
    assert final["text"].startswith(t("late_answer", "en")), final["text"]
    assert [b["text"] for b in final["reply_markup"]["inline_keyboard"][0]] == ["👍", "👎"]

    engine = database(data_dir, backend)
    with engine.connect() as conn:
        roles = conn.execute(text("SELECT role FROM messages ORDER BY id")).scalars().all()
        shown = conn.execute(text("SELECT telegram_message_id FROM messages "
                                  "WHERE role = 'assistant'")).scalar()
        pending = conn.execute(text("SELECT count(*) FROM processed_updates "
                                    "WHERE done_at IS NULL")).scalar()
    engine.dispose()
    assert roles == ["user", "assistant"] and shown == final["message_id"] and pending == 0
