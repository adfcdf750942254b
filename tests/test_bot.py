"""The real python-telegram-bot Application against the Bot API emulator, over HTTP."""

from __future__ import annotations

from dataclasses import replace

import pytest
from sqlalchemy import select

from bot.storage.models import Conversation, Message, Rating
from bot.wiring import Services
from tests.botapi import BotAPIEmulator
from tests.fakes import FakeChatModel

USER = 501


@pytest.fixture
async def bot(services: Services, start_bot):
    services.knowledge.add_text("Bot commands", "Send /reset to start a new conversation.",
                                "test:commands", "test")
    # Every question retrieves that document here; relevance itself is tested elsewhere.
    services.chat.limits = replace(services.chat.limits, min_score=-1.0, min_support=-1.0,
                                   abstain_on_unknown_terms=False, verify_answers=False)
    return await start_bot()


def buttons(message: dict) -> list[tuple[str, str]]:
    rows = message["reply_markup"]["inline_keyboard"]
    return [(b["text"], b["callback_data"]) for row in rows for b in row]


async def test_start_explains_the_bot(bot, botapi: BotAPIEmulator) -> None:
    botapi.send_text(USER, "/start")
    reply = await botapi.wait_for_message(USER)
    assert "/reset" in reply["text"] and "👍" in reply["text"] and "store" in reply["text"]
    assert "/kb_add" not in reply["text"]  # USER is not an admin


async def test_question_gets_answer_with_sources_and_rating_buttons(
        bot, botapi: BotAPIEmulator, services: Services, fake_model: FakeChatModel) -> None:
    fake_model.queue("Use /reset.")
    botapi.send_text(USER, "How do I start a new conversation?")
    reply = await botapi.wait_for_message(USER)
    assert reply["text"] == "Use /reset.\n\nSources: Bot commands"
    labels = [label for label, _ in buttons(reply)]
    assert labels == ["👍", "👎"]
    assert all(len(data.encode()) <= 64 for _, data in buttons(reply))
    assert botapi.calls_to("sendChatAction")[0].params["action"] == "typing"

    def stored_id() -> int | None:  # the bot records it right after sendMessage returns
        with services.db.read() as s:
            return s.scalar(select(Message.telegram_message_id)
                            .where(Message.role == "assistant"))

    assert await botapi.wait_for(stored_id, 5, "the answer's Telegram id in SQL") == \
        reply["message_id"]


async def test_pressing_a_button_stores_and_acknowledges_the_rating(
        bot, botapi: BotAPIEmulator, services: Services) -> None:
    botapi.send_text(USER, "How do I start a new conversation?")
    reply = await botapi.wait_for_message(USER)
    (_, up), (_, down) = buttons(reply)
    botapi.press_button(USER, reply, up)
    first = await botapi.wait_for(lambda: botapi.calls_to("answerCallbackQuery"))
    assert first[0].params["text"] == "Thanks for the feedback!"
    botapi.press_button(USER, reply, down)
    await botapi.wait_for(lambda: len(botapi.calls_to("answerCallbackQuery")) == 2)
    assert botapi.calls_to("answerCallbackQuery")[1].params["text"] == "Updated your rating."
    with services.db.read() as s:
        ratings = s.scalars(select(Rating)).all()
    assert [(r.user_id, r.value) for r in ratings] == [(USER, -1)]


async def test_stale_or_forged_buttons_get_a_polite_answer(bot, botapi: BotAPIEmulator,
                                                           services: Services) -> None:
    fake_msg = {"message_id": 1, "date": 0, "chat": {"id": USER, "type": "private"}}
    botapi.press_button(USER, fake_msg, "r:99999:1")
    botapi.press_button(USER, fake_msg, "garbage")
    await botapi.wait_for(lambda: len(botapi.calls_to("answerCallbackQuery")) == 2)
    texts = sorted(c.params["text"] for c in botapi.calls_to("answerCallbackQuery"))
    assert texts == ["Sorry, I no longer have that answer.", "This button is no longer valid."]
    with services.db.read() as s:
        assert s.scalars(select(Rating)).all() == []


async def test_failing_chat_action_does_not_cost_the_answer(bot, botapi: BotAPIEmulator) -> None:
    botapi.fail_next("sendChatAction", 400, "Bad Request: not enough rights")
    botapi.send_text(USER, "hello there")
    reply = await botapi.wait_for_message(USER)
    assert reply["text"].startswith("echo:")


async def test_model_failure_gets_an_apology_and_the_bot_keeps_working(
        bot, botapi: BotAPIEmulator, fake_model: FakeChatModel) -> None:
    fake_model.queue(RuntimeError("boom"), "Back to normal.")
    botapi.send_text(USER, "first")
    assert "Sorry" in (await botapi.wait_for_message(USER))["text"]
    botapi.send_text(USER, "second")
    assert (await botapi.wait_for_message(USER, 2))["text"].startswith("Back to normal.")


async def test_oversized_message_is_refused_clearly(bot, botapi: BotAPIEmulator,
                                                    fake_model: FakeChatModel) -> None:
    botapi.send_text(USER, "a" * 4500)
    reply = await botapi.wait_for_message(USER)
    assert "too long" in reply["text"]
    assert fake_model.calls == []


async def test_reset_starts_a_new_conversation(bot, botapi: BotAPIEmulator,
                                               services: Services) -> None:
    botapi.send_text(USER, "hello")
    await botapi.wait_for_message(USER)
    botapi.send_text(USER, "/reset")
    assert "new conversation" in (await botapi.wait_for_message(USER, 2))["text"]
    with services.db.read() as s:
        convs = s.scalars(select(Conversation)).all()
    assert len(convs) == 1 and convs[0].ended_at is not None


async def test_in_groups_the_bot_answers_only_when_addressed(
        bot, botapi: BotAPIEmulator, fake_model: FakeChatModel) -> None:
    group = -100
    botapi.send_text(USER, "people chatting among themselves", chat_id=group, chat_type="group")
    botapi.send_text(USER, "@assistant_test_bot what is this?", chat_id=group, chat_type="group")
    first = await botapi.wait_for_message(group)
    assert fake_model.calls[0][-1]["content"].endswith("Question: what is this?")
    botapi.send_text(USER, "and more?", chat_id=group, chat_type="group", reply_to=first)
    await botapi.wait_for_message(group, 2)
    assert len(fake_model.calls) == 2
