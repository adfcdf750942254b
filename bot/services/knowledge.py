"""Curating the knowledge base: SQL keeps the documents, the Chroma index keeps their chunks.

Searches only return chunks of a document's current version in SQL, so a replace in progress,
or one a crash interrupted, never mixes versions in an answer; `reindex` repairs the index.
"""

from __future__ import annotations

import json
import logging
import time
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Any

from bot.services import UserError
from bot.storage.boosts import BoostStore
from bot.storage.store import DocumentInfo, Store
from knowledge.chunking import chunk_text
from knowledge.documents import ParsedDocument, UnsupportedDocument, parse_file, parse_text
from knowledge.embeddings import Embedder
from knowledge.evidence import Coverage, Evidence, EvidencePicker, content_words
from knowledge.index import BuiltWithAnotherModel, Hit, KnowledgeIndex
from knowledge.lexical import BM25, CorpusStats, tokens
from knowledge.retrieval import (
    DEFAULT_RANKING,
    FeedbackBoosts,
    Ranking,
    fetch_size,
    rank,
)

logger = logging.getLogger(__name__)

SAMPLES_DIR = Path(__file__).resolve().parents[2] / "knowledge" / "samples"
SYSTEM_ACTOR = "system"
BOOSTS_TTL_S = 60.0  # how long a process keeps the nightly boosts before reading them again
INGEST_BATCH_CHUNKS = 256  # chunks of several files embedded in one call (sorted by length)


class AddStatus(Enum):
    ADDED = "added"
    REPLACED = "replaced"
    DUPLICATE = "duplicate"


@dataclass(frozen=True)
class AddResult:
    status: AddStatus
    document: DocumentInfo


@dataclass(frozen=True)
class IndexProblem:
    document_id: int
    title: str
    expected_chunks: int
    indexed_chunks: int


Signature = tuple[int, int, int]  # `Store.knowledge_signature`: changes with the documents


@contextmanager
def _refused_if_built_with_another_model() -> Iterator[None]:
    """An index of another embedding model's vectors, said to the admin as what to do."""
    try:
        yield
    except BuiltWithAnotherModel as exc:
        raise UserError(str(exc)) from exc


