"""Streaming, long answers, limits and the allowlist, through the emulator over HTTP."""

from __future__ import annotations

import threading

from bot.config import Settings
from tests.botapi import BotAPIEmulator
from tests.fakes import FakeChatModel

USER = 501




async def test_streamed_answer_that_fails_the_check_is_edited_to_the_checked_text(
        services, start_bot, botapi: BotAPIEmulator, fake_model: FakeChatModel) -> None:
    """What the user watched being generated is replaced by the verified text, in place."""
    from sqlalchemy import select

    from bot.storage.models import Message

    services.knowledge.add_text("Parking", "A parking space costs €55 per month.", "t:p", "test")
    fake_model.word_delay = 0.15
    fake_model.queue("A parking space costs €5 per year, or €550 for members of the club.")
    await start_bot()
    botapi.send_text(USER, "What does a parking space cost?")
    final = await botapi.wait_for_message(USER, timeout=30)
    assert final["text"] == "A parking space costs €55 per month.\n\nSources: Parking"
    edits = botapi.calls_to("editMessageText")
    assert any("€5 per year" in e.params["text"] for e in edits[:-1])  # what was streamed
    assert edits[-1].params["text"] == final["text"]  # the same message, edited to the final
    assert len(botapi.sent_messages(USER)) == 1
    with services.db.read() as s:
        stored = s.scalars(select(Message).where(Message.role == "assistant")).one()
    assert stored.text == "A parking space costs €55 per month." and stored.grounding == "extractive"


async def test_answer_streams_by_throttled_edits(grounded, start_bot, botapi: BotAPIEmulator,
                                                 fake_model: FakeChatModel) -> None:
    fake_model.word_delay = 0.1
    fake_model.queue(" ".join(f"word{i}" for i in range(40)))  # ~4 s of "generation"
    await start_bot()
    botapi.send_text(USER, "tell me everything")
    final = await botapi.wait_for_message(USER, timeout=30)
    assert final["text"].startswith("word0 word1") and final["text"].endswith("Sources: Notes")
    assert final["reply_markup"]["inline_keyboard"][0][0]["text"] == "👍"
    edits = botapi.calls_to("editMessageText")
    assert len(edits) >= 3  # the text grew visibly while it was generated
    assert all(e.params["text"].endswith(" …") for e in edits[:-1])
    gaps = [b.at - a.at for a, b in zip(edits, edits[1:])]
    assert min(gaps) >= 0.9  # at most about one edit per second in a chat
    assert len(botapi.sent_messages(USER)) == 1  # one message, edited; not a message per token


async def test_long_answers_are_split_with_buttons_on_the_last_part(
        grounded, start_bot, botapi: BotAPIEmulator, fake_model: FakeChatModel) -> None:
    paragraphs = [f"Part {i}: " + "lorem ipsum dolor " * 60 for i in range(10)]
    fake_model.queue("\n\n".join(p.strip() for p in paragraphs))
    await start_bot()
    botapi.send_text(USER, "long please")
    await botapi.wait_for(lambda: any("reply_markup" in m and "Sources" in m["text"]
                                      for m in botapi.sent_messages(USER)), what="last part")
    msgs = botapi.sent_messages(USER)
    assert len(msgs) >= 3 and all(len(m["text"]) <= 4096 for m in msgs)
    assert all(m["text"].startswith("Part") for m in msgs)  # cut between paragraphs
    assert ["reply_markup" in m for m in msgs] == [False] * (len(msgs) - 1) + [True]


async def test_flooding_user_is_rate_limited(grounded, start_bot, botapi: BotAPIEmulator,
                                             fake_model) -> None:
    app = await start_bot()
    app.bot_data["rate_limiter"].per_minute = 2
    for i in range(3):
        botapi.send_text(USER, f"question {i}")
    await botapi.wait_for(lambda: len(botapi.sent_messages(USER)) == 3 and all(
        not m["text"].endswith(" …") for m in botapi.sent_messages(USER)))
    texts = [m["text"] for m in botapi.sent_messages(USER)]
    assert sum("too fast" in t for t in texts) == 1
    assert len(fake_model.calls) == 2


async def test_second_question_while_the_first_is_generating(
        grounded, start_bot, botapi: BotAPIEmulator, fake_model: FakeChatModel) -> None:
    app = await start_bot()
    app.bot_data["queue"].max_per_key = 1
    fake_model.gate = threading.Event()
    botapi.send_text(USER, "first")
    await botapi.wait_for(lambda: fake_model.calls)
    botapi.send_text(USER, "second")
    busy = await botapi.wait_for_message(USER)
    assert "still working on your previous question" in busy["text"]
    fake_model.gate.set()
    await botapi.wait_for_message(USER, 2)
    assert len(fake_model.calls) == 1


async def test_allowlist_refuses_everyone_else(grounded, settings: Settings, start_bot,
                                               botapi: BotAPIEmulator, fake_model) -> None:
    grounded.settings = settings.model_copy(update={"allowed_user_ids": frozenset({7})})
    await start_bot()
    botapi.send_text(USER, "let me in")
    assert "private" in (await botapi.wait_for_message(USER))["text"]
    botapi.send_text(7, "hello")
    assert (await botapi.wait_for_message(7))["text"].startswith("echo")
    fake = {"message_id": 1, "date": 0, "chat": {"id": USER, "type": "private"}}
    botapi.press_button(USER, fake, "r:1:1")
    await botapi.wait_for(lambda: botapi.calls_to("answerCallbackQuery"))
    assert "private" in botapi.calls_to("answerCallbackQuery")[0].params["text"]
    botapi.send_text(USER, "/reset")  # every path, commands included
    assert "private" in (await botapi.wait_for_message(USER, 2))["text"]
    botapi.send_text(USER, "/help")
    assert "private" in (await botapi.wait_for_message(USER, 3))["text"]
    assert len(fake_model.calls) == 1


async def test_group_streaming_stays_under_20_messages_a_minute(
        grounded, start_bot, botapi: BotAPIEmulator, fake_model: FakeChatModel) -> None:
    fake_model.word_delay = 0.15
    fake_model.queue(" ".join(f"w{i}" for i in range(50)))  # ~7.5 s of "generation"
    await start_bot()
    botapi.send_text(USER, "@Assistant_Test_Bot go", chat_id=-77, chat_type="group")
    final = await botapi.wait_for_message(-77, timeout=30)
    assert final["text"].endswith("Sources: Notes")
    assert "@" not in fake_model.calls[0][-1]["content"]  # a mention in any case is removed
    calls = [c for c in botapi.calls if c.method in ("sendMessage", "editMessageText")]
    gaps = [b.at - a.at for a, b in zip(calls, calls[1:])]
    assert len(calls) >= 2 and min(gaps) >= 2.9  # at most 20 per minute in a group
