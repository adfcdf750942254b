"""The Chroma index of knowledge chunks. It can always be rebuilt from the documents in SQL."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from knowledge.embeddings import Embedder

logger = logging.getLogger(__name__)

COLLECTION = "knowledge"


@dataclass(frozen=True)
class Hit:
    """One retrieved chunk; `score` is cosine similarity (1 = identical)."""

    chunk_id: str
    document_id: int
    version: int
    title: str
    text: str
    score: float


def open_chroma(chroma_url: str, persist_dir: Path) -> Any:
    """A Chroma client: the server at `chroma_url`, or an embedded store in `persist_dir`."""
    import chromadb
    from chromadb.config import Settings as ChromaSettings

    settings = ChromaSettings(anonymized_telemetry=False)
    if chroma_url:
        url = urlparse(chroma_url)
        return chromadb.HttpClient(host=url.hostname or "127.0.0.1",
                                   port=url.port or (443 if url.scheme == "https" else 8000),
                                   ssl=url.scheme == "https", settings=settings)
    persist_dir.mkdir(parents=True, exist_ok=True)
    return chromadb.PersistentClient(path=str(persist_dir), settings=settings)


def chunk_id(document_id: int, version: int, index: int) -> str:
    return f"{document_id}:{version}:{index}"


class KnowledgeIndex:
    """Chunks with their embeddings and metadata (document id, version, chunk index, title)."""

    def __init__(self, client: Any, embedder: Embedder, collection: str = COLLECTION) -> None:
        """`client` is a Chroma client, or a function that opens one on first use."""
        self._connect: Callable[[], Any] = client if callable(client) else (lambda: client)
        self._embedder = embedder
        self._name = collection

    @cached_property
    def _client(self) -> Any:
        return self._connect()

    @cached_property
    def _collection(self) -> Any:
        return self._open()

    def _open(self) -> Any:
        # We embed ourselves; embedding_function=None keeps Chroma from fetching its own model.
        return self._client.get_or_create_collection(
            self._name, embedding_function=None, metadata={"hnsw:space": "cosine"}
        )

    @staticmethod
    def embedding_text(title: str, chunk: str) -> str:
        """What is embedded for a chunk: the chunk in its document's context."""
        return f"{title}\n{chunk}"

    def embed_chunks(self, title: str, chunks: list[str]) -> list[list[float]]:
        return self._embedder.embed([self.embedding_text(title, c) for c in chunks])

    def add(self, document_id: int, version: int, title: str, chunks: list[str],
            embeddings: list[list[float]] | None = None) -> list[str]:
        """Index a document's chunks (embedding them unless `embeddings` are given)."""
        if not chunks:
            return []
        ids = [chunk_id(document_id, version, i) for i in range(len(chunks))]
        metadatas = [{"document_id": document_id, "version": version, "chunk": i, "title": title}
                     for i in range(len(chunks))]
        if embeddings is None:
            embeddings = self.embed_chunks(title, chunks)
        self._collection.upsert(ids=ids, documents=chunks, embeddings=embeddings,
                                metadatas=metadatas)
        return ids

    def delete_document(self, document_id: int, keep_version: int | None = None) -> None:
        """Drop a document's chunks, or all but one version's when `keep_version` is given."""
        where: dict[str, Any] = {"document_id": document_id}
        if keep_version is not None:
            where = {"$and": [where, {"version": {"$ne": keep_version}}]}
        self._collection.delete(where=where)

    def search(self, query: str, k: int) -> list[Hit]:
        """The `k` chunks nearest to `query`, best first."""
        if self._collection.count() == 0 or not query.strip():
            return []
        result = self._collection.query(query_embeddings=self._embedder.embed([query]),
                                        n_results=k,
                                        include=["documents", "metadatas", "distances"])
        hits = []
        for cid, text, meta, dist in zip(result["ids"][0], result["documents"][0],
                                         result["metadatas"][0], result["distances"][0],
                                         strict=True):
            hits.append(Hit(chunk_id=cid, document_id=int(meta["document_id"]),
                            version=int(meta["version"]), title=str(meta["title"]), text=text,
                            score=1.0 - float(dist)))
        return hits

    def count(self) -> int:
        return self._collection.count()

    def chunk_counts(self, page: int = 5000) -> dict[tuple[int, int], int]:
        """{(document id, version): number of indexed chunks}."""
        counts: dict[tuple[int, int], int] = {}
        offset = 0
        while True:
            batch = self._collection.get(include=["metadatas"], limit=page, offset=offset)
            for meta in batch["metadatas"]:
                key = (int(meta["document_id"]), int(meta["version"]))
                counts[key] = counts.get(key, 0) + 1
            if len(batch["ids"]) < page:
                return counts
            offset += page

    def clear(self) -> None:
        """Drop every chunk (used by reindex before rebuilding from SQL)."""
        _ = self._collection  # opened (so created) first: there is always one to delete
        self._client.delete_collection(self._name)
        self.__dict__["_collection"] = self._open()
