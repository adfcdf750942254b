"""Knowledge-base curation from Telegram, through the emulator over HTTP."""

from __future__ import annotations

import pytest

from bot.wiring import Services
from tests.botapi import BotAPIEmulator

ADMIN = 42  # the settings fixture's ADMIN_IDS
STRANGER = 666


@pytest.fixture
async def bot(start_bot):
    return await start_bot()


def audit_actors(services: Services) -> set[str]:
    return {e.actor for e in services.store.audit_entries(100)}


@pytest.mark.e2e
async def test_admin_uploads_replaces_and_deduplicates_a_file(bot, botapi: BotAPIEmulator,
                                                              services: Services) -> None:
    botapi.send_document(ADMIN, "returns.md", b"# Returns\n\nItems can be returned in 30 days.")
    reply = await botapi.wait_for_message(ADMIN)
    assert reply["text"].startswith("Added: #1 “Returns” — 44 characters, 1 chunks.")
    botapi.send_document(ADMIN, "returns.md", b"# Returns\n\nItems can be returned in 60 days.")
    assert "Replaced (now version 2)" in (await botapi.wait_for_message(ADMIN, 2))["text"]
    botapi.send_document(ADMIN, "copy.md", b"# Returns\n\nItems can be returned in 60 days.")
    assert "Already in the knowledge base as #1" in (await botapi.wait_for_message(ADMIN, 3))["text"]

    docs = services.knowledge.list_documents()
    assert [(d.title, d.version, d.added_by, d.source) for d in docs] == [
        ("Returns", 2, ADMIN, "telegram:returns.md")]
    assert [h.text for h in services.knowledge.search("returned days")] == [
        "Returns\nItems can be returned in 60 days."]
    assert audit_actors(services) == {f"telegram:{ADMIN}"}


async def test_html_upload_is_cleaned_and_titled(bot, botapi: BotAPIEmulator,
                                                 services: Services) -> None:
    html = (b"<html><head><title>Shipping FAQ</title><script>var x=1;</script></head><body>"
            b"<nav><a href='/'>Home</a> | <a href='/shop'>Shop</a></nav>"
            b"<h2>Delivery</h2><p>We ship to Korea in five days.</p>"
            b"<footer>Copyright 2026</footer></body></html>")
    botapi.send_document(ADMIN, "faq.html", html)
    assert "“Shipping FAQ”" in (await botapi.wait_for_message(ADMIN))["text"]
    _, text = services.knowledge.show(1)
    assert text == "## Delivery\n\nWe ship to Korea in five days."


async def test_unsupported_and_oversized_files_are_refused_clearly(
        bot, botapi: BotAPIEmulator, services: Services) -> None:
    botapi.send_document(ADMIN, "photo.jpg", b"\xff\xd8\xff")
    assert "Supported types: .txt, .md, .html, .htm, .pdf" in (
        await botapi.wait_for_message(ADMIN))["text"]
    botapi.send_document(ADMIN, "huge.pdf", b"%PDF", file_size=25 * 1024 * 1024)
    assert "up to 20 MB" in (await botapi.wait_for_message(ADMIN, 2))["text"]
    assert botapi.calls_to("getFile") == []  # refused before downloading anything
    assert services.knowledge.count() == 0


async def test_kb_add_with_text_or_as_a_reply(bot, botapi: BotAPIEmulator,
                                              services: Services) -> None:
    botapi.send_text(ADMIN, "/kb_add Opening hours\nWe are open 9 to 5 on weekdays.")
    assert "Added: #1 “Opening hours”" in (await botapi.wait_for_message(ADMIN))["text"]
    original = botapi.send_text(ADMIN, "Parking is free after 6 pm.")
    await botapi.wait_for_message(ADMIN, 2)  # the bot answers that message first
    botapi.send_text(ADMIN, "/kb_add Parking", reply_to=original)
    assert "Added: #2 “Parking”" in (await botapi.wait_for_message(ADMIN, 3))["text"]
    botapi.send_text(ADMIN, "/kb_add")
    assert (await botapi.wait_for_message(ADMIN, 4))["text"].startswith("Usage: /kb_add")
    assert [d.title for d in services.knowledge.list_documents()] == ["Opening hours", "Parking"]


