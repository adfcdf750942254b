"""A copy of a small embedded index in one file, searched without opening Chroma.

`assistant kb search` starts a new process every time, and opening Chroma costs it 0.4-0.6 s of
importing chromadb, a third of the command. So a short-lived process keeps a copy of the
index's vectors and chunks next to it (`knowledge.index.SNAPSHOT` in the Chroma directory), made by a search
that found the copy missing or behind the index's write counter (`SharedStore.generation`,
bumped by every process that writes), and searches it exactly: for the sizes it is kept for
(`MAX_CHUNKS`), a matrix-vector product is as fast as Chroma's HNSW and never less accurate.
Chroma stays the index; the copy is a cache of it that any process may throw away.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

logger = logging.getLogger(__name__)

# 20,000 chunks of 384 dimensions: 30 MB of vectors, read in well under the import it saves.
MAX_CHUNKS = 20_000


@dataclass(frozen=True)
class Chunk:
    """What a search hit needs of a chunk besides its vector."""

    id: str
    document_id: int
    version: int
    title: str
    text: str


@dataclass(frozen=True)
class Snapshot:
    """The index as it was at write counter `generation`; without chunks when it had more
    than `MAX_CHUNKS` (then `complete` is False, and searches go to Chroma)."""

    generation: int
    complete: bool
    chunks: list[Chunk] = field(default_factory=list)
    vectors: np.ndarray = field(default_factory=lambda: np.zeros((0, 0), np.float32))
    model: str = ""  # the embedding model of the vectors ("": a snapshot from before it was kept)

    @classmethod
    def of(cls, generation: int, got: dict[str, Any], model: str) -> Snapshot:
        """From a Chroma `collection.get(include=["embeddings", "documents", "metadatas"])`
        of an index built with `model`."""
        chunks, vectors = [], []
        embeddings = got["embeddings"] if got["embeddings"] is not None else []
        for cid, text, meta, vector in zip(got["ids"], got["documents"], got["metadatas"],
                                           embeddings, strict=True):
            if meta is None or text is None:  # deleted by another process meanwhile
                continue
            chunks.append(Chunk(cid, int(meta["document_id"]), int(meta["version"]),
                                str(meta["title"]), text))
            vectors.append(vector)
        if not vectors:
            return cls(generation, True, model=model)
        matrix = np.asarray(vectors, dtype=np.float32)
        norms = np.linalg.norm(matrix, axis=1, keepdims=True)
        return cls(generation, True, chunks, matrix / np.where(norms == 0, 1, norms), model)

    @classmethod
    def too_large(cls, generation: int, model: str) -> Snapshot:
        return cls(generation, False, model=model)

    def nearest(self, vector: list[float], k: int) -> list[tuple[Chunk, float]]:
        """The `k` chunks of highest cosine similarity to `vector`, best first."""
        if not self.chunks or k <= 0:
            return []
        query = np.asarray(vector, dtype=np.float32)
        query /= np.linalg.norm(query) or 1.0
        scores = self.vectors @ query
        top = np.argpartition(-scores, k - 1)[:k] if k < len(scores) else np.arange(len(scores))
        top = top[np.argsort(-scores[top], kind="stable")]
        return [(self.chunks[i], float(scores[i])) for i in top]

    def write(self, path: Path) -> None:
        """Save atomically (a reader sees the old file or the new one); failures are logged."""
        meta = json.dumps({"generation": self.generation, "complete": self.complete,
                           "model": self.model,
                           "chunks": [[c.id, c.document_id, c.version, c.title, c.text]
                                      for c in self.chunks]}, ensure_ascii=False)
        staged = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        try:
            with open(staged, "wb") as handle:
                np.savez(handle, generation=np.array(self.generation, np.int64),
                         meta=np.frombuffer(meta.encode(), dtype=np.uint8),
                         vectors=self.vectors)
            os.replace(staged, path)
        except OSError as e:
            logger.warning("Could not save the index snapshot %s: %s", path, e)
            staged.unlink(missing_ok=True)

    @classmethod
    def read(cls, path: Path, generation: int) -> Snapshot | None:
        """The snapshot saved at `path` if it was taken at `generation`, else None."""
        try:
            with np.load(path, allow_pickle=False) as data:
                if int(data["generation"]) != generation:
                    return None
                meta = json.loads(bytes(data["meta"]).decode())
                vectors = data["vectors"]
            chunks = [Chunk(cid, int(doc), int(version), str(title), str(text))
                      for cid, doc, version, title, text in meta["chunks"]]
            if meta["complete"] and len(chunks) != len(vectors):
                raise ValueError(f"{len(chunks)} chunks but {len(vectors)} vectors")
            return cls(generation, bool(meta["complete"]), chunks, vectors,
                       str(meta.get("model", "")))
        except FileNotFoundError:
            return None
        except (OSError, ValueError, KeyError, TypeError) as e:
            logger.warning("Ignoring unreadable index snapshot %s: %s", path, e)
            return None
