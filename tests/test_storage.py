import threading

from sqlalchemy import inspect, select

from bot.storage.db import Database
from bot.storage.models import Rating
from bot.storage.store import RatingOutcome, Store, UserInfo


def make_store(tmp_path) -> Store:
    db = Database(f"sqlite:///{tmp_path / 'a.db'}")
    db.upgrade()
    return Store(db)


def test_upgrade_creates_the_schema_and_is_idempotent(tmp_path) -> None:
    store = make_store(tmp_path)
    store.db.upgrade()
    tables = set(inspect(store.db.engine).get_table_names())
    assert {"users", "conversations", "messages", "ratings", "documents",
            "alembic_version"} <= tables
    with store.db.engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"


def test_the_head_revision_from_file_names_is_alembics(tmp_path) -> None:
    from alembic.config import Config
    from alembic.script import ScriptDirectory

    from bot.storage.db import ALEMBIC_DIR, head_revision

    cfg = Config()
    cfg.set_main_option("script_location", str(ALEMBIC_DIR))
    assert head_revision() == ScriptDirectory.from_config(cfg).get_current_head()
    assert make_store(tmp_path).db.revision() == head_revision()


def test_upgrade_runs_alembic_only_when_the_schema_is_behind(tmp_path, monkeypatch) -> None:
    from alembic import command

    db = make_store(tmp_path).db
    calls: list[str] = []
    real = command.upgrade
    monkeypatch.setattr(command, "upgrade", lambda cfg, rev: calls.append(rev) or real(cfg, rev))
    db.upgrade()
    assert calls == []  # at the head: only read
    from alembic.config import Config

    from bot.storage.db import ALEMBIC_DIR, head_revision

    cfg = Config()
    cfg.set_main_option("script_location", str(ALEMBIC_DIR))
    with db.engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.downgrade(cfg, "0008")
    assert db.revision() == "0008"
    db.upgrade()
    assert calls == ["head"] and db.revision() == head_revision() == "0010"
    columns = {c["name"] for c in inspect(db.engine).get_columns("corrections")}
    assert {"review", "reviewed_at"} <= columns
    assert "questions" in {c["name"] for c in inspect(db.engine).get_columns("retrieval_boosts")}


def test_a_changed_vote_updates_the_one_rating(tmp_path) -> None:
    store = make_store(tmp_path)
    store.upsert_user(UserInfo(7))
    conv = store.active_conversation(100)
    msg = store.add_message(conv, "assistant", "hello")
    assert store.rate(msg, 7, 1) is RatingOutcome.CREATED
    assert store.rate(msg, 7, 1) is RatingOutcome.UNCHANGED
    assert store.rate(msg, 7, -1) is RatingOutcome.CHANGED
    with store.db.read() as s:
        assert [r.value for r in s.scalars(select(Rating))] == [-1]


def test_only_assistant_messages_can_be_rated(tmp_path) -> None:
    store = make_store(tmp_path)
    store.upsert_user(UserInfo(7))
    conv = store.active_conversation(100)
    question = store.add_message(conv, "user", "hi", user_id=7)
    assert store.rate(question, 7, 1) is RatingOutcome.NO_MESSAGE
    assert store.rate(9999, 7, 1) is RatingOutcome.NO_MESSAGE


def test_reset_starts_a_new_conversation_with_no_history(tmp_path) -> None:
    store = make_store(tmp_path)
    first = store.active_conversation(5)
    store.add_message(first, "user", "one")
    assert store.active_conversation(5) == first
    assert store.end_conversation(5)
    second = store.active_conversation(5)
    assert second != first
    assert store.recent_turns(second, 10) == []
    assert [t.text for t in store.recent_turns(first, 10)] == ["one"]


def test_concurrent_read_then_write_transactions_do_not_fail(tmp_path) -> None:
    """Each thread reads then writes in one transaction: the classic SQLite lock-upgrade trap."""
    store = make_store(tmp_path)
    errors: list[Exception] = []

    def worker(n: int) -> None:
        try:
            for i in range(15):
                store.upsert_user(UserInfo(n, first_name=f"u{i}"))
                store.active_conversation(n)
        except Exception as exc:  # pragma: no cover - the assertion below reports it
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []


def assert_migrations_round_trip(db: Database) -> None:
    """upgrade → downgrade to nothing → upgrade, then Alembic's autogenerate comparison finds
    nothing to add, drop or change between the models and the migrated schema."""
    from alembic import command
    from alembic.autogenerate import compare_metadata
    from alembic.config import Config
    from alembic.migration import MigrationContext

    from bot.storage.db import ALEMBIC_DIR
    from bot.storage.models import Base

    config = Config()
    config.set_main_option("script_location", str(ALEMBIC_DIR))
    db.upgrade()
    with db.engine.begin() as conn:
        config.attributes["connection"] = conn
        command.downgrade(config, "base")
    assert set(inspect(db.engine).get_table_names()) <= {"alembic_version"}
    db.upgrade()
    with db.engine.connect() as conn:
        context = MigrationContext.configure(conn, opts={"compare_type": True})
        assert compare_metadata(context, Base.metadata) == []


def test_the_migrations_round_trip_and_build_exactly_the_models_schema(tmp_path) -> None:
    assert_migrations_round_trip(make_store(tmp_path).db)


def test_upgrade_links_answers_written_before_the_link_existed(tmp_path) -> None:
    """Migration 0006 fills in each old answer's question: the latest one before it."""
    from alembic import command
    from alembic.config import Config

    from bot.storage.db import ALEMBIC_DIR
    from bot.storage.models import Message

    db = Database(f"sqlite:///{tmp_path / 'old.db'}")
    config = Config()
    config.set_main_option("script_location", str(ALEMBIC_DIR))
    config.set_main_option("sqlalchemy.url", str(db.engine.url))
    with db.engine.begin() as conn:
        config.attributes["connection"] = conn
        command.upgrade(config, "0005")
        conn.exec_driver_sql("INSERT INTO conversations (id, chat_id, started_at) "
                             "VALUES (1, 5, '2026-01-01')")
        for mid, role in [(1, "user"), (2, "assistant"), (3, "user"), (4, "assistant")]:
            conn.exec_driver_sql(
                "INSERT INTO messages (id, conversation_id, role, text, chunk_ids, sources, "
                f"created_at) VALUES ({mid}, 1, '{role}', 'm{mid}', '[]', '[]', '2026-01-01')")
    db.upgrade()
    with db.read() as s:
        links = s.execute(select(Message.id, Message.question_id).order_by(Message.id)).all()
    assert [tuple(r) for r in links] == [(1, None), (2, 1), (3, None), (4, 3)]


def test_sql_is_written_only_in_the_storage_package() -> None:
    """Services, handlers, knowledge and tuning reach SQL through the repositories in
    `bot/storage` (`Store`, `TrainingStore`, `ReportStore`): none builds a query itself."""
    import re
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    query = re.compile(r"^\s*(from sqlalchemy(\.orm)? import|import sqlalchemy\b|"
                       r"from bot\.storage\.models import (?!utcnow\s*$))", re.M)
    offenders = [str(p.relative_to(root)) for package in ("bot", "knowledge", "tuning")
                 for p in (root / package).rglob("*.py")
                 if "storage" not in p.relative_to(root).parts and query.search(p.read_text())]
    assert offenders == []
