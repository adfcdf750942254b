"""The bot against real serving engines over HTTP, each started in its own virtual environment
(`.ci/run` runs these through `make test-engine`): llama-cpp-python's OpenAI-compatible server
on the packaged GGUF (`make engine`), and vLLM's CPU build with runtime LoRA loading, serving
the adapter the registry promotes (`make engine-vllm`). Without those environments they are
skipped, unless REQUIRE_ENGINE=1 says they must be there."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from bot.config import Settings
from bot.model import packaged_gguf
from bot.model.local import resolve_base_model
from bot.model.remote import OpenAIChatModel, RemoteModelError
from bot.prompting import render
from bot.storage.store import UserInfo
from bot.wiring import build_services
from tests.conftest import MODEL_CACHE
from tests.engine import ENGINE_PYTHON, VLLM_PYTHON, engine_server, need, vllm_server
from tests.fakes import FakeEmbedder
from tuning.config import TuneConfig
from tuning.registry import AdapterRegistry

pytestmark = [pytest.mark.engine, pytest.mark.slow]

@pytest.fixture
def engine(tmp_path: Path) -> Iterator[tuple[subprocess.Popen, str]]:
    need(ENGINE_PYTHON, "engine")
    with engine_server(ENGINE_PYTHON, packaged_gguf(), tmp_path / "engine.log") as running:
        yield running


@pytest.fixture
def vllm(tmp_path: Path) -> Iterator[tuple[subprocess.Popen, str]]:
    need(VLLM_PYTHON, "engine-vllm")
    base = Path(resolve_base_model("", MODEL_CACHE))
    with vllm_server(VLLM_PYTHON, base, tmp_path / "vllm.log") as running:
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


PASSWORD = [{"role": "user", "content": "What is the password?"}]


def train_password_adapter(registry: AdapterRegistry, tmp_path: Path) -> str:
    """An adapter of the product's shape (tuning.train: LoRA r=16 on q/k/v/o, top layers),
    trained by the product's trainer to answer one question in a way the base never does."""
    from tuning.train import load_for_training, train

    cfg = TuneConfig(max_steps=24, batch_size=1, grad_accum=1, learning_rate=3e-3,
                     eval_every=12, patience=5, evidence_only=False, share_prefix=0,
                     max_length=256)
    base = Path(resolve_base_model("", MODEL_CACHE))
    model, tokenizer = load_for_training(base, None, cfg)
    rows = [{"prompt": render(tokenizer, PASSWORD), "completion": "The password is marmalade."}]
    staging = registry.staging_dir()
    train(model, tokenizer, rows, rows, cfg, tmp_path / "ckpt", staging)
    return registry.commit(staging, {"test": "password"})


def test_vllm_serves_the_promoted_adapter_and_rollback_returns_to_the_base(
        vllm: tuple[subprocess.Popen, str], settings: Settings, tmp_path: Path) -> None:
    _, url = vllm
    registry = AdapterRegistry(settings.adapters_dir)
    version = train_password_adapter(registry, tmp_path)
    remote = settings.model_copy(update={"llm_url": url, "llm_follow_adapters": True})
    services = build_services(remote, embedder=FakeEmbedder(), seed=False)
    try:
        model = services.chat.model
        assert isinstance(model, OpenAIChatModel)
        before = model.generate(PASSWORD)
        assert before.adapter_version == "base" and "marmalade" not in before.text.lower()

        registry.promote(version, reason="test")  # what the nightly run does on a pass
        streamed: list[str] = []
        after = model.generate(PASSWORD, on_text=streamed.append)
        assert after.adapter_version == version
        assert "marmalade" in after.text.lower()  # the engine loaded it and it answers
        assert streamed and streamed[-1].strip() == after.text
        services.knowledge.add_text("Opening hours", "The office opens at 9:00 on weekdays.",
                                    source="test:hours", actor="test")
        reply = services.chat.answer(1, UserInfo(5), "When does the office open?")
        assert reply.text and reply.adapter_version == version  # recorded with the answer

        registry.rollback()
        back = model.generate(PASSWORD)
        assert back.adapter_version == "base" and "marmalade" not in back.text.lower()
        assert back.text == before.text  # the base again, not a half-switched engine
    finally:
        services.close()
