"""The bot against a real serving engine over HTTP: llama-cpp-python's OpenAI-compatible server
on the packaged GGUF, started in its own virtual environment (`make engine` builds it; `.ci/run`
runs these through `make test-engine`). Without that environment they are skipped, unless
REQUIRE_ENGINE=1 says the environment must be there."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from bot.config import Settings
from bot.model import packaged_gguf
from bot.model.remote import OpenAIChatModel, RemoteModelError
from bot.storage.store import UserInfo
from bot.wiring import build_services
from tests.conftest import ROOT
from tests.engine import engine_server
from tests.fakes import FakeEmbedder

pytestmark = [pytest.mark.engine, pytest.mark.slow]

ENGINE_PYTHON = Path(os.environ.get("ENGINE_PYTHON",
                                    ROOT / ".cache" / "engines" / "llamacpp" / "bin" / "python"))


@pytest.fixture
def engine(tmp_path: Path) -> Iterator[tuple[subprocess.Popen, str]]:
    if not ENGINE_PYTHON.exists():
        if os.environ.get("REQUIRE_ENGINE"):
            pytest.fail(f"REQUIRE_ENGINE is set but {ENGINE_PYTHON} is missing (make engine)")
        pytest.skip("no serving engine environment (make engine builds it)")
    with engine_server(ENGINE_PYTHON, packaged_gguf(), tmp_path / "engine.log") as running:
        yield running


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
