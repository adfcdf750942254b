"""Show an answer while it is generated: one message, edited as tokens arrive.

Edits are throttled per chat (Telegram allows about one message per second in a chat and 20 per
minute in a group), "typing" is repeated until the first words appear, and the final text is
split into Telegram-sized parts with the rating buttons on the last one.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable

from telegram import Bot, InlineKeyboardMarkup, Message, ReplyParameters
from telegram.constants import ChatAction
from telegram.error import BadRequest, TelegramError

from bot.render import TELEGRAM_LIMIT, split_message

logger = logging.getLogger(__name__)

PRIVATE_EDIT_INTERVAL = 1.0
GROUP_EDIT_INTERVAL = 3.0
TYPING_EVERY = 4.5  # Telegram shows "typing" for about 5 s
CURSOR = " …"


class StreamingReply:
    """Feed it partial texts from any thread; `finish` sends the final answer."""

    def __init__(self, bot: Bot, chat_id: int, reply_to: int | None, is_group: bool, *,
                 resume: int | None = None,
                 on_sent: Callable[[int], Awaitable[None]] | None = None) -> None:
        """`resume`: a message an earlier process started streaming into (it died), to finish
        instead of sending a new one; `on_sent`: told the id of the message once it is sent."""
        self.bot = bot
        self.chat_id = chat_id
        self.reply_to = reply_to
        self.resume = resume
        self.on_sent = on_sent
        self.interval = GROUP_EDIT_INTERVAL if is_group else PRIVATE_EDIT_INTERVAL
        self.message: Message | None = None
        self._loop = asyncio.get_running_loop()
        self._latest = ""
        self._shown = ""
        self._last_edit = 0.0
        self._changed = asyncio.Event()
        self._closing = asyncio.Event()
        self._task = asyncio.create_task(self._run())

    def feed(self, partial: str) -> None:
        """Called from the generation thread with the answer so far."""
        self._loop.call_soon_threadsafe(self._set, partial)

    def _set(self, partial: str) -> None:
        self._latest = partial.strip()
        self._changed.set()

    async def _typing(self) -> None:
        try:
            await self.bot.send_chat_action(self.chat_id, ChatAction.TYPING)
        except TelegramError as exc:  # optional: never let it cost the answer
            logger.warning("sendChatAction failed: %s", exc)

    async def _wait(self, event: asyncio.Event, seconds: float | None) -> None:
        """Wait for `event`, at most `seconds`; closing wakes it too."""
        waits = [asyncio.ensure_future(event.wait()), asyncio.ensure_future(self._closing.wait())]
        try:
            await asyncio.wait(waits, timeout=seconds, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for w in waits:
                w.cancel()

    async def _run(self) -> None:
        # Never cancelled from outside: a request cancelled half-way can wedge PTB's rate
        # limiter for every later call. `_stop` sets `_closing` and lets the loop finish.
        while not self._closing.is_set():
            if self.message is None:
                await self._typing()
                await self._wait(self._changed, TYPING_EVERY)
                if not self._changed.is_set():
                    continue
            else:
                await self._wait(self._changed, None)
            wait = self._last_edit + self.interval - time.monotonic()
            if wait > 0:
                await self._wait(self._closing, wait)
            if self._closing.is_set():
                return
            self._changed.clear()
            if self._latest and self._latest != self._shown:
                await self._show(self._latest[: TELEGRAM_LIMIT - len(CURSOR)] + CURSOR)
                self._shown = self._latest

    async def _show(self, text: str, markup: InlineKeyboardMarkup | None = None) -> None:
        try:
            if self.message is None and self.resume is not None:
                self.message = await self._resume(text, markup)
            elif self.message is None:
                self.message = await self._send(text, markup)
            else:
                await self.bot.edit_message_text(text, self.chat_id, self.message.message_id,
                                                 reply_markup=markup)
        except BadRequest as exc:
            if "not modified" not in str(exc).lower():
                raise
        finally:
            self._last_edit = time.monotonic()

    async def _send(self, text: str, markup: InlineKeyboardMarkup | None) -> Message:
        reply = ReplyParameters(self.reply_to, allow_sending_without_reply=True) \
            if self.reply_to else None
        message = await self.bot.send_message(self.chat_id, text, reply_markup=markup,
                                              reply_parameters=reply)
        if self.on_sent is not None:
            await self.on_sent(message.message_id)
        return message

    async def _resume(self, text: str, markup: InlineKeyboardMarkup | None) -> Message:
        """Finish the message an earlier process left half-streamed, or send a new one if it
        is gone or can no longer be edited."""
        resume, self.resume = self.resume, None
        assert resume is not None
        try:
            edited = await self.bot.edit_message_text(text, self.chat_id, resume,
                                                      reply_markup=markup)
        except BadRequest as exc:
            logger.info("Could not finish message %s (%s); sending a new one", resume, exc)
            return await self._send(text, markup)
        return edited if isinstance(edited, Message) else await self._send(text, markup)

    async def _stop(self) -> None:
        self._closing.set()
        try:
            await self._task
        except TelegramError as exc:  # a failed interim edit must not cost the final answer
            logger.warning("Streaming edit failed: %s", exc)

    async def finish(self, text: str, markup: InlineKeyboardMarkup | None = None) -> Message:
        """Show the final text (split if long); `markup` goes on the last part."""
        await self._stop()
        parts = split_message(text)
        wait = self._last_edit + self.interval - time.monotonic()
        if self.message is not None and wait > 0:
            await asyncio.sleep(wait)
        await self._show(parts[0], markup if len(parts) == 1 else None)
        last = self.message
        for i, part in enumerate(parts[1:], start=2):
            last = await self.bot.send_message(self.chat_id, part,
                                               reply_markup=markup if i == len(parts) else None)
        assert last is not None  # set by the first part
        return last

    async def drop(self) -> None:
        """Stop without showing anything (the answer is already in the chat)."""
        await self._stop()

    async def fail(self, text: str) -> None:
        """Replace whatever was shown with an error text."""
        await self._stop()
        await self._show(text)
