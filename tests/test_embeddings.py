"""The embedding runtime: ONNX Runtime gives sentence-transformers' vectors, batched ingest
matches one-file-at-a-time, binary files are refused, and the CLI starts without torch."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from bot.services import UserError
from bot.services.knowledge import AddStatus
from bot.wiring import Services
from knowledge.documents import UnsupportedDocument, parse_file
from tests.conftest import MODEL_CACHE, ROOT

HEAVY = ("torch", "sentence_transformers", "transformers")


@pytest.mark.slow
def test_onnx_embedder_gives_sentence_transformers_vectors() -> None:
    import numpy as np

    from knowledge.embeddings import OnnxEmbedder, SentenceTransformerEmbedder, load_embedder

    fast = load_embedder(None, MODEL_CACHE / "embeddings")
    reference = SentenceTransformerEmbedder()
    assert isinstance(fast, OnnxEmbedder)
    # Lengths differ, so the batch is padded; one text is longer than the model's window.
    texts = ["refunds", "How long does shipping to Korea take?", "word " * 400,
             "Über café naïve 東京の天気", "The café opens at 7:30 on weekdays."]
    a, b = np.array(fast.embed(texts)), np.array(reference.embed(texts))
    assert a.shape == b.shape == (5, 384)
    assert (a * b).sum(axis=1).min() > 0.9999
    assert [fast.count_tokens(t) for t in texts] == [reference.count_tokens(t) for t in texts]
    assert fast.max_tokens == reference.max_tokens == 256


def test_bulk_embedder_sends_ingest_sized_batches_to_its_bulk_runtime() -> None:
    import torch

    from knowledge.embeddings import BULK_MIN, BulkEmbedder
    from tests.fakes import FakeEmbedder

    class Bulk:  # stands in for sentence-transformers in bfloat16
        def __init__(self) -> None:
            self.calls: list[int] = []

        def encode(self, texts: list[str], **_options: object) -> torch.Tensor:
            self.calls.append(len(texts))
            return torch.full((len(texts), 4), 0.5, dtype=torch.bfloat16) * 1.01

    quick = FakeEmbedder()
    embedder = BulkEmbedder(quick, Path("unused"))
    bulk = embedder._bulk = Bulk()
    few = embedder.embed(["a question"] * (BULK_MIN - 1))
    assert quick.calls == 1 and bulk.calls == [] and len(few[0]) == quick.dim
    many = embedder.embed(["a chunk"] * BULK_MIN)
    assert quick.calls == 1 and bulk.calls == [BULK_MIN] and len(many) == BULK_MIN
    assert sum(v * v for v in many[0]) == pytest.approx(1.0, abs=1e-6)  # normalised again
    assert embedder.max_tokens == quick.max_tokens
    assert embedder.count_tokens("two words") == quick.count_tokens("two words")


@pytest.mark.slow
def test_bulk_embedded_chunks_are_found_by_onnx_embedded_questions(
        monkeypatch: pytest.MonkeyPatch) -> None:
    import numpy as np

    from knowledge import embeddings
    from knowledge.embeddings import BULK_MIN, BulkEmbedder, OnnxEmbedder, load_embedder

    assert isinstance(load_embedder(None, MODEL_CACHE / "embeddings", bulk="false"),
                      OnnxEmbedder)
    monkeypatch.setattr(embeddings, "bfloat16_in_hardware", lambda: False)
    assert isinstance(load_embedder(None, MODEL_CACHE / "embeddings", bulk="auto"),
                      OnnxEmbedder)
    monkeypatch.setattr(embeddings, "bfloat16_in_hardware", lambda: True)
    embedder = load_embedder(None, MODEL_CACHE / "embeddings", bulk="auto")
    assert isinstance(embedder, BulkEmbedder)
    topics = ["refunds take ten days", "shipping to Korea takes a week", "the café opens at 7:30",
              "parking costs 4 euros an hour", "the printer is on the second floor",
              "lunch is served at noon", "Wi-Fi password is on the badge", "the gym closes at 22"]
    chunks = [f"Note {i}: {topics[i % len(topics)]}, item {i}." for i in range(BULK_MIN + 6)]
    bulk = np.array(embedder.embed(chunks))
    quick = np.array(embedder.quick.embed(chunks))
    assert embedder._bulk is not None  # the big batch went to the bulk runtime
    assert (bulk * quick).sum(axis=1).min() > 0.99
    questions = np.array(embedder.embed(["When does the café open?", "How much is parking?"]))
    assert [topics[int(np.argmax(bulk @ q)) % len(topics)] for q in questions] == \
        [topics[2], topics[3]]


def test_batched_add_matches_one_file_at_a_time(services: Services, tmp_path: Path) -> None:
    files = []
    for i in range(6):
        path = tmp_path / f"doc{i}.md"
        path.write_text(f"# Doc {i}\n\n" + f"Fact number {i} is about topic {i}. " * (5 + 30 * i))
        files.append(path)
    (tmp_path / "bad.md").write_bytes(b"\x00\x01binary")
    results = list(services.knowledge.add_files([*files[:3], tmp_path / "bad.md", *files[3:]],
                                                actor="test"))
    assert [p.name for p, _ in results] == ["doc0.md", "doc1.md", "doc2.md", "bad.md", "doc3.md",
                                            "doc4.md", "doc5.md"]
    assert isinstance(results[3][1], UserError) and "binary" in str(results[3][1])
    added = [r for _, r in results if not isinstance(r, UserError)]
    assert all(r.status is AddStatus.ADDED for r in added)
    assert sum(r.document.chunk_count for r in added) > 6  # the later files span several chunks

    collection = services.knowledge.index._collection
    stored = collection.get(include=["embeddings", "documents", "metadatas"])
    for cid, text, meta, vector in zip(stored["ids"], stored["documents"], stored["metadatas"],
                                       stored["embeddings"], strict=True):
        expected = services.knowledge.index.embed_chunks(meta["title"], [text])[0]
        assert list(vector) == pytest.approx(expected, abs=1e-6), cid
    # Again: every file is a duplicate now, and nothing is embedded twice.
    again = list(services.knowledge.add_files(files, actor="test"))
    assert {r.status for _, r in again if not isinstance(r, UserError)} == {AddStatus.DUPLICATE}
    assert collection.count() == len(stored["ids"])


@pytest.mark.parametrize("content", [b"notes\x00\x00\x01\x02 more", bytes(range(1, 32)) * 40])
def test_text_files_holding_binary_data_are_refused(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "data.txt"
    path.write_bytes(content)
    with pytest.raises(UnsupportedDocument, match="binary data"):
        parse_file(path)
    path.write_text("Tabs\tand\nnew lines\r\nare text.\f")
    assert parse_file(path).text.startswith("Tabs")


def _imports_after(argv: list[str], data_dir: Path) -> tuple[int, set[str], str]:
    """Run the CLI in a fresh interpreter; which heavy modules did it import?"""
    code = ("import json, sys\nfrom bot.cli import main\n"
            f"try:\n    rc = main({argv!r})\nexcept SystemExit as e:\n    rc = e.code or 0\n"
            "print(json.dumps([rc, sorted(m for m in sys.modules if '.' not in m)]))")
    env = {**os.environ, "ASSISTANT_DATA_DIR": str(data_dir), "MODEL_CACHE_DIR": str(MODEL_CACHE),
           "HF_HUB_OFFLINE": "1"}
    env.pop("DATABASE_URL", None)
    env.pop("CHROMA_URL", None)
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env,
                          cwd=ROOT, timeout=300)
    rc, modules = json.loads(done.stdout.strip().splitlines()[-1])
    return rc, set(modules), done.stdout


@pytest.mark.slow
def test_kb_commands_start_without_torch(tmp_path: Path) -> None:
    data = tmp_path / "data"
    rc, modules, _ = _imports_after(["kb", "--help"], data)
    assert rc == 0 and not modules & {*HEAVY, "chromadb", "onnxruntime", "sqlalchemy"}
    rc, modules, _ = _imports_after(["kb", "list"], data)
    assert rc == 0 and not modules & {*HEAVY, "chromadb", "onnxruntime"}
    rc, modules, _ = _imports_after(["tune", "list"], data)
    assert rc == 0 and not modules & {*HEAVY, "chromadb", "onnxruntime"}
    (tmp_path / "note.md").write_text("The office cat is called Miso.")
    assert _imports_after(["kb", "add", str(tmp_path / "note.md")], data)[0] == 0
    # Searching embeds the question with ONNX Runtime (the export exists now): no torch.
    rc, modules, out = _imports_after(["kb", "search", "what is the cat called", "--json"], data)
    assert rc == 0 and "Miso" in out
    assert "onnxruntime" in modules and not modules & set(HEAVY)
    # That search left a snapshot of the index: the next one does not even import chromadb,
    # until the knowledge base changes.
    rc, modules, out = _imports_after(["kb", "search", "what is the cat called", "--json"], data)
    assert rc == 0 and "Miso" in out and "chromadb" not in modules
    (tmp_path / "dog.md").write_text("The office dog is called Pixel.")
    assert _imports_after(["kb", "add", str(tmp_path / "dog.md")], data)[0] == 0
    rc, modules, out = _imports_after(["kb", "search", "what is the dog called", "--json"], data)
    assert rc == 0 and "Pixel" in out and "chromadb" in modules


def test_chromadb_is_imported_without_override_checks_which_come_back_after(
        tmp_path: Path) -> None:
    code = """
import sys, overrides
checks = sys.modules["overrides.overrides"]
checked = []
def counting(method, *args):
    checked.append(method)
    return real(method, *args)
real, checks._validate_method = checks._validate_method, counting
checking = (overrides.override, overrides.overrides)
from knowledge.index import import_chromadb, open_chroma
chromadb = import_chromadb()
assert (overrides.override, overrides.overrides) == checking
from chromadb.api.client import Client
assert Client.get_or_create_collection.__override__  # marked, as EnforceOverrides expects
from pathlib import Path
client = open_chroma("", Path(sys.argv[1]))
assert (overrides.override, overrides.overrides) == checking
from chromadb.api.rust import RustBindingsAPI  # imported by the client, unchecked too
assert RustBindingsAPI.get_or_create_collection.__override__
assert not checked, checked  # no chromadb method's signature was checked
collection = client.get_or_create_collection("cats", embedding_function=None)
collection.add(ids=["a"], embeddings=[[1.0, 0.0]], documents=["the cat"])
print(collection.query(query_embeddings=[[1.0, 0.0]], n_results=1)["documents"][0][0])
"""
    done = subprocess.run([sys.executable, "-c", code, str(tmp_path / "chroma")], cwd=ROOT,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().endswith("the cat")
