"""The python-telegram-bot Application: Bot API address, handlers, start-up work."""

from __future__ import annotations

import asyncio
import logging
from urllib.parse import urlparse

from telegram import BotCommand, Update
from telegram.error import TelegramError
from telegram.ext import Application, ApplicationBuilder, ContextTypes, TypeHandler

from bot import handlers, handlers_admin
from bot.config import Settings
from bot.resilience import JournaledApplication, RetryingRateLimiter
from bot.scheduler import schedule_nightly, schedule_retention
from bot.services.queue import FairQueue, RateLimiter
from bot.wiring import Services

logger = logging.getLogger(__name__)

COMMANDS = [
    BotCommand("help", "What I do and what I store"),
    BotCommand("reset", "Start a new conversation"),
    BotCommand("forget", "Delete my data and keep me out of training"),
]


async def _post_init(application: Application) -> None:
    if isinstance(application, JournaledApplication):
        await asyncio.to_thread(application.journal.forget_old)
        await application.recover()  # questions a crash left unanswered, before new ones
    try:
        await application.bot.set_my_commands(COMMANDS)
    except TelegramError as exc:
        logger.warning("setMyCommands failed: %s", exc)
    me = application.bot
    logger.info("Connected to the Bot API as @%s (id %s)", me.username, me.id)


async def _post_shutdown(application: Application) -> None:
    await application.bot_data["queue"].close()


def build_application(settings: Settings, services: Services) -> Application:
    """An Application that talks to `TELEGRAM_API_URL` with the self-hosted URL layout."""
    url = settings.telegram_api_url.rstrip("/")
    application = (
        ApplicationBuilder()
        .application_class(JournaledApplication)  # each update journaled, replayed after a crash
        .token(settings.telegram_bot_token)
        .base_url(f"{url}/bot")
        .base_file_url(f"{url}/file/bot")
        .context_types(ContextTypes(context=handlers.AssistantContext))
        .concurrent_updates(16)  # answers take seconds; don't make every chat wait in line
        .rate_limiter(RetryingRateLimiter(max_retries=3))  # 429 retry_after, 5xx, network
        .post_init(_post_init)
        .post_shutdown(_post_shutdown)
        .build()
    )
    application.bot_data["services"] = services
    schedule_nightly(application, settings.tune_nightly_at)
    schedule_retention(application, settings.retention_days)
    application.bot_data["queue"] = FairQueue(settings.generation_workers,
                                              settings.queue_max_waiting,
                                              settings.queue_max_per_user)
    application.bot_data["rate_limiter"] = RateLimiter(settings.rate_limit_per_minute)
    # Before any handler: only from allowed users (each update once: JournaledApplication).
    application.add_handler(TypeHandler(Update, handlers.allowlist), group=-1)
    handlers_admin.register(application)  # before the chat handlers: its buttons match first
    handlers.register(application)
    return application


def run_polling(settings: Settings, services: Services) -> None:
    application = build_application(settings, services)
    logger.info("Long polling %s", settings.telegram_api_url)
    application.run_polling(allowed_updates=Update.ALL_TYPES)


def run_webhook(settings: Settings, services: Services, webhook_url: str, secret: str,
                listen: str, port: int) -> None:
    """Serve updates pushed by the Bot API; requests without the secret header get 403."""
    application = build_application(settings, services)
    path = urlparse(webhook_url).path.lstrip("/")
    logger.info("Webhook mode: listening on %s:%d/%s", listen, port, path)
    application.run_webhook(listen=listen, port=port, url_path=path, webhook_url=webhook_url,
                            secret_token=secret, allowed_updates=Update.ALL_TYPES)
