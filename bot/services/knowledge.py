"""Curating the knowledge base: SQL keeps the documents, the Chroma index keeps their chunks."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from enum import Enum
from pathlib import Path

from bot.services import UserError
from bot.storage.store import DocumentInfo, Store
from knowledge.chunking import chunk_text
from knowledge.documents import ParsedDocument, UnsupportedDocument, parse_file, parse_text
from knowledge.embeddings import Embedder
from knowledge.index import Hit, KnowledgeIndex

logger = logging.getLogger(__name__)

SAMPLES_DIR = Path(__file__).resolve().parents[2] / "knowledge" / "samples"


class AddStatus(Enum):
    ADDED = "added"
    REPLACED = "replaced"
    DUPLICATE = "duplicate"


@dataclass(frozen=True)
class AddResult:
    status: AddStatus
    document: DocumentInfo


class KnowledgeService:
    """Add, replace, remove, search and rebuild the knowledge base."""

    def __init__(self, store: Store, index: KnowledgeIndex, embedder: Embedder) -> None:
        self.store = store
        self.index = index
        self._embedder = embedder

    def _chunks(self, doc: ParsedDocument) -> list[str]:
        max_tokens = min(self._embedder.max_tokens, 256) - 16  # room for the title line
        return chunk_text(doc.text, self._embedder.count_tokens, max_tokens=max_tokens,
                          overlap_tokens=max_tokens // 5)

    def add_parsed(self, doc: ParsedDocument, source: str, added_by: int | None) -> AddResult:
        """Add a document, or a new version of the one with the same source."""
        duplicate = self.store.document_by_hash(doc.content_hash)
        if duplicate is not None:
            return AddResult(AddStatus.DUPLICATE, duplicate)
        chunks = self._chunks(doc)
        existing = self.store.document_by_source(source)
        if existing is None:
            info = self.store.add_document(title=doc.title, source=source, text=doc.text,
                                           content_hash=doc.content_hash,
                                           chunk_count=len(chunks), added_by=added_by)
            status = AddStatus.ADDED
        else:
            info = self.store.replace_document(existing.id, title=doc.title, text=doc.text,
                                               content_hash=doc.content_hash,
                                               chunk_count=len(chunks), added_by=added_by)
            status = AddStatus.REPLACED
        # Index the new version, then drop every other version's chunks.
        self.index.add(info.id, info.version, info.title, chunks)
        if status is AddStatus.REPLACED:
            self.index.delete_document(info.id, keep_version=info.version)
        logger.info("Knowledge document %s %s (v%d, %d chunks)", info.id, status.value,
                    info.version, len(chunks))
        return AddResult(status, info)

    def add_file(self, path: Path, added_by: int | None = None) -> AddResult:
        try:
            parsed = parse_file(path)
        except UnsupportedDocument as exc:
            raise UserError(str(exc)) from exc
        return self.add_parsed(parsed, source=str(path.resolve()), added_by=added_by)

    def add_text(self, title: str, text: str, source: str, added_by: int | None) -> AddResult:
        try:
            parsed = parse_text(text, title=title)
        except UnsupportedDocument as exc:
            raise UserError(str(exc)) from exc
        return self.add_parsed(parsed, source=source, added_by=added_by)

    def remove(self, document_id: int) -> bool:
        self.index.delete_document(document_id)
        return self.store.delete_document(document_id)

    def list(self) -> list[DocumentInfo]:
        return self.store.list_documents()

    def search(self, query: str, k: int = 5) -> list[Hit]:
        return self.index.search(query, k)

    def reindex(self) -> int:
        """Rebuild the whole Chroma index from the documents in SQL; returns the chunk count."""
        self.index.clear()
        total = 0
        for info in self.store.list_documents():
            text = self.store.document_text(info.id) or ""
            chunks = self._chunks(ParsedDocument(info.title, text))
            self.index.add(info.id, info.version, info.title, chunks)
            total += len(chunks)
        return total

    def seed_samples(self, samples_dir: Path = SAMPLES_DIR) -> int:
        """Fill an empty knowledge base with the sample documents; returns how many were added."""
        if self.store.count_documents() > 0:
            return 0
        added = 0
        for path in sorted(samples_dir.glob("*.md")):
            result = self.add_parsed(parse_file(path), source=f"sample:{path.name}", added_by=None)
            added += result.status is AddStatus.ADDED
        logger.info("Seeded the knowledge base with %d sample documents", added)
        return added
