"""RETENTION_DAYS purges old conversations but keeps a trained adapter's record, and /forget
leaves no copy of the user's words in the SQLite files."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from sqlalchemy import select, update

from bot.cli import main
from bot.storage.models import Message, Rating
from bot.storage.store import UserInfo
from bot.storage.training import TrainingStore
from bot.wiring import Services


def _exchange(services: Services, user: int, question: str, days_ago: float) -> tuple[int, int]:
    services.store.upsert_user(UserInfo(user))
    conv = services.store.active_conversation(user)
    q = services.store.add_message(conv, "user", question, user_id=user)
    a = services.store.add_message(conv, "assistant", f"answer to {question}", question_id=q)
    when = datetime.now(UTC) - timedelta(days=days_ago)
    with services.db.write() as s:
        s.execute(update(Message).where(Message.id.in_([q, a])).values(created_at=when))
    return q, a


def _texts(services: Services) -> set[str]:
    with services.db.read() as s:
        return set(s.scalars(select(Message.text)))


def test_purge_keeps_recent_talk_and_what_training_learnt_from(services: Services) -> None:
    _exchange(services, 5, "old chatter", 40)
    trained_q, trained_a = _exchange(services, 5, "old rated and trained", 40)
    services.feedback.rate(trained_a, UserInfo(5), 1)
    _, untrained_a = _exchange(services, 6, "old rated, not yet trained", 36)
    services.feedback.rate(untrained_a, UserInfo(6), -1)
    services.feedback.correct(untrained_a, UserInfo(6), "a correction")
    _exchange(services, 5, "recent question", 2)

    # A nightly run trained on feedback up to 38 days ago; read back as the bot reads it.
    training = TrainingStore(services.db)
    run = training.open_run("nightly", "lora", None, {})
    training.update_run(run, status="promoted",
                        data_until=datetime.now(UTC) - timedelta(days=38))
    counts = services.feedback.purge(30, trained_until=training.last_data_until())
    assert counts["messages"] == 4 and counts["ratings"] == 1 and counts["corrections"] == 1
    texts = _texts(services)
    assert "old chatter" not in texts and "old rated, not yet trained" not in texts
    assert {"old rated and trained", "answer to old rated and trained", "recent question"} <= texts
    with services.db.read() as s:
        assert list(s.scalars(select(Rating.message_id))) == [trained_a]
    # Nothing trained yet: everything older than the window goes.
    assert services.feedback.purge(30, trained_until=None)["messages"] == 2
    assert _texts(services) == {"recent question", "answer to recent question"}


def test_forget_leaves_no_copy_in_the_sqlite_files(services: Services) -> None:
    canary = "my secret passphrase is TANGERINE-7731"
    _, answer = _exchange(services, 9, canary, 0)
    services.feedback.rate(answer, UserInfo(9), -1)
    services.feedback.correct(answer, UserInfo(9), f"no, {canary}")
    files = sorted(services.settings.data_dir.glob("assistant.db*"))

    def on_disk() -> bool:
        return any(b"TANGERINE-7731" in f.read_bytes() for f in files if f.exists())

    assert on_disk()  # the test can fail: the words are in the database or its log now
    services.feedback.forget(9)
    assert not on_disk()


def test_db_purge_command_needs_a_window(services: Services, capsys, monkeypatch) -> None:
    monkeypatch.setenv("ASSISTANT_DATA_DIR", str(services.settings.data_dir))
    monkeypatch.delenv("RETENTION_DAYS", raising=False)
    assert main(["db", "purge"]) == 2 and "--days" in capsys.readouterr().err
    _exchange(services, 5, "ancient", 400)
    assert main(["db", "purge", "--days", "365"]) == 0
    assert "2 messages" in capsys.readouterr().out and "ancient" not in _texts(services)
