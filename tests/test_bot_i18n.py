"""Bot texts follow the user's Telegram language: Korean for `ko`, English otherwise."""

from __future__ import annotations

from dataclasses import replace

from sqlalchemy import select

from bot.i18n import TEXTS, t
from bot.storage.models import Correction
from bot.wiring import Services
from tests.botapi import BotAPIEmulator

KO_USER = 821


def test_every_text_has_english_and_korean() -> None:
    assert all(set(v) == {"en", "ko"} for v in TEXTS.values())
    assert t("rated", "ko-KR") == "평가해 주셔서 감사합니다!"
    assert t("rated", "fr") == "Thanks for the feedback!"


async def test_korean_user_gets_korean_texts(services: Services, start_bot,
                                             botapi: BotAPIEmulator, fake_model) -> None:
    services.knowledge.add_text("영업 시간", "매장은 오전 9시에 문을 엽니다. store opens nine", "t:h", "test")
    services.chat.limits = replace(services.chat.limits, min_support=-1.0)
    await start_bot()
    botapi.send_text(KO_USER, "/help", language_code="ko")
    assert "새 대화를 시작합니다" in (await botapi.wait_for_message(KO_USER))["text"]

    botapi.send_text(KO_USER, "zebra quantum", language_code="ko")
    assert (await botapi.wait_for_message(KO_USER, 2))["text"] == t("no_knowledge", "ko")

    fake_model.queue("오전 9시입니다.")
    botapi.send_text(KO_USER, "when does the store open nine", language_code="ko")
    answer = await botapi.wait_for_message(KO_USER, 3)
    assert answer["text"] == "오전 9시입니다.\n\n출처: 영업 시간"
    down = answer["reply_markup"]["inline_keyboard"][0][1]["callback_data"]
    botapi.press_button(KO_USER, answer, down, language_code="ko")
    prompt = await botapi.wait_for_message(KO_USER, 4)
    assert prompt["text"].startswith("답변이 부족해서 죄송합니다")
    botapi.send_text(KO_USER, "오전 10시에 엽니다.", reply_to=prompt, language_code="ko")
    assert (await botapi.wait_for_message(KO_USER, 5))["text"].startswith("감사합니다!")
    with services.db.read() as s:
        assert s.scalars(select(Correction.text)).all() == ["오전 10시에 엽니다."]
