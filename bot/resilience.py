"""Staying up when Telegram misbehaves: retries with backoff, and each update handled once."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from sqlalchemy.exc import IntegrityError
from telegram import Update
from telegram.error import NetworkError, TimedOut
from telegram.ext import AIORateLimiter, ApplicationHandlerStop

from bot.storage.store import Store

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


def once_per_update(store: Store):
    """A handler for group -1 that stops any update whose id was already handled
    (Telegram redelivers updates after a crash, and retries slow webhook deliveries)."""

    async def check(update: Update, context: Any) -> None:
        try:
            first = await asyncio.to_thread(store.mark_update_processed, update.update_id)
        except IntegrityError:
            first = False
        if not first:
            logger.info("Update %s was already handled; skipping it", update.update_id)
            raise ApplicationHandlerStop

    return check
