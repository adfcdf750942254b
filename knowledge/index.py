"""The Chroma index of knowledge chunks. It can always be rebuilt from the documents in SQL."""

from __future__ import annotations

import logging
import sys
import threading
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from knowledge.embeddings import PACKAGED_MINILM, Embedder
from knowledge.shared import SharedStore

logger = logging.getLogger(__name__)

COLLECTION = "knowledge"
SNAPSHOT = "snapshot.npz"  # in a shared store's directory: see `knowledge.snapshot`


class BuiltWithAnotherModel(RuntimeError):
    """The index holds vectors of another embedding model than the one configured."""

    def __init__(self, built_with: str, configured: str) -> None:
        super().__init__(
            f"The knowledge index was built with the embedding model {built_with}, and "
            f"{configured} is configured now: an admin must run `assistant kb reindex` "
            "(it embeds every document again) or set the model back.")
        self.built_with, self.configured = built_with, configured


@dataclass(frozen=True)
class Hit:
    """One retrieved chunk; `score` is cosine similarity (1 = identical)."""

    chunk_id: str
    document_id: int
    version: int
    title: str
    text: str
    score: float


@contextmanager
def _unchecked_overrides() -> Iterator[None]:
    """While inside, `overrides.override` marks a method without checking its signature.

    chromadb marks ~200 methods `@override`; that decorator checks each method's signature
    against its base class's while the class is built, a development-time check of chromadb's
    own code that costs ~0.25 s of its import and ~0.16 s of opening an embedded store (which
    imports the Rust client's module then). Inside, `override` just marks the method (as
    `EnforceOverrides` expects); outside, modules get the checking decorator again."""
    try:
        import overrides
    except ImportError:  # a chromadb version without it: nothing to skip
        yield
        return

    def override(method: Any = None, **_: Any) -> Any:
        if method is None:
            return override
        method.__override__ = True
        return method

    # chromadb's modules take them from the package: `from overrides import override`.
    saved = {name: getattr(overrides, name) for name in ("override", "overrides")}
    for name in saved:
        setattr(overrides, name, override)
    try:
        yield
    finally:
        for name, original in saved.items():
            setattr(overrides, name, original)


def import_chromadb() -> Any:
    """The chromadb package, imported without `overrides`' signature checks."""
    if "chromadb" in sys.modules:
        return sys.modules["chromadb"]
    with _unchecked_overrides():
        import chromadb
    return chromadb


