"""Updates a dead process left unfinished are handled after the restart, exactly once.

Each test sets the scene a crash leaves behind: the update was fetched from the Bot API (and
so will never be delivered again) and journaled, then the process died at some point while
handling it. The bot is then started against the emulator and must finish the job. The real
kill -9 of `assistant run` is in tests/test_e2e.py.
"""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

from sqlalchemy import func, select, update

from bot.i18n import t
from bot.storage.journal import UpdateJournal
from bot.storage.models import Correction, Message, ProcessedUpdate, utcnow
from bot.storage.store import UserInfo
from bot.wiring import Services
from tests.botapi import BotAPIEmulator
from tests.conftest import stop_bot

USER = 601
LATE = t("late_answer", "en")


def fetched_then_crashed(botapi: BotAPIEmulator, services: Services, *,
                         minutes_ago: float = 1.0, streamed_into: int | None = None) -> dict:
    """The update the emulator offers last, taken by a process that journaled it and died."""
    entry = botapi.updates.pop()  # confirmed by that process's next getUpdates: never again
    UpdateJournal(services.db).begin(entry["update_id"], entry)
    with services.db.write() as s:
        s.execute(update(ProcessedUpdate).where(ProcessedUpdate.update_id == entry["update_id"])
                  .values(at=utcnow() - timedelta(minutes=minutes_ago),
                          reply_message_id=streamed_into))
    return entry


def rows(services: Services, role: str) -> list[Message]:
    with services.db.read() as s:
        return list(s.scalars(select(Message).where(Message.role == role).order_by(Message.id)))


def unfinished(services: Services) -> int:
    with services.db.read() as s:
        return s.scalar(select(func.count()).select_from(ProcessedUpdate)
                        .where(ProcessedUpdate.done_at.is_(None)))


def params_of(botapi: BotAPIEmulator, method: str) -> list[dict[str, Any]]:
    return [c.params for c in botapi.calls_to(method)]


async def test_question_recorded_but_unanswered_is_answered_late_once(
        grounded: Services, start_bot, botapi: BotAPIEmulator, fake_model) -> None:
    asked = botapi.send_text(USER, "what do the notes say?")
    fetched_then_crashed(botapi, grounded)
    # The dead process had recorded the question (before generating), not the answer.
    conversation = grounded.store.active_conversation(USER)
    grounded.store.upsert_user(UserInfo(USER))
    grounded.store.add_message(conversation, "user", asked["text"], user_id=USER,
                               telegram_message_id=asked["message_id"])

    app = await start_bot()
    reply = await botapi.wait_for_message(USER)
    assert reply["text"].startswith(LATE + "\n\n") and "echo" in reply["text"]
    assert [b["text"] for b in reply["reply_markup"]["inline_keyboard"][0]] == ["👍", "👎"]
    await botapi.wait_for(lambda: unfinished(grounded) == 0, what="the update to be finished")
    assert len(fake_model.calls) == 1
    questions, answers = rows(grounded, "user"), rows(grounded, "assistant")
    assert len(questions) == 1 and len(answers) == 1  # the question was not recorded again
    assert answers[0].question_id == questions[0].id
    assert answers[0].telegram_message_id == reply["message_id"]
    # The journal no longer holds the user's words once the update is handled.
    with grounded.db.read() as s:
        assert s.scalar(select(func.count()).select_from(ProcessedUpdate)
                        .where(ProcessedUpdate.payload.is_not(None))) == 0

    # Another restart finds nothing left to do.
    await stop_bot(app)
    await start_bot()
    botapi.send_text(USER, "/help")
    await botapi.wait_for_message(USER, 2)
    assert len(botapi.sent_messages(USER)) == 2 and len(fake_model.calls) == 1


async def test_question_never_recorded_is_answered_with_one_set_of_rows(
        grounded: Services, start_bot, botapi: BotAPIEmulator, fake_model) -> None:
    botapi.send_text(USER, "anything in the notes?")
    fetched_then_crashed(botapi, grounded)  # died before the handler recorded anything
    await start_bot()
    reply = await botapi.wait_for_message(USER)
    assert reply["text"].startswith(LATE)
    await botapi.wait_for(lambda: unfinished(grounded) == 0, what="the update to be finished")
    assert len(rows(grounded, "user")) == 1 and len(rows(grounded, "assistant")) == 1
    assert len(fake_model.calls) == 1


async def test_old_question_gets_an_apology_instead(grounded: Services, start_bot,
                                                    botapi: BotAPIEmulator, fake_model) -> None:
    asked = botapi.send_text(USER, "what do the notes say?")
    fetched_then_crashed(botapi, grounded, minutes_ago=grounded.settings.late_answer_minutes + 5)
    await start_bot()
    reply = await botapi.wait_for_message(USER)
    assert reply["text"] == t("restart_apology", "en")
    quoted = params_of(botapi, "sendMessage")[-1]["reply_parameters"]
    assert (json.loads(quoted) if isinstance(quoted, str) else quoted)["message_id"] \
        == asked["message_id"]
    await botapi.wait_for(lambda: unfinished(grounded) == 0, what="the update to be finished")
    assert fake_model.calls == [] and rows(grounded, "assistant") == []


