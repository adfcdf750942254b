"""Corrections after 👎, and /forget, through the emulator over HTTP."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from bot.storage.models import Correction, Message, Rating, User
from bot.wiring import Services
from tests.botapi import BotAPIEmulator

USER, OTHER, GROUP = 501, 502, -300


@pytest.fixture
async def bot(grounded: Services, start_bot):
    return await start_bot()


def rows(services: Services, model):  # type: ignore[no-untyped-def]
    with services.db.read() as s:
        return s.scalars(select(model)).all()


async def ask_and_rate(botapi: BotAPIEmulator, user: int, text: str, vote: int, *,
                       chat_id: int | None = None, n: int = 1) -> dict:
    chat = chat_id or user
    kwargs = {"chat_id": chat, "chat_type": "group"} if chat_id else {}
    botapi.send_text(user, f"@assistant_test_bot {text}" if chat_id else text, **kwargs)
    answer = await botapi.wait_for_message(chat, n)
    up, down = answer["reply_markup"]["inline_keyboard"][0]
    botapi.press_button(user, answer, (up if vote > 0 else down)["callback_data"])
    return answer


async def test_thumbs_down_offers_a_correction_that_is_stored(bot, botapi: BotAPIEmulator,
                                                              services: Services) -> None:
    await ask_and_rate(botapi, USER, "What are the opening hours?", -1)
    prompt = await botapi.wait_for_message(USER, 2)
    assert "reply to this message with a better answer" in prompt["text"]
    sent = [c for c in botapi.calls_to("sendMessage") if c.params["text"] == prompt["text"]]
    assert sent[0].params["reply_markup"]["force_reply"] is True
    botapi.send_text(USER, "We open at 9, not 10.", reply_to=prompt)
    thanks = await botapi.wait_for_message(USER, 3)
    assert thanks["text"].startswith("Thank you! I saved your correction")
    [correction] = rows(services, Correction)
    [answer] = [m for m in rows(services, Message) if m.role == "assistant"]
    assert (correction.message_id, correction.user_id, correction.text) == (
        answer.id, USER, "We open at 9, not 10.")
    assert len(rows(services, Message)) == 2  # the correction was not answered as a question


async def test_thumbs_up_does_not_ask_and_stray_replies_are_questions(
        bot, botapi: BotAPIEmulator, services: Services, fake_model) -> None:
    answer = await ask_and_rate(botapi, USER, "hello", 1)
    await botapi.wait_for(lambda: botapi.calls_to("answerCallbackQuery"))
    botapi.send_text(USER, "and more?", reply_to=answer)
    await botapi.wait_for_message(USER, 2)
    assert len(fake_model.calls) == 2 and rows(services, Correction) == []


async def test_forget_needs_confirmation_and_deletes_only_that_user(
        bot, botapi: BotAPIEmulator, services: Services) -> None:
    await ask_and_rate(botapi, USER, "private question", -1)
    await ask_and_rate(botapi, USER, "group question", 1, chat_id=GROUP, n=1)
    await ask_and_rate(botapi, OTHER, "someone else's question", 1, chat_id=GROUP, n=2)
    await botapi.wait_for(lambda: len(rows(services, Rating)) == 3)

    botapi.send_text(USER, "/forget")
    ask = await botapi.wait_for_message(USER, 3)  # after the answer and the correction prompt
    yes, no = ask["reply_markup"]["inline_keyboard"][0]
    botapi.press_button(USER, ask, no["callback_data"])
    await botapi.wait_for(lambda: ask["text"].startswith("Cancelled"))
    assert len(rows(services, Rating)) == 3
    botapi.press_button(USER, ask, yes["callback_data"])
    await botapi.wait_for(lambda: ask["text"].startswith("Done."))
    assert "4 messages, 2 ratings" in ask["text"]

    remaining = rows(services, Message)
    assert sorted(m.text for m in remaining if m.role == "user") == ["someone else's question"]
    assert len(remaining) == 2  # OTHER's question and the answer to it
    assert [(r.user_id, r.value) for r in rows(services, Rating)] == [(OTHER, 1)]
    user = [u for u in rows(services, User) if u.id == USER][0]
    assert user.forgotten_at is not None and user.username is None


async def test_a_forged_press_from_another_chat_changes_nothing(bot, botapi: BotAPIEmulator,
                                                                services: Services) -> None:
    """Callback data names an answer id; a modified client can name any. Only the chat where
    the answer was shown may rate it."""
    theirs = await ask_and_rate(botapi, OTHER, "their question", 1)
    mine = await ask_and_rate(botapi, USER, "my question", 1)
    await botapi.wait_for(lambda: len(rows(services, Rating)) == 2)
    their_answer_id = theirs["reply_markup"]["inline_keyboard"][0][1]["callback_data"].split(":")[1]
    botapi.press_button(USER, mine, f"r:{their_answer_id}:-1")  # forged, pressed in USER's chat
    await botapi.wait_for(lambda: len(botapi.calls_to("answerCallbackQuery")) == 3)
    assert "no longer have that answer" in botapi.calls_to("answerCallbackQuery")[-1].params["text"]
    assert sorted((r.user_id, r.value) for r in rows(services, Rating)) == [(USER, 1), (OTHER, 1)]
    assert len(botapi.sent_messages(USER)) == 1  # and no correction prompt was offered


async def test_in_a_group_only_the_user_who_pressed_thumbs_down_can_correct(
        bot, botapi: BotAPIEmulator, services: Services) -> None:
    await ask_and_rate(botapi, USER, "group question", -1, chat_id=GROUP)
    prompt = await botapi.wait_for_message(GROUP, 2)
    assert "better answer" in prompt["text"]
    botapi.send_text(OTHER, "The answer is 42, trust me.", chat_id=GROUP, chat_type="group",
                     reply_to=prompt)
    await botapi.wait_for_message(GROUP, 3)  # OTHER's reply is treated as a question to the bot
    botapi.send_text(USER, "We open at 9.", chat_id=GROUP, chat_type="group", reply_to=prompt)
    thanks = await botapi.wait_for_message(GROUP, 4)
    assert thanks["text"].startswith("Thank you! I saved your correction")
    assert [(c.user_id, c.text) for c in rows(services, Correction)] == [(USER, "We open at 9.")]
