"""Staying up when Telegram misbehaves or the process dies: retries with backoff, and each
update handled once, even across a crash."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import cached_property
from typing import Any

from sqlalchemy.exc import IntegrityError, SQLAlchemyError
from telegram import Update
from telegram.error import NetworkError, TimedOut
from telegram.ext import AIORateLimiter, Application

from bot.storage.journal import UpdateJournal

logger = logging.getLogger(__name__)


class RetryingRateLimiter(AIORateLimiter):
    """PTB's rate limiter (which already honours 429 retry_after), plus retries with
    exponential backoff on network errors and 5xx answers.

    A timeout is not retried: the Bot API may have carried the request out, and sending a
    message twice is worse than a late error. getUpdates is left to PTB's polling loop,
    which has its own backoff.
    """

    def __init__(self, network_retries: int = 4, first_delay: float = 0.5, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.network_retries = network_retries
        self.first_delay = first_delay

    async def process_request(self, callback, args, kwargs, endpoint, data, rate_limit_args):
        delay = self.first_delay
        for attempt in range(self.network_retries + 1):
            try:
                return await super().process_request(callback, args, kwargs, endpoint, data,
                                                     rate_limit_args)
            except TimedOut:
                raise
            except NetworkError as exc:
                if endpoint == "getUpdates" or attempt == self.network_retries:
                    raise
                logger.warning("%s failed (%s); retrying in %.1f s", endpoint, exc, delay)
                await asyncio.sleep(delay)
                delay *= 2
        raise AssertionError("unreachable")


@dataclass(frozen=True)
class Recovery:
    """An update the process died while handling, handled again after the restart."""

    received_at: datetime
    reply_message_id: int | None  # the chat message its answer was being streamed into

    def too_old(self, minutes: float) -> bool:
        """Too long ago to answer now (the user gets an apology instead)."""
        return datetime.now(UTC) - self.received_at > timedelta(minutes=minutes)


@dataclass(frozen=True)
class _Replay:
    update: Update
    recovery: Recovery


class JournaledApplication(Application):
    """PTB's Application with an update journal in SQL (`UpdateJournal`).

    Each update is journaled before any handler sees it and marked done once they all have:
    a redelivered update is skipped, and at start-up (`recover`) updates that were never
    finished (kill -9, out of memory, a reboot) are handled again, with `recovery_of` telling
    handlers so (a late answer says it is late; an old question gets an apology instead).
    Handlers keep replays harmless: a recorded question is not recorded twice
    (`ChatService.answer(asked_as=...)`), a rating is an upsert, a correction is stored once.
    """

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.recovering: dict[int, Recovery] = {}

    @cached_property
    def journal(self) -> UpdateJournal:
        return UpdateJournal(self.bot_data["services"].db)

    async def recover(self) -> int:
        """Queue the unfinished updates of an earlier process, oldest first; how many."""
        pending = await asyncio.to_thread(self.journal.unfinished)
        queued = 0
        for entry in pending:
            update = Update.de_json(entry.payload, self.bot) if entry.payload else None
            if update is None:
                await asyncio.to_thread(self.journal.finish, entry.update_id)
                continue
            await self.update_queue.put(
                _Replay(update, Recovery(entry.received_at, entry.reply_message_id)))
            queued += 1
        if queued:
            logger.warning("Handling %d update(s) left unfinished by the last run", queued)
        return queued

    async def process_update(self, update: object) -> None:
        if isinstance(update, _Replay):
            self.recovering[update.update.update_id] = update.recovery
            try:
                await super().process_update(update.update)
            finally:
                self.recovering.pop(update.update.update_id, None)
            await self._finish(update.update.update_id)
            return
        if not isinstance(update, Update):
            await super().process_update(update)
            return
        try:
            first = await asyncio.to_thread(self.journal.begin, update.update_id,
                                            json.loads(update.to_json()))
        except IntegrityError:  # another process or task journaled it a moment ago
            first = False
        except SQLAlchemyError:  # the database is down: answer anyway (handlers apologise)
            logger.exception("Could not journal update %s", update.update_id)
            first = True
        if not first:
            logger.info("Update %s was already handled; skipping it", update.update_id)
            return
        await super().process_update(update)
        await self._finish(update.update_id)

    async def note_reply(self, update_id: int, chat_message_id: int) -> None:
        """The chat message an answer to `update_id` is streamed into, so that a crash's
        recovery finishes it; a failure is logged, never costs the answer."""
        try:
            await asyncio.to_thread(self.journal.set_reply, update_id, chat_message_id)
        except SQLAlchemyError:
            logger.exception("Could not journal the reply to update %s", update_id)

    async def _finish(self, update_id: int) -> None:
        try:
            await asyncio.to_thread(self.journal.finish, update_id)
        except SQLAlchemyError:
            logger.exception("Could not mark update %s as handled", update_id)


def recovery_of(application: Application, update: Update) -> Recovery | None:
    """Set while `update` is handled again after a crash."""
    recovering = getattr(application, "recovering", {})
    return recovering.get(update.update_id)


def reply_journal(application: Application,
                  update: Update) -> Callable[[int], Awaitable[None]] | None:
    """What to tell the chat message an answer to `update` is streamed into (None without a
    journal)."""
    if not isinstance(application, JournaledApplication):
        return None
    return lambda chat_message_id: application.note_reply(update.update_id, chat_message_id)