async def test_answer_recorded_but_never_sent_is_sent_without_generating_again(
        grounded: Services, start_bot, botapi: BotAPIEmulator, fake_model) -> None:
    fake_model.queue("The notes are general.")
    asked = botapi.send_text(USER, "what do the notes say?")
    fetched_then_crashed(botapi, grounded)
    # The dead process got as far as recording the answer, then died before sending it.
    grounded.chat.answer(USER, UserInfo(USER), asked["text"], asked_as=asked["message_id"])
    assert len(fake_model.calls) == 1

    await start_bot()
    reply = await botapi.wait_for_message(USER)
    assert reply["text"].startswith(LATE) and "The notes are general." in reply["text"]
    await botapi.wait_for(lambda: unfinished(grounded) == 0, what="the update to be finished")
    assert len(fake_model.calls) == 1  # not generated twice
    assert len(rows(grounded, "assistant")) == 1
    assert rows(grounded, "assistant")[0].telegram_message_id == reply["message_id"]


async def test_answer_already_in_the_chat_is_not_sent_again(
        grounded: Services, start_bot, botapi: BotAPIEmulator, fake_model) -> None:
    asked = botapi.send_text(USER, "what do the notes say?")
    fetched_then_crashed(botapi, grounded)
    reply = grounded.chat.answer(USER, UserInfo(USER), asked["text"],
                                 asked_as=asked["message_id"])
    grounded.chat.shown_as(reply.message_id, 99)  # sent; only marking the update done was lost
    await start_bot()
    await botapi.wait_for(lambda: unfinished(grounded) == 0, what="the update to be finished")
    botapi.send_text(USER, "/help")
    await botapi.wait_for_message(USER)
    assert [m["text"] for m in botapi.sent_messages(USER)] == [t("help", "en")]
    assert len(fake_model.calls) == 1


async def test_half_streamed_answer_is_finished_in_the_same_message(
        grounded: Services, start_bot, botapi: BotAPIEmulator, fake_model) -> None:
    botapi.send_text(USER, "what do the notes say?")
    # The dead process had shown the first words of its answer when it died.
    partial = await botapi._api_sendMessage({"chat_id": USER, "text": "The notes …"})
    fetched_then_crashed(botapi, grounded, streamed_into=partial["message_id"])
    await start_bot()
    await botapi.wait_for(lambda: unfinished(grounded) == 0, what="the update to be finished")
    sent = botapi.sent_messages(USER)
    assert len(sent) == 1 and sent[0]["message_id"] == partial["message_id"]
    assert sent[0]["text"].startswith(LATE) and "inline_keyboard" in sent[0]["reply_markup"]
    assert params_of(botapi, "sendMessage") == []
    assert rows(grounded, "assistant")[0].telegram_message_id == partial["message_id"]


async def test_streamed_message_is_journaled_while_answering(
        grounded: Services, start_bot, botapi: BotAPIEmulator, fake_model) -> None:
    fake_model.word_delay = 0.3  # long enough for a partial message to be shown
    fake_model.queue("one two three four five six seven eight")
    await start_bot()
    botapi.send_text(USER, "what do the notes say?")
    update_id = max(botapi.history)
    reply = await botapi.wait_for_message(USER, timeout=30)
    with grounded.db.read() as s:
        journaled = s.get(ProcessedUpdate, update_id)
    assert journaled is not None and journaled.reply_message_id == reply["message_id"]


async def test_confirmed_forget_is_finished_after_a_crash(
        grounded: Services, start_bot, botapi: BotAPIEmulator) -> None:
    grounded.chat.answer(USER, UserInfo(USER), "what do the notes say?")
    confirmation = await botapi._api_sendMessage({"chat_id": USER, "text": "Delete?"})
    botapi.press_button(USER, confirmation, "forget:yes")
    fetched_then_crashed(botapi, grounded)  # the delete never ran (or was rolled back)
    await start_bot()
    await botapi.wait_for(lambda: unfinished(grounded) == 0, what="the update to be finished")
    assert rows(grounded, "user") == [] and rows(grounded, "assistant") == []
    assert botapi.messages[(USER, confirmation["message_id"])]["text"].startswith("Done.")


async def test_correction_handled_again_is_stored_once(grounded: Services) -> None:
    reply = grounded.chat.answer(USER, UserInfo(USER), "what do the notes say?")
    grounded.feedback.rate(reply.message_id, UserInfo(USER), -1)
    for _ in range(2):  # stored, then its update handled again after a crash
        assert grounded.feedback.correct(reply.message_id, UserInfo(USER), "They are old.")
    with grounded.db.read() as s:
        assert s.scalar(select(func.count(Correction.id))) == 1
