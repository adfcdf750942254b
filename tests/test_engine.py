"""The bot against a real serving engine over HTTP: llama-cpp-python's OpenAI-compatible server
on the packaged GGUF, started in its own virtual environment (`make engine` builds it; `.ci/run`
runs these through `make test-engine`). Without that environment they are skipped, unless
REQUIRE_ENGINE=1 says the environment must be there."""

from __future__ import annotations

import os
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from bot.config import Settings
from bot.model import packaged_gguf
from bot.model.remote import OpenAIChatModel, RemoteModelError
from bot.storage.store import UserInfo
from bot.wiring import build_services
from tests.conftest import ROOT
from tests.fakes import FakeEmbedder

pytestmark = [pytest.mark.engine, pytest.mark.slow]

ENGINE_PYTHON = Path(os.environ.get("ENGINE_PYTHON",
                                    ROOT / ".cache" / "engines" / "llamacpp" / "bin" / "python"))


def start_engine(log: Path) -> tuple[subprocess.Popen, str]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = subprocess.Popen(
        [ENGINE_PYTHON, "-m", "llama_cpp.server", "--model", str(packaged_gguf()),
         "--host", "127.0.0.1", "--port", str(port), "--n_ctx", "4096"],
        stdout=log.open("w"), stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/v1"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        assert server.poll() is None, f"the engine exited: {log.read_text()[-2000:]}"
        try:
            if httpx.get(f"{url}/models", timeout=2).status_code == 200:
                return server, url
        except httpx.HTTPError:
            time.sleep(0.3)
    server.kill()
    raise AssertionError("the engine did not start in 120 s")


@pytest.fixture
def engine(tmp_path: Path) -> Iterator[tuple[subprocess.Popen, str]]:
    if not ENGINE_PYTHON.exists():
        if os.environ.get("REQUIRE_ENGINE"):
            pytest.fail(f"REQUIRE_ENGINE is set but {ENGINE_PYTHON} is missing (make engine)")
        pytest.skip("no serving engine environment (make engine builds it)")
    server, url = start_engine(tmp_path / "engine.log")
    yield server, url
    server.terminate()
    server.wait(timeout=30)


def test_the_bot_answers_through_the_engine_and_says_so_when_it_goes_down(
        engine: tuple[subprocess.Popen, str], settings: Settings) -> None:
    server, url = engine
    remote = settings.model_copy(update={"llm_url": url})
    services = build_services(remote, embedder=FakeEmbedder(), seed=False)
    try:
        services.knowledge.add_text("Opening hours", "The office opens at 9:00 on weekdays.",
                                    source="test:hours", actor="test")
        model = services.chat.model
        assert isinstance(model, OpenAIChatModel)
        streamed: list[str] = []
        reply = services.chat.answer(1, UserInfo(5), "When does the office open?",
                                     on_text=streamed.append)
        assert reply.adapter_version == f"remote:{model.model}"
        assert model.model.endswith(".gguf")  # the engine named the model it serves
        assert streamed and reply.text  # the engine's answer streamed into the reply
        assert "Opening hours" in reply.sources

        generation = model.generate([{"role": "user", "content": "Say hello."}])
        assert generation.text and generation.new_tokens > 0
        assert "<|im_start|>assistant" in generation.prompt  # stored as the engine saw it

        server.terminate()
        server.wait(timeout=30)
        model.retry_delay = 0.05
        with pytest.raises(RemoteModelError, match="failed"):
            model.generate([{"role": "user", "content": "Say hello."}])
        with pytest.raises(RemoteModelError, match=url):  # the handler apologises for it
            services.chat.answer(1, UserInfo(5), "When does the office open?")
    finally:
        services.close()
