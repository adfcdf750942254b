"""Builds everything heavy exactly once and hands it to whoever needs it.

Tests pass fakes for the model, the embedder or the Chroma client; the app passes nothing and
gets the real ones.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from bot.config import Settings
from bot.services.feedback import FeedbackService
from bot.services.knowledge import KnowledgeService
from bot.services.review import ReviewService
from bot.services.stats import StatsService
from bot.storage.db import Database
from bot.storage.reporting import ReportStore
from bot.storage.store import Store
from knowledge.embeddings import (
    Embedder,
    LazyEmbedder,
    load_embedder,
    model_label,
    resolve_model,
)
from knowledge.index import KnowledgeIndex, open_chroma
from knowledge.shared import SharedStore

if TYPE_CHECKING:  # what only answering needs loads with it, not for `kb` or `db` commands
    from bot.model import ChatModel
    from bot.services.chat import ChatService

logger = logging.getLogger(__name__)


@dataclass
class Services:
    settings: Settings
    db: Database
    store: Store
    knowledge: KnowledgeService
    feedback: FeedbackService
    stats: StatsService
    review: ReviewService
    chat: ChatService | None = None  # None for commands that never generate (kb, db)

    def close(self) -> None:
        self.db.dispose()


def open_database(settings: Settings) -> Database:
    """Connect and migrate to the newest schema."""
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    db = Database(settings.sqlalchemy_url)
    db.upgrade()
    return db


def load_chat_model(settings: Settings) -> ChatModel:
    """The server at `LLM_URL` when one is set, else the in-process model."""
    from bot.model import HFChatModel

    if settings.llm_url:
        from bot.model.remote import OpenAIChatModel

        return OpenAIChatModel(settings.llm_url, model=settings.llm_model,
                               api_key=settings.llm_api_key,
                               max_new_tokens=settings.max_new_tokens,
                               temperature=settings.temperature,
                               timeout=settings.generation_timeout_s,
                               tokenizer=_base_tokenizer(settings),
                               adapters_dir=settings.adapters_dir
                               if settings.llm_follow_adapters else None,
                               engine_adapters_dir=settings.llm_adapters_dir)
    return HFChatModel(settings.base_model, settings.models_dir, settings.adapters_dir,
                       max_new_tokens=settings.max_new_tokens, temperature=settings.temperature,
                       repetition_penalty=settings.repetition_penalty,
                       no_repeat_ngram_size=settings.no_repeat_ngram_size,
                       max_time=settings.generation_timeout_s,
                       max_batch=settings.generation_workers,
                       dtype=settings.model_dtype, decode_bf16=settings.decode_bf16,
                       decode_int4=settings.decode_int4)


def _base_tokenizer(settings: Settings) -> Any:
    """The base model's tokenizer, to count and render prompts for a remote model; None when
    there is none on this machine (token counts are then estimated)."""
    try:
        from transformers import AutoTokenizer

        from bot.model import resolve_base_model

        return AutoTokenizer.from_pretrained(resolve_base_model(settings.base_model,
                                                                settings.models_dir))
    except Exception as exc:
        logger.warning("No local tokenizer for %r (%s); estimating prompt sizes",
                       settings.base_model or "the packaged model", exc)
        return None


def build_services(settings: Settings, *, with_chat: bool = True, model: ChatModel | None = None,
                   embedder: Embedder | None = None, chroma_client: Any = None,
                   seed: bool | None = None, short_lived: bool = False) -> Services:
    """Open storage and knowledge, and the chat model when `with_chat`; seed samples if empty.
    `short_lived` (a command-line command): search a snapshot of a small embedded index rather
    than open Chroma (see `knowledge.snapshot`)."""
    db = open_database(settings)
    store = Store(db)
    # The embedder and Chroma open on first use: `kb list` or `db upgrade` never load them.
    cache = settings.models_dir / "embeddings"
    embedder = embedder or LazyEmbedder(lambda: load_embedder(settings.embedding_model or None,
                                                              cache, bulk=settings.ingest_bf16))
    searcher, index_model = embedder, model_label(settings.embedding_model)
    if settings.search_model and settings.search_model != settings.embedding_model:
        searcher, index_model = LazyEmbedder(lambda: load_embedder(
            resolve_model(settings.search_model, cache), cache,
            bulk=settings.ingest_bf16)), model_label(settings.search_model)
    client = chroma_client or (lambda: open_chroma(settings.chroma_url, settings.chroma_dir))
    # An embedded store is shared with the other processes on this data dir (see SharedStore).
    shared = SharedStore(settings.chroma_dir) if not (chroma_client or settings.chroma_url) \
        else None
    index = KnowledgeIndex(client, searcher, shared=shared, snapshot=short_lived,
                           model=index_model,
                           unlabelled=model_label(settings.embedding_model))
    knowledge = KnowledgeService(store, index, embedder, cache_dir=settings.data_dir)
    if settings.seed_knowledge if seed is None else seed:
        knowledge.seed_samples()
    reports = ReportStore(db)
    services = Services(settings, db, store, knowledge, FeedbackService(store),
                        StatsService(reports), ReviewService(store, reports, knowledge))
    if with_chat:
        from bot.services.chat import ChatLimits, ChatService
        from bot.services.lessons import Lessons

        limits = ChatLimits(history_turns=settings.history_turns,
                            history_window=timedelta(minutes=settings.history_minutes)
                            if settings.history_minutes else None,
                            retrieval_k=settings.retrieval_k,
                            look_among_k=settings.look_among_k,
                            evidence_k=settings.evidence_k, min_support=settings.min_support,
                            abstain_on_unknown_terms=settings.abstain_on_unknown_terms,
                            max_message_chars=settings.max_message_chars)
        lessons = Lessons(store, embedder, settings.lesson_similarity) \
            if settings.lesson_similarity > 0 else None
        services.chat = ChatService(store, knowledge, model or load_chat_model(settings),
                                    settings.system_prompt, limits, lessons)
    return services