class KnowledgeService:
    """Add, replace, remove, search, check and rebuild the knowledge base."""

    def __init__(self, store: Store, index: KnowledgeIndex, embedder: Embedder,
                  ranking: Ranking | None = None, boosts: BoostStore | None = None,
                  cache_dir: Path | None = None) -> None:
        """`cache_dir`: where the documents' BM25 statistics are kept between processes."""
        self.store = store
        self.index = index
        self.ranking = ranking or DEFAULT_RANKING
        self.boosts = boosts or BoostStore(store.db)
        self._boost_map: tuple[float, FeedbackBoosts] = (-BOOSTS_TTL_S, FeedbackBoosts())
        self._boost_signature: tuple[int, object] | None = None
        # Chunks and questions go through the index's model (SEARCH_MODEL); the answer checks'
        # words and sentences through `embedder`, whose similarities their thresholds know.
        self._search = index.embedder
        self._picker = EvidencePicker(embedder)
        self._coverage = Coverage(embedder)
        self._stats_file = cache_dir / "bm25.json" if cache_dir else None
        self._stats: tuple[Signature, CorpusStats] | None = None
        self._words: tuple[Signature, set[str]] | None = None

    def _chunks(self, text: str) -> list[str]:
        max_tokens = min(self._search.max_tokens, 256) - 16  # room for the title line
        return chunk_text(text, self._search.count_tokens, max_tokens=max_tokens,
                          overlap_tokens=max_tokens // 5)

    def add_parsed(self, doc: ParsedDocument, source: str, added_by: int | None,
                   actor: str, chunks: list[str] | None = None,
                   embeddings: list[list[float]] | None = None) -> AddResult:
        """Add a document, or a new version of the one with the same source."""
        duplicate = self.store.document_by_hash(doc.content_hash)
        if duplicate is not None:
            return AddResult(AddStatus.DUPLICATE, duplicate)
        self._same_model()  # before SQL: a document is never stored without its chunks
        chunks = self._chunks(doc.text) if chunks is None else chunks
        existing = self.store.document_by_source(source)
        fields: dict[str, Any] = dict(title=doc.title, text=doc.text,
                                      content_hash=doc.content_hash, chunk_count=len(chunks),
                                      added_by=added_by, actor=actor)
        if existing is None:
            info = self.store.add_document(source=source, **fields)
            status = AddStatus.ADDED
        else:
            info = self.store.replace_document(existing.id, **fields)
            status = AddStatus.REPLACED
        # SQL now names the new version, so searches ignore the old chunks from here on;
        # index the new ones, then drop the old ones.
        self.index.add(info.id, info.version, info.title, chunks, embeddings)
        if status is AddStatus.REPLACED:
            self.index.delete_document(info.id, keep_version=info.version)
        logger.info("Knowledge document %s %s (v%d, %d chunks)", info.id, status.value,
                    info.version, len(chunks))
        return AddResult(status, info)

    def add_file(self, path: Path, actor: str, added_by: int | None = None,
                 data: bytes | None = None, source: str | None = None) -> AddResult:
        """Add a file from disk (or its bytes, e.g. a Telegram upload)."""
        try:
            parsed = parse_file(path, data)
        except UnsupportedDocument as exc:
            raise UserError(str(exc)) from exc
        return self.add_parsed(parsed, source or str(path.resolve()), added_by, actor)

    def add_files(self, paths: Iterable[Path], actor: str, added_by: int | None = None
                  ) -> Iterator[tuple[Path, AddResult | UserError]]:
        """Add many files, yielding each one's result or error in order. The chunks of several
        files are embedded together, which is much faster than one file at a time."""
        pending: list[tuple[Path, ParsedDocument | UserError, list[str]]] = []
        for path in paths:
            try:
                parsed: ParsedDocument | UserError = parse_file(path)
            except UnsupportedDocument as exc:
                parsed = UserError(str(exc))
            except OSError as exc:
                parsed = UserError(f"'{path}' could not be read ({exc.strerror or exc}).")
            chunks = []
            if (isinstance(parsed, ParsedDocument)
                    and self.store.document_by_hash(parsed.content_hash) is None):
                chunks = self._chunks(parsed.text)
            pending.append((path, parsed, chunks))
            if sum(len(chunks) for *_, chunks in pending) >= INGEST_BATCH_CHUNKS:
                yield from self._add_batch(pending, actor, added_by)
                pending = []
        yield from self._add_batch(pending, actor, added_by)

    def _add_batch(self, batch: list[tuple[Path, ParsedDocument | UserError, list[str]]],
                   actor: str, added_by: int | None
                   ) -> Iterator[tuple[Path, AddResult | UserError]]:
        texts = [self.index.embedding_text(doc.title, c)
                 for _, doc, chunks in batch if isinstance(doc, ParsedDocument) for c in chunks]
        vectors = self._search.embed(texts) if texts else []
        start = 0
        for path, doc, chunks in batch:
            if isinstance(doc, UserError):
                yield path, doc
                continue
            embeddings = vectors[start:start + len(chunks)]
            start += len(chunks)
            try:
                yield path, self.add_parsed(doc, str(path.resolve()), added_by, actor,
                                            chunks or None, embeddings or None)
            except UserError as exc:
                yield path, exc

    def add_text(self, title: str, text: str, source: str, actor: str,
                 added_by: int | None = None) -> AddResult:
        try:
            parsed = parse_text(text, title=title)
        except UnsupportedDocument as exc:
            raise UserError(str(exc)) from exc
        return self.add_parsed(parsed, source, added_by, actor)

    def remove(self, document_id: int, actor: str) -> DocumentInfo | None:
        """Remove a document and its chunks; None if there is no such document."""
        info = self.store.delete_document(document_id, actor)
        self.index.delete_document(document_id)
        return info

    def list_documents(self, offset: int = 0, limit: int | None = None) -> list[DocumentInfo]:
        return self.store.list_documents(offset, limit)

    def count(self) -> int:
        return self.store.count_documents()

    def show(self, document_id: int) -> tuple[DocumentInfo, str] | None:
        """A document's metadata and text."""
        info = self.store.document(document_id)
        if info is None:
            return None
        return info, self.store.document_text(document_id) or ""

    def search(self, query: str, k: int = 5, ranking: Ranking | None = None,
               context: str = "") -> list[Hit]:
        """The `k` best chunks of current document versions, best first, under `ranking`
        (default: this service's, one chunk per document; see `knowledge.retrieval`), nudged by
        feedback boosts; `context`: the question `query` follows up."""
        ranking = ranking or self.ranking
        vector = self.index.query_vector(query, context)
        if vector is None:
            return []
        with _refused_if_built_with_another_model():
            hits = self.index.search_vector(vector, 2 * fetch_size(k, ranking))
        current = self.store.current_versions({h.document_id for h in hits})
        hits = [h for h in hits if current.get(h.document_id) == h.version]
        candidates = {h.document_id for h in hits}
        lexical = self._bm25(candidates).relative(query, candidates) \
            if ranking.document_bm25 and hits else None
        boosts = self._current_boosts().for_question(vector, (h.chunk_id for h in hits))
        return rank(query, hits, k, ranking, boosts, lexical)

    def _same_model(self) -> None:
        """Refuse, with what to do, to mix the vectors of two embedding models in one index."""
        with _refused_if_built_with_another_model():
            self.index.check_model()

    def recompute_boosts(self, actor: str) -> dict[str, int]:
        """Recompute the feedback boosts from every rating (audited). A 👎 whose correction
        one of the cited chunks says (`grounding.supported`) leaves that chunk alone: the
        evidence was right, the answer was not. Each boost applies to questions like the rated
        ones (`knowledge.retrieval.reach`)."""
        from bot.services.grounding import supported

        votes = self.boosts.votes()
        texts = self.index.texts(c for v in votes if v.value < 0 and v.correction
                                 for c in v.chunk_ids)

        def holds(chunk_id: str, correction: str) -> bool:
            return chunk_id in texts and supported(correction, [texts[chunk_id]])

        return self.boosts.recompute(actor, [v.sparing(holds) for v in votes],
                                     self._search.embed)

    def _current_boosts(self) -> FeedbackBoosts:
        """The boosts as last read; every `BOOSTS_TTL_S` their signature is checked, and they
        are read again only when another process (the nightly job) has changed them."""
        loaded_at, boosts = self._boost_map
        if time.monotonic() - loaded_at >= BOOSTS_TTL_S:
            signature = self.boosts.signature()
            if signature != self._boost_signature:
                boosts, self._boost_signature = self.boosts.feedback(), signature
            self._boost_map = (time.monotonic(), boosts)
        return boosts

    def closest(self, question: str, hits: list[Hit]) -> list[float]:
        """Each hit's nearest sentence to `question`, as a cosine."""
        return self._picker.closest(question, hits)

    def evidence(self, question: str, hits: list[Hit], k: int = 3,
                 context: str = "") -> list[Evidence]:
        """The `k` sentences of `hits` that best answer `question`, best first."""
        return self._picker.pick(question, hits, k, context)

    def vocabulary(self) -> set[str]:
        """Every content word of the knowledge base (rebuilt when a document changes, in this
        process or another)."""
        signature = self.store.knowledge_signature()
        if self._words is None or self._words[0] != signature:
            words: set[str] = set()
            for _, title, text in self.store.document_texts():
                words |= content_words(f"{title}\n{text}")
            self._words = (signature, words)
        return self._words[1]

    def _bm25(self, document_ids: set[int]) -> BM25[int]:
        """BM25 over the documents `document_ids`, scored against the whole knowledge base."""
        texts = {doc_id: f"{title}\n{text}"
                 for doc_id, title, text in self.store.document_texts(document_ids)}
        return BM25(texts, stats=self._corpus_stats())

    def _corpus_stats(self) -> CorpusStats:
        """The documents' BM25 statistics: kept in memory and in the cache file, and counted
        again from every document only when the knowledge base changed (here or in another
        process). A command-line search then reads the few candidate documents, not all."""
        signature = self.store.knowledge_signature()
        if self._stats is not None and self._stats[0] == signature:
            return self._stats[1]
        stats = CorpusStats.read(self._stats_file, signature) if self._stats_file else None
        if stats is None:
            stats = CorpusStats.of(Counter(tokens(f"{title}\n{text}"))
                                   for _, title, text in self.store.document_texts())
            if self._stats_file:
                stats.write(self._stats_file, signature)
        self._stats = (signature, stats)
        return stats

    def uncovered(self, question: str, language: str | None = None,
                  near: set[str] | None = None) -> list[str]:
        """Specific words of `question` the knowledge base never speaks of, or that the
        `near` words (of the sentence that would answer) do not (see `Coverage`)."""
        return self._coverage.uncovered(question, self.vocabulary(),
                                        (language or "en").split("-")[0], near)

    def related(self, word: str, words: Sequence[str]) -> float:
        """How close in meaning `word` is to the closest of `words` (cosine, 1 = same)."""
        return self._coverage.related(word, words)

    def check(self) -> list[IndexProblem]:
        """Documents whose indexed chunk count differs from SQL (fix with `reindex`); raises
        `UserError` when the index was built with another embedding model."""
        self._same_model()
        indexed = self.index.chunk_counts()
        problems = [IndexProblem(d.id, d.title, d.chunk_count, indexed.pop((d.id, d.version), 0))
                    for d in self.store.list_documents()]
        problems = [p for p in problems if p.expected_chunks != p.indexed_chunks]
        problems += [IndexProblem(doc_id, "(stale chunks)", 0, n)
                     for (doc_id, _), n in indexed.items()]
        return problems

    def reindex(self, actor: str = SYSTEM_ACTOR) -> int:
        """Rebuild the whole Chroma index from the documents in SQL; returns the chunk count."""
        self.index.clear()
        total = 0
        for info in self.store.list_documents():
            chunks = self._chunks(self.store.document_text(info.id) or "")
            self.index.add(info.id, info.version, info.title, chunks)
            total += len(chunks)
        self.store.audit(actor, "reindex", {"documents": self.count(), "chunks": total})
        return total

    def export(self) -> Iterator[str]:
        """Every document as one JSON line (metadata and full text)."""
        for info in self.store.list_documents():
            record = {"id": info.id, "title": info.title, "source": info.source,
                      "version": info.version, "content_hash": info.content_hash,
                      "added_by": info.added_by, "created_at": info.created_at.isoformat(),
                      "text": self.store.document_text(info.id)}
            yield json.dumps(record, ensure_ascii=False)

    def seed_samples(self, samples_dir: Path = SAMPLES_DIR) -> int:
        """Fill an empty knowledge base with the sample documents; returns how many were added."""
        if self.store.count_documents() > 0:
            return 0
        added = 0
        for path in sorted(samples_dir.glob("*.md")):
            result = self.add_parsed(parse_file(path), f"sample:{path.name}", None, SYSTEM_ACTOR)
            added += result.status is AddStatus.ADDED
        logger.info("Seeded the knowledge base with %d sample documents", added)
        return added
