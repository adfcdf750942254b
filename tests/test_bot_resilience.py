"""Redelivered updates, 429s, 5xx answers and a Bot API restart, through the emulator."""

from __future__ import annotations

from sqlalchemy import func, select

from bot.storage.models import Message
from bot.wiring import Services
from tests.botapi import BotAPIEmulator
from tests.conftest import stop_bot

USER = 501




def message_count(services: Services) -> int:
    with services.db.read() as s:
        return s.scalar(select(func.count(Message.id)))


async def test_redelivered_update_gets_one_reply_and_one_set_of_rows(
        grounded, start_bot, botapi: BotAPIEmulator, fake_model, caplog) -> None:
    first = await start_bot()
    botapi.send_text(USER, "hello once")
    await botapi.wait_for_message(USER)
    await stop_bot(first)  # as if it crashed before confirming the update
    botapi.redeliver(1)
    caplog.set_level("INFO", logger="bot.resilience")
    await start_bot()
    await botapi.wait_for(lambda: "Update 1 was already handled" in caplog.text,
                          what="the second bot to see the redelivered update")
    await botapi.wait_for(lambda: botapi.calls_to("getUpdates")[-1].params.get("offset") == 2)
    assert len(botapi.sent_messages(USER)) == 1
    assert len(fake_model.calls) == 1 and message_count(grounded) == 2


async def test_429_retry_after_is_honoured(start_bot, botapi: BotAPIEmulator) -> None:
    await start_bot()
    botapi.fail_next("sendMessage", 429, "Too Many Requests: retry after 1", retry_after=1)
    botapi.send_text(USER, "/help")
    await botapi.wait_for_message(USER)
    sends = botapi.calls_to("sendMessage")
    assert len(sends) == 2 and sends[1].at - sends[0].at >= 1.0


async def test_5xx_answers_are_retried_with_backoff(grounded, start_bot,
                                                    botapi: BotAPIEmulator) -> None:
    await start_bot()
    botapi.fail_next("sendMessage", 502, "Bad Gateway")
    botapi.fail_next("sendMessage", 500, "Internal Server Error")
    botapi.send_text(USER, "are you there?")
    reply = await botapi.wait_for_message(USER)
    assert reply["text"].startswith("echo")
    sends = botapi.calls_to("sendMessage")
    assert len(sends) == 3
    assert sends[2].at - sends[1].at > sends[1].at - sends[0].at  # the wait grows


async def test_bot_survives_a_bot_api_restart(grounded, start_bot, botapi: BotAPIEmulator) -> None:
    await start_bot()
    botapi.send_text(USER, "before")
    await botapi.wait_for_message(USER)
    await botapi.restart(down_for=2.0)
    botapi.send_text(USER, "after the restart")
    reply = await botapi.wait_for_message(USER, 2, timeout=60)
    assert "after the restart" in reply["text"]
