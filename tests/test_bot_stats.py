"""/stats and /feedback for admins, through the emulator."""

from __future__ import annotations

from dataclasses import replace

from bot.storage.store import UserInfo
from bot.wiring import Services
from tests.botapi import BotAPIEmulator

ADMIN, USER = 42, 501


def seed_ratings(services: Services) -> None:
    """Two adapter versions: base gets 1 of 3 👍, v0001 gets 2 of 2 👍; one correction."""
    services.knowledge.add_text("Notes", "General notes.", "t:notes", "test")
    services.chat.limits = replace(services.chat.limits, min_score=-1.0, min_support=-1.0,
                                   abstain_on_unknown_terms=False, verify_answers=False)
    model = services.chat.model
    votes = {"base": [1, -1, -1], "v0001": [1, 1]}
    for version, values in votes.items():
        model.adapter_version = version
        for i, value in enumerate(values):
            user = UserInfo(1000 + i)
            reply = services.chat.answer(user.id, user, f"question {version} {i}")
            services.feedback.rate(reply.message_id, user, value)
            if value < 0 and i == 2:
                services.feedback.correct(reply.message_id, user, "The right answer is 42.")


async def test_stats_text_and_chart(services: Services, start_bot, botapi: BotAPIEmulator) -> None:
    seed_ratings(services)
    await start_bot()
    botapi.send_text(ADMIN, "/stats")
    text = (await botapi.wait_for_message(ADMIN))["text"]
    assert "Users: 3" in text and "Questions: 5, answers: 5" in text
    assert "Ratings: 3 👍 / 2 👎 (60% 👍)" in text
    assert "adapter base: 33% 👍 of 3" in text and "adapter v0001: 100% 👍 of 2" in text
    assert "Knowledge base: 1 documents, 1 chunks" in text
    await botapi.wait_for(lambda: botapi.uploads, what="the chart upload")
    name, png = botapi.uploads[0]
    assert name == "photo" and png.startswith(b"\x89PNG") and len(png) > 5000


async def test_feedback_lists_recent_thumbs_down(services: Services, start_bot,
                                                 botapi: BotAPIEmulator) -> None:
    seed_ratings(services)
    await start_bot()
    botapi.send_text(ADMIN, "/feedback")
    await botapi.wait_for_message(ADMIN, 2)
    newest, older = (m["text"] for m in botapi.sent_messages(ADMIN))  # one per answer
    assert newest.startswith("👎×1 on answer") and older.startswith("👎×1 on answer")
    assert "Q: question base 2" in newest and "Q: question base 1" in older  # newest first
    assert "Correction #1: The right answer is 42." in newest
    assert "Sources: Notes" in newest and "Checked: verified" in newest  # how it was checked
    # Why it went wrong: "42" is nowhere in the knowledge base; the other has no correction.
    assert "Why: not in the knowledge base" in newest and "Why: no correction" in older


async def test_stats_and_feedback_are_admin_only(services: Services, start_bot,
                                                 botapi: BotAPIEmulator) -> None:
    await start_bot()
    botapi.send_text(USER, "/stats")
    botapi.send_text(USER, "/feedback")
    await botapi.wait_for_message(USER, 2)
    assert {m["text"] for m in botapi.sent_messages(USER)} == {
        "Sorry, only knowledge-base admins can do that."}
    assert botapi.uploads == []
