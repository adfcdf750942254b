"""The knowledge base against a real Chroma server (`chroma run` on 127.0.0.1) via CHROMA_URL."""

from __future__ import annotations

from pathlib import Path

import pytest

from bot.config import Settings
from bot.storage.store import UserInfo
from bot.wiring import build_services
from tests.chroma import chroma_server
from tests.fakes import FakeChatModel, FakeEmbedder


@pytest.fixture(scope="module")
def chroma_url(tmp_path_factory: pytest.TempPathFactory):
    with chroma_server(tmp_path_factory.mktemp("chroma")) as url:
        yield url


def test_knowledge_base_on_a_chroma_server(chroma_url: str, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    settings = Settings(data_dir=tmp_path / "data", chroma_url=chroma_url)
    services = build_services(settings, model=FakeChatModel("Nine."), embedder=FakeEmbedder(),
                              seed=False)
    assert not settings.chroma_dir.exists()  # nothing embedded: the server holds the index
    kb = services.knowledge
    first = kb.add_text("Hours", "The shop opens at nine.", "t:hours", "test").document
    kb.add_text("Hours", "The shop opens at ten.", "t:hours", "test")
    assert [h.text for h in kb.search("when does the shop open")] == ["The shop opens at ten."]
    assert kb.check() == []
    assert kb.reindex() == 1
    reply = services.chat.answer(1, UserInfo(1), "When does the shop open?")
    assert reply.sources == ["Hours"]
    kb.remove(first.id, "test")
    assert kb.search("shop") == [] and kb.index.count() == 0
    services.close()

