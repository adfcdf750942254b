"""`deploy/compose.yaml` itself, started with Docker Compose (`make test-compose`).

The stack is the file's, with `deploy/compose.cpu.yaml` for a host without a GPU (vLLM's CPU
build as the engine) and a small override for the test alone: the bot talks to the Bot API
emulator on this host, and PostgreSQL and the engine publish a port on 127.0.0.1 so the test
can read what was stored and what the engine serves. A question arrives by webhook and vLLM
answers it; the nightly service trains on ratings; the promoted adapter answers the next
question, loaded into vLLM by the bot.

Opt-in (`COMPOSE_TESTS=1`): it needs a Docker daemon, the images built (`make compose-images`)
and several minutes. On hosts that cannot reach Docker Hub, `deploy/offline/build.sh` builds
the base images from a Debian mirror first.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from tests.botapi import BotAPIEmulator
from tests.chroma import free_port
from tests.conftest import ROOT
from tests.test_deploy import SECRET, base_answers_then_the_nightly_adapter

pytestmark = [pytest.mark.compose, pytest.mark.slow]

IMAGES = ("telegram-learning-assistant:latest", "telegram-learning-assistant-engine-cpu:latest",
          "postgres:15")
PROJECT = "assistant-compose-test"
PASSWORD = "compose-test-password"


def docker_ready() -> str | None:
    """Why the stack cannot be started here, or None."""
    if os.environ.get("COMPOSE_TESTS") != "1":
        return "opt-in: COMPOSE_TESTS=1 (make test-compose)"
    if shutil.which("docker") is None:
        return "no docker command"
    if subprocess.run(["docker", "info"], capture_output=True).returncode != 0:
        return "no Docker daemon"
    missing = [i for i in IMAGES if subprocess.run(["docker", "image", "inspect", i],
                                                   capture_output=True).returncode != 0]
    return f"images not built (make compose-images): {missing}" if missing else None


@contextmanager
def stack(tmp_path: Path, env: dict[str, str], override: str) -> Iterator[list[str]]:
    """The compose stack up (its images as built), then down with its volumes."""
    (tmp_path / "test.yaml").write_text(override)
    compose = ["docker", "compose", "-p", PROJECT, "-f", str(ROOT / "deploy" / "compose.yaml"),
               "-f", str(ROOT / "deploy" / "compose.cpu.yaml"), "-f", str(tmp_path / "test.yaml")]
    subprocess.run([*compose, "down", "-v"], env=env, capture_output=True)
    up = subprocess.run([*compose, "up", "-d", "--no-build"], env=env, capture_output=True,
                        text=True, timeout=900)
    try:
        assert up.returncode == 0, up.stderr[-3000:] + logs(compose, env)
        yield compose
    finally:
        (tmp_path / "compose.log").write_text(logs(compose, env))
        subprocess.run([*compose, "down", "-v"], env=env, capture_output=True, timeout=300)


def logs(compose: list[str], env: dict[str, str]) -> str:
    return subprocess.run([*compose, "logs", "--no-color", "--tail", "60"], env=env,
                          capture_output=True, text=True).stdout


def run_in(compose: list[str], env: dict[str, str], service: str, *command: str,
           stdin: str | None = None) -> subprocess.CompletedProcess:
    """A command in a running service's container, as an operator runs `assistant …` there."""
    return subprocess.run([*compose, "exec", "-T", service, *command], env=env, input=stdin,
                          capture_output=True, text=True, timeout=900)


async def test_the_compose_stack_answers_through_vllm_and_serves_the_nightly_adapter(
        tmp_path: Path) -> None:
    reason = docker_ready()
    if reason:
        pytest.skip(reason)
    botapi = BotAPIEmulator()
    await botapi.start(host="0.0.0.0")
    port = int(botapi.url.rsplit(":", 1)[1])
    pg_port, engine_port, bot_port = free_port(), free_port(), free_port()
    env = {**os.environ, "POSTGRES_PASSWORD": PASSWORD, "TELEGRAM_BOT_TOKEN": botapi.token,
           "TELEGRAM_API_URL": f"http://host.docker.internal:{port}", "ADMIN_IDS": "42",
           "WEBHOOK_URL": f"http://127.0.0.1:{bot_port}/telegram", "WEBHOOK_SECRET": SECRET}
    override = f"""
services:
  bot:
    extra_hosts: ["host.docker.internal:host-gateway"]
    ports: !override ["127.0.0.1:{bot_port}:8443"]
    environment: {{MAX_NEW_TOKENS: "48"}}
  postgres:
    ports: ["127.0.0.1:{pg_port}:5432"]
  engine:
    ports: ["127.0.0.1:{engine_port}:8000"]
"""
    db_url = f"postgresql+psycopg://assistant:{PASSWORD}@127.0.0.1:{pg_port}/assistant"
    try:
        with stack(tmp_path, env, override) as compose:
            deadline = time.monotonic() + 900
            while not botapi.webhook_url:  # init, the engine's start, then the bot's
                assert time.monotonic() < deadline, "no webhook set in 15 minutes\n" + \
                    logs(compose, env)
                await asyncio.sleep(2)
            assert botapi.webhook_secret == SECRET and not botapi.calls_to("getUpdates")

            added = run_in(compose, env, "bot", "sh", "-c",
                           "cat > /tmp/parking.md && assistant kb add /tmp/parking.md",
                           stdin="# Visitor parking\n\nVisitors park in the car park behind "
                                 "building C. Parking there is free for the first two hours.\n")
            assert added.returncode == 0, added.stderr

            await base_answers_then_the_nightly_adapter(
                botapi, db_url, f"http://127.0.0.1:{engine_port}/v1/models",
                lambda *args: run_in(compose, env, "nightly", "assistant", *args))
    finally:
        await botapi.stop()