def open_chroma(chroma_url: str, persist_dir: Path) -> Any:
    """A Chroma client: the server at `chroma_url`, or an embedded store in `persist_dir`."""
    chromadb = import_chromadb()
    from chromadb.config import Settings as ChromaSettings

    settings = ChromaSettings(anonymized_telemetry=False)
    with _unchecked_overrides():  # the client imports its implementation's module now
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

    def __init__(self, client: Any, embedder: Embedder, collection: str = COLLECTION,
                 shared: SharedStore | None = None, snapshot: bool = False,
                 model: str = PACKAGED_MINILM, unlabelled: str | None = None) -> None:
        """`client` is a Chroma client, or a function that opens one on first use (it must be
        a function when `shared`: the client is reopened when another process wrote).
        `snapshot`: search a copy of a small shared store kept beside it, without opening
        Chroma (for short-lived processes such as the command line; see `knowledge.snapshot`).
        `model`: the name of `embedder`'s model, recorded with the collection when it is
        created; searching or adding to a collection built with another model raises
        `BuiltWithAnotherModel`. `unlabelled`: the model of a collection created before
        collections recorded it (default `model`)."""
        self._connect: Callable[[], Any] = client if callable(client) else (lambda: client)
        self._embedder = embedder
        self.model = model
        self._unlabelled = unlabelled or model
        self._name = collection
        self._shared = shared
        self._lock = threading.RLock()  # a reopen closes the client other threads may use
        self._seen: int | None = None  # the shared store's generation this process has loaded
        self._snapshot = shared.directory / SNAPSHOT if shared and snapshot else None

    @property
    def embedder(self) -> Embedder:
        """What embeds the chunks and the questions."""
        return self._embedder

    @cached_property
    def _client(self) -> Any:
        return self._connect()

    @cached_property
    def _collection(self) -> Any:
        return self._open()

    def _open(self) -> Any:
        # We embed ourselves; embedding_function=None keeps Chroma from fetching its own model.
        return self._client.get_or_create_collection(
            self._name, embedding_function=None,
            metadata={"hnsw:space": "cosine", "embedding_model": self.model})

    def built_with(self) -> str:
        """The embedding model whose vectors the index holds."""
        with self._using() as collection:
            return self._recorded(collection)

    def check_model(self) -> None:
        """Raise `BuiltWithAnotherModel` when the index holds another model's vectors."""
        with self._using() as collection:
            self._same_model(collection)

    def _recorded(self, collection: Any) -> str:
        return str((collection.metadata or {}).get("embedding_model", self._unlabelled))

    def _same_model(self, collection: Any) -> None:
        built = self._recorded(collection)
        if built != self.model:
            raise BuiltWithAnotherModel(built, self.model)

    @contextmanager
    def _using(self, write: bool = False) -> Iterator[Any]:
        """The collection, current with what other processes wrote; while writing, the only
        writer of a shared store."""
        if self._shared is None:
            yield self._collection
            return
        with self._lock:
            if write:
                with self._shared.locked(exclusive=True):
                    self._catch_up()
                    try:
                        yield self._collection
                    finally:
                        self._seen = self._shared.bump()
                return
            if self._seen is None or self._shared.generation() != self._seen:
                with self._shared.locked(exclusive=False):
                    self._catch_up()
            yield self._collection

    def _catch_up(self) -> None:
        """Reopen the client if another process wrote since this one last loaded the store
        (caller holds the lock of `self._shared`)."""
        assert self._shared is not None
        current = self._shared.generation()
        if self._seen is not None and current != self._seen and "_client" in self.__dict__:
            logger.info("The knowledge index changed in another process; reopening it")
            self.__dict__.pop("_collection", None)
            client = self.__dict__.pop("_client")
            if hasattr(client, "close"):
                client.close()
        self._seen = current

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
        with self._using(write=True) as collection:
            self._same_model(collection)
            collection.upsert(ids=ids, documents=chunks, embeddings=embeddings,
                              metadatas=metadatas)
        return ids

    def delete_document(self, document_id: int, keep_version: int | None = None) -> None:
        """Drop a document's chunks, or all but one version's when `keep_version` is given."""
        where: dict[str, Any] = {"document_id": document_id}
        if keep_version is not None:
            where = {"$and": [where, {"version": {"$ne": keep_version}}]}
        with self._using(write=True) as collection:
            collection.delete(where=where)

    def search(self, query: str, k: int, context: str = "") -> list[Hit]:
        """The `k` chunks nearest to `query` (folded with `context`, the question it follows up,
        if any: see `knowledge.retrieval.fold`), best first."""
        vector = self.query_vector(query, context)
        return self.search_vector(vector, k) if vector is not None else []

    def query_vector(self, query: str, context: str = "") -> list[float] | None:
        """What `search` looks for: the question's vector, folded with `context`'s; None for
        an empty question."""
        if not query.strip():
            return None
        if context.strip():
            from knowledge.retrieval import fold

            asked, previous = self._embedder.embed([query, context])
            return fold(asked, previous)
        return self._embedder.embed([query])[0]

    def search_vector(self, query_vector: list[float], k: int) -> list[Hit]:
        """The `k` chunks nearest to `query_vector`, best first."""
        vector = [query_vector]
        taken = self._snapshot_hits(query_vector, k)
        if taken is not None:
            return taken
        with self._using() as collection:
            self._same_model(collection)
            # No count() first: an empty collection answers with no hits, and counting costs
            # 12 ms at 100k chunks (a SQL COUNT), a third of the search.
            result = collection.query(query_embeddings=vector, n_results=k,
                                      include=["documents", "metadatas", "distances"])
        hits = []
        for cid, text, meta, dist in zip(result["ids"][0], result["documents"][0],
                                         result["metadatas"][0], result["distances"][0],
                                         strict=True):
            if meta is None or text is None:
                # Deleted by another process between the vector and the record lookups (a
                # document being replaced): the chunk is gone, so it is no hit.
                continue
            hits.append(Hit(chunk_id=cid, document_id=int(meta["document_id"]),
                            version=int(meta["version"]), title=str(meta["title"]), text=text,
                            score=1.0 - float(dist)))
        if self._snapshot is not None:
            self._take_snapshot()
        return hits

    def _snapshot_hits(self, vector: list[float], k: int) -> list[Hit] | None:
        """The search answered from the snapshot, or None when there is none to use (then the
        caller asks Chroma, and takes a snapshot unless it is the index's current one)."""
        if self._snapshot is None:
            return None
        from knowledge.snapshot import Snapshot

        assert self._shared is not None
        snapshot = Snapshot.read(self._snapshot, self._shared.generation())
        if snapshot is None or snapshot.model != self.model:
            return None  # none yet, or of another model's vectors: Chroma answers (or refuses)
        if not snapshot.complete:  # too large to copy: Chroma answers, and no new snapshot
            self._snapshot = None
            return None
        return [Hit(chunk_id=c.id, document_id=c.document_id, version=c.version, title=c.title,
                    text=c.text, score=score) for c, score in snapshot.nearest(vector, k)]

    def _take_snapshot(self) -> None:
        """Copy the store as it is now (only its size when past `MAX_CHUNKS`) for the next
        short-lived process, which will search it without opening Chroma."""
        from knowledge.snapshot import MAX_CHUNKS, Snapshot

        assert self._shared is not None and self._snapshot is not None
        with self._lock, self._shared.locked(exclusive=False):  # no writer meanwhile
            self._catch_up()
            assert self._seen is not None
            collection = self._collection
            model = self._recorded(collection)
            if collection.count() > MAX_CHUNKS:
                snapshot = Snapshot.too_large(self._seen, model)
            else:
                snapshot = Snapshot.of(self._seen, collection.get(
                    include=["embeddings", "documents", "metadatas"]), model)
        snapshot.write(self._snapshot)

    def count(self) -> int:
        with self._using() as collection:
            return collection.count()

    def texts(self, chunk_ids: Iterable[str]) -> dict[str, str]:
        """{chunk id: text} of those of `chunk_ids` still indexed."""
        ids = list(dict.fromkeys(chunk_ids))
        if not ids:
            return {}
        with self._using() as collection:
            got = collection.get(ids=ids, include=["documents"])
        return {cid: text for cid, text in zip(got["ids"], got["documents"], strict=True)
                if text is not None}

    def chunk_counts(self, page: int = 5000) -> dict[tuple[int, int], int]:
        """{(document id, version): number of indexed chunks}."""
        counts: dict[tuple[int, int], int] = {}
        offset = 0
        while True:
            with self._using() as collection:
                batch = collection.get(include=["metadatas"], limit=page, offset=offset)
            for meta in batch["metadatas"]:
                if meta is None:  # deleted by another process while we page (see `search`)
                    continue
                key = (int(meta["document_id"]), int(meta["version"]))
                counts[key] = counts.get(key, 0) + 1
            if len(batch["ids"]) < page:
                return counts
            offset += page

    def clear(self) -> None:
        """Drop every chunk (used by reindex before rebuilding from SQL)."""
        with self._using(write=True):  # opened (so created) first: there is one to delete
            self._client.delete_collection(self._name)
            self.__dict__["_collection"] = self._open()