async def test_kb_list_pages_and_kb_show(bot, botapi: BotAPIEmulator, services: Services) -> None:
    for i in range(12):
        services.knowledge.add_text(f"Doc {i}", f"Content number {i}.", f"t:{i}", "test")
    botapi.send_text(ADMIN, "/kb_list")
    first = (await botapi.wait_for_message(ADMIN))["text"]
    assert "#1 Doc 0" in first and "#10 Doc 9" in first and "#11" not in first
    assert "Page 1 of 2, 12 documents. Next: /kb_list 2" in first
    botapi.send_text(ADMIN, "/kb_list 2")
    assert "#12 Doc 11" in (await botapi.wait_for_message(ADMIN, 2))["text"]
    botapi.send_text(ADMIN, "/kb_show 3")
    shown = (await botapi.wait_for_message(ADMIN, 3))["text"]
    assert shown.startswith("#3 Doc 2\nSource: t:2\nVersion 1, 1 chunks") and "Content number 2." in shown
    botapi.send_text(ADMIN, "/kb_show 99")
    assert (await botapi.wait_for_message(ADMIN, 4))["text"] == "There is no document #99."


async def test_kb_remove_asks_to_confirm(bot, botapi: BotAPIEmulator, services: Services) -> None:
    services.knowledge.add_text("Old", "Outdated text.", "t:old", "test")
    botapi.send_text(ADMIN, "/kb_remove 1")
    ask = await botapi.wait_for_message(ADMIN)
    assert ask["text"] == "Remove #1 “Old”?"
    (remove, cancel) = ask["reply_markup"]["inline_keyboard"][0]
    botapi.press_button(ADMIN, ask, cancel["callback_data"])
    await botapi.wait_for(lambda: ask["text"].startswith("Cancelled"))
    assert services.knowledge.count() == 1
    botapi.press_button(ADMIN, ask, remove["callback_data"])
    await botapi.wait_for(lambda: ask["text"] == "Removed #1 “Old”.")
    assert services.knowledge.count() == 0 and services.knowledge.search("Outdated text") == []


async def test_kb_search_shows_scores(bot, botapi: BotAPIEmulator, services: Services) -> None:
    services.knowledge.add_text("Refunds", "Refunds are paid in 14 days.", "t:r", "test")
    botapi.send_text(ADMIN, "/kb_search refunds paid")
    text = (await botapi.wait_for_message(ADMIN))["text"]
    assert text.split()[0].replace(".", "").isdigit() and "#1 Refunds" in text


async def test_non_admins_are_refused_on_every_path(bot, botapi: BotAPIEmulator,
                                                    services: Services) -> None:
    services.knowledge.add_text("Keep me", "Important text.", "t:keep", "test")
    for command in ("/kb_add Evil\nspam", "/kb_list", "/kb_show 1", "/kb_remove 1",
                    "/kb_search important"):
        botapi.send_text(STRANGER, command)
    botapi.send_document(STRANGER, "spam.md", b"spam spam")
    await botapi.wait_for_message(STRANGER, 6)
    texts = sorted(m["text"] for m in botapi.sent_messages(STRANGER))  # handled concurrently
    assert texts == ["I can only answer text messages; only knowledge-base admins can add "
                     "documents."] + ["Sorry, only knowledge-base admins can do that."] * 5
    # A forged confirmation button is refused too.
    fake = {"message_id": 1, "date": 0, "chat": {"id": STRANGER, "type": "private"}}
    botapi.press_button(STRANGER, fake, "kb:rm:1")
    await botapi.wait_for(lambda: botapi.calls_to("answerCallbackQuery"))
    assert botapi.calls_to("answerCallbackQuery")[0].params["text"] == \
        "Sorry, only knowledge-base admins can do that."
    assert [d.title for d in services.knowledge.list_documents()] == ["Keep me"]
    assert botapi.calls_to("getFile") == []
    assert audit_actors(services) == {"test"}


async def test_help_shows_admin_commands_to_admins(bot, botapi: BotAPIEmulator) -> None:
    botapi.send_text(ADMIN, "/help")
    assert "/kb_add" in (await botapi.wait_for_message(ADMIN))["text"]
