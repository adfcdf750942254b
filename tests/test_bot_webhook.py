"""Webhook mode: PTB's webhook server receives updates the emulator posts, secret enforced."""

from __future__ import annotations

import socket
from dataclasses import replace

from bot.cli import main
from bot.config import Settings
from bot.telegram_app import build_application
from bot.wiring import Services
from tests.botapi import BotAPIEmulator
from tests.conftest import stop_bot

USER = 501


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def test_webhook_delivery_and_secret(settings: Settings, services: Services,
                                           botapi: BotAPIEmulator) -> None:
    services.knowledge.add_text("Notes", "General notes.", "t:notes", "test")
    services.chat.limits = replace(services.chat.limits, min_score=-1.0, min_support=-1.0,
                                   abstain_on_unknown_terms=False, verify_answers=False)
    port = free_port()
    url = f"http://127.0.0.1:{port}/telegram"
    app = build_application(settings.model_copy(update={"telegram_api_url": botapi.url}), services)
    await app.initialize()
    await app.start()
    await app.updater.start_webhook(listen="127.0.0.1", port=port, url_path="telegram",
                                    webhook_url=url, secret_token="s3cret-Token_1")
    try:
        assert botapi.webhook_url == url and botapi.webhook_secret == "s3cret-Token_1"
        botapi.send_text(USER, "hello via webhook")
        reply = await botapi.wait_for_message(USER)
        assert reply["text"].startswith("echo") and botapi.webhook_responses == [200]
        assert botapi.calls_to("getUpdates") == []

        forged = {"update_id": 999, "message": {
            "message_id": 5, "date": 0, "chat": {"id": USER, "type": "private"},
            "from": botapi.user(USER), "text": "forged"}}
        assert await botapi.post_webhook(forged, secret=None) == 403
        assert await botapi.post_webhook(forged, secret="wrong") == 403
        assert len(botapi.sent_messages(USER)) == 1
    finally:
        await stop_bot(app)


def test_webhook_needs_a_valid_secret(tmp_path, monkeypatch, capsys) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("TELEGRAM_BOT_TOKEN", "1:x")
    assert main(["run", "--webhook-url", "https://bot.example/telegram"]) == 2
    assert "--webhook-secret" in capsys.readouterr().err
    assert main(["run", "--webhook-url", "https://x/t", "--webhook-secret", "has spaces"]) == 2
