"""The scale-out recipe of `deploy/compose.yaml`, started as processes on one machine.

Every piece the compose file names runs as its own process with the same settings: PostgreSQL
(`DATABASE_URL`), the Chroma server (`CHROMA_URL`), vLLM with runtime LoRA loading (`LLM_URL`,
`LLM_FOLLOW_ADAPTERS`), the bot in webhook mode behind the Bot API emulator, the admin CLI, and
the nightly job (`assistant tune nightly`). A user's question arrives by webhook and is
answered by vLLM; the nightly job trains on ratings and its adapter, once promoted, is the one
vLLM answers the next question with. The compose file itself is started by
`tests/test_compose.py` (`make test-compose`, where a Docker daemon runs).
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
from sqlalchemy import text

from bot.model.local import resolve_base_model
from bot.storage.db import Database
from bot.storage.store import Store
from tests.botapi import BotAPIEmulator
from tests.chroma import chroma_server, free_port
from tests.conftest import MODEL_CACHE, ROOT
from tests.engine import VLLM_PYTHON, need, vllm_server
from tests.postgres import fresh_database, postgres_cluster
from tests.test_e2e import stop_assistant
from tests.test_tuning import seed_ratings

pytestmark = [pytest.mark.engine, pytest.mark.slow]

USER, ADMIN = 901, 42
SECRET = "deploy-test-secret"
NIGHTLY_KNOBS = ["--max-steps", "4", "--batch-size", "4", "--grad-accum", "1",
                 "--max-length", "384", "--eval-every", "2", "--min-rows", "8",
                 "--patience", "2", "--learning-rate", "1e-3"]


def cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    """`assistant …` as its own process, as an operator (or the nightly service) runs it."""
    return subprocess.run([sys.executable, "-m", "bot.cli", *args], env=env, cwd=ROOT,
                          capture_output=True, text=True, timeout=900)


def answer_row(db_url: str, reply: dict) -> tuple[str, str | None]:
    """The stored answer shown as `reply`, and the adapter that generated it."""
    db = Database(db_url)
    try:
        with db.read() as session:
            row = session.execute(text("SELECT text, adapter_version FROM messages WHERE "
                                       "telegram_message_id = :mid"),
                                  {"mid": reply["message_id"]}).one()
    finally:
        db.dispose()
    return row[0], row[1]


async def ask(botapi: BotAPIEmulator, question: str) -> dict:
    """Send a question; the bot's final reply to it."""
    count = len(botapi.sent_messages(USER)) + 1
    botapi.send_text(USER, question)
    return await botapi.wait_for_message(USER, count=count, timeout=180)


async def base_answers_then_the_nightly_adapter(
        botapi: BotAPIEmulator, db_url: str, models_url: str,
        assistant: Callable[..., subprocess.CompletedProcess]) -> None:
    """What both deploy tests check once the pieces run and the parking note is in the
    knowledge base: vLLM's base model answers; the nightly service trains on ratings in
    PostgreSQL (`assistant(*args)` runs `assistant …` where the operator would); its adapter,
    promoted, answers the next question, loaded into vLLM (listed at `models_url`)."""
    reply = await ask(botapi, "Where do visitors park?")
    assert "Visitor parking" in reply["text"]
    assert answer_row(db_url, reply)[1] == "base"  # vLLM's base model answered

    seed_ratings(Store(Database(db_url)))
    nightly = assistant("tune", "nightly", *NIGHTLY_KNOBS)
    assert nightly.returncode == 0, nightly.stderr[-3000:]
    assert "candidate v0001" in nightly.stdout, nightly.stdout
    if ": promoted," not in nightly.stdout:  # the gate said no: the operator overrides
        promoted = assistant("tune", "promote", "v0001")
        assert promoted.returncode == 0, promoted.stderr

    reply = await ask(botapi, "Is visitor parking free?")
    answer, adapter = answer_row(db_url, reply)
    assert answer and adapter == "v0001"
    served = httpx.get(models_url).json()["data"]
    assert "v0001" in [m["id"] for m in served]  # loaded into vLLM, which answered


async def test_scaled_out_pieces_answer_by_webhook_through_vllm_and_serve_the_nightly_adapter(
        botapi: BotAPIEmulator, tmp_path: Path) -> None:
    need(VLLM_PYTHON, "engine-vllm")
    base = Path(resolve_base_model("", MODEL_CACHE))
    data_dir = tmp_path / "data"
    with postgres_cluster() as postgres, chroma_server(tmp_path / "chroma") as chroma_url, \
            vllm_server(VLLM_PYTHON, base, tmp_path / "vllm.log") as (_, llm_url):
        db_url = fresh_database(postgres)
        env = {**os.environ, "DATABASE_URL": db_url, "CHROMA_URL": chroma_url,
               "LLM_URL": llm_url, "LLM_FOLLOW_ADAPTERS": "true",
               "ASSISTANT_DATA_DIR": str(data_dir), "MODEL_CACHE_DIR": str(MODEL_CACHE),
               "TELEGRAM_BOT_TOKEN": botapi.token, "TELEGRAM_API_URL": botapi.url,
               "ADMIN_IDS": str(ADMIN), "HF_HUB_OFFLINE": "1", "MAX_NEW_TOKENS": "48"}
        assert cli(env, "db", "upgrade").returncode == 0
        note = tmp_path / "parking.md"
        note.write_text("# Visitor parking\n\nVisitors park in the car park behind building C. "
                        "Parking there is free for the first two hours.\n")
        added = cli(env, "kb", "add", str(note))
        assert added.returncode == 0, added.stderr

        port = free_port()
        log = open(tmp_path / "bot.log", "wb")  # noqa: SIM115 - closed by stop_assistant
        bot = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "bot.cli", "run", "--webhook-url",
            f"http://127.0.0.1:{port}/telegram", "--webhook-secret", SECRET,
            "--listen", "127.0.0.1", "--port", str(port), cwd=ROOT, env=env,
            stdout=log, stderr=asyncio.subprocess.STDOUT)
        try:
            await botapi.wait_for(lambda: botapi.webhook_url or bot.returncode is not None,
                                  timeout=240, what="the bot to set its webhook")
            assert bot.returncode is None, (tmp_path / "bot.log").read_text()[-3000:]
            assert botapi.webhook_secret == SECRET and not botapi.calls_to("getUpdates")
            # The nightly service trains in its own process.
            await base_answers_then_the_nightly_adapter(
                botapi, db_url, f"{llm_url}/models", lambda *args: cli(env, *args))
        finally:
            await stop_assistant(bot, log)
        assert bot.returncode == 0, (tmp_path / "bot.log").read_text()[-3000:]
