"""The same storage and chat service on a real PostgreSQL server."""

from __future__ import annotations

import threading

from sqlalchemy import inspect, select

from bot.config import Settings
from bot.storage.db import Database
from bot.storage.models import Message, Rating
from bot.storage.store import RatingOutcome, Store, UserInfo
from bot.wiring import build_services
from tests.fakes import FakeChatModel, FakeEmbedder
from tests.postgres import fresh_database


def test_migrations_round_trip_on_postgres(postgres_url: str) -> None:
    from tests.test_storage import assert_migrations_round_trip

    db = Database(fresh_database(postgres_url))
    assert_migrations_round_trip(db)
    db.dispose()


def test_migrations_and_ratings_on_postgres(postgres_url: str) -> None:
    db = Database(fresh_database(postgres_url))
    db.upgrade()
    db.upgrade()  # idempotent
    assert {"users", "messages", "ratings", "documents"} <= set(inspect(db.engine).get_table_names())
    store = Store(db)
    big_id = 7_000_000_000  # Telegram ids exceed 32 bits
    store.upsert_user(UserInfo(big_id, "bob"))
    conv = store.active_conversation(-1001234567890)
    msg = store.add_message(conv, "assistant", "hi", chunk_ids=["1:1:0"], sources=["Doc"])
    assert store.rate(msg, big_id, 1) is RatingOutcome.CREATED
    assert store.rate(msg, big_id, -1) is RatingOutcome.CHANGED
    with db.read() as s:
        assert [(r.user_id, r.value) for r in s.scalars(select(Rating))] == [(big_id, -1)]
        assert s.scalar(select(Message.chunk_ids)) == ["1:1:0"]
    db.dispose()


def test_concurrent_writers_on_postgres(postgres_url: str) -> None:
    db = Database(fresh_database(postgres_url))
    db.upgrade()
    store, errors = Store(db), []

    def worker(n: int) -> None:
        try:
            for _ in range(10):
                store.upsert_user(UserInfo(n))
                store.active_conversation(n)
        except Exception as exc:  # pragma: no cover
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    db.dispose()


def test_chat_pipeline_with_database_url(postgres_url: str, tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    settings = Settings(data_dir=tmp_path, database_url=fresh_database(postgres_url))
    services = build_services(settings, model=FakeChatModel("From Postgres."),
                              embedder=FakeEmbedder(), seed=True)
    assert services.store.count_documents() >= 3  # the samples were seeded into PostgreSQL
    reply = services.chat.answer(3, UserInfo(3), "rate an answer: press the thumbs up button")
    # "Postgres" is in no excerpt, so the answer is replaced by its evidence; stored as shown.
    assert reply.grounding == "extractive" and reply.generated == "From Postgres."
    assert reply.sources and reply.text != "From Postgres."
    assert services.store.rate(reply.message_id, 3, 1) is RatingOutcome.CREATED
    with services.db.read() as s:
        assert s.scalar(select(Message.text).where(Message.id == reply.message_id)) == reply.text
    services.close()


def test_kb_search_weighs_candidates_with_saved_statistics_on_postgres(
        postgres_url: str, tmp_path) -> None:
    from knowledge.retrieval import Ranking

    settings = Settings(data_dir=tmp_path, database_url=fresh_database(postgres_url))
    services = build_services(settings, embedder=FakeEmbedder(), seed=False)
    knowledge = services.knowledge
    ids = {w: knowledge.add_text(w.title(), f"How do I {w} a table? Use {w.upper()}.",
                                 f"t:{w}", "t").document.id for w in ("truncate", "copy", "lock")}
    knowledge.ranking = Ranking(per_document=1, document_bm25=1.0)
    assert knowledge.search("How do I truncate a table?", 1)[0].document_id == ids["truncate"]
    assert (tmp_path / "bm25.json").exists()
    # The candidates' texts come from PostgreSQL by id (an IN list), and only theirs.
    texts = {i: f"{t}\n{x}" for i, t, x in services.store.document_texts([ids["copy"]])}
    assert list(texts) == [ids["copy"]]
    services.close()
